"""Settings of operating the stack (`ct start`, `ct health-check`, `ct summary`): the production profile's
PostgreSQL and MLflow artifact store, the Airflow interpreter, and where `ct` keeps its processes' state."""

from __future__ import annotations

import os
from pathlib import Path

from ct_assets import settings


def postgres_url() -> str | None:
    """The PostgreSQL server of the production profile, without a database ($CT_POSTGRES_URL, default
    ``postgresql://postgres@127.0.0.1:5432`` in that profile, None otherwise). Give a password through
    PGPASSWORD or ~/.pgpass, never in a file of the repository."""
    url = os.environ.get("CT_POSTGRES_URL")
    if url or settings.profile() != "production":
        return url or None
    return "postgresql://postgres@127.0.0.1:5432"


# The production profile's databases on that server, one per component (`ct start` creates them).
PRODUCTION_DATABASES = ("dagster", "mlflow", "mlflow_auth", "airflow", "feast")  # mlflow_auth: its users


def postgres_database(component: str) -> str:
    """Database of a component on that server: ``$CT_POSTGRES_DB_PREFIX`` (``ct``) + ``_`` + component."""
    return f"{os.environ.get('CT_POSTGRES_DB_PREFIX', 'ct')}_{component}"


def mlflow_artifacts_destination() -> str:
    """Where the production MLflow server stores artifacts: $CT_MLFLOW_ARTIFACTS_DESTINATION (an
    ``s3://bucket/path`` with MLFLOW_S3_ENDPOINT_URL for an S3-compatible store), else a local folder."""
    return os.environ.get("CT_MLFLOW_ARTIFACTS_DESTINATION") or (settings.ct_home() / "mlflow-artifacts").as_uri()


def airflow_python() -> Path:
    """The Airflow 2.11 venv's interpreter ($CT_AIRFLOW_PYTHON, default .venv-airflow/bin/python)."""
    return Path(os.environ.get("CT_AIRFLOW_PYTHON") or settings.PROJECT_ROOT / ".venv-airflow/bin/python")


def run_dir() -> Path:
    """Pid files, state and logs of the services `ct start` runs."""
    return settings.ct_home() / "run"

