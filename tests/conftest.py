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


@pytest.fixture(autouse=True, scope="session")
def _no_dead_dagster_instance_in_context():
    """Dagster keeps the entered instance's state storage in a context variable, and a Dagster context built without
    ``with`` (an ephemeral instance inside) restores the variable's earlier value whenever the garbage collector
    finalizes it. Finalized mid-test, that value can be a finished test's instance: the next ``Definitions`` then
    fails with "Attempted to resolve undefined DagsterInstance weakref" (CI, stop 38). For the tests, a storage
    whose instance is gone reads as no storage, which is what Dagster does when no instance is entered."""
    from dagster._core.storage.defs_state.base import DefsStateStorage  # private: Dagster offers no public hook

    original = DefsStateStorage.__dict__["get"]

    def get(cls):
        storage = original.__func__(cls)
        ref = getattr(storage, "_instance_weakref", None)
        return None if storage is not None and (ref is None or ref() is None) else storage

    DefsStateStorage.get = classmethod(get)
    yield
    DefsStateStorage.get = original


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
