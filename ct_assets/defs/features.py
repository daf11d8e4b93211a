"""Subject features: the offline feature store the models train on."""


import dagster as dg

from ct_assets.core.provenance import STAGE_LOGIC, module_code_version
from ct_assets.defs import keys
from ct_assets.defs.failures import fails_fast
from ct_assets.defs.frames import Frame
from ct_assets.defs.resources import FeatureStore, Lake, StudyDesign


def store_landmark(instance: dg.DagsterInstance) -> int | None:
    """The landmark day the offline store was last computed with (None before the first time)."""
    event = instance.get_latest_materialization_event(keys.SUBJECT_FEATURES)
    md = event.asset_materialization.metadata if event and event.asset_materialization else {}
    return int(md["landmark_day"].value) if "landmark_day" in md else None


def require_landmark(instance: dg.DagsterInstance, design: StudyDesign) -> None:
    """Features and labels must use one landmark: a store computed with another fails the step at once."""
    stored = store_landmark(instance)
    if stored is not None and stored != design.landmark_day:
        raise dg.Failure(description=f"the feature store was computed with landmark day {stored} and the study design "
                                     f"now says {design.landmark_day}: materialize subject_features first",
                         allow_retries=False)


@dg.asset(
    key=keys.SUBJECT_FEATURES,
    group_name="features",
    kinds={"pandas", "parquet"},
    pool="feature_engineering",
    code_version=module_code_version(*STAGE_LOGIC["features"]),
    deps=[keys.PROCESSED_VISITS],  # read a batch at a time, never whole: it grows with the findings
    ins={
        "dm": dg.AssetIn(keys.validated("DM")),
        "ex": dg.AssetIn(keys.validated("EX")),
    },
    check_specs=[dg.AssetCheckSpec("features_schema", asset=keys.SUBJECT_FEATURES, blocking=True,
                                   description="one row per pseudonym, numeric features, no raw subject id (pandera)")],
    description="Per subject: demographics, exposure and baseline / last / change / slope of every test in the "
    "first days on study, plus abnormal-result counts. Keyed by pseudonym.",
)
def subject_features(context: dg.AssetExecutionContext, study_design: StudyDesign, lake: Lake, dm: Frame, ex: Frame):
    from ct_assets.adapters.feature_store import stamp
    from ct_assets.core.features import subject_features as build_features
    from ct_assets.core.lake import parquet_batches

    path = lake.path_for(keys.PROCESSED_VISITS.path[-1])
    if not path.exists():
        raise dg.Failure(description=f"processed_visits has not been materialized ({path})", allow_retries=False)
    with fails_fast():
        visits = parquet_batches(path)
        features = build_features(visits, dm, ex, study_design.landmark_day)
    # As of each subject's landmark, for the feature store's point-in-time joins.
    stored = stamp(features, dm, study_design.landmark_day)
    # Enrollment cohorts become partitions of the feature store, for backfills.
    cohorts = sorted(dm.loc[dm["RFSTDTC"].notna(), "RFSTDTC"].astype(str).str.slice(0, 7).unique())
    known = set(context.instance.get_dynamic_partitions("enrollment_cohorts"))
    if new := [c for c in cohorts if c not in known]:
        context.instance.add_dynamic_partitions("enrollment_cohorts", new)
    numeric = features.select_dtypes("number")
    missing = numeric.isna().mean().sort_values(ascending=False)
    yield dg.Output(
        stored,
        metadata={
            "dagster/row_count": len(features),
            "features": len(features.columns) - 1,
            "feature_timestamps": f"{stored['FEATURE_TIMESTAMP'].min():%Y-%m-%d} to {stored['FEATURE_TIMESTAMP'].max():%Y-%m-%d}",
            "landmark_day": study_design.landmark_day,
            "cohorts": len(cohorts),
            "mean_missing_share": round(float(missing.mean()), 4) if len(missing) else 0.0,
            "most_missing": dg.MetadataValue.md(
                "| feature | missing |\n|---|---|\n" + "\n".join(f"| {k} | {v:.0%} |" for k, v in missing.head(8).items())
            ),
        },
    )
    yield schema_check(features)


def schema_check(features: Frame) -> dg.AssetCheckResult:
    """FEATURES_SCHEMA on the store (pandera, loaded here rather than with the code location)."""
    from pandera.errors import SchemaErrors

    from ct_assets.core.schemas import FEATURES_SCHEMA

    try:
        FEATURES_SCHEMA.validate(features, lazy=True)
        return dg.AssetCheckResult(check_name="features_schema", passed=True, metadata={"columns": len(features.columns)})
    except SchemaErrors as err:
        cases = err.failure_cases
        failed = sorted({f"{c}: {k}" for c, k in zip(cases["column"].astype(str), cases["check"].astype(str))})
        return dg.AssetCheckResult(check_name="features_schema", passed=False,
                                   metadata={"failures": len(cases), "rules": "; ".join(failed)[:1000]})


@dg.asset(
    key=keys.ONLINE_FEATURES,
    group_name="features",
    kinds={"feast", "redis"},
    pool="feature_engineering",
    deps=[keys.SUBJECT_FEATURES, *keys.SOUND_DATA],
    check_specs=[dg.AssetCheckSpec("online_matches_offline", asset=keys.ONLINE_FEATURES, blocking=True,
                                   description="rows online = subjects of the offline store, each with its latest "
                                               "feature timestamp, and a sample read back equals the offline values")],
    description="The latest features of every subject in the online store (Redis, or SQLite locally), registered in "
    "the feature store: what the model server scores a subject by, from the subject key alone.",
)
def online_features(context: dg.AssetExecutionContext, feature_store: FeatureStore):
    import pandas as pd

    from ct_assets.adapters import feature_store as fs

    s = feature_store.store_settings()
    store = feature_store.store()
    fs.apply(store, s)
    latest = fs.latest_rows(pd.read_parquet(s.offline_path))
    window = fs.materialize_latest(store, s, latest)
    pruned, verdict = fs.prune_and_verify(store, s, latest)
    context.log.info(f"{verdict['found']} of {len(latest)} subjects online ({feature_store.online_kind()})")
    yield dg.MaterializeResult(
        metadata={"dagster/row_count": verdict["online_rows"], "subjects": len(latest), "pruned": len(pruned),
                  "features": len(fs.feature_names(s.offline_path)), "online_store": feature_store.online_kind(),
                  "project": s.project, "materialized_from": window["start"], "materialized_to": window["end"]},
        check_results=[online_check(verdict, len(latest))],
    )


def online_check(verdict: dict, subjects: int) -> dg.AssetCheckResult:
    differing = verdict["differing_features"]
    extra = verdict.get("online_rows", subjects) - verdict["found"]
    passed = verdict["found"] == subjects and not extra and not verdict["stale"] and not differing
    why = [f"{subjects - verdict['found']} subjects missing online"] if verdict["found"] != subjects else []
    why += [f"{extra} subjects online that the offline store does not have"] if extra else []
    why += [f"{verdict['stale']} subjects with another feature timestamp online"] if verdict["stale"] else []
    why += [f"online values differ from the offline store in {', '.join(sorted(differing))[:500]}"] if differing else []
    return dg.AssetCheckResult(check_name="online_matches_offline", passed=passed,
                               description="; ".join(why) or None,
                               metadata={"subjects": subjects, "found_online": verdict["found"],
                                         "online_rows": verdict.get("online_rows", verdict["found"]), "stale": verdict["stale"],
                                         "sampled": verdict["sampled"], "differing_features": len(differing)})


@dg.asset_check(asset=keys.ONLINE_FEATURES, description="training/serving skew: feature vectors the model server "
                "fetched online and scored (a sample from its prediction log) equal the offline store's")
def serving_skew(feature_store: FeatureStore) -> dg.AssetCheckResult:
    from ct_assets import settings
    from ct_assets.adapters import feature_store as fs

    s = feature_store.store_settings()
    result = fs.serving_skew(settings.predictions_log(), s.offline_path)
    differing = result["differing_features"]
    problems = []
    if differing:
        problems.append("served features differ from the offline store: " + ", ".join(
            f"{name} ({n} of {result['compared']})" for name, n in sorted(differing.items()))[:900])
    if result["unmatched"]:
        problems.append(f"{result['unmatched']} served vectors have no offline row at their feature timestamp")
    return dg.AssetCheckResult(passed=not problems, description="; ".join(problems) or None,
                               metadata={k: v for k, v in result.items() if k != "differing_features"}
                               | {"differing_features": ", ".join(sorted(differing)) or "none"})
