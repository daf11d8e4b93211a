"""A fourth code location: ingestion from Kafka into the raw zone, its sensor and its topic monitor.

Kept apart from the main location so that the main graph needs no broker. The landed records are
read by the main location's raw assets when the study source is Kafka (``CT_STUDY_SOURCE=kafka``
or ``study.source: kafka``), exactly as they read a study folder.

    CT_KAFKA_BOOTSTRAP=broker:9092 dagster asset materialize -m ct_assets.locations.kafka --select kafka_ingestion
"""

import dagster as dg
from pydantic import Field

from ct_assets import settings
from ct_assets.adapters.kafka import ingest, probe
from ct_assets.core.landing import Landing
from ct_assets.defs import keys
from ct_assets.defs.failures import external
from ct_assets.defs.profiles import profile_resources
from ct_assets.defs.resources import KafkaSettings, Lake

CHECKS = [
    dg.AssetCheckSpec("offsets_reconcile", asset=keys.KAFKA_INGESTION,
                      description="Every landed offset once: per partition, batches cover 0..high-water without gap or "
                                  "overlap, and rows landed (accepted + quarantined) = offsets consumed."),
    dg.AssetCheckSpec("sample_validity", asset=keys.KAFKA_INGESTION,
                      description="Share of this run's records quarantined is at most the threshold."),
    dg.AssetCheckSpec("topic_healthy", asset=keys.KAFKA_INGESTION,
                      description="Broker reachable, every topic has partitions, no record left behind the "
                                  "committed offsets after the run, and no topic whose offsets started again (recreated "
                                  "or a broker that lost its log: its records land as a new epoch, and this fails once "
                                  "so that someone looks)."),
]


class KafkaIngestConfig(dg.Config):
    max_quarantine_share: float = Field(default=0.05, description="sample_validity fails above this share.")
    idle_polls: int = Field(default=3, description="Stop after this many empty polls (the topic is drained).")


def landing_of(lake: Lake) -> Landing:
    return Landing(settings.kafka_landing_dir(lake.base()))


def reconcile(landing: Landing) -> tuple[bool, dict]:
    """Batches per partition (and epoch of its topic) are contiguous from the first landed offset and
    each batch holds one row per offset."""
    problems, offsets, rows = [], 0, 0
    by_partition: dict[str, list[tuple[int, int, int]]] = {}
    for batch in landing.batches():
        first, last = (int(x) for x in batch.name[1:].split("-"))
        n = landing.batch_rows(batch)
        by_partition.setdefault(f"{batch.parent.parent.name}/{batch.parent.name}", []).append((first, last, n))
    for part, ranges in by_partition.items():
        expected = ranges[0][0]
        for first, last, n in sorted(ranges):
            if first != expected:
                problems.append(f"{part}: gap or overlap at offset {first} (expected {expected})")
            if n != last - first + 1:
                problems.append(f"{part}: batch {first}-{last} holds {n} rows for {last - first + 1} offsets")
            expected, offsets, rows = last + 1, offsets + last - first + 1, rows + n
    return not problems, {"offsets": offsets, "rows": rows, "partitions": len(by_partition),
                          "problems": "; ".join(problems[:5]) or "none"}


@dg.asset(
    key=keys.KAFKA_INGESTION,
    group_name="ingestion",
    kinds={"kafka", "parquet"},
    pool="kafka_operations",
    check_specs=CHECKS,
    description="Clinical records from Kafka, landed at least once and written exactly once into the raw zone; "
    "malformed records quarantined with their reason and offset.",
)
def kafka_ingestion(context: dg.AssetExecutionContext, config: KafkaIngestConfig, kafka: KafkaSettings, lake: Lake):
    landing = landing_of(lake)
    with external("Kafka", ",".join(kafka.client_config()["bootstrap_servers"])):  # a broker away: legacy 3 x 5 min
        stats = ingest(kafka, landing, idle_polls=config.idle_polls, log=context.log.info)
    totals = landing.counts()
    share = stats.quarantined / (stats.accepted + stats.quarantined) if stats.accepted + stats.quarantined else 0.0
    ok, detail = reconcile(landing)
    after = probe(kafka, timeout_ms=1000)
    reasons = "\n".join(f"| {r} | {n} |" for r, n in sorted(stats.quarantine_reasons.items()))
    yield dg.MaterializeResult(metadata={
        "records_consumed": stats.polled,
        "accepted": stats.accepted,
        "quarantined": stats.quarantined,
        "skipped_already_landed": stats.skipped_replayed,
        "topic_resets": len(stats.resets),
        "orphan_stages_removed": stats.stages_removed,
        "batches": stats.batches,
        "records_per_second": round(stats.rate, 1),
        "landed_accepted_total": totals["accepted"],
        "landed_quarantined_total": totals["quarantined"],
        "topics": ", ".join(kafka.topics),
        "quarantine_reasons": dg.MetadataValue.md("| reason | records |\n|---|---|\n" + reasons if reasons else "none"),
        "path": dg.MetadataValue.path(str(landing.root)),
    })
    yield dg.AssetCheckResult(check_name="offsets_reconcile", passed=ok, metadata=detail)
    yield dg.AssetCheckResult(check_name="sample_validity", passed=share <= config.max_quarantine_share,
                              metadata={"quarantined_share": round(share, 4), "threshold": config.max_quarantine_share})
    healthy = all(n > 0 for n in after["partitions"].values()) and not after["next_pending"] and not stats.resets
    if stats.resets:
        context.log.error("Kafka topic reset: " + " | ".join(stats.resets))
    epochs = {t: landing.epoch(t)["epoch"] for t in kafka.topics}
    yield dg.AssetCheckResult(check_name="topic_healthy", passed=healthy, severity=dg.AssetCheckSeverity.ERROR,
                              description="; ".join(stats.resets) or None, metadata={
        "resets": dg.MetadataValue.md("\n".join(f"- {r}" for r in stats.resets) or "none"),
        "epochs": dg.MetadataValue.json(epochs),
        "partitions": dg.MetadataValue.json(after["partitions"]),
        "committed": dg.MetadataValue.json({k: v for k, v in after["committed"].items()}),
        "pending_after_run": dg.MetadataValue.json(after["next_pending"]),
        "reported_lag": dg.MetadataValue.json(after["reported_lag"]),
    })


kafka_ingestion_job = dg.define_asset_job("kafka_ingestion_job", selection=[kafka_ingestion],
                                          description="Land new Kafka records in the raw zone.")


@dg.sensor(job=kafka_ingestion_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED,
           description="Requests kafka_ingestion when a topic has records after the consumer group's committed offsets.")
def kafka_new_records(context: dg.SensorEvaluationContext, kafka: KafkaSettings):
    state = probe(kafka)
    if not state["next_pending"]:
        return dg.SkipReason(f"nothing after the committed offsets of {', '.join(kafka.topics)}")
    run_key = ",".join(f"{k}@{v}" for k, v in sorted(state["next_pending"].items()))
    if run_key == context.cursor:
        return dg.SkipReason(f"already requested for {run_key}")
    context.update_cursor(run_key)
    return dg.RunRequest(run_key=run_key, tags={"ct/kafka_pending": run_key[:200]})


defs = dg.Definitions(
    assets=[kafka_ingestion],
    jobs=[kafka_ingestion_job],
    sensors=[kafka_new_records],
    resources=profile_resources(),
    executor=dg.in_process_executor,
)
