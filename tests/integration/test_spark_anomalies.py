"""The anomaly monitor on Spark and on one machine (DuckDB) gives the pandas monitor's table, both findings
domains in one job."""

import numpy as np
import pandas as pd

from ct_assets.core import report
from ct_assets.engines import duck_quality
from ct_assets.engines import spark as spark_engine


def _domains():
    rng = np.random.default_rng(0)
    n = 400
    vs = pd.DataFrame({"VSTESTCD": rng.choice(["SYSBP", "PULSE", "HEIGHT"], n), "VSSTRESN": rng.normal(120, 10, n)})
    vs.loc[:4, "VSSTRESN"] = 900.0  # far out: anomalies
    vs.loc[5:7, "VSSTRESN"] = None  # no result: not counted
    vs.loc[vs["VSTESTCD"] == "HEIGHT", "VSSTRESN"] = 170.0  # no spread (MAD 0): nothing is anomalous
    lb = pd.DataFrame({"LBTESTCD": ["ALT"] * 10 + ["AST"] * 11, "LBSTRESN": [20.0, 21, 22, 23, 24, 25, 26, 27, 28, 400] + [30.0] * 10 + [31]})
    return vs, lb


def _assert_same(got, vs, lb):
    expected = pd.concat([report.anomalies(vs, "VS"), report.anomalies(lb, "LB")], ignore_index=True)
    key = ["test", "results", "anomalies", "share"]
    pd.testing.assert_frame_equal(got[key].sort_values("test", ignore_index=True),
                                  expected[key].sort_values("test", ignore_index=True), check_dtype=False)
    assert got.loc[got["test"] == "LB_ALT", "anomalies"].item() == 1 and got["anomalies"].sum() > 2


def test_anomalies_on_spark_match_pandas(spark):
    vs, lb = _domains()
    got = spark_engine.anomalies_spark({"VS": spark.createDataFrame(vs), "LB": spark.createDataFrame(lb)})
    _assert_same(got, vs, lb)
    # One domain at a time, as before.
    assert spark_engine.anomalies_spark(spark.createDataFrame(lb), "LB").set_index("test")["anomalies"].to_dict() == {"LB_ALT": 1, "LB_AST": 0}


def test_anomalies_on_one_machine_match_pandas(tmp_path):
    """The local path reads the validated datasets (Parquet folders of parts) and gives the same table,
    in the same order as Spark's; a domain without results or the columns is left out."""
    from ct_assets.core.lake import write_parquet

    vs, lb = _domains()
    paths = {"VS": tmp_path / "vs", "LB": tmp_path / "lb", "AE": tmp_path / "ae"}
    for name, df in (("VS", vs), ("LB", lb)):
        for i, edges in enumerate([(0, len(df) // 3), (len(df) // 3, len(df))]):
            write_parquet(df.iloc[slice(*edges)], paths[name] / f"part-{i}.parquet")
    write_parquet(pd.DataFrame({"AETERM": ["x"]}), paths["AE"] / "part-0.parquet")
    got = duck_quality.anomalies(paths)
    _assert_same(got, vs, lb)
    assert list(got["test"]) == list(got.sort_values(["share", "test"], ascending=[False, True])["test"])
