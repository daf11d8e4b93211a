"""The audit trail and the provenance of model versions (21 CFR 11.10(e), 11.50, 11.70)."""

import json
import os
import subprocess
import sys

import mlflow
import pandas as pd
import pytest

from ct_assets.lib import audit, provenance, registry
from tests.conftest import ROOT
from tests.studies import pilot_dir


def test_the_chain_verifies_and_names_an_edited_or_deleted_line(ct_home):
    for i in range(5):
        audit.record("alias_set", "m@champion", actor="user:tester", reason=f"step {i}", before=i, after=i + 1)
    assert audit.verify() == []
    path = audit.log_path()
    lines = path.read_text().splitlines()
    edited = json.loads(lines[2])
    edited["reason"] = "something else"  # an edit that keeps the JSON valid and the old hash
    path.write_text("\n".join(lines[:2] + [json.dumps(edited)] + lines[3:]) + "\n")
    assert audit.verify() == ["line 3: its content does not match its hash (the entry was edited)"]
    path.write_text("\n".join(lines[:1] + lines[2:]) + "\n")  # line 2 deleted
    assert audit.verify() == ["line 2: does not follow line 1 (a line was deleted, inserted or edited)"]
    ct = os.path.join(os.path.dirname(sys.executable), "ct")
    out = subprocess.run([ct, "audit", "verify"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 1 and "line 2: does not follow line 1" in out.stdout and "CHAIN BROKEN" in out.stdout


def test_entries_say_who_when_what_why_and_the_state_before_and_after(ct_home):
    entry = audit.record("rollback", "m@champion", actor="dagster:abc (user:tester)", reason="drift", before=3, after=2)
    assert entry["time"].endswith("+00:00") and entry["actor"] == "dagster:abc (user:tester)"
    assert (entry["action"], entry["object"], entry["reason"], entry["before"], entry["after"]) == (
        "rollback", "m@champion", "drift", 3, 2)
    assert audit.entries()[-1]["hash"] == entry["hash"] and entry["prev"] == audit.GENESIS


def test_one_source_cell_changes_the_digest_and_one_rule_changes_the_ruleset(tmp_path, monkeypatch):
    dm = pd.read_parquet(pilot_dir() / "dm.parquet")
    dm.to_parquet(tmp_path / "a.parquet")
    changed = dm.copy()
    changed.loc[3, "AGE"] = changed.loc[3, "AGE"] + 1
    changed.to_parquet(tmp_path / "b.parquet")
    assert provenance.sha256_file(tmp_path / "a.parquet") != provenance.sha256_file(tmp_path / "b.parquet")
    assert provenance.frame_digest(dm) != provenance.frame_digest(changed)
    assert provenance.frame_digest(dm) == provenance.frame_digest(dm.copy())

    before = provenance.ruleset_version()
    assert provenance.ruleset_version() == before  # deterministic
    from ct_assets.quality import schemas

    monkeypatch.setitem(schemas.PLAUSIBLE_RANGES, ("SYSBP", "mmHg"), (40, 320))
    assert provenance.ruleset_version() != before
    monkeypatch.undo()
    monkeypatch.setattr(schemas, "EARLIEST_DATE", "1850-01-01")
    assert provenance.ruleset_version() != before


def _registry(home):
    uri = f"sqlite:///{home / 'mlflow.db'}"
    registry.point_mlflow(uri)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("m")
    for digest in ("aaa", "bbb"):
        client.create_model_version("m", source="file:///nowhere", tags={"ct.provenance": digest})
    return client


def test_production_refuses_a_promotion_without_an_approval_bound_to_the_version(ct_home, monkeypatch):
    client = _registry(ct_home)
    registry.promote(client, "m", 1, actor="user:tester")  # embedded profile: approved automatically, recorded
    [auto] = audit.find("approval", "m/1")
    assert auto["actor"] == "auto (embedded profile)" and auto["after"]["provenance"] == "aaa"

    monkeypatch.setenv("CT_PROFILE", "production")
    with pytest.raises(registry.ApprovalRequired, match="ct approve m 2"):
        registry.promote(client, "m", 2, actor="user:tester")
    assert str(client.get_model_version_by_alias("m", "champion").version) == "1"  # nothing moved
    with pytest.raises(ValueError):
        registry.approve(client, "m", 2, "user:qa-lead", reason="  ")
    ct = os.path.join(os.path.dirname(sys.executable), "ct")
    signed = subprocess.run([ct, "approve", "m", "2", "--reason", "holdout report reviewed", "--approver", "user:qa-lead"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env=os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{ct_home / 'mlflow.db'}"})
    assert signed.returncode == 0 and "approved m version 2 (approved for deployment) by user:qa-lead" in signed.stdout
    client.set_model_version_tag("m", "2", "ct.provenance", "changed")  # not the version that was approved
    with pytest.raises(registry.ApprovalRequired):
        registry.promote(client, "m", 2, actor="user:tester")
    client.set_model_version_tag("m", "2", "ct.provenance", "bbb")
    registry.promote(client, "m", 2, actor="user:tester")
    assert str(client.get_model_version_by_alias("m", "champion").version) == "2"
    [approval] = [e for e in audit.find("approval", "m/2")]
    assert approval["actor"] == "user:qa-lead" and approval["after"] == {"meaning": registry.MEANING, "provenance": "bbb"}

    with pytest.raises(ValueError):
        registry.rollback(client, "m", reason="")
    registry.rollback(client, "m", reason="site 12 data withdrawn", actor="user:tester")
    moves = [(e["object"], e["before"], e["after"], e["actor"]) for e in audit.find("alias_set")]
    assert moves[-2:] == [("m@champion", 2, 1, "user:tester"), ("m@previous_champion", 1, 2, "user:tester")]
    assert audit.verify() == []
