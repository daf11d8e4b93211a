"""SDTM rules on good and bad rows: every bad row is quarantined with the rule it broke."""

import pandas as pd
import pytest

from ct_assets.core.schemas import FEATURES_SCHEMA, REPEATED_ROW_RULE, domain_schema, iso8601
from ct_assets.core.sdtm import DOMAINS, read_domain
from ct_assets.engines.pandas import RULES, split_valid
from tests.studies import pilot_dir


@pytest.fixture(scope="module")
def pilot():
    return {d: read_domain(pilot_dir(), d) for d in DOMAINS}


def test_pilot_study_passes_every_rule(pilot):
    known = set(pilot["DM"]["USUBJID"])
    for domain, raw in pilot.items():
        split = split_valid(raw, domain_schema(domain, None if domain == "DM" else known))
        assert len(split.quarantined) == 0, (domain, split.rule_counts())
        assert len(split.accepted) == len(raw)


def _vs_sample(pilot) -> pd.DataFrame:
    vs = pilot["VS"].head(40).copy()
    vs["VSSTRESN"] = vs["VSSTRESN"].astype(object)
    return vs


@pytest.mark.parametrize(
    "mutate, rule",
    [
        (lambda df: df.__setitem__("VSSTRESN", df["VSSTRESN"].where(df.index != 0, 900.0)), "CT-VS-0023 VSSTRESN outside plausible range"),
        (lambda df: df.__setitem__("VSDTC", df["VSDTC"].where(df.index != 0, "2014-13-45")), "CT-VS-0010 VSDTC: not an ISO 8601"),
        (lambda df: df.__setitem__("USUBJID", df["USUBJID"].where(df.index != 0, "XX-999")), "CT-VS-0004 USUBJID: subject not in DM"),
        (lambda df: df.__setitem__("VSTESTCD", df["VSTESTCD"].where(df.index != 0, "bad code")), "CT-VS-0020 VSTESTCD: str_matches"),
        (lambda df: df.__setitem__("VSSTRESN", df["VSSTRESN"].where(df.index != 0, "abc")), "CT-VS-0012 VSSTRESN: coerce_dtype"),
        (lambda df: df.__setitem__("VSSTRESU", df["VSSTRESU"].where(df.index != 0, "kPa")), "CT-VS-0024 VSSTRESU differs from the test's standard unit"),
        (lambda df: (df.__setitem__("VSSTRESN", df["VSSTRESN"].where(df.index != 0, None)),
                     df.__setitem__("VSSTRESC", df["VSSTRESC"].where(df.index != 0, None))), "CT-VS-0022 no result"),
    ],
)
def test_bad_row_is_quarantined_with_its_rule(pilot, mutate, rule):
    vs = _vs_sample(pilot)
    mutate(vs)
    split = split_valid(vs, domain_schema("VS", set(pilot["DM"]["USUBJID"])))
    assert len(split.quarantined) == 1
    assert rule in split.quarantined[RULES].iat[0]
    assert split.quarantined["_SOURCE_ROW"].iat[0] == 0
    assert len(split.accepted) + len(split.quarantined) == len(vs)


def test_duplicate_key_keeps_first_and_quarantines_the_copy(pilot):
    vs = _vs_sample(pilot)
    second_version = vs.iloc[[3]].assign(VSSTRESN=vs["VSSTRESN"].iat[3] + 1)
    dup = pd.concat([vs, second_version], ignore_index=True)
    split = split_valid(dup, domain_schema("VS"))
    assert len(split.accepted) == len(vs)
    assert "multiple_fields_uniqueness" in split.quarantined[RULES].iat[0]


@pytest.mark.parametrize("domain", ["VS", "AE", "SV"])
def test_a_row_delivered_twice_is_a_repeat_not_a_key_violation(pilot, domain):
    """As DM reports it: the copy is quarantined as a repeated row, and only as that."""
    df = pilot[domain].head(10)
    twice = pd.concat([df, df.iloc[[2]]], ignore_index=True).assign(_SOURCE_ROW=range(11))
    split = split_valid(twice, domain_schema(domain))
    assert len(split.accepted) == 10 and split.quarantined["_SOURCE_ROW"].tolist() == [10]
    assert split.quarantined[RULES].iat[0] == f"CT-{domain}-0007 {REPEATED_ROW_RULE}"


def test_not_done_without_result_is_valid(pilot):
    vs = pilot["VS"]
    not_done = vs[vs["VSSTAT"] == "NOT DONE"]
    assert len(not_done) and not_done["VSSTRESN"].isna().all()
    assert len(split_valid(not_done, domain_schema("VS")).quarantined) == 0


def test_missing_required_column_quarantines_the_whole_domain(pilot):
    vs = _vs_sample(pilot).drop(columns=["VSTESTCD"])  # SDTMIG Required
    split = split_valid(vs, domain_schema("VS"))
    assert split.accepted.empty
    assert len(split.quarantined) == len(vs)
    assert "CT-VS-0013 column_in_dataframe (VSTESTCD)" in split.quarantined["_QUARANTINE_REASON"].iat[0]


def test_missing_expected_columns_are_not_required_and_are_conformed(pilot):
    from ct_assets.engines.pandas import validate_domain

    vs = _vs_sample(pilot).drop(columns=["VISITNUM", "VSDTC", "VSSTRESU"])  # Expected, not Required
    result = validate_domain("VS", vs, set(pilot["DM"]["USUBJID"]))
    assert len(result.validated) == len(vs) and result.quarantined.empty
    assert result.absent_columns == ["VSSTRESU", "VISITNUM", "VSDTC"]
    assert result.validated[result.absent_columns].isna().all().all()


def test_dates_need_real_times_and_fall_between_1900_and_the_cutoff():
    from ct_assets.core.schemas import within_dates

    s = pd.Series(["2020-01-01T23:59:59", "2020-01-01T25:00", "2020-01-01T10:60", "3000-01-01", "9999-12-31",
                   "1899-12-31", "2026", "2027", "2026-12", "2026-11-30"])
    assert iso8601(s).tolist() == [True, False, False, True, True, True, True, True, True, True]
    assert within_dates(s, "2026-11-30").tolist() == [True, True, True, False, False, False, True, False, False, True]


def test_impossible_values_are_quarantined_with_a_reason(pilot):
    vs = _vs_sample(pilot).reset_index(drop=True)
    vs["VSSTRESN"] = vs["VSSTRESN"].astype(object)
    vs.loc[0, "VSSTRESN"], vs.loc[1, "VSSTRESN"] = "NaN", "<0.5"
    vs.loc[2, "VSDTC"], vs.loc[3, "VSDTC"] = "2014-01-02T25:00", "3000-01-02"
    split = split_valid(vs, domain_schema("VS", set(pilot["DM"]["USUBJID"]), cutoff="2026-11-30"))
    rules = split.quarantined.set_index("_SOURCE_ROW")["_QUARANTINE_RULES"]
    src = vs["_SOURCE_ROW"]
    assert "CT-VS-0012 VSSTRESN: not_numeric" in rules[src[0]]
    assert "CT-VS-0012 VSSTRESN: coerce_dtype" in rules[src[1]]
    assert "not an ISO 8601 date" in rules[src[2]]
    assert "out of range" in rules[src[3]] and "ISO" not in rules[src[3]]
    assert len(split.accepted) + len(split.quarantined) == len(vs) and len(split.quarantined) == 4


def test_conflicting_dm_rows_quarantine_every_copy_and_repeats_keep_one(pilot):
    dm = pilot["DM"].head(5).reset_index(drop=True)
    delivered = pd.concat([dm, dm.iloc[[1]], dm.iloc[[2]].assign(AGE=99)], ignore_index=True)
    split = split_valid(delivered, domain_schema("DM"))
    quarantined = split.quarantined["USUBJID"].tolist()
    assert sorted(quarantined) == sorted([dm["USUBJID"][1], dm["USUBJID"][2], dm["USUBJID"][2]])
    assert dm["USUBJID"][2] not in set(split.accepted["USUBJID"])  # no copy of a conflicting subject is trusted
    assert dm["USUBJID"][1] in set(split.accepted["USUBJID"])  # an identical repeat is kept once


def test_iso8601_accepts_partial_dates_and_rejects_impossible_ones():
    s = pd.Series(["2014", "2014-01", "2014-01-02", "2014-01-02T13:45", "2014-02-30", "02/01/2014", "2014-1-2"])
    assert iso8601(s).tolist() == [True, True, True, True, False, False, False]


def test_features_schema_rejects_raw_subject_ids():
    from pandera.errors import SchemaError

    ok = pd.DataFrame({"SUBJECT_KEY": ["S-" + "a" * 20], "AGE": [70.0], "SEX": ["F"], "VS_PULSE__baseline": [70.0]})
    FEATURES_SCHEMA.validate(ok)
    with pytest.raises(SchemaError):
        FEATURES_SCHEMA.validate(ok.assign(USUBJID=["01-701-1015"]))
    with pytest.raises(SchemaError):
        FEATURES_SCHEMA.validate(ok.assign(SUBJECT_KEY=["01-701-1015"]))


@pytest.mark.parametrize("column", ["VSSEQ", "VISITNUM"])
def test_text_in_a_numeric_column_with_checks_quarantines_that_row_only(pilot, column):
    """Text where a number belongs ("x" in VSSEQ) fails its row; the column's other checks still judge the rest
    (a check comparing text with a number used to fail the whole domain)."""
    vs = _vs_sample(pilot).reset_index(drop=True)
    vs[column] = vs[column].map(lambda v: f" {v:g} ").astype(object)  # text, as a CSV with one bad cell reads
    vs.loc[5, column], vs.loc[6, column] = "x", "-1"
    split = split_valid(vs, domain_schema("VS", set(pilot["DM"]["USUBJID"])))
    rules = split.quarantined.set_index("_SOURCE_ROW")[RULES]
    number = "0008" if column == "VSSEQ" else "0009"
    assert rules.to_dict() == {vs["_SOURCE_ROW"][5]: f"CT-VS-0012 {column}: coerce_dtype",
                               vs["_SOURCE_ROW"][6]: f"CT-VS-{number} {column}: greater_than_or_equal_to(0)"}
    assert len(split.accepted) == len(vs) - 2 and split.accepted[column].dtype == "float64"


def test_a_row_without_a_test_code_fails_that_rule_alone(pilot):
    """As when a file of the domain lacks --TESTCD: no knock-on unit or range failure for a test it does not name."""
    vs = _vs_sample(pilot).reset_index(drop=True)
    vs.loc[[1, 2], "VSTESTCD"] = None
    split = split_valid(vs, domain_schema("VS", set(pilot["DM"]["USUBJID"])))
    assert split.quarantined[RULES].tolist() == ["CT-VS-0020 VSTESTCD: not_nullable"] * 2
