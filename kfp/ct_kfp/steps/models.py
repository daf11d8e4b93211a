"""Model steps: cross-validation, training, holdout evaluation and registration with the champion gate."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ct_assets.core import training as training_logic
from ct_assets.core.registry import point_mlflow
from ct_kfp.steps.common import tracking_uri

# The legacy model settings: the default hyperparameters HPO must beat or equal.
DEFAULT_PARAMS: dict[str, Any] = {k: v for k, v in training_logic.ModelParams().as_dict().items() if v is not None}
CV_REPEATS = 3


def params_of(params: dict) -> training_logic.ModelParams:
    """Model parameters from a KFP dict (whose numbers arrive as floats), typed as the dataclass says."""
    fields = {f.name: f for f in dataclasses.fields(training_logic.ModelParams) if f.name != "extra"}
    unknown = set(params) - set(fields)
    if unknown:
        raise ValueError(f"unknown model parameters {sorted(unknown)}; known: {sorted(fields)}")
    typed = {}
    for name, value in (DEFAULT_PARAMS | params).items():
        kind = fields[name].type
        typed[name] = int(value) if kind == "int" else float(value) if kind == "float" else value
    return training_logic.ModelParams(**typed)


def cv_score(training_set_path: str, params: dict, folds: int = 5, repeats: int = CV_REPEATS) -> tuple[float, float]:
    """Repeated stratified k-fold AUROC on the train split only (HPO never looks at the holdout):
    its mean and standard error."""
    mean, std = training_logic.cross_validated_auroc(pd.read_parquet(training_set_path), params_of(params), folds, repeats)
    return mean, std / (folds * repeats) ** 0.5


def train(training_set_path: str, params: dict, model_dir: str, uri: str, experiment: str,
          run_name: str, parent_run_id: str = "") -> dict[str, Any]:
    """Fit, log to MLflow (params, CV metrics, dataset, model with signature) and save the MLflow
    model folder as the KFP artifact too, so that later steps need not reach MLflow to load it."""
    import mlflow

    from ct_assets.core.registry import ensure_experiment
    from ct_assets.core.tracking import log_candidate

    training_set = pd.read_parquet(training_set_path)
    point_mlflow(tracking_uri(uri))
    experiment_id = ensure_experiment(tracking_uri(uri), experiment)
    tags = {"mlflow.parentRunId": parent_run_id} if parent_run_id else {}
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags | {"orchestrator": "kfp"}):
        record = log_candidate(training_set, params_of(params), source=training_set_path)
    with tempfile.TemporaryDirectory() as tmp:  # the logged model folder, byte for byte
        shutil.copytree(mlflow.artifacts.download_artifacts(artifact_uri=record["model_uri"], dst_path=tmp), model_dir)
    return record


def evaluate(model_dir: str, training_set_path: str, uri: str, run_id: str, plot_path: str) -> dict[str, Any]:
    """Holdout metrics, subgroups and the calibration plot, logged to the model's MLflow run."""
    import mlflow

    from ct_assets.core.tracking import evaluate_and_log

    point_mlflow(tracking_uri(uri))
    with mlflow.start_run(run_id=run_id):
        return evaluate_and_log(model_dir, pd.read_parquet(training_set_path), Path(plot_path))


def roc_points(model_dir: str, training_set_path: str) -> tuple[list[float], list[float], list[float]]:
    from sklearn.metrics import roc_curve

    from ct_assets.core.registry import score

    holdout = training_logic.holdout_of(pd.read_parquet(training_set_path))
    fpr, tpr, thr = roc_curve(holdout[training_logic.LABEL], score(model_dir, holdout))
    thr = np.where(np.isfinite(thr), thr, 1.0)
    return fpr.tolist(), tpr.tolist(), thr.tolist()


def register(model_uri: str, training_set_path: str, uri: str, model_name: str, holdout_auroc: float,
             min_auroc: float, tolerance: float, tags: dict | None = None) -> dict[str, Any]:
    """A registry version with alias challenger, and the champion gate's verdict."""
    import mlflow

    from ct_assets.core.provenance import model_provenance, stage_code_versions
    from ct_assets.core.tracking import register_challenger

    point_mlflow(tracking_uri(uri))
    client = mlflow.MlflowClient(tracking_uri=tracking_uri(uri), registry_uri=tracking_uri(uri))
    training_set = pd.read_parquet(training_set_path)
    holdout = training_logic.holdout_of(training_set)
    # The study files are read by the validation pod: here the training set, rules, split and code are bound.
    provenance = model_provenance([], training_set, {}, 0, holdout["SUBJECT_KEY"], stage_code_versions())
    return register_challenger(client, model_name, model_uri, holdout_auroc, holdout, min_auroc, tolerance,
                               (tags or {}) | provenance, "kfp:register_model")


def evaluation_markdown(result: dict[str, Any]) -> str:
    m = result["metrics"]
    lines = [f"## Holdout evaluation (n={int(m['n'])})", "",
             f"AUROC {m['auroc']:.3f} (95% CI {m['auroc_ci_low']:.2f}-{m['auroc_ci_high']:.2f}), "
             f"AUPRC {m['auprc']:.3f}, Brier {m['brier']:.3f}", "", "| group | level | n | AUROC | Brier |", "|---|---|---|---|---|"]
    lines += [f"| {s['group']} | {s['level']} | {int(s['n'])} | {s['auroc']:.3f} | {s['brier']:.3f} |"
              for s in result["subgroups"]]
    return "\n".join(lines) + "\n"
