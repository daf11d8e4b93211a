"""The Kubeflow Pipelines of ``ct_kfp`` as a Dagster code location: hyperparameter search and cluster
training as assets.

Kept apart from the main location so that materializing the main graph does not also run the
hyperparameter search; both share one Dagster instance, so ``hpo_search`` and ``cluster_training``
appear in the lineage downstream of ``training_set``. It lives in ``ct_kfp`` (which depends on
``ct_assets``, never the reverse). The ``kfp`` resource runs a pipeline here through ``kfp.local`` by
default, or submits it with ``kfp.Client`` to the KFP host it is given (or ``$KFP_HOST``) and waits;
either way the run id and its URL land in the asset's metadata.

    dagster asset materialize -m ct_kfp.location --select hpo_search
    KFP_HOST=https://kfp.example.org dagster asset materialize -m ct_kfp.location --select hpo_search
"""

import json
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from ct_assets import settings
from ct_assets.defs import keys
from ct_assets.defs.profiles import profile_resources
from ct_assets.defs.resources import MlflowSettings, StudySource


class KfpPipelines(dg.ConfigurableResource):
    """Where the KFP pipelines run: locally through kfp.local, or on a KFP cluster."""

    host: str | None = Field(default=None, description="KFP API endpoint; default $KFP_HOST; unset: run locally.")
    namespace: str | None = Field(default=None, description="Kubeflow profile namespace (multi-user clusters).")
    experiment: str = Field(default="clinical-trials", description="KFP experiment of the submitted runs.")
    timeout_s: int = Field(default=7200, description="How long to wait for a cluster run (legacy task timeout: 2 h).")

    def target(self) -> str | None:
        return self.host or settings.kfp_host()

    def run(self, context: dg.AssetExecutionContext, name: str, arguments: dict[str, Any]):
        from ct_kfp.runner import run_local, submit

        host = self.target()
        context.log.info(f"KFP pipeline {name} {'on ' + host if host else 'locally (kfp.local)'}")
        if host:
            result = submit(name, arguments, host=host, namespace=self.namespace, experiment=self.experiment,
                            timeout_s=self.timeout_s)
        else:
            result = run_local(name, arguments)
        context.log.info(f"KFP run {result.run_id}: {result.state} ({result.url})")
        if result.state != "SUCCEEDED":
            raise dg.Failure(f"KFP run {result.run_id} ended {result.state}", metadata={"kfp_run_url": dg.MetadataValue.url(result.url)})
        return result


def _arguments(kfp: KfpPipelines, study: StudySource, mlflow_settings: MlflowSettings) -> dict[str, Any]:
    # Locally the pipeline uses this instance's study and MLflow store; on a cluster the pods read
    # the study folder and MLflow server they are configured with, unless a server URL is given here.
    if kfp.target() is None:
        # The configured folder only: empty means the bundled study, which the components find themselves
        # (kfp.local rewrites 'python3' inside every argument, which would break a site-packages path).
        chosen = study.study_dir or settings.study_dir() or ""
        return {"study_dir": chosen, "mlflow_tracking_uri": mlflow_settings.uri()}
    uri = mlflow_settings.uri()
    return {"study_dir": study.study_dir or "", "mlflow_tracking_uri": uri if uri.startswith("http") else ""}


def _run_md(result) -> dict[str, Any]:
    return {"kfp_run_id": result.run_id, "kfp_run_url": dg.MetadataValue.url(result.url), "kfp_state": result.state}


class HpoConfig(dg.Config):
    min_auroc: float = Field(default=0.6, description="Champion gate of the registered best model.")


@dg.asset(
    key=keys.HPO_SEARCH,
    group_name="training",
    kinds={"kubeflow", "mlflow"},
    pool="model_training",
    deps=[keys.TRAINING_SET],
    description="Grid search of hpo_pipeline (KFP ParallelFor + Collected); the best trial against the default "
    "hyperparameters on the holdout, registered as challenger. MLflow: one parent run, a child run per trial.",
)
def hpo_search(context: dg.AssetExecutionContext, config: HpoConfig, kfp: KfpPipelines, study: StudySource,
               mlflow_settings: MlflowSettings) -> dg.Output[dict]:
    result = kfp.run(context, "hpo", _arguments(kfp, study, mlflow_settings) | {"min_auroc": config.min_auroc})
    metadata: dict[str, Any] = _run_md(result)
    record: dict[str, Any] = {"kfp_run_id": result.run_id, "kfp_run_url": result.url}
    if result.output:  # local runs return the comparison; cluster runs keep it in MLflow and the KFP UI
        out = dict(result.output)
        client = mlflow_settings.client()
        parent = client.get_run(out["parent_run_id"])
        trials = json.loads(Path(client.download_artifacts(parent.info.run_id, "trials.json")).read_text())
        record |= out | {"best_params": json.loads(parent.data.tags["best_params"]), "trials": trials}
        metadata |= {
            "mlflow_parent_run_id": out["parent_run_id"],
            "best_params": dg.MetadataValue.json(record["best_params"]),
            "best_cv_auroc": round(parent.data.metrics["best_cv_auroc"], 4),
            "selected_cv_auroc": round(parent.data.metrics["selected_cv_auroc"], 4),
            "holdout_auroc_best": round(out["holdout_auroc_best"], 4),
            "holdout_auroc_default": round(out["holdout_auroc_default"], 4),
            "holdout_auroc_gain": round(out["holdout_auroc_gain"], 4),
            "trials": dg.MetadataValue.md("| params | CV AUROC | SE |\n|---|---|---|\n" + "\n".join(
                f"| {json.dumps(t['params'])} | {t['cv_auroc']:.4f} | {t['cv_auroc_se']:.4f} |" for t in trials)),
        }
        context.log.info(f"best {record['best_params']}: holdout AUROC {out['holdout_auroc_best']:.3f} "
                         f"vs default {out['holdout_auroc_default']:.3f}")
    return dg.Output(record, metadata=metadata)


@dg.asset(
    key=keys.CLUSTER_TRAINING,
    group_name="training",
    kinds={"kubeflow", "mlflow"},
    pool="model_training",
    deps=[keys.TRAINING_SET],
    description="training_pipeline on Kubeflow (locally through kfp.local): validate, features, train, evaluate, "
    "register as challenger.",
)
def cluster_training(context: dg.AssetExecutionContext, kfp: KfpPipelines, study: StudySource,
                     mlflow_settings: MlflowSettings) -> dg.Output[dict]:
    result = kfp.run(context, "training", _arguments(kfp, study, mlflow_settings))
    record = {"kfp_run_id": result.run_id, "kfp_run_url": result.url, "gate_passed": result.output}
    return dg.Output(record, metadata=_run_md(result) | ({"gate_passed": bool(result.output)} if result.output is not None else {}))


kfp_training = dg.define_asset_job(
    "kfp_training", selection=[hpo_search, cluster_training],
    description="Hyperparameter search and cluster training on Kubeflow Pipelines (kfp.local unless KFP_HOST is set).",
)

defs = dg.Definitions(
    assets=[hpo_search, cluster_training],
    jobs=[kfp_training],
    resources=profile_resources() | {"kfp": KfpPipelines()},
    executor=dg.in_process_executor,
)
