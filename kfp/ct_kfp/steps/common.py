"""What the step modules share: the MLflow store a step talks to, and small artifact files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ct_assets import settings
from ct_assets.core import lake
from ct_assets.core.registry import point_mlflow


def tracking_uri(uri: str) -> str:
    return uri or settings.mlflow_tracking_uri()


def mlflow_client(uri: str):
    import mlflow

    point_mlflow(tracking_uri(uri))
    return mlflow.MlflowClient(tracking_uri=tracking_uri(uri), registry_uri=tracking_uri(uri))


def write_json(obj: Any, path: str) -> None:
    lake.write_json(obj, Path(path))


def read_json(path: str) -> Any:
    return json.loads(Path(path).read_text())


def write_text(path: str, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)
