"""The model server: champion and challenger of adverse-event-predictor from the MLflow registry,
sticky champion/challenger routing by pseudonymous subject, micro-batched scoring, a prediction log
and Prometheus metrics. Starlette on uvicorn; binds 127.0.0.1 unless told otherwise.

    POST /predict   {"subject_key": "S-..."}: the subject's features from the online feature store
                    {"subject_key": "S-...", "features": {"AGE": 71, ...}}: features sent (what-if scoring)
                    or {"instances": [{"subject_key": ..., "features": {...}}, ...]} (features optional in each)
    GET  /health  /ready  /metrics  /openapi.json      open
    GET  /models, POST /reload                          bearer token (and /predict with require_auth)

Requests are refused before they cost anything: a body over ``max_body_bytes`` gets a 413 unread, a
content type other than JSON a 415, a subject key that is not a pseudonym, a value out of bounds
(``bounds.py``) or a missing demographic a 422 naming the field; nothing refused is logged.
The token is ``$CT_SERVING_TOKEN`` or ``$CT_HOME/secrets/serving.token`` (generated once, 0600).

By subject key alone, the features come from the online store (``online.py``; Redis, or SQLite locally),
are validated like sent ones, and the answer carries their ``feature_timestamp``; a key the store does
not know is a 404 with the reason. A share of the vectors fetched online (``feature_log_share``) is
logged with the prediction, for the training/serving skew check against the offline store.

Aliases are re-read every ``reload_seconds``: a promotion or a rollback (an alias switch) is served
without a restart. Every prediction is logged (subject pseudonym, arm, model version, risk) to
``$CT_HOME/serving/predictions.jsonl`` for the A/B report.

The code: app.py (``create_app``: the state the routes share, the lifespan and its background work), routes.py
(one function per route), inputs.py (the request checks), models.py (the served versions and the micro-batcher),
openapi.py (the OpenAPI document), online.py (the online feature store), fastpath.py (the numpy scorer). This
module keeps the names the server's clients and tests import. It imports no Dagster and no Spark: the server
installs and runs on its own (``pip install --no-deps .`` plus the ``serve`` extra; deploy/serving.Dockerfile).
"""

from __future__ import annotations

from ct_assets.core.tokens import TOKEN_ENV, TOKEN_FILE, serving_token
from ct_assets.serving.app import Metrics, PredictionLog, State, create_app
from ct_assets.serving.inputs import INSTANCE_KEYS, MAX_BODY_BYTES, MAX_INSTANCES, Invalid, Skew, TooLarge
from ct_assets.serving.models import Batcher, Models, Slot
from ct_assets.serving.openapi import openapi_document

__all__ = [
    "INSTANCE_KEYS", "MAX_BODY_BYTES", "MAX_INSTANCES", "TOKEN_ENV", "TOKEN_FILE",
    "Batcher", "Invalid", "Metrics", "Models", "PredictionLog", "Skew", "Slot", "State", "TooLarge",
    "create_app", "openapi_document", "serving_token",
]
