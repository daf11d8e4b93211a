"""One deployment choice: a resource set per profile, chosen once by $CT_PROFILE; engine thresholds are resource
config (typed, described, set in the launchpad), not hidden switches."""

import subprocess
import sys

import dagster as dg
import pytest

from ct_assets import settings
from ct_assets.defs.profiles import PROFILES, TEST_DATA_CUTOFF, profile_resources
from ct_assets.defs.resources import FeatureStore, MlflowSettings, QualityPolicy, Spark
from tests.conftest import ROOT


def test_spark_threshold_is_config_never_spark_locally_by_default_and_always_spark_on_a_cluster(monkeypatch):
    monkeypatch.setenv("CT_SPARK_MIN_ROWS", "1234")  # no longer a switch: the launchpad's field is the one place
    local = Spark(spark_config={"spark.master": "local[2]"})
    assert not local.takes(0) and not local.takes(10**12)  # a million subjects (291 M rows) stay off the JVM
    cluster = Spark(spark_config={"spark.master": "spark://spark-master:7077"})
    assert cluster.takes(0) and cluster.takes(1)
    chosen = Spark(spark_config={"spark.master": "local[2]"}, min_rows=5)
    assert not chosen.takes(4) and chosen.takes(5)


def test_the_launchpad_shows_the_engine_settings_with_their_descriptions():
    fields = {**Spark.model_fields, **QualityPolicy.model_fields}
    for name in ("min_rows", "validation_workers"):
        assert fields[name].description and "default" in fields[name].description.lower()
    assert fields["min_quality_score"].description and fields["min_quality_score"].default == 0.95
    assert "never Spark with a local master" in fields["min_rows"].description


def test_every_profile_has_the_same_resources_and_the_choice_is_checked(monkeypatch):
    sets = {name: profile_resources(name) for name in PROFILES}
    assert len({frozenset(s) for s in sets.values()}) == 1  # every code location's assets find their resources
    monkeypatch.setenv("CT_PROFILE", "staging")
    with pytest.raises(ValueError, match="CT_PROFILE must be one of local, production, test, got 'staging'"):
        profile_resources()


def test_the_test_profile_exercises_spark_and_does_not_move_with_the_calendar():
    resources = profile_resources("test")
    assert resources["pyspark"].takes(0)
    assert resources["quality"].cutoff() == TEST_DATA_CUTOFF
    local = profile_resources("local")
    assert not local["pyspark"].takes(10**12) and local["quality"].data_cutoff is None


def test_production_needs_its_endpoints_and_says_which_is_missing(monkeypatch):
    resources = profile_resources("production")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("CT_FEAST_REGISTRY", "postgresql+psycopg://feast@pg:5432/ct_feast")
    with pytest.raises(dg.DagsterInvalidConfigError, match="MLFLOW_TRACKING_URI"):
        dg.build_resources({"mlflow_settings": resources["mlflow_settings"]}).__enter__()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    with dg.build_resources({k: resources[k] for k in ("mlflow_settings", "feature_store")}) as built:
        assert isinstance(built.mlflow_settings, MlflowSettings) and built.mlflow_settings.uri() == "http://mlflow:5000"
        assert isinstance(built.feature_store, FeatureStore) and built.feature_store.registry.endswith("/ct_feast")
    # The local profile falls back to the stores under $CT_HOME instead.
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with dg.build_resources({"mlflow_settings": profile_resources("local")["mlflow_settings"]}) as built:
        assert built.mlflow_settings.uri() == settings.mlflow_tracking_uri() and "sqlite" in built.mlflow_settings.uri()


def test_the_code_location_loads_the_profile_of_its_environment(tmp_path):
    probe = ("from ct_assets.definitions import defs; r = defs.resources; "
             "print(r['pyspark'].min_rows, r['quality'].data_cutoff)")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CT_HOME": str(tmp_path / "ct"), "CT_PROFILE": "test"}
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["0", TEST_DATA_CUTOFF]


@pytest.mark.parametrize("value", ["garbage", "2014-02-30", "2014", "20140101"])
def test_a_cutoff_that_is_not_a_date_fails_naming_where_it_came_from(monkeypatch, value):
    """A cut-off that is not a date would let every date pass: it fails, from the environment or the resource."""
    from ct_assets.defs.resources import QualityPolicy

    monkeypatch.setenv("CT_DATA_CUTOFF", value)
    with pytest.raises(ValueError, match="CT_DATA_CUTOFF must be a date written YYYY-MM-DD"):
        settings.data_cutoff()
    with pytest.raises(ValueError, match="quality.data_cutoff must be"):
        QualityPolicy(data_cutoff=value).cutoff()
    monkeypatch.setenv("CT_DATA_CUTOFF", "2026-11-30")
    assert settings.data_cutoff() == QualityPolicy().cutoff() == "2026-11-30"
