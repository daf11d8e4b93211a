"""One deployment choice: the resource set of each profile, chosen once per code location by $CT_PROFILE.

- ``local`` (default): everything on this machine under $CT_HOME: the lake, MLflow on SQLite, Feast's SQLite
  online store and file registry, Spark ``local[*]`` only where the data is big enough to pay for its JVM.
- ``production``: the endpoints must be given (``ct start`` gives them to the services it runs): MLflow is
  the tracking server at $MLFLOW_TRACKING_URI and the feature store's registry is $CT_FEAST_REGISTRY (the
  database ``ct_feast`` on the profile's PostgreSQL). A missing one fails the run at its first step, naming
  the variable, instead of writing into a local store nobody reads.
- ``test``: the local set, made to exercise every engine and to give the same result on any date: findings
  validated on Spark however small the study, and a fixed data cut-off.

Each resource's fields are its settings in the Dagster launchpad (``resources.<name>.config``); a run can
override any of them there. Secrets reach resources as ``dg.EnvVar``, so the UI shows the variable, not the value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg

from ct_assets import settings
from ct_assets.defs.alerts import AlertWebhook
from ct_assets.defs.resources import (
    FeatureStore,
    KafkaSettings,
    Lake,
    LakeIOManager,
    MlflowSettings,
    QualityPolicy,
    Spark,
    StudyDesign,
    StudySource,
)

TEST_DATA_CUTOFF = "2026-11-30"  # the test profile's data cut-off: results that do not move with the calendar


def local() -> dict[str, Any]:
    lake_resource = Lake()
    kafka_password = dg.EnvVar("CT_KAFKA_PASSWORD") if settings.secret("CT_KAFKA_PASSWORD") else None
    return {
        "alerts": AlertWebhook(),
        "kafka": KafkaSettings(sasl_plain_password=kafka_password),
        "study": StudySource(),
        "study_design": StudyDesign(),
        "quality": QualityPolicy(),
        "lake": lake_resource,
        "io_manager": LakeIOManager(lake=lake_resource),
        "pyspark": Spark(),
        # Paths and URIs are resolved when a step uses them, so a $CT_HOME set after loading still counts.
        "mlflow_settings": MlflowSettings(),
        "feature_store": FeatureStore(),
    }


def production() -> dict[str, Any]:
    return local() | {
        "mlflow_settings": MlflowSettings(tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI")),
        "feature_store": FeatureStore(registry=dg.EnvVar("CT_FEAST_REGISTRY")),
    }


def test() -> dict[str, Any]:
    return local() | {
        "pyspark": Spark(min_rows=0),
        "quality": QualityPolicy(data_cutoff=TEST_DATA_CUTOFF),
    }


PROFILES: dict[str, Callable[[], dict[str, Any]]] = {"local": local, "production": production, "test": test}


def profile_resources(profile: str | None = None) -> dict[str, Any]:
    """The resource set of ``profile`` (default: $CT_PROFILE, else local), for every code location."""
    return PROFILES[profile or settings.profile()]()
