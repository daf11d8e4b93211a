"""A second code location for the partitioned feature store and the feature_backfill job.

Kept apart so that the main location has no partitioned asset: `dagster asset materialize -m
ct_assets --select '*'` then needs no partition key. Both locations share one Dagster instance, so
the cohort partitions registered by `subject_features` show up here, and the upstream assets of
the main location appear in this location's lineage.

    dagster asset materialize -m ct_assets.locations.backfill --select '*' --partition 2013-07
"""

import dagster as dg

from ct_assets.defs.jobs import LEGACY_TASKS, SELECTIONS
from ct_assets.defs.profiles import profile_resources
from ct_assets.locations.backfill_assets import COHORTS, backfill_assets, backfill_checks

feature_backfill = dg.define_asset_job(
    "feature_backfill", selection=SELECTIONS["feature_backfill"], partitions_def=COHORTS,
    description="Recompute selected feature-store partitions (enrollment cohorts) after a correction.",
    tags={"ct/legacy_dag": "feature_backfill"},
)
assert "feature_backfill" in LEGACY_TASKS

defs = dg.Definitions(
    assets=backfill_assets,
    asset_checks=backfill_checks,
    jobs=[feature_backfill],
    resources=profile_resources(),
    executor=dg.in_process_executor,
)
