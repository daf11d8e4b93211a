"""Engine thresholds are resource config (typed, described, set in the launchpad), not hidden switches."""

from ct_assets.defs.resources import QualityPolicy, Spark


def test_spark_threshold_is_config_with_the_environment_as_default(monkeypatch):
    monkeypatch.setenv("CT_SPARK_MIN_ROWS", "1234")
    assert Spark(spark_config={"spark.master": "local[2]"}).spark_from_rows() == 1234
    assert Spark(spark_config={"spark.master": "spark://spark-master:7077"}).spark_from_rows() == 0  # a cluster: always Spark
    assert Spark(spark_config={"spark.master": "local[2]"}, min_rows=5).spark_from_rows() == 5


def test_the_launchpad_shows_the_engine_settings_with_their_descriptions():
    fields = {**Spark.model_fields, **QualityPolicy.model_fields}
    for name in ("min_rows", "validation_workers"):
        assert fields[name].description and "default" in fields[name].description.lower()
