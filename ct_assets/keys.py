"""Asset keys by name, so modules refer to each other's assets without importing them."""

from dagster import AssetKey

from ct_assets.lib.sdtm import DOMAINS


def raw(domain: str) -> AssetKey:
    return AssetKey(f"raw_{domain.lower()}")


def validated(domain: str) -> AssetKey:
    return AssetKey(f"validated_{domain.lower()}")


def quarantine(domain: str) -> AssetKey:
    return AssetKey(f"quarantine_{domain.lower()}")


PROCESSED_VISITS = AssetKey("processed_visits")
SUBJECT_FEATURES = AssetKey("subject_features")
TRAINING_SET = AssetKey("training_set")
CANDIDATE_MODEL = AssetKey("candidate_model")
MODEL_EVALUATION = AssetKey("model_evaluation")
REGISTERED_MODEL = AssetKey("registered_model")
CHAMPION_MODEL = AssetKey("champion_model")

ALL_DOMAINS = DOMAINS
