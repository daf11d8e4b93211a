"""Kafka with kafka-python: the connection settings, the study replay producer, the batch consumer
that lands records in the raw zone (see ``kafka_landing``), and the topic probe of the sensor and
the topic monitor.

    python -m ct_assets.ingestion.kafka replay --bootstrap 127.0.0.1:9092 [--rate 500] [--study-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg
from pydantic import Field

from ct_assets.ingestion.kafka_landing import Landing, Record, parse
from ct_assets.lib import sdtm

LEGACY_TOPICS = ["clinical_data", "lab_results", "patient-vitals", "adverse-events"]


class KafkaSettings(dg.ConfigurableResource):
    """Where the clinical data topics live. Security settings pass straight to kafka-python."""

    bootstrap_servers: str | None = Field(default=None, description="Comma-separated host:port list "
                                                                    "(default $CT_KAFKA_BOOTSTRAP, else 127.0.0.1:9092).")
    topics: list[str] = Field(default=["clinical_data"], description="Topics to ingest (legacy: clinical_data).")
    group_id: str = Field(default="ct-ingestion", description="Consumer group whose committed offsets track progress.")
    security_protocol: str = Field(default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")
    sasl_mechanism: str | None = Field(default=None, description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, ...")
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = Field(default=None, description="Give it as EnvVar('CT_KAFKA_PASSWORD').")
    ssl_cafile: str | None = None
    batch_size: int = Field(default=20_000, description="Most records per poll and per landed batch.")
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000

    def client_config(self) -> dict:
        servers = self.bootstrap_servers or os.environ.get("CT_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
        conf = {"bootstrap_servers": servers.split(","), "security_protocol": self.security_protocol}
        optional = {"sasl_mechanism": self.sasl_mechanism, "sasl_plain_username": self.sasl_plain_username,
                    "sasl_plain_password": self.sasl_plain_password, "ssl_cafile": self.ssl_cafile}
        return conf | {k: v for k, v in optional.items() if v is not None}

    def consumer(self, **overrides):
        from kafka import KafkaConsumer

        return KafkaConsumer(**self.client_config() | {
            "group_id": self.group_id, "enable_auto_commit": False, "auto_offset_reset": "earliest",
            "max_poll_records": self.batch_size, "session_timeout_ms": self.session_timeout_ms,
            "heartbeat_interval_ms": self.heartbeat_interval_ms, "fetch_max_bytes": 64 * 1024 * 1024,
            "max_partition_fetch_bytes": 16 * 1024 * 1024,
        } | overrides)

    def producer(self, **overrides):
        from kafka import KafkaProducer

        return KafkaProducer(**self.client_config() | {"acks": "all", "linger_ms": 20, "batch_size": 256 * 1024,
                                                        "max_request_size": 8 * 1024 * 1024} | overrides)


# --- producer ------------------------------------------------------------------------------------

def study_records(study_dir: str | None = None):
    """(key, JSON bytes) per SDTM row of every domain of the study, with its DOMAIN."""
    source = sdtm.study_path(study_dir)
    for domain in sdtm.DOMAINS:
        frame = sdtm.read_domain(source, domain)
        if frame is None:
            continue
        frame = frame.drop(columns=sdtm.SOURCE_COLS, errors="ignore").assign(DOMAIN=domain)
        # Python objects, missing values as null: floats keep every digit (repr), unlike DataFrame.to_json.
        rows = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
        for row in rows:
            yield str(row.get("USUBJID", "")).encode(), json.dumps(row, separators=(",", ":"), default=str,
                                                                   allow_nan=False).encode()


def replay(settings: KafkaSettings, topic: str, records, rate: float | None = None) -> int:
    """Send records (key, value), keyed by subject so one subject's rows stay in order on one
    partition; ``rate`` records per second at most (None: as fast as the broker takes them)."""
    producer = settings.producer()
    sent, started = 0, time.perf_counter()
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value)
            sent += 1
            if rate and sent % 100 == 0:
                ahead = sent / rate - (time.perf_counter() - started)
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush()
    finally:
        producer.close()
    return sent


# --- consumer ------------------------------------------------------------------------------------

@dataclass
class IngestStats:
    polled: int = 0
    skipped_replayed: int = 0
    accepted: int = 0
    quarantined: int = 0
    batches: int = 0
    seconds: float = 0.0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.polled / self.seconds if self.seconds else 0.0


def ingest(settings: KafkaSettings, landing: Landing, idle_polls: int = 3, poll_timeout_ms: int = 1000,
           max_seconds: float | None = 3600, log: Callable[[str], None] = print, consumer=None) -> IngestStats:
    """Consume until the topics stay empty for ``idle_polls`` polls: land each partition's batch
    atomically, then commit its offsets. Records already landed (a replay after a crash) are skipped."""
    from kafka import OffsetAndMetadata

    own = consumer is None
    consumer = consumer or settings.consumer()
    if own:
        consumer.subscribe(settings.topics)
    stats, started, idle = IngestStats(), time.perf_counter(), 0
    try:
        while idle < idle_polls and (max_seconds is None or time.perf_counter() - started < max_seconds):
            polled = consumer.poll(timeout_ms=poll_timeout_ms, max_records=settings.batch_size)
            if not polled:
                idle += 1 if consumer.assignment() else 0  # joining the group takes a few polls
                continue
            idle = 0
            commits = {}
            for tp, messages in polled.items():
                stats.polled += len(messages)
                landed = landing.high_water(tp.topic, tp.partition)
                fresh = [Record(m.topic, m.partition, m.offset, m.value) for m in messages if m.offset > landed]
                stats.skipped_replayed += len(messages) - len(fresh)
                if fresh:
                    accepted, quarantined = parse(fresh)
                    landing.write_batch(tp.topic, tp.partition, accepted, quarantined, fresh[0].offset, fresh[-1].offset)
                    stats.accepted += sum(t.num_rows for t in accepted.values())
                    stats.quarantined += len(quarantined)
                    stats.batches += 1
                    for reason in quarantined.get("_QUARANTINE_REASON", []):
                        key = reason.split(":")[0]
                        stats.quarantine_reasons[key] = stats.quarantine_reasons.get(key, 0) + 1
                commits[tp] = OffsetAndMetadata(messages[-1].offset + 1, "", -1)
            consumer.commit(commits)  # only after the batch is durably in the lake
            log(f"landed {stats.accepted + stats.quarantined} records ({stats.quarantined} quarantined) "
                f"in {stats.batches} batches")
    finally:
        stats.seconds = time.perf_counter() - started
        if own:
            consumer.close()
    return stats


def probe(settings: KafkaSettings, timeout_ms: int = 2000) -> dict:
    """What the sensor and the topic monitor need: is the broker there, which partitions, where is
    the group committed, and is there at least one record after it. Reads without committing.

    (end_offsets() is not used for "new data": some Kafka-compatible brokers report it wrong; a
    real fetch after the committed offset is the one answer every broker gives right.)"""
    from kafka import TopicPartition

    consumer = settings.consumer(group_id=settings.group_id, enable_auto_commit=False)
    try:
        partitions, committed, pending = {}, {}, {}
        for topic in settings.topics:
            ids = consumer.partitions_for_topic(topic) or set()
            partitions[topic] = len(ids)
            for pid in sorted(ids):
                tp = TopicPartition(topic, pid)
                committed[f"{topic}/{pid}"] = consumer.committed(tp)
        tps = [TopicPartition(t, int(k.split("/")[1])) for k in committed for t in [k.split("/")[0]]]
        if tps:
            consumer.assign(tps)
            for tp in tps:
                offset = committed[f"{tp.topic}/{tp.partition}"]
                consumer.seek(tp, offset) if offset is not None else consumer.seek_to_beginning(tp)
            deadline = time.perf_counter() + timeout_ms / 1000
            while time.perf_counter() < deadline and not pending:
                for tp, messages in consumer.poll(timeout_ms=200, max_records=len(tps)).items():
                    pending[f"{tp.topic}/{tp.partition}"] = messages[0].offset
        ends = consumer.end_offsets(tps) if tps else {}
        # Lag as the broker reports its end offsets (a Kafka-compatible broker may report them wrong:
        # shown for operators, never used to decide anything).
        lag = {f"{tp.topic}/{tp.partition}": max(0, end - (committed[f"{tp.topic}/{tp.partition}"] or 0))
               for tp, end in ends.items()}
        return {"partitions": partitions, "committed": committed, "next_pending": pending, "reported_lag": lag}
    finally:
        consumer.close(autocommit=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ct_assets.ingestion.kafka", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("replay", help="replay an SDTM study into a topic, one JSON record per row")
    p.add_argument("--bootstrap", default=os.environ.get("CT_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    p.add_argument("--topic", default="clinical_data")
    p.add_argument("--study-dir", help="SDTM folder (default $CT_STUDY_DIR or the bundled pilot)")
    p.add_argument("--rate", type=float, help="records per second at most (default: as fast as possible)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    sent = replay(KafkaSettings(bootstrap_servers=args.bootstrap), args.topic, study_records(args.study_dir), args.rate)
    print(f"{sent} records sent to {args.topic} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
