"""SDTM rules on good and bad rows: every bad row is quarantined with the rule it broke."""

import pandas as pd
import pytest

from ct_assets.lib.sdtm import DOMAINS, read_domain
from ct_assets.quality.schemas import FEATURES_SCHEMA, domain_schema, iso8601
from ct_assets.quality.validate import RULES, split_valid
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
        (lambda df: df.__setitem__("VSSTRESN", df["VSSTRESN"].where(df.index != 0, 900.0)), "plausible range"),
        (lambda df: df.__setitem__("VSDTC", df["VSDTC"].where(df.index != 0, "2014-13-45")), "VSDTC: not an ISO 8601"),
        (lambda df: df.__setitem__("USUBJID", df["USUBJID"].where(df.index != 0, "XX-999")), "USUBJID: subject not in DM"),
        (lambda df: df.__setitem__("VSTESTCD", df["VSTESTCD"].where(df.index != 0, "bad code")), "VSTESTCD: str_matches"),
        (lambda df: df.__setitem__("VSSTRESN", df["VSSTRESN"].where(df.index != 0, "abc")), "VSSTRESN: coerce_dtype"),
        (lambda df: df.__setitem__("VSSTRESU", df["VSSTRESU"].where(df.index != 0, "kPa")), "standard unit"),
        (lambda df: (df.__setitem__("VSSTRESN", df["VSSTRESN"].where(df.index != 0, None)),
                     df.__setitem__("VSSTRESC", df["VSSTRESC"].where(df.index != 0, None))), "no result"),
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
    dup = pd.concat([vs, vs.iloc[[3]]], ignore_index=True)
    split = split_valid(dup, domain_schema("VS"))
    assert len(split.accepted) == len(vs)
    assert "multiple_fields_uniqueness" in split.quarantined[RULES].iat[0]


def test_not_done_without_result_is_valid(pilot):
    vs = pilot["VS"]
    not_done = vs[vs["VSSTAT"] == "NOT DONE"]
    assert len(not_done) and not_done["VSSTRESN"].isna().all()
    assert len(split_valid(not_done, domain_schema("VS")).quarantined) == 0


def test_missing_required_column_quarantines_the_whole_domain(pilot):
    vs = _vs_sample(pilot).drop(columns=["VISITNUM"])
    split = split_valid(vs, domain_schema("VS"))
    assert split.accepted.empty
    assert len(split.quarantined) == len(vs)
    assert "VISITNUM" in split.quarantined["_QUARANTINE_REASON"].iat[0]


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
