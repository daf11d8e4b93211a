"""Validation on Spark gives what validation on pandas gives: the same rows quarantined, with the same
rules and reasons, from the one rule set in core/schemas.py (row rules per partition, whole-domain
rules as aggregations and joins)."""

import pandas as pd
import pytest

from ct_assets.core.privacy import pseudonymise
from ct_assets.core.schemas import REPEATED_ROW_RULE, domain_schema
from ct_assets.engines.pandas import REASON, RULES, split_valid, validate_domain
from ct_assets.engines.spark import split_findings, standard_units, validated_rows

CUTOFF = "2026-11-30"


def messy_vitals() -> pd.DataFrame:
    """Duplicate keys (the first kept), a repeated row, an unknown subject, a foreign unit, text in a number, a bad date."""
    rows = [
        ("a", 1, "SYSBP", "120", "mmHg", "2020-01-01"),
        ("a", 1, "SYSBP", "121", "mmHg", "2020-01-02"),   # same USUBJID + VSSEQ as the row before
        ("a", 2, "TEMP", "98.6", "F", "2020-01-01"),       # F converts to C: the standard unit
        ("a", 3, "TEMP", "37.0", "C", "2020-01-01"),
        ("b", 1, "SYSBP", "NaN", "mmHg", "2020-01-01"),    # text where a number belongs
        ("b", 2, "SYSBP", "16", "kPa", "2020-01-01"),      # not the test's unit
        ("b", 3, "SYSBP", "130", "mmHg", "2020-13-01"),    # no month 13
        ("z", 1, "SYSBP", "125", "mmHg", "2020-01-01"),    # not in DM
        ("b", 4, "SYSBP", "135", "mmHg", "2020-01-05"),
        ("b", 5, "PULSE", None, None, "2020-01-05"),       # a result in text only: present
        ("b", 6, "PULSE", None, None, "2020-01-05"),       # no result at all
        ("a", 3, "TEMP", "37.0", "C", "2020-01-01"),       # row 3 delivered again: a repeat, not a second version
    ]
    df = pd.DataFrame(rows, columns=["USUBJID", "VSSEQ", "VSTESTCD", "VSSTRESN", "VSSTRESU", "VSDTC"])
    df["VSSTRESC"] = [None] * 9 + ["irregular", None, None]
    df.insert(0, "STUDYID", "S1")
    df.insert(1, "DOMAIN", "VS")
    df["VISITNUM"] = 1.0
    df["_SOURCE_FILE"], df["_SOURCE_ROW"] = "vs.csv", range(len(df))
    return df


def _spark_split(spark, raw: pd.DataFrame, known: list[str]):
    frame = spark.createDataFrame(raw)
    ids = pd.Series(known, dtype=object)
    mapping = spark.createDataFrame(pd.DataFrame({"_USUBJID": ids, "SUBJECT_KEY": pseudonymise(ids)}))
    return frame, split_findings(frame, mapping, "VS", CUTOFF, standard_units(frame, "VS"))


def test_spark_quarantines_the_rows_pandas_does_with_the_same_rules(spark, ct_home):
    raw = messy_vitals()
    pandas_split = split_valid(raw, domain_schema("VS", ["a", "b"], CUTOFF))
    expected = pandas_split.quarantined.set_index("_SOURCE_ROW")[[RULES, REASON]].sort_index()
    assert len(expected) == 7  # the duplicate key, the repeated row, "NaN", kPa, month 13, z, no result
    assert expected[RULES][11] == f"CT-VS-0007 {REPEATED_ROW_RULE}" and "VSSEQ: multiple_fields_uniqueness" in expected[RULES][1]

    _, split = _spark_split(spark, raw, ["a", "b"])
    out = split.toPandas()
    got = out[out[RULES].notna()].set_index("_SOURCE_ROW")[[RULES, REASON]].sort_index()
    pd.testing.assert_frame_equal(got, expected, check_names=False, check_dtype=False)
    assert out[RULES].isna().sum() + len(got) == len(raw)  # nothing lost, nothing twice


def test_spark_validated_rows_match_the_pandas_validated_domain(spark, ct_home):
    raw = messy_vitals()
    frame, split = _spark_split(spark, raw, ["a", "b"])
    validated, absent = validated_rows(split, "VS", frame.columns)
    got = validated.toPandas().sort_values("_SOURCE_ROW", ignore_index=True)
    expected = validate_domain("VS", raw, {"a", "b"}, CUTOFF)
    want = expected.validated.sort_values("_SOURCE_ROW", ignore_index=True)
    assert absent == expected.absent_columns
    assert list(got.columns) == list(want.columns)
    assert "USUBJID" not in got and got["SUBJECT_KEY"].str.startswith("S-").all()
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_a_missing_required_column_quarantines_the_whole_domain_with_the_reason(spark, ct_home):
    raw = messy_vitals().drop(columns=["VSTESTCD"])
    expected = split_valid(raw, domain_schema("VS", ["a", "b"], CUTOFF)).quarantined
    _, split = _spark_split(spark, raw, ["a", "b"])
    out = split.toPandas()
    assert out[RULES].notna().all()
    assert set(out[REASON]) == set(expected[REASON]) and "VSTESTCD" in out[REASON].iat[0]


@pytest.mark.parametrize("domain", ["VS", "LB"])
def test_partition_schema_is_the_domain_schema_without_the_whole_domain_rules(domain):
    from ct_assets.core.schemas import findings_schema

    whole, part = findings_schema(domain, None, CUTOFF), findings_schema(domain, None, CUTOFF, {}, whole_domain=False)
    assert list(whole.columns) == list(part.columns)
    # The repeated-row rule needs every row: the engines apply it across partitions, as they do uniqueness.
    assert [c.name for c in whole.checks] == [c.name for c in part.checks] + ["repeated_row"]
    assert whole.unique == ["USUBJID", f"{domain}SEQ"] and not part.unique
