"""Dagster concurrency pools mirroring the legacy Airflow pools (and their slot counts)."""

import dagster as dg

LEGACY_POOLS = {
    "spark_jobs": 4, "mlflow_operations": 2, "kafka_operations": 3, "feature_engineering": 2, "data_validation": 5,
    "model_training": 1, "model_serving": 3, "alert_processing": 10, "monitoring_tasks": 8,
}


def ensure_pools(instance: dg.DagsterInstance) -> None:
    for pool, slots in LEGACY_POOLS.items():
        instance.event_log_storage.set_concurrency_slots(pool, slots)


if __name__ == "__main__":
    with dg.DagsterInstance.get() as inst:
        ensure_pools(inst)
        print("pools:", ", ".join(f"{p}={n}" for p, n in LEGACY_POOLS.items()))
