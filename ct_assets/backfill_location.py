"""A second code location for the partitioned feature store and the feature_backfill job.

Kept apart so that the main location has no partitioned asset: `dagster asset materialize -m
ct_assets --select '*'` then needs no partition key. Both locations share one Dagster instance, so
the cohort partitions registered by `subject_features` show up here, and the upstream assets of
the main location appear in this location's lineage.

    dagster asset materialize -m ct_assets.backfill_location --select feature_store_cohorts --partition 2013-07
"""

import dagster as dg

from ct_assets.features.backfill import feature_store_cohorts
from ct_assets.jobs import LEGACY_TASKS, SELECTIONS
from ct_assets.resources import build_resources

feature_backfill = dg.define_asset_job(
    "feature_backfill", selection=SELECTIONS["feature_backfill"], partitions_def=feature_store_cohorts.partitions_def,
    description="Recompute selected feature-store partitions (enrollment cohorts) after a correction.",
    tags={"ct/legacy_dag": "feature_backfill"},
)
assert "feature_backfill" in LEGACY_TASKS

defs = dg.Definitions(
    assets=[feature_store_cohorts],
    jobs=[feature_backfill],
    resources=build_resources(),
    executor=dg.in_process_executor,
)
