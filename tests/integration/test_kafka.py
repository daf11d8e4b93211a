"""Kafka ingestion against a real Kafka-wire-compatible broker (Tansu, see tests/kafka_broker.py):
full replay with reconciling counts, a consumer killed with SIGKILL mid-stream, poison records,
the sensor, and the landing read exactly like a study folder by the Dagster assets."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import dagster as dg
import pandas as pd
import pytest

from ct_assets.adapters.kafka import ingest, probe, replay, study_records
from ct_assets.core import sdtm
from ct_assets.core.landing import Landing, Record, parse
from ct_assets.defs.resources import KafkaSettings, StudySource
from ct_assets.locations.kafka import kafka_new_records, reconcile
from tests.conftest import ROOT
from tests.kafka_broker import Tansu, create_topic, delete_topic, tansu_broker
from tests.studies import pilot_dir


@pytest.fixture(scope="module")
def broker():
    with tansu_broker() as bootstrap:
        yield bootstrap


def settings(bootstrap: str, topic: str, **kw) -> KafkaSettings:
    # Tansu: a group join waits half the session timeout; keep it short in tests.
    return KafkaSettings(bootstrap_servers=bootstrap, topics=[topic], group_id=f"g-{topic}",
                         session_timeout_ms=6000, heartbeat_interval_ms=1000, **kw)


def landed_offsets(landing: Landing) -> pd.DataFrame:
    cols = ["_TOPIC", "_EPOCH", "_PARTITION", "_OFFSET"]
    return pd.concat([landing.read("accepted", cols), landing.read("quarantined", cols)], ignore_index=True)


def test_parse_quarantines_every_kind_of_bad_record():
    good = {"STUDYID": "S1", "DOMAIN": "VS", "USUBJID": "S1-001", "VSTESTCD": "HR", "VSSTRESN": 70}
    values = [json.dumps(good).encode(), b"{not json", json.dumps({"STUDYID": "S1"}).encode(),
              json.dumps(good | {"DOMAIN": "XX"}).encode(), json.dumps(good | {"USUBJID": ""}).encode(),
              json.dumps(good | {"VSSTRESN": {"v": 1}}).encode(), b"[1, 2]", None, b"\xff\xfe"]
    tables, quarantined = parse([Record("t", 0, i, v) for i, v in enumerate(values)])
    accepted = tables["VS"].to_pandas()
    assert list(tables) == ["VS"] and list(accepted["_OFFSET"]) == [0] and accepted["_SOURCE_FILE"].iloc[0] == "kafka:t/0"
    reasons = dict(zip(quarantined["_OFFSET"], quarantined["_QUARANTINE_REASON"]))
    assert reasons[1].startswith("malformed JSON") and reasons[2] == "missing DOMAIN"
    assert reasons[3] == "unknown DOMAIN 'XX'" and reasons[4] == "missing required field(s) USUBJID"
    assert reasons[5] == "nested value in field(s) VSSTRESN" and reasons[6].startswith("not a JSON object")
    assert reasons[7].startswith("not a JSON object") and reasons[8].startswith("malformed JSON")
    assert len(accepted) + len(quarantined) == len(values)


def test_full_replay_of_the_study_lands_and_reconciles(broker, tmp_path, monkeypatch):
    topic = "clinical_data"
    create_topic(broker, topic, partitions=3)
    records = list(study_records())
    sent = replay(settings(broker, topic), topic, records)
    landing = Landing(tmp_path / "lake" / "raw_kafka")
    stats = ingest(settings(broker, topic), landing, log=lambda _: None)
    assert sent == len(records) == stats.polled == stats.accepted and stats.quarantined == 0
    ok, detail = reconcile(landing)
    assert ok and detail["offsets"] == detail["rows"] == sent
    assert landing.counts()["accepted"] == sent
    # A second run finds nothing new and writes nothing.
    again = ingest(settings(broker, topic), landing, idle_polls=2, log=lambda _: None)
    assert again.polled == 0 and landing.counts()["accepted"] == sent

    # The landing reads exactly like the study folder, domain by domain.
    monkeypatch.setenv("CT_HOME", str(tmp_path))
    kafka_source, folder = StudySource(source="kafka"), StudySource(study_dir=str(pilot_dir()))
    for domain in sdtm.DOMAINS:
        a, b = folder.read(domain), kafka_source.read(domain)
        assert len(a) == len(b), domain
        key = ["USUBJID"] + ([f"{domain}SEQ"] if f"{domain}SEQ" in a else ["VISITNUM"] if domain == "SV" else [])
        merged = a.merge(b, on=key, suffixes=("", "_k"))
        assert len(merged) == len(a), domain
        for col in [c for c in a.columns if c.endswith("TESTCD") or c.endswith("STRESN") or c == "AGE"]:
            pd.testing.assert_series_equal(merged[col].astype(str), merged[f"{col}_k"].astype(str), check_names=False)


def test_landing_feeds_the_dagster_assets_like_a_folder(broker, tmp_path, monkeypatch):
    """raw -> validated on Kafka records: same row counts as from the study folder."""
    from ct_assets.defs.ingestion import raw_domain_asset
    from ct_assets.defs.profiles import profile_resources
    from ct_assets.defs.quality import validation_asset

    topic = "dm_vs"
    create_topic(broker, topic, partitions=2)
    source = pilot_dir()
    rows = [r for r in study_records(str(source)) if json.loads(r[1])["DOMAIN"] in ("DM", "VS")]
    replay(settings(broker, topic), topic, rows)
    monkeypatch.setenv("CT_HOME", str(tmp_path / "ct"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "ct"))
    ingest(settings(broker, topic), Landing(tmp_path / "ct" / "lake" / "raw_kafka"), log=lambda _: None)
    assets = [raw_domain_asset("DM"), raw_domain_asset("VS"), validation_asset("DM"), validation_asset("VS")]
    resources = profile_resources() | {"study": StudySource(source="kafka")}
    # An instance of its own: the results are read from it, and no earlier test's instance is in play.
    with dg.instance_for_test() as instance:
        result = dg.materialize(assets, resources=resources, instance=instance)
        assert result.success
        counts = {m.asset_key.to_user_string(): m.metadata["dagster/row_count"].value
                  for m in result.get_asset_materialization_events() for m in [m.materialization]}
        checks = result.get_asset_check_evaluations()
    folder = {d: len(sdtm.read_domain(source, d)) for d in ("DM", "VS")}
    assert counts["raw_dm"] == folder["DM"] and counts["raw_vs"] == folder["VS"]
    assert counts["validated_vs"] + counts["quarantine_vs"] == counts["raw_vs"]
    assert all(c.passed for c in checks if c.check_name == "rows_reconcile")


def test_consumer_killed_mid_stream_loses_and_duplicates_nothing(broker, tmp_path):
    topic = "crash"
    create_topic(broker, topic, partitions=3)
    records = list(study_records())[:40_000]
    replay(settings(broker, topic), topic, records)
    root = tmp_path / "raw_kafka"
    code = ("import sys; from pathlib import Path; from ct_assets.adapters.kafka import ingest; from ct_assets.defs.resources import KafkaSettings;"
            "from ct_assets.core.landing import Landing;"
            f"s = KafkaSettings(bootstrap_servers={broker!r}, topics=[{topic!r}], group_id='g-{topic}', batch_size=500,"
            " session_timeout_ms=6000, heartbeat_interval_ms=1000);"
            f"ingest(s, Landing(Path({str(root)!r})), log=lambda m: print(m, flush=True))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(Landing(root).batches()) < 5:  # a few batches landed: the stream is under way
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the consumer landed nothing"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    landing = Landing(root)
    before = landing.counts()["accepted"]
    assert 0 < before < len(records), "killed mid-stream"

    stats = ingest(settings(broker, topic), landing, log=lambda _: None)  # the restarted consumer
    offsets = landed_offsets(landing)
    assert len(offsets) == len(records) == landing.counts()["accepted"]
    assert not offsets.duplicated().any()
    assert stats.accepted == len(records) - before
    ok, detail = reconcile(landing)
    assert ok, detail


def test_poison_records_are_quarantined_and_the_stream_goes_on(broker, tmp_path):
    topic = "poison"
    create_topic(broker, topic, partitions=1)
    good = [r for _, r in zip(range(300), study_records())]
    poison = [(b"k", b"{oops"), (b"k", json.dumps({"DOMAIN": "ZZ", "STUDYID": "X", "USUBJID": "1"}).encode()),
              (b"k", json.dumps({"STUDYID": "X"}).encode())]
    replay(settings(broker, topic), topic, good[:100] + poison + good[100:])
    landing = Landing(tmp_path / "raw_kafka")
    stats = ingest(settings(broker, topic), landing, log=lambda _: None)
    assert stats.accepted == 300 and stats.quarantined == 3
    quarantined = landing.read("quarantined")
    assert list(quarantined["_OFFSET"]) == [100, 101, 102]
    assert set(stats.quarantine_reasons) == {"malformed JSON", "unknown DOMAIN 'ZZ'", "missing DOMAIN"}
    assert quarantined["_RAW"].iloc[0] == "{oops"
    accepted = landing.read("accepted")
    assert accepted["_OFFSET"].max() == 302  # records after the poison landed too


def test_sensor_requests_ingestion_once_per_new_data(broker, tmp_path):
    topic = "sensed"
    create_topic(broker, topic, partitions=2)
    kafka = settings(broker, topic)
    replay(kafka, topic, [r for _, r in zip(range(50), study_records())])
    with dg.build_sensor_context(resources={"kafka": kafka}) as context:
        first = kafka_new_records(context)
        assert isinstance(first, dg.RunRequest)
        context.update_cursor(first.run_key)
        assert isinstance(kafka_new_records(context), dg.SkipReason)  # same data: asked once
        ingest(kafka, Landing(tmp_path / "raw_kafka"), log=lambda _: None)
        assert isinstance(kafka_new_records(context), dg.SkipReason)  # all committed: nothing to do
        replay(kafka, topic, [r for _, r in zip(range(5), study_records())])
        assert isinstance(kafka_new_records(context), dg.RunRequest)
    state = probe(kafka)
    assert state["partitions"] == {topic: 2} and sum(v or 0 for v in state["committed"].values()) == 50


def test_rows_of_other_shapes_keep_every_field():
    """Producers other than ours may omit fields or mix numbers and text: nothing is dropped."""
    base = {"STUDYID": "S1", "DOMAIN": "LB", "USUBJID": "S1-001", "LBTESTCD": "ALT"}
    values = [json.dumps(base | {"LBSTRESN": 10}).encode(), json.dumps(base | {"LBORRES": "<5"}).encode(),
              json.dumps(base | {"LBSTRESN": "n/a"}).encode()]
    tables, quarantined = parse([Record("t", 1, i, v) for i, v in enumerate(values)])
    lb = tables["LB"].to_pandas()
    assert quarantined.empty and len(lb) == 3
    assert list(lb["LBSTRESN"]) == ["10", None, "n/a"] and lb["LBORRES"].iloc[1] == "<5"


def test_kafka_ingestion_asset_lands_and_its_checks_pass(broker, tmp_path, monkeypatch):
    from ct_assets.locations.kafka import defs

    topic = "asset"
    create_topic(broker, topic, partitions=2)
    replay(settings(broker, topic), topic, [r for _, r in zip(range(2_000), study_records())] + [(b"k", b"{bad")])
    monkeypatch.setenv("CT_HOME", str(tmp_path / "ct"))
    resources = defs.resources | {"kafka": settings(broker, topic)}
    with dg.instance_for_test() as instance:
        result = dg.materialize([defs.get_assets_def("kafka_ingestion")], resources=resources, instance=instance)
    assert result.success
    md = result.asset_materializations_for_node("kafka_ingestion")[0].metadata
    assert md["accepted"].value == 2_000 and md["quarantined"].value == 1 and md["records_per_second"].value > 0
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["offsets_reconcile"].passed and checks["offsets_reconcile"].metadata["rows"].value == 2_001
    assert checks["sample_validity"].passed  # 1 in 2,001 is under 5 %
    assert checks["topic_healthy"].passed


def test_a_topic_that_starts_again_lands_as_a_new_epoch_and_fails_topic_healthy(tmp_path, monkeypatch):
    """Generation 1 lands; the broker restarts mid-stream (memory storage: the topic and the group's
    offsets are gone) and the topic is recreated with generation 2, whose offsets start again at 0,
    below the landed high-water mark; then the topic is deleted and recreated with generation 3 and
    the asset runs. Every record of every generation lands exactly once, each under its own epoch;
    topic_healthy fails on the run that saw the reset, and only on it; orphan stages are removed."""
    from ct_assets.locations.kafka import defs

    records = list(study_records())
    gen1, gen2, gen3 = records[:3_000], records[3_000:4_500], records[4_500:5_500]
    topic = "generations"
    broker = Tansu()
    broker.start()
    try:
        kafka = settings(broker.bootstrap, topic)
        create_topic(broker.bootstrap, topic, partitions=2)
        replay(kafka, topic, gen1)
        landing = Landing(tmp_path / "ct" / "lake" / "raw_kafka")
        dead = subprocess.Popen(["true"])  # a writer that is gone
        dead.wait()
        orphans = [landing.root / topic / "p0" / f".stage-{uuid.uuid4().hex}",  # as a killed writer left them
                   landing.root / topic / "p1" / f".stage-{dead.pid}@{socket.gethostname()}-{uuid.uuid4().hex}"]
        for orphan in orphans:
            orphan.mkdir(parents=True)
            (orphan / "accepted-VS.parquet").write_bytes(b"half")
        out: dict = {}
        consumer = threading.Thread(target=lambda: out.update(stats=ingest(kafka, landing, idle_polls=12, log=lambda _: None)))
        consumer.start()
        deadline = time.monotonic() + 60
        while landing.counts()["accepted"] < len(gen1):
            assert time.monotonic() < deadline and consumer.is_alive(), "generation 1 did not land"
            time.sleep(0.1)
        broker.restart()  # the consumer is still polling
        create_topic(broker.bootstrap, topic, partitions=2, exist_ok=True)  # Tansu may have auto-created it
        replay(kafka, topic, gen2)
        consumer.join(timeout=180)
        assert not consumer.is_alive()
        stats = out["stats"]
        assert stats.stages_removed == 2 and not any(o.exists() for o in orphans)
        assert len(stats.resets) == 1 and "epoch 1" in stats.resets[0], stats.resets
        offsets = landed_offsets(landing)
        assert not offsets.duplicated().any()
        assert offsets.groupby("_EPOCH").size().to_dict() == {0: len(gen1), 1: len(gen2)}
        ok, detail = reconcile(landing)
        assert ok and detail["rows"] == len(gen1) + len(gen2), detail

        delete_topic(broker.bootstrap, topic)  # deleted and recreated: a new topic id
        create_topic(broker.bootstrap, topic, partitions=2)
        replay(kafka, topic, gen3)
        monkeypatch.setenv("CT_HOME", str(tmp_path / "ct"))
        resources = defs.resources | {"kafka": kafka}
        config = {"ops": {"kafka_ingestion": {"config": {"idle_polls": 2}}}}
        with dg.instance_for_test() as instance:
            runs = [dg.materialize([defs.get_assets_def("kafka_ingestion")], resources=resources, instance=instance,
                                   run_config=config) for _ in range(2)]
        first, second = ({c.check_name: c for c in r.get_asset_check_evaluations()} for r in runs)
        assert not first["topic_healthy"].passed and "landing as epoch 2" in first["topic_healthy"].description
        assert first["topic_healthy"].metadata["epochs"].value == {topic: 2}
        assert first["offsets_reconcile"].passed and second["topic_healthy"].passed and second["offsets_reconcile"].passed
        offsets = landed_offsets(landing)
        assert not offsets.duplicated().any()
        assert offsets.groupby("_EPOCH").size().to_dict() == {0: len(gen1), 1: len(gen2), 2: len(gen3)}
        # Each generation's own records, in order: the values of epoch 2 are those of generation 3.
        accepted = landing.read("accepted", ["_EPOCH", "_PARTITION", "_OFFSET", "USUBJID", "DOMAIN"])
        keys = {json.loads(v)["USUBJID"] for _, v in gen3}
        assert set(accepted.loc[accepted["_EPOCH"] == 2, "USUBJID"]) <= keys
    finally:
        broker.stop()
