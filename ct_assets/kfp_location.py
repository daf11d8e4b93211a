"""A third code location: the Kubeflow Pipelines of ``kfp/`` (package ``ct_kfp``) as Dagster assets.

Kept apart from the main location so that materializing the main graph does not also run the
hyperparameter search; both share one Dagster instance, so ``hpo_search`` and ``cluster_training``
appear in the lineage downstream of ``training_set``.

    dagster asset materialize -m ct_assets.kfp_location --select hpo_search
    KFP_HOST=https://kfp.example.org dagster asset materialize -m ct_assets.kfp_location --select hpo_search
"""

import dagster as dg

from ct_assets.resources import build_resources
from ct_assets.training.kfp_assets import KfpPipelines, cluster_training, hpo_search

kfp_training = dg.define_asset_job(
    "kfp_training", selection=[hpo_search, cluster_training],
    description="Hyperparameter search and cluster training on Kubeflow Pipelines (kfp.local unless KFP_HOST is set).",
)

defs = dg.Definitions(
    assets=[hpo_search, cluster_training],
    jobs=[kfp_training],
    resources=build_resources() | {"kfp": KfpPipelines()},
    executor=dg.in_process_executor,
)
