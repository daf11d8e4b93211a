"""Kafka with kafka-python: the connection settings, the study replay producer, the batch consumer
that lands records in the raw zone (see ``ct_assets.core.landing``), and the topic probe of the sensor and
the topic monitor.

    python -m ct_assets.adapters.kafka replay --bootstrap 127.0.0.1:9092 [--rate 500] [--study-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ct_assets import settings as ct_settings
from ct_assets.core import sdtm
from ct_assets.core.landing import Landing, Record, parse


@dataclass
class KafkaClient:
    """Where the clinical data topics live and how to reach them (the Dagster resource KafkaSettings holds
    the same fields as launchpad config). Security settings pass straight to kafka-python."""

    bootstrap_servers: str | None = None
    topics: list[str] = field(default_factory=lambda: ["clinical_data"])
    group_id: str = "ct-ingestion"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = None
    ssl_cafile: str | None = None
    batch_size: int = 20_000
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000

    def client_config(self) -> dict:
        servers = self.bootstrap_servers or ct_settings.kafka_servers()
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
            "metadata_max_age_ms": 5_000,  # a topic recreated under us shows its new id within seconds
            "allow_auto_create_topics": False,  # a consumer that creates a missing topic hides a deleted one
        } | overrides)

    def producer(self, **overrides):
        from kafka import KafkaProducer

        return KafkaProducer(**self.client_config() | {"acks": "all", "linger_ms": 20, "batch_size": 256 * 1024,
                                                        "max_request_size": 8 * 1024 * 1024} | overrides)


LEGACY_TOPICS = ["clinical_data", "lab_results", "patient-vitals", "adverse-events"]


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


def replay(settings: KafkaClient, topic: str, records, rate: float | None = None) -> int:
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
    resets: list[str] = field(default_factory=list)  # topics whose offsets started again: a new epoch each
    stages_removed: int = 0

    @property
    def rate(self) -> float:
        return self.polled / self.seconds if self.seconds else 0.0


def topic_id(consumer, topic: str) -> str | None:
    """The broker's id of the topic (Kafka 2.8+ and Tansu report one; a recreated topic gets a new
    one), from the consumer's metadata; None when the broker gives none."""
    cluster = getattr(getattr(consumer, "_client", None), "cluster", None)
    value = cluster.topic_id(topic) if cluster is not None and hasattr(cluster, "topic_id") else None
    return str(value) if value is not None and getattr(value, "int", 1) != 0 else None


def ingest(settings: KafkaClient, landing: Landing, idle_polls: int = 3, poll_timeout_ms: int = 1000,
           max_seconds: float | None = 3600, log: Callable[[str], None] = print, consumer=None) -> IngestStats:
    """Consume until the topics stay empty for ``idle_polls`` polls: land each partition's batch
    atomically, then commit its offsets. Records already landed (a replay after a crash) are skipped
    once their fingerprints show they are the landed ones; a topic whose offsets started again
    (another topic id, or other records at landed offsets) begins a new epoch, read from its start."""
    from kafka import OffsetAndMetadata
    from kafka.errors import KafkaError

    own = consumer is None
    consumer = consumer or settings.consumer()
    if own:
        consumer.subscribe(settings.topics)
    stats, started, idle = IngestStats(), time.perf_counter(), 0
    stats.stages_removed = landing.clean_stages()

    def restart_topic(topic: str, new_id: str | None, reason: str) -> None:
        epoch = landing.new_epoch(topic, new_id, reason)
        stats.resets.append(f"{topic}: {reason}; landing as epoch {epoch}")
        log(f"TOPIC RESET {topic}: {reason}. Its records land as epoch {epoch}, from its first offset.")
        mine = [tp for tp in consumer.assignment() if tp.topic == topic]
        if mine:
            consumer.seek_to_beginning(*mine)
            try:  # a rebalance must not resume from offsets of the old generation
                consumer.commit({tp: OffsetAndMetadata(0, "", -1) for tp in mine})
            except KafkaError as err:  # the group is rejoining (a restarted broker): it starts from the earliest then
                log(f"could not commit the start of epoch {epoch} of {topic}: {err}")

    try:
        while idle < idle_polls and (max_seconds is None or time.perf_counter() - started < max_seconds):
            for topic in {tp.topic for tp in consumer.assignment()}:
                *earlier, current = landing.epochs(topic)
                seen = topic_id(consumer, topic)
                if seen is None or seen in {e.get("topic_id") for e in earlier}:
                    continue  # no id, or metadata not yet refreshed since a reset
                if current.get("topic_id") is None:
                    landing.note_topic_id(topic, seen)
                elif seen != current["topic_id"]:
                    restart_topic(topic, seen, f"the broker reports topic id {seen}, the landed epoch {current['topic_id']}")
            polled = consumer.poll(timeout_ms=poll_timeout_ms, max_records=settings.batch_size)
            if not polled:
                idle += 1 if consumer.assignment() else 0  # joining the group takes a few polls
                continue
            idle = 0
            commits, reset = {}, set()
            for tp, messages in sorted(polled.items()):
                if tp.topic in reset:
                    continue  # re-read from the start of the new epoch
                epoch = landing.epoch(tp.topic)["epoch"]
                records = [Record(m.topic, m.partition, m.offset, m.value, m.key, m.timestamp, epoch) for m in messages]
                landed = landing.high_water(tp.topic, tp.partition, epoch)
                replayed = [r for r in records if r.offset <= landed]
                if replayed and not landing.same_records(replayed):
                    # The id is left for the next metadata refresh to tell (this one may still be the old one's).
                    restart_topic(tp.topic, None,
                                  f"partition {tp.partition}: records at offsets {replayed[0].offset}.. differ from "
                                  f"the landed ones (high-water mark {landed}): its offsets started again")
                    reset.add(tp.topic)
                    continue
                stats.polled += len(messages)
                fresh = [r for r in records if r.offset > landed]
                stats.skipped_replayed += len(replayed)
                if fresh:
                    accepted, quarantined = parse(fresh)
                    landing.write_batch(tp.topic, tp.partition, accepted, quarantined, fresh[0].offset, fresh[-1].offset,
                                        epoch, fresh)
                    stats.accepted += sum(t.num_rows for t in accepted.values())
                    stats.quarantined += len(quarantined)
                    stats.batches += 1
                    for reason in quarantined.get("_QUARANTINE_REASON", []):
                        key = reason.split(":")[0]
                        stats.quarantine_reasons[key] = stats.quarantine_reasons.get(key, 0) + 1
                commits[tp] = OffsetAndMetadata(messages[-1].offset + 1, "", -1)
            if commits:
                consumer.commit(commits)  # only after the batch is durably in the lake
            log(f"landed {stats.accepted + stats.quarantined} records ({stats.quarantined} quarantined) "
                f"in {stats.batches} batches")
    finally:
        stats.seconds = time.perf_counter() - started
        if own:
            consumer.close()
    return stats


def probe(settings: KafkaClient, timeout_ms: int = 2000) -> dict:
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
    parser = argparse.ArgumentParser(prog="python -m ct_assets.adapters.kafka", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("replay", help="replay an SDTM study into a topic, one JSON record per row")
    p.add_argument("--bootstrap", default=ct_settings.kafka_servers(), help="default $CT_KAFKA_BOOTSTRAP or 127.0.0.1:9092")
    p.add_argument("--topic", default="clinical_data")
    p.add_argument("--study-dir", help="SDTM folder (default $CT_STUDY_DIR or the bundled pilot)")
    p.add_argument("--rate", type=float, help="records per second at most (default: as fast as possible)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    sent = replay(KafkaClient(bootstrap_servers=args.bootstrap), args.topic, study_records(args.study_dir), args.rate)
    print(f"{sent} records sent to {args.topic} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
