"""The five legacy Airflow DAGs as Dagster jobs and schedules.

Each job is an asset selection. ``LEGACY_TASKS`` maps every legacy task id, in its legacy order,
to the assets that now do its work; the Airflow view (``airflow_compat``) is generated from it.

| legacy DAG | schedule | what the job computes |
|---|---|---|
| clinical_data_pipeline | every 6 h | changed study domains -> validation -> Spark -> features -> train, evaluate, register, promote; data quality report |
| model_monitoring | every 2 h | current data -> features and labels -> feature / prediction drift, performance, concept drift -> report (sensor retrains on breach) |
| data_quality_monitoring | every 4 h | ingestion and validation -> completeness, consistency, freshness, anomalies -> data quality report -> re-check of quarantined rows |
| scheduled_retraining | weekly | the full data path and training from scratch; champion/challenger promotion |
| feature_backfill | manual | stage, validate, recompute and load feature-store partitions (enrollment cohorts); verify; report |
"""

import dagster as dg

from ct_assets.core.sdtm import DOMAINS
from ct_assets.defs import keys
from ct_assets.defs.resources import StudySource

RAW = dg.AssetSelection.assets(*[keys.raw(d) for d in DOMAINS])
VALIDATION = dg.AssetSelection.assets(*[keys.validated(d) for d in DOMAINS], *[keys.quarantine(d) for d in DOMAINS])
DATA_PATH = RAW | VALIDATION | dg.AssetSelection.assets(keys.PROCESSED_VISITS, keys.SUBJECT_FEATURES, keys.ONLINE_FEATURES)
TRAINING = dg.AssetSelection.assets(keys.TRAINING_SET, keys.CANDIDATE_MODEL, keys.MODEL_EVALUATION,
                                    keys.REGISTERED_MODEL, keys.CHAMPION_MODEL)
REFERENCE = dg.AssetSelection.assets(keys.MONITORING_REFERENCE, keys.MONITORING_REFERENCE_META)
MONITORS = dg.AssetSelection.assets(keys.FEATURE_DRIFT, keys.PREDICTION_DRIFT, keys.MODEL_PERFORMANCE,
                                    keys.CONCEPT_DRIFT, keys.MONITORING_REPORT, keys.MONITORING_ALERTS)
QUALITY = dg.AssetSelection.assets(keys.DATA_COMPLETENESS, keys.DATA_CONSISTENCY, keys.DATA_FRESHNESS,
                                   keys.DATA_ANOMALIES, keys.DATA_QUALITY_REPORT)
BACKFILL = dg.AssetSelection.assets(keys.BACKFILL_INPUTS, keys.BACKFILL_FEATURES, keys.FEATURE_STORE_COHORTS,
                                    keys.BACKFILL_REPORT)


def _a(*asset_keys) -> dg.AssetSelection:
    """Assets with the checks they carry."""
    return dg.AssetSelection.assets(*asset_keys)


def _only(asset_key) -> dg.AssetSelection:
    """An asset without its separately executable checks."""
    return dg.AssetSelection.assets(asset_key).without_checks()


def _check(asset_key, name: str) -> dg.AssetSelection:
    return dg.AssetSelection.checks(dg.AssetCheckKey(asset_key, name))


# Each legacy task, in its legacy order, and the Dagster assets (or checks) that now do its work.
# Within a DAG every asset is run by exactly one task; the Airflow DAGs are generated from this.
LEGACY_TASKS: dict[str, list[tuple[str, dg.AssetSelection]]] = {
    "clinical_data_pipeline": [
        ("validate_clinical_data", VALIDATION),
        ("monitor_kafka_topics", RAW),
        ("spark_data_processing", _a(keys.PROCESSED_VISITS)),
        ("extract_features", _a(keys.SUBJECT_FEATURES, keys.ONLINE_FEATURES)),
        ("setup_mlflow_experiment", _a(keys.TRAINING_SET)),
        ("train_model", _a(keys.CANDIDATE_MODEL)),
        ("evaluate_model", _a(keys.MODEL_EVALUATION)),
        ("register_model", _a(keys.REGISTERED_MODEL)),
        ("deploy_model", _a(keys.CHAMPION_MODEL) | REFERENCE),
        ("validate_data_quality", QUALITY),
    ],
    "model_monitoring": [
        ("check_model_performance", _a(keys.MODEL_PERFORMANCE)),
        ("detect_data_drift", DATA_PATH | _a(keys.TRAINING_SET, keys.FEATURE_DRIFT)),
        ("check_concept_drift", _a(keys.CONCEPT_DRIFT)),
        ("validate_feature_distribution", _a(keys.PREDICTION_DRIFT)),
        ("generate_monitoring_report", _a(keys.MONITORING_REPORT)),
        ("send_alerts_if_needed", _a(keys.MONITORING_ALERTS)),
    ],
    "data_quality_monitoring": [
        ("check_data_completeness", RAW | _a(keys.DATA_COMPLETENESS)),
        ("validate_data_schema", VALIDATION),
        ("check_data_consistency", _a(keys.DATA_CONSISTENCY)),
        ("monitor_data_freshness", _a(keys.DATA_FRESHNESS)),
        ("detect_anomalies", _a(keys.DATA_ANOMALIES)),
        ("generate_quality_report", _a(keys.DATA_QUALITY_REPORT)),
        ("trigger_data_cleaning", _a(keys.QUARANTINE_RECHECK)),
    ],
    "scheduled_retraining": [
        ("check_retraining_conditions", DATA_PATH),
        ("prepare_training_data", _a(keys.TRAINING_SET)),
        ("retrain_model", _a(keys.CANDIDATE_MODEL)),
        ("evaluate_retrained_model", _a(keys.MODEL_EVALUATION)),
        ("compare_models", _a(keys.REGISTERED_MODEL)),
        ("deploy_new_model", _a(keys.CHAMPION_MODEL)),
        ("rollback_if_needed", REFERENCE),
    ],
    "feature_backfill": [
        ("extract_historical_data", _only(keys.BACKFILL_INPUTS)),
        ("validate_historical_data", _check(keys.BACKFILL_INPUTS, "inputs_valid")),
        ("engineer_features", _only(keys.BACKFILL_FEATURES)),
        ("validate_features", _check(keys.BACKFILL_FEATURES, "features_valid")),
        ("load_to_feature_store", _only(keys.FEATURE_STORE_COHORTS)),
        ("verify_feature_store", _check(keys.FEATURE_STORE_COHORTS, "store_verified")),
        ("generate_backfill_report", _a(keys.BACKFILL_REPORT)),
    ],
}

SELECTIONS = {
    "clinical_data_pipeline": DATA_PATH | TRAINING | REFERENCE | QUALITY,
    "model_monitoring": DATA_PATH | _a(keys.TRAINING_SET) | MONITORS,
    "data_quality_monitoring": RAW | VALIDATION | QUALITY | _a(keys.QUARANTINE_RECHECK),
    "scheduled_retraining": DATA_PATH | TRAINING | REFERENCE,
    "feature_backfill": BACKFILL,
}
DESCRIPTIONS = {
    "clinical_data_pipeline": "Study data to champion model: ingest what changed, validate, process, featurize, train, promote.",
    "model_monitoring": "Refresh current data and measure drift and degradation of the champion.",
    "data_quality_monitoring": "Validate the study and report its data quality against the threshold.",
    "scheduled_retraining": "Retrain on the full data; promote only a challenger at least as good as the champion.",
    "feature_backfill": "Recompute selected feature-store partitions (enrollment cohorts) after a correction.",
}
CRON = {
    "clinical_data_pipeline": "0 */6 * * *",
    "model_monitoring": "0 */2 * * *",
    "data_quality_monitoring": "0 */4 * * *",
    "scheduled_retraining": "0 3 * * 0",
    "feature_backfill": None,  # manual only
}

# feature_backfill lives in its own code location (ct_assets.locations.backfill): partitioned.
jobs = {name: dg.define_asset_job(name, selection=SELECTIONS[name], description=DESCRIPTIONS[name],
                                  tags={"ct/legacy_dag": name})
        for name in LEGACY_TASKS if name != "feature_backfill"}


def _last_metadata(instance: dg.DagsterInstance, key: dg.AssetKey, field: str):
    event = instance.get_latest_materialization_event(key)
    value = event.asset_materialization.metadata.get(field) if event and event.asset_materialization else None
    return value.value if value is not None else None


def changed_domains(instance: dg.DagsterInstance, study: StudySource) -> list[str]:
    """Domains whose files changed since their raw asset was last materialized (the cursor)."""
    return [d for d in DOMAINS if study.fingerprint(d) != _last_metadata(instance, keys.raw(d), "fingerprint")]


@dg.schedule(cron_schedule=CRON["clinical_data_pipeline"], job=jobs["clinical_data_pipeline"], execution_timezone="UTC",
             description="Every 6 h: process only the study domains whose files changed, then retrain.")
def clinical_data_pipeline_schedule(context: dg.ScheduleEvaluationContext, study: StudySource):
    changed = changed_domains(context.instance, study)
    trained_on = _last_metadata(context.instance, keys.TRAINING_SET, "study_fingerprint")
    if not changed and trained_on == study.fingerprint():
        return dg.SkipReason("study unchanged since the model was last trained")
    downstream = dg.AssetSelection.assets(*[keys.raw(d) for d in changed]).downstream()
    selection = (downstream & SELECTIONS["clinical_data_pipeline"]) | TRAINING | REFERENCE | QUALITY
    asset_keys = sorted(selection.resolve(context.repository_def.asset_graph), key=lambda k: k.to_user_string())
    return dg.RunRequest(
        run_key=f"study-{study.fingerprint()}",
        asset_selection=asset_keys,
        tags={"ct/changed_domains": ",".join(changed) or "none"},
    )


schedules = [clinical_data_pipeline_schedule] + [
    dg.ScheduleDefinition(name=f"{name}_schedule", job=jobs[name], cron_schedule=cron, execution_timezone="UTC")
    for name, cron in CRON.items() if cron and name != "clinical_data_pipeline"
]
