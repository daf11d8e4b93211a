"""Asset keys by name, so modules refer to each other's assets without importing them."""

from dagster import AssetKey


def raw(domain: str) -> AssetKey:
    return AssetKey(f"raw_{domain.lower()}")


def validated(domain: str) -> AssetKey:
    return AssetKey(f"validated_{domain.lower()}")


def quarantine(domain: str) -> AssetKey:
    return AssetKey(f"quarantine_{domain.lower()}")


PROCESSED_VISITS = AssetKey("processed_visits")
SUBJECT_FEATURES = AssetKey("subject_features")
ONLINE_FEATURES = AssetKey("online_features")
TRAINING_SET = AssetKey("training_set")
CANDIDATE_MODEL = AssetKey("candidate_model")
MODEL_EVALUATION = AssetKey("model_evaluation")
REGISTERED_MODEL = AssetKey("registered_model")
CHAMPION_MODEL = AssetKey("champion_model")


MONITORING_REFERENCE = AssetKey("monitoring_reference")
MONITORING_REFERENCE_META = AssetKey("monitoring_reference_meta")
FEATURE_DRIFT = AssetKey("feature_drift")
PREDICTION_DRIFT = AssetKey("prediction_drift")
MODEL_PERFORMANCE = AssetKey("model_performance")
CONCEPT_DRIFT = AssetKey("concept_drift")
MONITORING_REPORT = AssetKey("monitoring_report")
MONITORING_ALERTS = AssetKey("monitoring_alerts")
DATA_COMPLETENESS = AssetKey("data_completeness")
DATA_CONSISTENCY = AssetKey("data_consistency")
DATA_FRESHNESS = AssetKey("data_freshness")
DATA_ANOMALIES = AssetKey("data_anomalies")
DATA_QUALITY_REPORT = AssetKey("data_quality_report")
QUARANTINE_RECHECK = AssetKey("quarantine_recheck")
BACKFILL_INPUTS = AssetKey("backfill_inputs")
BACKFILL_FEATURES = AssetKey("backfill_features")
FEATURE_STORE_COHORTS = AssetKey("feature_store_cohorts")
BACKFILL_REPORT = AssetKey("backfill_report")
HPO_SEARCH = AssetKey("hpo_search")
CLUSTER_TRAINING = AssetKey("cluster_training")
KAFKA_INGESTION = AssetKey("kafka_ingestion")
MODEL_DEPLOYMENT = AssetKey("model_deployment")
AB_TEST_REPORT = AssetKey("ab_test_report")

# The data quality steps whose success, in the same run, anything that serves people (the champion alias, the
# online store, and through the champion the deployment) waits for: a run whose quality steps fail moves none.
SOUND_DATA = [DATA_QUALITY_REPORT, QUARANTINE_RECHECK]
