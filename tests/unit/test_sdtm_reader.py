"""A study folder in Parquet, CSV and SAS XPT reads the same; split domains are concatenated."""

import pandas as pd
import pyreadstat

from ct_assets.core.dates import study_day
from ct_assets.core.schemas import domain_schema
from ct_assets.core.sdtm import read_domain
from ct_assets.engines.pandas import split_valid
from tests.studies import pilot_dir


def test_formats_read_alike_and_split_files_concatenate(tmp_path):
    dm = pd.read_parquet(pilot_dir() / "dm.parquet").head(20)
    lb = pd.read_parquet(pilot_dir() / "lbch.parquet")
    lb = lb[lb["USUBJID"].isin(dm["USUBJID"])].head(60)
    for fmt, folder in (("parquet", tmp_path / "p"), ("csv", tmp_path / "c"), ("xpt", tmp_path / "x")):
        folder.mkdir()
        parts = {"dm": dm, "lbch": lb.iloc[:30], "lbhe": lb.iloc[30:], "suppdm": dm[["STUDYID", "USUBJID"]]}
        for name, df in parts.items():
            if fmt == "parquet":
                df.to_parquet(folder / f"{name}.parquet")
            elif fmt == "csv":
                df.to_csv(folder / f"{name}.csv", index=False)
            else:
                pyreadstat.write_xport(df, str(folder / f"{name}.xpt"), table_name=name.upper()[:8], file_format_version=5)
    results = {}
    for fmt in ("p", "c", "x"):
        raw = read_domain(tmp_path / fmt, "LB")
        assert len(raw) == 60 and set(raw["_SOURCE_FILE"].str.split(".").str[0]) == {"lbch", "lbhe"}
        dm_raw = read_domain(tmp_path / fmt, "DM")
        assert len(dm_raw) == 20  # SUPPDM is not DM
        split = split_valid(raw, domain_schema("LB", set(dm_raw["USUBJID"])))
        assert split.quarantined.empty, (fmt, split.rule_counts())
        results[fmt] = split.accepted.sort_values(["USUBJID", "LBSEQ"])["LBSTRESN"].round(6).tolist()
    assert results["p"] == results["c"] == results["x"]


def test_missing_domain_reads_as_none(tmp_path):
    assert read_domain(tmp_path, "VS") is None


def test_study_day_has_no_day_zero():
    dtc = pd.Series(["2020-01-09", "2020-01-10", "2020-01-11T08:00", "2020-01", None])
    ref = pd.Series(["2020-01-10"] * 5)
    assert study_day(dtc, ref).tolist()[:3] == [-1, 1, 2]
    assert study_day(dtc, ref).isna().tolist()[3:] == [True, True]
