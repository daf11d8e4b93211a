"""Subject features: the offline feature store the models train on."""


import dagster as dg
import pandas as pd

from ct_assets import keys
from ct_assets.features.logic import subject_features as build_features
from ct_assets.lib.faults import fails_fast
from ct_assets.lib.provenance import STAGE_LOGIC, module_code_version
from ct_assets.resources import StudyDesign


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
    ins={
        "visits": dg.AssetIn(keys.PROCESSED_VISITS),
        "dm": dg.AssetIn(keys.validated("DM")),
        "ex": dg.AssetIn(keys.validated("EX")),
    },
    check_specs=[dg.AssetCheckSpec("features_schema", asset=keys.SUBJECT_FEATURES, blocking=True,
                                   description="one row per pseudonym, numeric features, no raw subject id (pandera)")],
    description="Per subject: demographics, exposure and baseline / last / change / slope of every test in the "
    "first days on study, plus abnormal-result counts. Keyed by pseudonym.",
)
def subject_features(context: dg.AssetExecutionContext, study_design: StudyDesign, visits: pd.DataFrame, dm: pd.DataFrame,
                     ex: pd.DataFrame):
    with fails_fast():
        features = build_features(visits, dm, ex, study_design.landmark_day)
    # Enrollment cohorts become partitions of the feature store, for backfills.
    cohorts = sorted(dm.loc[dm["RFSTDTC"].notna(), "RFSTDTC"].astype(str).str.slice(0, 7).unique())
    known = set(context.instance.get_dynamic_partitions("enrollment_cohorts"))
    if new := [c for c in cohorts if c not in known]:
        context.instance.add_dynamic_partitions("enrollment_cohorts", new)
    numeric = features.select_dtypes("number")
    missing = numeric.isna().mean().sort_values(ascending=False)
    yield dg.Output(
        features,
        metadata={
            "dagster/row_count": len(features),
            "features": len(features.columns) - 1,
            "landmark_day": study_design.landmark_day,
            "cohorts": len(cohorts),
            "mean_missing_share": round(float(missing.mean()), 4) if len(missing) else 0.0,
            "most_missing": dg.MetadataValue.md(
                "| feature | missing |\n|---|---|\n" + "\n".join(f"| {k} | {v:.0%} |" for k, v in missing.head(8).items())
            ),
        },
    )
    yield schema_check(features)


def schema_check(features: pd.DataFrame) -> dg.AssetCheckResult:
    """FEATURES_SCHEMA on the store (pandera, loaded here rather than with the code location)."""
    from pandera.errors import SchemaErrors

    from ct_assets.quality.schemas import FEATURES_SCHEMA

    try:
        FEATURES_SCHEMA.validate(features, lazy=True)
        return dg.AssetCheckResult(check_name="features_schema", passed=True, metadata={"columns": len(features.columns)})
    except SchemaErrors as err:
        cases = err.failure_cases
        failed = sorted({f"{c}: {k}" for c, k in zip(cases["column"].astype(str), cases["check"].astype(str))})
        return dg.AssetCheckResult(check_name="features_schema", passed=False,
                                   metadata={"failures": len(cases), "rules": "; ".join(failed)[:1000]})
