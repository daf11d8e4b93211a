"""The PySpark job on tiny frames, with a real local Spark session."""

import pandas as pd
import pytest

from spark import visits


def test_processed_visits_pivot_units_and_study_days(spark):
    vs = spark.createDataFrame(pd.DataFrame({
        "SUBJECT_KEY": ["S-a"] * 4 + ["S-b"],
        "VSTESTCD": ["TEMP", "TEMP", "WEIGHT", "SYSBP", "SYSBP"],
        "VSSTRESN": [98.6, 100.4, 154.0, 120.0, None],
        "VSSTRESU": ["F", "F", "LB", "mmHg", None],
        "VISITNUM": [1.0, 1.0, 1.0, 2.0, 1.0],
        "VSDTC": ["2020-01-10", "2020-01-10", "2020-01-10", "2020-01-24", "2020-01-10"],
        "VSDY": [None, None, None, 15.0, None],
    }))
    lb = spark.createDataFrame(pd.DataFrame({
        "SUBJECT_KEY": ["S-a", "S-a"], "LBTESTCD": ["ALT", "AST"], "LBSTRESN": [50.0, 20.0],
        "LBSTRESU": ["U/L", "U/L"], "LBNRIND": ["HIGH", "NORMAL"], "VISITNUM": [1.0, 1.0],
        "LBDTC": ["2020-01-09T08:00", "2020-01-09T08:00"], "LBDY": [-1.0, -1.0],
    }))
    dm = spark.createDataFrame(pd.DataFrame({"SUBJECT_KEY": ["S-a", "S-b"], "RFSTDTC": ["2020-01-10", "2020-01-10"]}))
    out = visits.process_visits({"VS": vs, "LB": lb}, dm).toPandas().set_index(["SUBJECT_KEY", "VISITNUM"])
    assert list(out.index) == [("S-a", 1.0), ("S-a", 2.0)]  # S-b had no result at all
    v1 = out.loc[("S-a", 1.0)]
    assert v1["VS_TEMP"] == pytest.approx(37.5)  # 98.6 F = 37 C and 100.4 F = 38 C, averaged
    assert v1["VS_WEIGHT"] == pytest.approx(69.853, abs=1e-3)
    assert v1["STUDY_DAY"] == -1  # the lab drawn the day before first dose; VS day 1 from dates
    assert v1["N_ABNORMAL"] == 1 and v1["N_RESULTS"] == 5
    assert out.loc[("S-a", 2.0), "VS_SYSBP"] == 120.0 and out.loc[("S-a", 2.0), "STUDY_DAY"] == 15


def test_spark_submit_entry_point(tmp_path, spark):
    pd.DataFrame({"SUBJECT_KEY": ["S-a"], "VSTESTCD": ["PULSE"], "VSSTRESN": [70.0], "VSSTRESU": ["beats/min"],
                  "VISITNUM": [1.0], "VSDTC": ["2020-01-10"], "VSDY": [1.0]}).to_parquet(tmp_path / "vs.parquet")
    pd.DataFrame({"SUBJECT_KEY": ["S-a"], "RFSTDTC": ["2020-01-10"]}).to_parquet(tmp_path / "dm.parquet")
    # main() creates or reuses the session: the same code path spark-submit runs.
    import pyspark.sql

    stop = pyspark.sql.SparkSession.stop
    pyspark.sql.SparkSession.stop = lambda self: None  # keep the shared test session alive
    try:
        visits.main(["--findings", f"VS={tmp_path / 'vs.parquet'}", "--dm", str(tmp_path / "dm.parquet"),
                     "--output", str(tmp_path / "out")])
    finally:
        pyspark.sql.SparkSession.stop = stop
    assert pd.read_parquet(tmp_path / "out")["VS_PULSE"].tolist() == [70.0]


def test_rerun_on_replaced_input_sees_new_data(tmp_path, spark):
    """A long-lived session (one Dagster process, many runs) must not serve a previous run's data."""
    path, dm_path = tmp_path / "vs.parquet", tmp_path / "dm.parquet"
    pd.DataFrame({"SUBJECT_KEY": ["S-a", "S-b"], "RFSTDTC": ["2020-01-10"] * 2}).to_parquet(dm_path)

    def run(subjects):
        pd.DataFrame({"SUBJECT_KEY": subjects, "VSTESTCD": ["PULSE"] * len(subjects), "VSSTRESN": [70.0] * len(subjects),
                      "VSSTRESU": ["beats/min"] * len(subjects), "VISITNUM": [1.0] * len(subjects),
                      "VSDTC": ["2020-01-10"] * len(subjects), "VSDY": [1.0] * len(subjects)}).to_parquet(path)
        out = visits.process_visits({"VS": spark.read.parquet(str(path))}, spark.read.parquet(str(dm_path)))
        return sorted(out.toPandas()["SUBJECT_KEY"])

    assert run(["S-a"]) == ["S-a"]
    assert run(["S-a", "S-b"]) == ["S-a", "S-b"]
