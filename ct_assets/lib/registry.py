"""The MLflow model registry: aliases, loading and scoring, rollback. Stages are not used
(deprecated in MLflow); a model's role is its alias."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ct_assets import settings

CHALLENGER, CHAMPION, PREVIOUS_CHAMPION = "challenger", "champion", "previous_champion"


def alias_version(client, name: str, alias: str) -> Any | None:
    import mlflow

    try:
        return client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        return None


def score(model_uri: str, frame: pd.DataFrame) -> np.ndarray:
    """Risk scores of a logged model, with the columns that model was trained on."""
    import mlflow

    model = mlflow.sklearn.load_model(model_uri)
    return model.predict_proba(frame.reindex(columns=list(model.feature_names_in_)))[:, 1]


def promote(client, name: str, version: int | str) -> Any | None:
    """Make ``version`` champion; the replaced champion keeps alias previous_champion."""
    previous = alias_version(client, name, CHAMPION)
    if previous is not None and str(previous.version) != str(version):
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, previous.version)
    client.set_registered_model_alias(name, CHAMPION, version)
    return previous


def rollback(client, name: str) -> tuple[int, int]:
    """Swap champion and previous_champion: one alias switch back to the last good model."""
    current = alias_version(client, name, CHAMPION)
    previous = alias_version(client, name, PREVIOUS_CHAMPION)
    if current is None or previous is None:
        raise RuntimeError(f"{name}: no previous champion recorded, nothing to roll back to")
    client.set_registered_model_alias(name, CHAMPION, previous.version)
    client.set_registered_model_alias(name, PREVIOUS_CHAMPION, current.version)
    return int(current.version), int(previous.version)


def routes_to_challenger(subject_key: str, share: float) -> bool:
    """Sticky routing: a subject's arm depends only on its pseudonym, so the model server and the
    canary check of the deployment pipeline send the same subjects to the challenger; a bigger
    share keeps the subjects a smaller one had."""
    import hashlib

    return int(hashlib.sha256(f"canary:{subject_key}".encode()).hexdigest()[:8], 16) % 10_000 < share * 10_000


def inference_service(endpoint: str, storage_uri: str, canary_percent: int | None) -> dict[str, Any]:
    """A KServe v1beta1 InferenceService for an MLflow model (the MLServer runtime). KServe rolls a
    canary by pointing the predictor at the new model with ``canaryTrafficPercent``; the previous
    revision keeps the rest of the traffic."""
    predictor: dict[str, Any] = {"model": {"modelFormat": {"name": "mlflow"}, "protocolVersion": "v2",
                                           "storageUri": storage_uri}}
    if canary_percent is not None:
        predictor["canaryTrafficPercent"] = canary_percent
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": endpoint, "annotations": {"serving.kserve.io/enable-prometheus-scraping": "true"}},
            "spec": {"predictor": predictor}}


def ensure_experiment(tracking_uri: str, name: str) -> str:
    """Create the experiment with its artifacts under $CT_HOME (MLflow would pick ./mlruns)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    root = settings.mlflow_artifact_root() if tracking_uri.startswith("sqlite") else None
    location = f"{root}/{name}" if root else None
    return client.create_experiment(name, artifact_location=location)


def point_mlflow(uri: str) -> None:
    """Point both the tracking and the registry URI of the mlflow module at ``uri``. Setting only
    the tracking URI leaves an earlier registry URI in force in a long-lived process (a code server,
    a test session): versions would be registered in one store and looked up in another."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
