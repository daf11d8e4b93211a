import contextlib
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def ct_home(tmp_path, monkeypatch) -> Path:
    """A private $CT_HOME: lake, feature store, MLflow store and Dagster instance in a temp dir."""
    home = tmp_path / "ct"
    monkeypatch.setenv("CT_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    for var in ("CT_STUDY_DIR", "MLFLOW_TRACKING_URI", "CT_PSEUDONYM_KEY"):
        monkeypatch.delenv(var, raising=False)
    (home / "dagster").mkdir(parents=True)
    return home


@contextlib.contextmanager
def private_home(home: Path, *unset: str):
    """$CT_HOME and DAGSTER_HOME in ``home`` for a module's shared fixture (monkeypatch is per test)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CT_HOME", str(home))
        mp.setenv("DAGSTER_HOME", str(home / "dagster"))
        for var in ("CT_STUDY_DIR", "MLFLOW_TRACKING_URI", "CT_PSEUDONYM_KEY", *unset):
            mp.delenv(var, raising=False)
        (home / "dagster").mkdir(parents=True)
        yield home


@pytest.fixture(scope="session")
def spark():
    """One real local Spark session for the whole test run (as one Dagster run would share it)."""
    from pyspark.sql import SparkSession

    from ct_assets.settings import spark_config

    builder = SparkSession.builder
    for key, value in spark_config().items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session


def pytest_configure(config):
    os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)


def pytest_sessionfinish(session, exitstatus):
    """Stop Spark and its py4j gateway while logging still has somewhere to write: left to the interpreter's
    exit, py4j's connections log their closing into streams pytest has closed ('--- Logging error ---')."""
    import sys

    if "pyspark" not in sys.modules:
        return
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    if (active := SparkSession.getActiveSession()) is not None:
        active.stop()
    if SparkContext._gateway is not None:
        SparkContext._gateway.shutdown()
        SparkContext._gateway = SparkContext._jvm = None
