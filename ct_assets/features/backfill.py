"""Feature backfill: the offline store by enrollment cohort (month of first dose), as partitions.

After a correction (a fixed lab file, a changed window), backfill a range of cohorts from the UI
or the CLI; each partition recomputes its subjects' features with the same function as
``subject_features``, replaces exactly those rows of the offline store, verifies the count against
DM and reports what changed.

    dagster asset materialize -m ct_assets.backfill_location --select feature_store_cohorts \
        --partition-range 2013-07...2013-09
"""

import dagster as dg
import numpy as np
import pandas as pd

from ct_assets import keys
from ct_assets.features.assets import FeatureConfig
from ct_assets.features.logic import subject_features as build_features
from ct_assets.lib.lake import locked, write_parquet
from ct_assets.lib.metadata import table_md
from ct_assets.lib.privacy import SUBJECT_KEY
from ct_assets.resources import Lake

COHORTS = dg.DynamicPartitionsDefinition(name="enrollment_cohorts")


def cohort_of(dm: pd.DataFrame) -> pd.Series:
    return dm["RFSTDTC"].astype("string").str.slice(0, 7)


def compare(old: pd.DataFrame, new: pd.DataFrame) -> dict:
    """Subjects added, removed and changed between two versions of the same partition."""
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


@dg.asset(
    key=keys.FEATURE_STORE_COHORTS, group_name="features", kinds={"parquet"}, partitions_def=COHORTS,
    deps=[keys.PROCESSED_VISITS, keys.validated("DM"), keys.validated("EX"), keys.SUBJECT_FEATURES],
    backfill_policy=dg.BackfillPolicy.single_run(),  # a range is one run: the store is rewritten once
    pool="feature_engineering",
    description="The offline feature store, one partition per enrollment cohort, for backfills after a correction.",
)
def feature_store_cohorts(context: dg.AssetExecutionContext, config: FeatureConfig, lake: Lake) -> dg.MaterializeResult:
    chosen = list(context.partition_keys)
    all_dm = pd.read_parquet(lake.path_for("validated_dm"))
    dm = all_dm[cohort_of(all_dm).isin(chosen) & all_dm["RFSTDTC"].notna()]
    members = set(dm[SUBJECT_KEY])
    visits = pd.read_parquet(lake.path_for("processed_visits"))
    ex = pd.read_parquet(lake.path_for("validated_ex"))
    fresh = build_features(visits[visits[SUBJECT_KEY].isin(members)], dm, ex[ex[SUBJECT_KEY].isin(members)], config.window_days)
    if len(fresh) != len(members):  # verify_feature_store
        raise RuntimeError(f"cohorts {chosen}: {len(fresh)} feature rows for {len(members)} subjects in DM")
    store_path = lake.path_for("subject_features")
    with locked(store_path):
        store = pd.read_parquet(store_path)
        old = store[store[SUBJECT_KEY].isin(members)]
        updated = pd.concat([store[~store[SUBJECT_KEY].isin(members)], fresh], ignore_index=True)
        updated = updated.reindex(columns=store.columns.union(fresh.columns, sort=False))
        write_parquet(updated.sort_values(SUBJECT_KEY, ignore_index=True), store_path)
    cohort = cohort_of(dm).set_axis(dm[SUBJECT_KEY]).reindex(fresh[SUBJECT_KEY]).to_numpy()
    rows = []
    for key in chosen:
        part, before = fresh[cohort == key], old[old[SUBJECT_KEY].isin(fresh.loc[cohort == key, SUBJECT_KEY])]
        write_parquet(part, store_path.parent / "cohorts" / f"cohort={key}.parquet")
        rows.append({"cohort": key, "subjects": len(part)} | compare(before, part))
    report = pd.DataFrame(rows).drop(columns=["changed_features"])
    diff = compare(old, fresh)
    context.log.info(f"{len(chosen)} cohorts, {len(fresh)} subjects, {diff['changed_subjects']} changed")
    return dg.MaterializeResult(metadata={
        "cohorts": len(chosen), "subjects": len(fresh), "added": diff["added"], "removed": diff["removed"],
        "changed_subjects": diff["changed_subjects"], "max_abs_change": round(diff["max_abs_change"], 6),
        "by_cohort": table_md(report),
        "changed_features": table_md(pd.DataFrame(list(diff["changed_features"].items()), columns=["feature", "subjects"])),
    })
