"""The rules catalogue: every way a row can fail has a stable id, and docs/rules.md is the catalogue."""

from pathlib import Path

import pandas as pd
import pytest

from ct_assets.core import rules
from ct_assets.core.schemas import domain_schema
from ct_assets.core.sdtm import DOMAINS
from ct_assets.engines.pandas import RULES, split_valid

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("domain", DOMAINS)
def test_every_failure_a_schema_can_report_has_a_rule(domain):
    unnamed = [(c, k) for c, k in rules.possible_findings(domain) if rules.find(domain, c, k) is None]
    assert not unnamed, f"{domain}: add these to ct_assets/core/rules.py: {unnamed}"


def test_every_rule_applies_somewhere_and_numbers_are_unique():
    numbers = [r.number for r in rules.CATALOGUE]
    assert len(numbers) == len(set(numbers))
    used = {r.number for d in DOMAINS for r in rules.applicable(d)}
    assert used == set(numbers), f"rules no schema can break: {sorted(set(numbers) - used)}"
    assert {r.severity for r in rules.CATALOGUE} == {rules.QUARANTINE, rules.WARNING}
    assert {r.core for r in rules.CATALOGUE} >= {"CORE-000544", "CORE-000201", "CORE-000699"}


def test_the_issue_examples_have_their_ids():
    assert rules.find("VS", "VSSEQ", "multiple_fields_uniqueness").id("VS") == "CT-VS-0005"
    assert rules.find("SV", "VISITNUM", "multiple_fields_uniqueness").id("SV") == "CT-SV-0006"
    assert rules.find("LB", "USUBJID", "subject_in_dm").core == "CORE-000201"
    assert rules.find("AE", "AEENDTC", "iso8601").id("AE") == "CT-AE-0010"
    assert rules.rule_id("CT-LB-0024 LBSTRESU differs") == "CT-LB-0024" and rules.rule_id("plain text") is None


def test_docs_rules_md_is_current():
    text = (ROOT / "docs/rules.md").read_text()
    assert text == rules.markdown(), "docs/rules.md is stale: run `make rules-doc`"


def test_quarantine_reasons_start_with_the_rule_id():
    df = pd.DataFrame({"STUDYID": ["S", "S"], "DOMAIN": ["DM", "DM"], "USUBJID": ["1", "2"], "SEX": ["M", "X"],
                       "AGE": [30, 130]})
    q = split_valid(df, domain_schema("DM")).quarantined
    assert q[RULES].tolist() == ["CT-DM-0030 AGE: in_range(0, 120); CT-DM-0031 SEX: isin(['M', 'F', 'U', "
                                 "'UNDIFFERENTIATED'])"]
    assert q["_QUARANTINE_REASON"].iat[0] == "failed: " + q[RULES].iat[0]
