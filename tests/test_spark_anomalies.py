"""The anomaly monitor on Spark gives the pandas monitor's table, both findings domains in one job."""

import numpy as np
import pandas as pd

from ct_assets.quality import report


def test_anomalies_on_spark_match_pandas(spark):
    rng = np.random.default_rng(0)
    n = 400
    vs = pd.DataFrame({"VSTESTCD": rng.choice(["SYSBP", "PULSE", "HEIGHT"], n), "VSSTRESN": rng.normal(120, 10, n)})
    vs.loc[:4, "VSSTRESN"] = 900.0  # far out: anomalies
    vs.loc[5:7, "VSSTRESN"] = None  # no result: not counted
    vs.loc[vs["VSTESTCD"] == "HEIGHT", "VSSTRESN"] = 170.0  # no spread (MAD 0): nothing is anomalous
    lb = pd.DataFrame({"LBTESTCD": ["ALT"] * 10 + ["AST"] * 11, "LBSTRESN": [20.0, 21, 22, 23, 24, 25, 26, 27, 28, 400] + [30.0] * 10 + [31]})
    expected = pd.concat([report.anomalies(vs, "VS"), report.anomalies(lb, "LB")], ignore_index=True)
    got = report.anomalies_spark({"VS": spark.createDataFrame(vs), "LB": spark.createDataFrame(lb)})
    key = ["test", "results", "anomalies", "share"]
    pd.testing.assert_frame_equal(got[key].sort_values("test", ignore_index=True),
                                  expected[key].sort_values("test", ignore_index=True), check_dtype=False)
    assert got.loc[got["test"] == "LB_ALT", "anomalies"].item() == 1 and got["anomalies"].sum() > 2
    # One domain at a time, as before.
    assert report.anomalies_spark(spark.createDataFrame(lb), "LB").set_index("test")["anomalies"].to_dict() == {"LB_ALT": 1, "LB_AST": 0}
