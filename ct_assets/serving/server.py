"""The model server: champion and challenger of adverse-event-predictor from the MLflow registry,
sticky champion/challenger routing by pseudonymous subject, micro-batched scoring, a prediction log
and Prometheus metrics. Starlette on uvicorn; binds 127.0.0.1 unless told otherwise.

    POST /predict   {"subject_key": "S-...", "features": {"AGE": 71, ...}}
                    or {"instances": [{"subject_key": ..., "features": {...}}, ...]}
    GET  /health  /ready  /models  /metrics

Aliases are re-read every ``reload_seconds``: a promotion or a rollback (an alias switch) is served
without a restart. Every prediction is logged (subject pseudonym, arm, model version, risk) to
``$CT_HOME/serving/predictions.jsonl`` for the A/B report.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ct_assets import settings
from ct_assets.lib.registry import CHALLENGER, CHAMPION, alias_version, point_mlflow, routes_to_challenger
from ct_assets.serving.fastpath import verified

MAX_INSTANCES = 1000


@dataclass(frozen=True)
class Slot:
    alias: str
    version: int
    model: Any
    features: list[str]
    numeric: frozenset[str]
    fast: Any = None  # a verified numpy scorer (fastpath.py), when the model allows one

    def score(self, rows: list[list]) -> np.ndarray:
        if self.fast is not None:
            return self.fast(rows)
        return self.model.predict_proba(pd.DataFrame(rows, columns=self.features))[:, 1]


def _load(client, name: str, alias: str) -> Slot | None:
    import mlflow

    version = alias_version(client, name, alias)
    if version is None:
        return None
    uri = f"models:/{name}/{version.version}"
    model = mlflow.sklearn.load_model(uri)
    signature = mlflow.models.get_model_info(uri).signature
    inputs = signature.inputs.to_dict() if signature is not None else []
    numeric = frozenset(c["name"] for c in inputs if c.get("type") in ("double", "float", "long", "integer"))
    features = list(model.feature_names_in_)
    local = mlflow.artifacts.download_artifacts(uri)
    example = mlflow.models.Model.load(local).load_input_example(local)
    fast = verified(model, features, example if isinstance(example, pd.DataFrame) else None, set(numeric))
    return Slot(alias, int(version.version), model, features, numeric, fast)


class Models:
    """The served versions; swapped whole when an alias moves (readers never see half a change)."""

    def __init__(self, name: str, tracking_uri: str):
        import mlflow

        self.name = name
        self.client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        point_mlflow(tracking_uri)
        self.slots: dict[str, Slot | None] = {CHAMPION: None, CHALLENGER: None}
        self.error: str | None = None

    def refresh(self) -> bool:
        """Re-read the aliases; load what changed. True when a served version changed."""
        changed = False
        try:
            slots = dict(self.slots)
            for alias in (CHAMPION, CHALLENGER):
                current = alias_version(self.client, self.name, alias)
                held = slots[alias]
                if current is None:
                    changed |= held is not None
                    slots[alias] = None
                elif held is None or held.version != int(current.version):
                    slots[alias] = _load(self.client, self.name, alias)
                    changed = True
            self.slots, self.error = slots, None
        except Exception as err:  # the registry is down: keep serving what is loaded
            self.error = f"{type(err).__name__}: {err}"
        return changed


class Invalid(ValueError):
    pass


def _rows(body: Any, features: list[str], numeric: frozenset[str]) -> tuple[list[str], list[list]]:
    """Subject keys and feature rows in the model's column order, or Invalid with the reason."""
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    single = "instances" not in body
    instances = [body] if single else body["instances"]
    if not isinstance(instances, list) or not instances:
        raise Invalid("'instances' must be a non-empty list")
    if len(instances) > MAX_INSTANCES:
        raise Invalid(f"at most {MAX_INSTANCES} instances per request")
    known, keys, rows = set(features), [], []
    for i, inst in enumerate(instances):
        where = "" if single else f"instances[{i}]: "
        if not isinstance(inst, dict):
            raise Invalid(f"{where}each instance must be an object")
        key, values = inst.get("subject_key"), inst.get("features")
        if not isinstance(key, str) or not key:
            raise Invalid(f"{where}'subject_key' (the subject's pseudonym) is required")
        if not isinstance(values, dict):
            raise Invalid(f"{where}'features' must be an object of feature values")
        unknown = set(values) - known
        if unknown:
            raise Invalid(f"{where}unknown feature(s) {sorted(unknown)[:5]}")
        row = []
        for name in features:
            v = values.get(name)
            if name in numeric:
                if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                    raise Invalid(f"{where}feature {name!r} must be a number or null, got {type(v).__name__}")
                row.append(np.nan if v is None else float(v))
            else:
                if v is not None and not isinstance(v, str):
                    raise Invalid(f"{where}feature {name!r} must be a string or null, got {type(v).__name__}")
                row.append(v)
        keys.append(key)
        rows.append(row)
    return keys, rows


class Batcher:
    """Requests arriving together are scored in one predict_proba call (per model version)."""

    def __init__(self, max_batch: int = 64):
        self.queue: asyncio.Queue = asyncio.Queue()
        self.max_batch = max_batch

    async def score(self, slot: Slot, rows: list[list]) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((slot, rows, future))
        return await future

    async def run(self) -> None:
        while True:
            items = [await self.queue.get()]
            while len(items) < self.max_batch and not self.queue.empty():
                items.append(self.queue.get_nowait())
            by_slot: dict[int, list] = {}
            for item in items:
                by_slot.setdefault(id(item[0]), []).append(item)
            for group in by_slot.values():
                slot = group[0][0]
                rows = [r for _, rs, _ in group for r in rs]
                try:
                    risks = slot.score(rows)
                except Exception as err:
                    for *_, future in group:
                        future.set_exception(err)
                    continue
                start = 0
                for _, rs, future in group:
                    future.set_result(risks[start:start + len(rs)])
                    start += len(rs)


class PredictionLog:
    """Append-only JSON lines, buffered and flushed every second (and on shutdown)."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.buffer: list[bytes] = []

    def add(self, records: list[dict]) -> None:
        self.buffer.extend(orjson.dumps(r) + b"\n" for r in records)

    def flush(self) -> None:
        if self.buffer:
            data, self.buffer = b"".join(self.buffer), []
            with open(self.path, "ab") as fh:
                fh.write(data)


def create_app(model_name: str = settings.MODEL_NAME, tracking_uri: str | None = None, challenger_share: float = 0.1,
               reload_seconds: float = 5.0, log_path: Path | None = None) -> Starlette:
    if not 0.0 <= challenger_share <= 1.0:
        raise ValueError("challenger_share must be between 0 and 1")
    models = Models(model_name, tracking_uri or settings.mlflow_tracking_uri())
    log = PredictionLog(log_path or settings.ct_home() / "serving" / "predictions.jsonl")
    registry = CollectorRegistry()
    requests = Counter("ct_predict_requests", "Prediction requests", ["status"], registry=registry)
    predictions = Counter("ct_predictions", "Predictions served", ["alias", "version"], registry=registry)
    latency = Histogram("ct_predict_latency_seconds", "Time to answer /predict", registry=registry,
                        buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5))
    served = Gauge("ct_served_version", "Model version served per alias", ["alias"], registry=registry)
    batcher = Batcher()
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(reload_seconds):
            models.refresh()

    async def flusher() -> None:
        while True:
            await asyncio.sleep(1.0)
            log.flush()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        models.refresh()
        thread = threading.Thread(target=watch, name="alias-watch", daemon=True)
        thread.start()
        tasks = [asyncio.create_task(batcher.run()), asyncio.create_task(flusher())]
        try:
            yield
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            log.flush()

    def json(obj: Any, status: int = 200) -> Response:
        return Response(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), status, media_type="application/json")

    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        slots = models.slots
        champion, challenger = slots[CHAMPION], slots[CHALLENGER]
        if champion is None:
            requests.labels("503").inc()
            return json({"error": "no champion model is loaded"}, 503)
        try:
            body = orjson.loads(await request.body())
            keys, rows = _rows(body, champion.features, champion.numeric)
        except (orjson.JSONDecodeError, Invalid) as err:
            requests.labels("422").inc()
            return json({"error": str(err) if isinstance(err, Invalid) else f"malformed JSON: {err}"}, 422)
        use_challenger = challenger is not None and challenger.version != champion.version
        arms = [challenger if use_challenger and routes_to_challenger(k, challenger_share) else champion for k in keys]
        results: list[dict] = [{}] * len(keys)
        for slot in {id(a): a for a in arms}.values():
            idx = [i for i, a in enumerate(arms) if a is slot]
            slot_rows = rows
            if slot.features != champion.features:  # a challenger trained on other columns: validate for it
                try:
                    _, slot_rows = _rows(body, slot.features, slot.numeric)
                except Invalid as err:
                    requests.labels("422").inc()
                    return json({"error": str(err)}, 422)
            risks = await batcher.score(slot, [slot_rows[i] for i in idx])
            for i, risk in zip(idx, risks):
                results[i] = {"subject_key": keys[i], "risk": float(risk), "alias": slot.alias, "version": slot.version}
            predictions.labels(slot.alias, str(slot.version)).inc(len(idx))
        now = time.time()
        log.add([r | {"ts": now} for r in results])
        requests.labels("200").inc()
        latency.observe(time.perf_counter() - started)
        return json(results[0] if "instances" not in body else {"predictions": results})

    async def health(request: Request) -> Response:
        return json({"status": "ok"})

    async def ready(request: Request) -> Response:
        champion = models.slots[CHAMPION]
        if champion is None:
            return json({"ready": False, "reason": models.error or "no champion alias in the registry"}, 503)
        return json({"ready": True, "champion_version": champion.version})

    async def versions(request: Request) -> Response:
        return json({alias: (s.version if s else None) for alias, s in models.slots.items()}
                    | {f"{alias}_scorer": ("numpy" if s and s.fast else "pipeline") for alias, s in models.slots.items()}
                    | {"challenger_share": challenger_share, "model_name": model_name, "registry_error": models.error})

    async def reload(request: Request) -> Response:
        changed = await asyncio.get_running_loop().run_in_executor(None, models.refresh)
        return json({"changed": changed} | {alias: (s.version if s else None) for alias, s in models.slots.items()})

    async def metrics(request: Request) -> Response:
        for alias, slot in models.slots.items():
            served.labels(alias).set(slot.version if slot else math.nan)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[
        Route("/predict", predict, methods=["POST"]),
        Route("/health", health), Route("/ready", ready), Route("/models", versions),
        Route("/reload", reload, methods=["POST"]), Route("/metrics", metrics),
    ], lifespan=lifespan)
