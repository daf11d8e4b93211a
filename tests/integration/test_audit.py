"""The audit trail and the provenance of model versions (21 CFR 11.10(e), 11.50, 11.70)."""

import hashlib
import json
import os
import subprocess
import sys

import mlflow
import pandas as pd
import pytest

from ct_assets.core import audit, provenance, registry
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
    assert audit.verify() == ["line 3: its content does not match its hash (edited, or written without the audit key)"]
    path.write_text("\n".join(lines[:1] + lines[2:]) + "\n")  # line 2 deleted
    assert audit.verify()[0] == "line 2: does not follow the entry before it (a line was deleted, inserted or edited)"
    ct = os.path.join(os.path.dirname(sys.executable), "ct")
    out = subprocess.run([ct, "audit", "verify"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 1 and "line 2: does not follow the entry before it" in out.stdout and "CHAIN BROKEN" in out.stdout


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
    from ct_assets.core import schemas

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
    signed = subprocess.run([ct, "approve", "m", "2", "--reason", "holdout report reviewed", "--comment", "signed as QA lead"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env=os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{ct_home / 'mlflow.db'}"})
    assert signed.returncode == 0 and f"approved m version 2 (approved for deployment) by {audit.os_actor()}" in signed.stdout
    client.set_model_version_tag("m", "2", "ct.provenance", "changed")  # not the version that was approved
    with pytest.raises(registry.ApprovalRequired):
        registry.promote(client, "m", 2, actor="user:tester")
    client.set_model_version_tag("m", "2", "ct.provenance", "bbb")
    registry.promote(client, "m", 2, actor="user:tester")
    assert str(client.get_model_version_by_alias("m", "champion").version) == "2"
    [approval] = [e for e in audit.find("approval", "m/2")]
    assert approval["actor"] == audit.os_actor() and approval["after"] == {"meaning": registry.MEANING, "provenance": "bbb"}
    assert approval["details"] == {"comment": "signed as QA lead"}  # free text, never the approver
    signed = subprocess.run([ct, "approve", "m", "1", "--reason", "re-approved"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env=os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{ct_home / 'mlflow.db'}",
                                                           "MLFLOW_TRACKING_USERNAME": "qa-lead"})
    assert signed.returncode == 0 and "by mlflow:qa-lead" in signed.stdout  # production: the registry's identity

    with pytest.raises(ValueError):
        registry.rollback(client, "m", reason="")
    registry.rollback(client, "m", reason="site 12 data withdrawn", actor="user:tester")
    moves = [(e["object"], e["before"], e["after"], e["actor"]) for e in audit.find("alias_set")]
    assert moves[-2:] == [("m@champion", 2, 1, "user:tester"), ("m@previous_champion", 1, 2, "user:tester")]
    assert audit.verify() == []


def _five(ct_home) -> list[str]:
    for i in range(5):
        audit.record("alias_set", "m@champion", actor="user:tester", reason=f"step {i}", before=i, after=i + 1)
    assert audit.verify() == []
    return audit.log_path().read_text().splitlines(keepends=True)


def _verify_cli(ct_home) -> subprocess.CompletedProcess:
    ct = os.path.join(os.path.dirname(sys.executable), "ct")
    return subprocess.run([ct, "audit", "verify"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=os.environ | {"CT_HOME": str(ct_home)})


@pytest.mark.parametrize("removed", [1, 3])
def test_entries_removed_from_the_end_are_found(ct_home, removed):
    lines = _five(ct_home)
    audit.log_path().write_text("".join(lines[:-removed]))
    assert audit.verify() == [f"the log holds {5 - removed} entries but the checkpoint records 5: {removed} were removed"]
    out = _verify_cli(ct_home)
    assert out.returncode == 1 and f"{removed} were removed" in out.stdout


def test_a_deleted_log_is_found(ct_home):
    _five(ct_home)
    audit.log_path().unlink()
    [problem] = audit.verify()
    assert problem.endswith("is missing, but the checkpoint records 5 entries: the log was deleted")
    assert _verify_cli(ct_home).returncode == 1


def test_a_chain_rewritten_with_recomputed_hashes_is_found(ct_home):
    """The attacker recomputes every hash as the old log did (plain SHA-256): without the key it cannot verify."""
    import hashlib

    lines = _five(ct_home)
    prev, forged = audit.GENESIS, []
    for line in lines:
        entry = json.loads(line)
        entry.pop("alg")
        entry["reason"] = "nothing to see"
        entry["prev"] = prev
        body = json.dumps({k: v for k, v in entry.items() if k != "hash"}, sort_keys=True, separators=(",", ":"))
        entry["hash"] = prev = hashlib.sha256(body.encode()).hexdigest()
        forged.append(json.dumps(entry) + "\n")
    audit.log_path().write_text("".join(forged))
    assert audit.verify() == ["line 5: not the entry the checkpoint records as entry 5 (the chain was rewritten)"]


def test_a_torn_last_line_is_reported_and_the_next_write_starts_a_new_segment(ct_home):
    lines = _five(ct_home)
    audit.log_path().write_text("".join(lines) + lines[0][:40])  # a crash in the middle of a write
    out = _verify_cli(ct_home)
    assert out.returncode == 1 and "line 6: torn or not a JSON entry" in out.stdout and "Traceback" not in out.stderr
    entry = audit.record("approval", "m/1", actor="user:tester", reason="after the crash")  # does not fail
    assert entry["details"] == {"segment_after_torn_line": 6} and entry["prev"] == json.loads(lines[-1])["hash"]
    assert audit.verify() == ["line 6: torn or not a JSON entry (a write cut short, or an edit)"]  # the rest verifies


def test_an_alias_moved_or_removed_behind_the_platforms_back_is_found(ct_home):
    client = _registry(ct_home)
    registry.promote(client, "m", 1, actor="user:tester")
    assert _verify_cli(ct_home).returncode == 0
    client.set_registered_model_alias("m", "champion", "2")  # MLflow's own client, no audit record
    out = _verify_cli(ct_home)
    assert out.returncode == 1 and "m@champion is version 2, but the audit log's last alias_set made it 1" in out.stdout
    client.delete_registered_model_alias("m", "champion")
    out = _verify_cli(ct_home)
    assert out.returncode == 1 and "m@champion is not set, but the audit log's last alias_set made it 1" in out.stdout


def test_trace_matches_versions_exactly_and_marks_forged_provenance(ct_home):
    from ct_assets.ops import review

    client = _registry(ct_home)
    for _ in range(8):  # versions 3 to 10
        client.create_model_version("m", source="file:///nowhere", tags={"ct.provenance": "x"})
    audit.record("model_registered", "m/1", "user:tester", "", after={"tags": {"ct.provenance": "aaa", "ct.ruleset_version": "r1"}})
    audit.record("model_registered", "m/10", "user:tester", "", after={"tags": {"ct.provenance": "x"}})
    client.set_model_version_tag("m", "1", "ct.ruleset_version", "forged")
    report = review.trace(client, "m", "1", ct_home)
    assert "m/10" not in report  # version 10's events are not version 1's
    assert "`forged` **(differs from the audit log, which recorded `r1` at registration)**" in report
    assert "`aaa`" in report and "`aaa` **" not in report  # an unchanged tag is shown plainly


def test_verify_says_when_the_registry_could_not_be_checked(ct_home):
    from tests.kafka_broker import free_port

    _five(ct_home)
    ct = os.path.join(os.path.dirname(sys.executable), "ct")
    out = subprocess.run([ct, "audit", "verify"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=os.environ | {"CT_HOME": str(ct_home), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"})
    assert out.returncode == 1 and "the registry's aliases were not checked" in out.stdout and "NOT VERIFIED" in out.stdout
    assert "Traceback" not in out.stderr


def test_a_delivery_of_many_files_keeps_its_listing_beside_the_model_and_the_trace_checks_it(ct_home):
    """1,400 files (a million-subject synth study) overflow MLflow's 100,000-character registry tag: the tag holds the
    listing's digest and the run the listing, which the trace shows, and reports when it was altered."""
    from ct_assets.ops import review

    client = _registry(ct_home)
    sources = {f"lb_part{i:04d}.parquet": hashlib.sha256(str(i).encode()).hexdigest() for i in range(1400)}
    tags = provenance.sources_tags(sources)
    assert "ct.sources" not in tags and tags["ct.sources_files"] == "1400"
    assert provenance.sources_tags(dict(list(sources.items())[:3]))["ct.sources"] == json.dumps(
        dict(list(sources.items())[:3]), sort_keys=True)  # a few files: the listing itself, as before
    run = client.create_run(client.get_experiment_by_name("Default").experiment_id)
    client.log_dict(run.info.run_id, sources, tags["ct.sources_artifact"])
    version = client.create_model_version("m", source="file:///nowhere", run_id=run.info.run_id, tags=tags).version
    report = review.trace(client, "m", version, ct_home / "out-1")
    assert "| lb_part1399.parquet |" in report and "is missing or does not match" not in report
    client.log_dict(run.info.run_id, sources | {"lb_part0000.parquet": "0" * 64}, tags["ct.sources_artifact"])
    report = review.trace(client, "m", version, ct_home / "out-2")
    assert "listing of the 1400 source files" in report and "does not match its digest" in report
    assert "| lb_part1399.parquet |" not in report
