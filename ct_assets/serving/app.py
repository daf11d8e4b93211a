"""The model server's application: ``create_app`` builds the ``State`` the routes (routes.py) share and the
lifespan that loads the served models, opens the online feature store and runs the background work (the alias
watch, the micro-batcher, the prediction log's flush)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.applications import Starlette

from ct_assets import settings
from ct_assets.core.tokens import serving_token
from ct_assets.serving.inputs import MAX_BODY_BYTES
from ct_assets.serving.models import Batcher, Models
from ct_assets.serving.online import OnlineFeatures
from ct_assets.serving.routes import routes


class PredictionLog:
    """Append-only JSON lines, buffered and flushed every second (and on shutdown)."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.buffer: list[bytes] = []

    def add(self, records: list[dict]) -> None:
        self.buffer.extend(orjson.dumps(r) + b"\n" for r in records)

    def flush(self) -> None:
        if self.buffer:
            data, self.buffer = b"".join(self.buffer), []
            # Owner-only whatever the umask: pseudonyms and risks are still personal data.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "ab") as fh:
                fh.write(data)


class Metrics:
    """The server's Prometheus metrics, in a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("ct_predict_requests", "Prediction requests", ["status"], registry=registry)
        self.predictions = Counter("ct_predictions", "Predictions served", ["alias", "version"], registry=registry)
        self.latency = Histogram("ct_predict_latency_seconds", "Time to answer /predict", registry=registry,
                                 buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5))
        self.served = Gauge("ct_served_version", "Model version served per alias", ["alias"], registry=registry)


@dataclass
class State:
    """What the routes share: ``request.app.state.serving``."""

    models: Models
    online: OnlineFeatures
    log: PredictionLog
    token: bytes  # the bearer token, as bytes for hmac.compare_digest
    model_name: str
    challenger_share: float
    reload_seconds: float
    max_body_bytes: int
    require_auth: bool
    feature_log_share: float
    metrics: Metrics = field(default_factory=Metrics)
    batcher: Batcher = field(default_factory=Batcher)
    stop: threading.Event = field(default_factory=threading.Event)


def create_app(model_name: str = settings.MODEL_NAME, tracking_uri: str | None = None, challenger_share: float = 0.1,
               reload_seconds: float = 5.0, log_path: Path | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               require_auth: bool = False, token: str | None = None, feature_store: Any = None,
               feature_log_share: float = 0.05) -> Starlette:
    """``feature_store``: the store to read subjects' features from: its ``StoreSettings``, or the ``FeatureStore``
    resource (default: from settings); ``feature_log_share``: the share of online-fetched feature vectors written
    to the prediction log."""
    if not 0.0 <= challenger_share <= 1.0:
        raise ValueError("challenger_share must be between 0 and 1")
    if not 0.0 <= feature_log_share <= 1.0:
        raise ValueError("feature_log_share must be between 0 and 1")
    online = OnlineFeatures(feature_store)
    expected = (token or serving_token()).encode()
    models = Models(model_name, tracking_uri or settings.mlflow_tracking_uri())
    log = PredictionLog(log_path or settings.predictions_log())
    app = Starlette(routes=routes(), lifespan=lifespan)
    app.state.serving = State(models=models, online=online, log=log, token=expected, model_name=model_name,
                              challenger_share=challenger_share, reload_seconds=reload_seconds,
                              max_body_bytes=max_body_bytes, require_auth=require_auth,
                              feature_log_share=feature_log_share)
    return app


def _watch(state: State) -> None:
    """Re-read the aliases every ``reload_seconds`` (a promotion or a rollback is served without a restart)."""
    while not state.stop.wait(state.reload_seconds):
        state.models.refresh()


async def _flush_every_second(log: PredictionLog) -> None:
    while True:
        await asyncio.sleep(1.0)
        log.flush()


@contextlib.asynccontextmanager
async def lifespan(app: Starlette):
    state: State = app.state.serving
    state.online.open_in_background()
    state.models.refresh()
    thread = threading.Thread(target=_watch, args=(state,), name="alias-watch", daemon=True)
    thread.start()
    tasks = [asyncio.create_task(state.batcher.run()), asyncio.create_task(_flush_every_second(state.log))]
    try:
        yield
    finally:
        state.stop.set()
        for task in tasks:
            task.cancel()
        state.log.flush()
