"""KFP v2 components: typed artifacts in and out, the work done by ``ct_kfp.steps``.

Each component is a lightweight Python component whose body imports the project, so the image
(``kfp/Dockerfile``) holds the project and its pinned dependencies; the KFP SDK is in that image
too (``install_kfp_package=False``: nothing is pip-installed when a pod starts). Locally,
``kfp.local.SubprocessRunner(use_venv=False)`` runs the same bodies with this venv's Python.

No ``from __future__ import annotations`` here: KFP reads the real annotation objects.
"""

import functools

from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from ct_assets import settings
from kfp import dsl

# Built from kfp/Dockerfile and pushed by the cluster operator; override with CT_KFP_IMAGE at compile time.
IMAGE = settings.kfp_image()

component = functools.partial(dsl.component, base_image=IMAGE, install_kfp_package=False)


@component
def data_validation(study_dir: str, validated: Output[Dataset], quarantine: Output[Dataset],
                    metrics: Output[Metrics]) -> float:
    """SDTM domains through the pandera rules: validated (pseudonymised) and quarantined rows."""
    from ct_kfp import steps

    report = steps.validate_study(study_dir, validated.path, quarantine.path)
    for name in ("rows", "validated", "quarantined", "quality_score"):
        metrics.log_metric(name, report[name])
    for domain, counts in report["domains"].items():
        metrics.log_metric(f"{domain}_quarantined", counts["quarantined"])
        validated.metadata[domain] = counts["validated"]
        quarantine.metadata[domain] = counts["quarantined"]
    return report["quality_score"]


@component
def feature_engineering(validated: Input[Dataset], landmark_day: int, holdout_fraction: float,
                        features: Output[Dataset], training_set: Output[Dataset], metrics: Output[Metrics]):
    """Spark visits job, subject features of the first ``landmark_day`` and the labelled training set."""
    from ct_kfp import steps

    report = steps.engineer_features(validated.path, features.path, training_set.path, landmark_day,
                                     holdout_fraction=holdout_fraction)
    for name, value in report.items():
        metrics.log_metric(name, value)
    training_set.metadata.update(report)


@component
def train_model(training_set: Input[Dataset], params: dict, mlflow_tracking_uri: str, experiment: str,
                run_name: str, parent_run_id: str, model: Output[Model], metrics: Output[Metrics]) -> str:
    """Fit the classifier; an MLflow run with params, CV metrics, dataset and model. Returns the run id."""
    from ct_kfp import steps

    record = steps.train(training_set.path, params, model.path, mlflow_tracking_uri, experiment, run_name, parent_run_id)
    model.metadata.update({"mlflow_run_id": record["run_id"], "model_uri": record["model_uri"], "params": record["params"]})
    for name, value in record["metrics"].items():
        metrics.log_metric(name, value)
    return record["run_id"]


@component
def evaluate_model(model: Input[Model], training_set: Input[Dataset], mlflow_tracking_uri: str,
                   metrics: Output[Metrics], roc: Output[ClassificationMetrics], report: Output[Markdown]) -> float:
    """Holdout AUROC, AUPRC, Brier, subgroups and calibration; logged to the model's MLflow run."""
    import os

    from ct_kfp import steps

    plot = os.path.join(os.path.dirname(report.path), "calibration.png")
    result = steps.evaluate(model.path, training_set.path, mlflow_tracking_uri, model.metadata["mlflow_run_id"], plot)
    for name, value in result["metrics"].items():
        metrics.log_metric(name, value)
    fpr, tpr, thresholds = steps.roc_points(model.path, training_set.path)
    roc.log_roc_curve(fpr, tpr, thresholds)
    steps.write_text(report.path, steps.evaluation_markdown(result))
    return result["metrics"]["auroc"]


@component
def register_model(model: Input[Model], training_set: Input[Dataset], holdout_auroc: float, mlflow_tracking_uri: str,
                   model_name: str, min_auroc: float, tolerance: float, registration: Output[Artifact]) -> bool:
    """A registry version with alias challenger; returns whether it passes the champion gate."""
    from ct_kfp import steps

    record = steps.register(model.metadata["model_uri"], training_set.path, mlflow_tracking_uri, model_name,
                            holdout_auroc, min_auroc, tolerance, {"orchestrator": "kfp"})
    steps.write_json(record, registration.path)
    registration.metadata.update({k: v for k, v in record.items() if v is not None})
    return record["gate_passed"]


@component
def deploy_model(model_name: str, mlflow_tracking_uri: str, traffic_share: float, endpoint: str,
                 deployment: Output[Artifact]) -> str:
    """The deployment record and a KServe InferenceService manifest routing ``traffic_share`` to the challenger."""
    from ct_kfp import steps

    record = steps.deploy(model_name, mlflow_tracking_uri, traffic_share, endpoint, deployment.path)
    deployment.metadata.update({k: v for k, v in record.items() if not isinstance(v, dict)})
    return str(record["challenger_version"])


@component
def canary_check(deployment: Input[Artifact], training_set: Input[Dataset], mlflow_tracking_uri: str,
                 tolerance: float, metrics: Output[Metrics]) -> str:
    """Route the holdout subjects as the canary would; 'promote' or 'rollback'."""
    from ct_kfp import steps

    verdict = steps.canary_check(deployment.path, training_set.path, mlflow_tracking_uri, tolerance)
    for name, value in verdict["metrics"].items():
        metrics.log_metric(name, value)
    return verdict["decision"]


@component
def promote_model(deployment: Input[Artifact], mlflow_tracking_uri: str) -> str:
    """Alias switch: the challenger becomes champion, the old champion becomes previous_champion."""
    from ct_kfp import steps

    return steps.promote_canary(deployment.path, mlflow_tracking_uri)


@component
def rollback_model(deployment: Input[Artifact], mlflow_tracking_uri: str) -> str:
    """All traffic back to the champion; the challenger version is tagged as rolled back."""
    from ct_kfp import steps

    return steps.rollback_canary(deployment.path, mlflow_tracking_uri)


@component
def ab_test(training_set: Input[Dataset], mlflow_tracking_uri: str, model_name: str, alpha: float,
            n_resamples: int, metrics: Output[Metrics], report: Output[Markdown]) -> str:
    """Champion against challenger on the same holdout subjects: paired permutation test of AUROC."""
    from ct_kfp import steps

    result = steps.holdout_ab_test(training_set.path, mlflow_tracking_uri, model_name, alpha, n_resamples)
    for name, value in result["metrics"].items():
        metrics.log_metric(name, value)
    steps.write_text(report.path, result["markdown"])
    return result["decision"]


@component
def hpo_start(mlflow_tracking_uri: str, experiment: str, search_space: list, search: Output[Artifact]) -> str:
    """The parent MLflow run of a search; trials log child runs under it. Returns its run id, also
    carried by the ``search`` artifact for the tasks inside the ParallelFor (kfp.local 2.17.0 hands
    a loop's tasks the loop item in place of any upstream *parameter*; artifacts arrive intact)."""
    from ct_kfp import steps

    run_id = steps.hpo_start(mlflow_tracking_uri, experiment, search_space)
    steps.write_json({"parent_run_id": run_id, "search_space": search_space}, search.path)
    search.metadata["parent_run_id"] = run_id
    return run_id


@component
def hpo_trial(training_set: Input[Dataset], params: dict, mlflow_tracking_uri: str, search: Input[Artifact]) -> dict:
    """One point of the search space: cross-validated AUROC on the train split, as a child run."""
    from ct_kfp import steps

    return steps.hpo_trial(training_set.path, params, mlflow_tracking_uri, search.metadata["parent_run_id"])


@component
def hpo_select(trials: list, search_space: list, mlflow_tracking_uri: str, parent_run_id: str,
               trials_table: Output[Markdown]) -> dict:
    """The selected trial (one-standard-error rule over the simplest-first search space); logged to the parent run."""
    from ct_kfp import steps

    best, markdown = steps.hpo_select(trials, mlflow_tracking_uri, parent_run_id, search_space)
    steps.write_text(trials_table.path, markdown)
    return best


@component
def hpo_compare(best_auroc: float, default_auroc: float, mlflow_tracking_uri: str, parent_run_id: str,
                metrics: Output[Metrics]) -> dict:
    """Holdout AUROC of the best trial against the default hyperparameters; closes the parent run."""
    from ct_kfp import steps

    result = steps.hpo_compare(best_auroc, default_auroc, mlflow_tracking_uri, parent_run_id)
    for name, value in result.items():
        metrics.log_metric(name, value)
    return result | {"parent_run_id": parent_run_id}
