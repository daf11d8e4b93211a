"""Feature backfill: the offline store by enrollment cohort (month of first dose), as partitions.

After a correction of the data (a fixed lab file, a re-sent batch), backfill a range of cohorts from the UI
or the CLI. One stage per legacy task, each partitioned by cohort, a range being one run:

    backfill_inputs        extract_historical_data   the cohorts' subjects, visits and exposure, staged
      inputs_valid         validate_historical_data  (blocking check)
    backfill_features      engineer_features         same function as ``subject_features``
      features_valid       validate_features         (blocking check)
    feature_store_cohorts  load_to_feature_store     replaces exactly those rows of the offline store
      store_verified       verify_feature_store      (blocking check)
    backfill_report        generate_backfill_report  what changed, per cohort

    dagster asset materialize -m ct_assets.locations.backfill --select '*' --partition-range 2013-07...2013-09
"""

from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from ct_assets.core.lake import locked, read_json, write_json, write_parquet
from ct_assets.core.privacy import SUBJECT_KEY
from ct_assets.defs import keys
from ct_assets.defs.features import require_landmark
from ct_assets.defs.frames import Frame
from ct_assets.defs.metadata import table_md
from ct_assets.defs.resources import FeatureStore, Lake, StudyDesign

if TYPE_CHECKING:
    import pandas as pd

COHORTS = dg.DynamicPartitionsDefinition(name="enrollment_cohorts")


def cohort_of(dm: Frame) -> "pd.Series":
    return dm["RFSTDTC"].astype("string").str.slice(0, 7)


def compare(old: Frame, new: Frame) -> dict:
    """Subjects added, removed and changed between two versions of the same partition (values only: a
    recomputation always has a new creation time)."""
    import numpy as np
    import pandas as pd

    from ct_assets.adapters.feature_store import without_timestamps

    old, new = without_timestamps(old), without_timestamps(new)

    old_i, new_i = old.set_index(SUBJECT_KEY), new.set_index(SUBJECT_KEY)
    common = old_i.index.intersection(new_i.index)
    cols = [c for c in new_i.columns if c in old_i.columns]
    a, b = old_i.loc[common, cols], new_i.loc[common, cols]
    num = [c for c in cols if pd.api.types.is_numeric_dtype(b[c])]
    delta = (a[num] - b[num]).abs()
    differs = ~((a == b) | (a.isna() & b.isna()))
    changed_subjects = int(differs.any(axis=1).sum())
    changed_cols = differs.sum().sort_values(ascending=False)
    return {"added": int(len(new_i.index.difference(old_i.index))), "removed": int(len(old_i.index.difference(new_i.index))),
            "changed_subjects": changed_subjects, "max_abs_change": float(np.nanmax(delta.to_numpy())) if delta.size else 0.0,
            "changed_features": changed_cols[changed_cols > 0].head(10).to_dict()}


COMMON = dict(group_name="features", partitions_def=COHORTS, backfill_policy=dg.BackfillPolicy.single_run())


def _stage(lake: Lake) -> Path:
    """The staging folder the stages of one backfill hand over through (one backfill at a time)."""
    return lake.path_for("subject_features").parent / "backfill"


def _staged(lake: Lake, name: str) -> Frame:
    import pandas as pd

    return pd.read_parquet(_stage(lake) / f"{name}.parquet")


def _check_stage(lake: Lake, partition_keys: list[str]) -> dict:
    manifest = read_json(_stage(lake) / "manifest.json")
    if manifest["cohorts"] != partition_keys:
        raise RuntimeError(f"staged inputs are for cohorts {manifest['cohorts']}, this run is for {partition_keys}: "
                           "materialize backfill_inputs (extract_historical_data) for the same range first")
    return manifest


@dg.asset(key=keys.BACKFILL_INPUTS, kinds={"parquet"}, **COMMON,
          deps=[keys.PROCESSED_VISITS, keys.validated("DM"), keys.validated("EX"), keys.SUBJECT_FEATURES],
          description="extract_historical_data: the chosen cohorts' DM rows, processed visits and exposure, staged.")
def backfill_inputs(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
    import pandas as pd

    chosen = sorted(context.partition_keys)
    all_dm = pd.read_parquet(lake.path_for("validated_dm"))
    dm = all_dm[cohort_of(all_dm).isin(chosen) & all_dm["RFSTDTC"].notna()]
    members = set(dm[SUBJECT_KEY])
    visits = pd.read_parquet(lake.path_for("processed_visits"))
    ex = pd.read_parquet(lake.path_for("validated_ex"))
    stage = _stage(lake)
    write_parquet(dm, stage / "dm.parquet")
    write_parquet(visits[visits[SUBJECT_KEY].isin(members)], stage / "visits.parquet")
    write_parquet(ex[ex[SUBJECT_KEY].isin(members)], stage / "ex.parquet")
    write_json({"cohorts": chosen, "run_id": context.run.run_id}, stage / "manifest.json")
    by_cohort = cohort_of(dm).value_counts().reindex(chosen, fill_value=0).rename_axis("cohort").reset_index(name="subjects")
    return dg.MaterializeResult(metadata={"cohorts": len(chosen), "subjects": len(members), "by_cohort": table_md(by_cohort)})


@dg.asset_check(asset=keys.BACKFILL_INPUTS, blocking=True, description="validate_historical_data: every chosen cohort has "
                "subjects, each once, and every staged visit and dose belongs to one of them")
def inputs_valid(lake: Lake) -> dg.AssetCheckResult:
    manifest = read_json(_stage(lake) / "manifest.json")
    dm, visits, ex = _staged(lake, "dm"), _staged(lake, "visits"), _staged(lake, "ex")
    subjects = set(dm[SUBJECT_KEY])
    empty = sorted(set(manifest["cohorts"]) - set(cohort_of(dm)))
    problems = {
        "cohorts_without_subjects": len(empty),
        "duplicate_subjects": int(dm[SUBJECT_KEY].duplicated().sum()),
        "visits_of_unknown_subjects": int((~visits[SUBJECT_KEY].isin(subjects)).sum()),
        "doses_of_unknown_subjects": int((~ex[SUBJECT_KEY].isin(subjects)).sum()),
        "raw_subject_ids": int(sum("USUBJID" in f.columns for f in (dm, visits, ex))),
    }
    return dg.AssetCheckResult(passed=not any(problems.values()), metadata=problems | {"empty_cohorts": ", ".join(empty) or "none"})


@dg.asset(key=keys.BACKFILL_FEATURES, kinds={"pandas"}, deps=[keys.BACKFILL_INPUTS], pool="feature_engineering", **COMMON,
          description="engineer_features: the staged cohorts' features, with the same function as subject_features.")
def backfill_features(context: dg.AssetExecutionContext, study_design: StudyDesign, lake: Lake) -> dg.MaterializeResult:
    from ct_assets.adapters.feature_store import stamp
    from ct_assets.core.features import subject_features as build_features

    _check_stage(lake, sorted(context.partition_keys))
    require_landmark(context.instance, study_design)  # the store's other cohorts use the same landmark
    dm = _staged(lake, "dm")
    fresh = stamp(build_features(_staged(lake, "visits"), dm, _staged(lake, "ex"), study_design.landmark_day), dm,
                  study_design.landmark_day)
    write_parquet(fresh, _stage(lake) / "features.parquet")
    return dg.MaterializeResult(metadata={"subjects": len(fresh), "features": len(fresh.columns) - 1,
                                          "landmark_day": study_design.landmark_day})


@dg.asset_check(asset=keys.BACKFILL_FEATURES, blocking=True, description="validate_features: one row per staged subject, "
                "the offline store's columns, no raw subject id, no infinite value")
def features_valid(lake: Lake) -> dg.AssetCheckResult:
    import numpy as np
    import pyarrow.parquet as pq

    fresh, dm = _staged(lake, "features"), _staged(lake, "dm")
    store_columns = set(pq.read_schema(lake.path_for("subject_features")).names)
    numeric = fresh.select_dtypes("number").to_numpy(dtype=float)
    problems = {
        "rows_minus_subjects": len(fresh) - dm[SUBJECT_KEY].nunique(),
        "missing_subjects": len(set(dm[SUBJECT_KEY]) - set(fresh[SUBJECT_KEY])),
        "columns_not_in_store": len(set(fresh.columns) - store_columns),
        "store_columns_missing": len(store_columns - set(fresh.columns)),
        "raw_subject_ids": int("USUBJID" in fresh.columns),
        "infinite_values": int(np.isinf(numeric).sum()),
    }
    return dg.AssetCheckResult(passed=not any(problems.values()), metadata=problems)


@dg.asset(key=keys.FEATURE_STORE_COHORTS, kinds={"parquet"}, deps=[keys.BACKFILL_FEATURES], pool="feature_engineering",
          **COMMON, description="load_to_feature_store: replaces exactly the staged cohorts' rows of the offline store "
                               "and writes exactly those subjects to the online store; one Parquet file per cohort.")
def feature_store_cohorts(context: dg.AssetExecutionContext, lake: Lake, feature_store: FeatureStore) -> dg.MaterializeResult:
    import pandas as pd

    from ct_assets.adapters import feature_store as fs

    chosen = _check_stage(lake, sorted(context.partition_keys))["cohorts"]
    fresh, dm = _staged(lake, "features"), _staged(lake, "dm")
    members = set(dm[SUBJECT_KEY])
    store_path = lake.path_for("subject_features")
    with locked(store_path):
        store = pd.read_parquet(store_path)
        write_parquet(store[store[SUBJECT_KEY].isin(members)], _stage(lake) / "previous.parquet")
        updated = pd.concat([store[~store[SUBJECT_KEY].isin(members)], fresh], ignore_index=True)
        write_parquet(updated[store.columns].sort_values(SUBJECT_KEY, ignore_index=True), store_path)
    cohort = cohort_of(dm).set_axis(dm[SUBJECT_KEY]).reindex(fresh[SUBJECT_KEY]).to_numpy()
    for key in chosen:
        write_parquet(fresh[cohort == key], store_path.parent / "cohorts" / f"cohort={key}.parquet")
    s = feature_store.store_settings()
    online = feature_store.store()
    fs.apply(online, s)
    fs.write_online(online, fresh)
    context.log.info(f"{len(chosen)} cohorts, {len(fresh)} subjects replaced in the offline and online stores")
    return dg.MaterializeResult(metadata={"cohorts": len(chosen), "subjects": len(fresh), "store_rows": len(updated),
                                          "online_rows_written": len(fresh),
                                          "online_store": feature_store.online_kind()})


@dg.asset_check(asset=keys.FEATURE_STORE_COHORTS, blocking=True, description="verify_feature_store: every subject once in "
                "the store, the staged subjects with their new values offline and online, each cohort file counted "
                "against DM")
def store_verified(lake: Lake, feature_store: FeatureStore) -> dg.AssetCheckResult:
    import pandas as pd
    import pyarrow.parquet as pq

    from ct_assets.adapters import feature_store as fs

    manifest = read_json(_stage(lake) / "manifest.json")
    fresh, dm = _staged(lake, "features"), _staged(lake, "dm")
    store_path = lake.path_for("subject_features")
    store = pd.read_parquet(store_path)
    loaded = store[store[SUBJECT_KEY].isin(set(fresh[SUBJECT_KEY]))].set_index(SUBJECT_KEY).sort_index()
    expected = fresh.set_index(SUBJECT_KEY).sort_index()[loaded.columns]
    counts = cohort_of(dm).value_counts()
    files = {k: pq.read_metadata(store_path.parent / "cohorts" / f"cohort={k}.parquet").num_rows for k in manifest["cohorts"]}
    problems = {
        "duplicate_subjects": int(store[SUBJECT_KEY].duplicated().sum()),
        "staged_subjects_missing": len(expected) - len(loaded),
        "values_differ": int(not loaded.equals(expected)),
        "cohort_files_miscounted": int(sum(files[k] != counts.get(k, 0) for k in files)),
    }
    online = fs.verify_online(feature_store.store(), feature_store.store_settings(), fresh, sample=len(fresh))
    problems |= {"staged_subjects_missing_online": len(fresh) - online["found"],
                 "online_timestamps_differ": online["stale"], "online_features_differ": len(online["differing_features"])}
    return dg.AssetCheckResult(passed=not any(problems.values()), metadata=problems | {"store_rows": len(store)})


@dg.asset(key=keys.BACKFILL_REPORT, kinds={"pandas"}, deps=[keys.FEATURE_STORE_COHORTS], **COMMON,
          description="generate_backfill_report: subjects added, removed and changed per cohort, and which features moved.")
def backfill_report(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
    import pandas as pd

    chosen = _check_stage(lake, sorted(context.partition_keys))["cohorts"]
    old, fresh, dm = _staged(lake, "previous"), _staged(lake, "features"), _staged(lake, "dm")
    cohort = cohort_of(dm).set_axis(dm[SUBJECT_KEY])
    rows = []
    for key in chosen:
        members = set(cohort.index[cohort == key])
        part = compare(old[old[SUBJECT_KEY].isin(members)], fresh[fresh[SUBJECT_KEY].isin(members)])
        rows.append({"cohort": key, "subjects": len(members)} | part)
    report = pd.DataFrame(rows).drop(columns=["changed_features"])
    diff = compare(old, fresh)
    write_json({"cohorts": chosen, "by_cohort": report.to_dict(orient="records")} | diff, _stage(lake) / "report.json")
    context.log.info(f"{len(chosen)} cohorts, {len(fresh)} subjects, {diff['changed_subjects']} changed")
    return dg.MaterializeResult(metadata={
        "cohorts": len(chosen), "subjects": len(fresh), "added": diff["added"], "removed": diff["removed"],
        "changed_subjects": diff["changed_subjects"], "max_abs_change": round(diff["max_abs_change"], 6),
        "by_cohort": table_md(report),
        "changed_features": table_md(pd.DataFrame(list(diff["changed_features"].items()), columns=["feature", "subjects"])),
    })


backfill_assets = [backfill_inputs, backfill_features, feature_store_cohorts, backfill_report]
backfill_checks = [inputs_valid, features_valid, store_verified]
