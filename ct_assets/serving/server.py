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
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import math
import os
import random
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
from ct_assets.lib.privacy import DIGEST_CHARS, PREFIX, PSEUDONYM_RE, is_pseudonym, local_secret
from ct_assets.lib.registry import CHALLENGER, CHAMPION, alias_version, point_mlflow, routes_to_challenger
from ct_assets.serving.bounds import DOMAIN_FILE, MAX_TEXT, REQUIRED, feature_bounds
from ct_assets.serving.fastpath import verified

MAX_INSTANCES = 1000
MAX_BODY_BYTES = 1024 * 1024
TOKEN_ENV, TOKEN_FILE = "CT_SERVING_TOKEN", "serving.token"


def serving_token() -> str:
    """The bearer token of the model server, for the server and its clients alike."""
    return local_secret(TOKEN_ENV, TOKEN_FILE)


@dataclass(frozen=True)
class Slot:
    alias: str
    version: int
    model: Any
    features: list[str]
    numeric: frozenset[str]
    fast: Any = None  # a verified numpy scorer (fastpath.py), when the model allows one
    bounds: dict = None  # numeric feature -> (low, high, source): see bounds.py
    required: tuple[str, ...] = ()
    categories: dict = None  # categorical feature -> the values the model was trained on (None: not recorded)

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
    try:
        domain = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/{DOMAIN_FILE}") if version.run_id else None
    except Exception:  # a version registered before the domain was recorded
        domain = None
    bounds = feature_bounds(model, [f for f in features if f in numeric], domain)
    categories = {f: frozenset(v) for f, v in domain["categorical"].items()} if domain else None
    return Slot(alias, int(version.version), model, features, numeric, fast, bounds,
                tuple(f for f in REQUIRED if f in features), categories)


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


class Skew(RuntimeError):
    """The online store lacks a feature the model was trained on."""


INSTANCE_KEYS = frozenset({"subject_key", "features"})


def _instances(body: Any) -> list | None:
    """The request's instances when it has the shape of one (validated in detail by ``_rows``)."""
    if not isinstance(body, dict):
        return None
    instances = body.get("instances") if "instances" in body else [body]
    return instances if isinstance(instances, list) else None


def _rows(body: Any, slot: Slot, fetched: dict[int, dict] | None = None,
          lookups_pending: bool = False) -> tuple[list[str], list[list]]:
    """Subject keys and feature rows in the model's column order, or Invalid with the reason.
    Reasons never quote a submitted value: a refused request may carry a raw identifier.
    ``fetched``: per instance sent without features, its features from the online store.
    ``lookups_pending``: the first pass, before any lookup or model call: everything that costs nothing
    (shape, count, keys, repeats, the features sent) is judged; instances sent by key wait for the second."""
    features, numeric, bounds = slot.features, slot.numeric, slot.bounds or {}
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    single = "instances" not in body
    if not single and set(body) != {"instances"}:
        raise Invalid("a batch is {\"instances\": [...]} and nothing else")
    instances = [body] if single else body["instances"]
    if not isinstance(instances, list) or not instances:
        raise Invalid("'instances' must be a non-empty list")
    if len(instances) > MAX_INSTANCES:
        raise Invalid(f"at most {MAX_INSTANCES} instances per request")
    known, keys, rows, seen = set(features), [], [], set()
    categories = slot.categories or {}
    for i, inst in enumerate(instances):
        where = "" if single else f"instances[{i}]: "
        if not isinstance(inst, dict):
            raise Invalid(f"{where}each instance must be an object")
        extra = set(inst) - INSTANCE_KEYS
        if extra:
            raise Invalid(f"{where}unknown field(s) {sorted(str(k)[:40] for k in extra)[:5]}: "
                          "an instance has 'subject_key' and 'features' only")
        key, values = inst.get("subject_key"), inst.get("features")
        if not is_pseudonym(key):
            raise Invalid(f"{where}'subject_key' must be the subject's pseudonym ({PREFIX} and {DIGEST_CHARS} "
                          "lowercase hex digits), never a raw subject id")
        if values is None:  # by key: each key once (what-if instances may vary one subject's features)
            if key in seen:
                raise Invalid(f"{where}subject key {key} is repeated in the batch: send each subject once")
            seen.add(key)
            if lookups_pending:
                continue
        if values is None and fetched is not None and i in fetched:
            stored = fetched[i]
            lacking = [f for f in features if f not in stored]
            if lacking:
                raise Skew(f"the online store lacks feature(s) {lacking[:5]} that model version {slot.version} was "
                           "trained on: materialize online_features from the offline store it was trained from")
            values = {f: stored[f] for f in features}
            where = f"{where}stored features of {key}: "
        if not isinstance(values, dict):
            raise Invalid(f"{where}'features' must be an object of feature values")
        unknown = set(values) - known
        if unknown:
            raise Invalid(f"{where}unknown feature(s) {sorted(str(k)[:40] for k in unknown)[:5]}")
        row = []
        for name in features:
            v = values.get(name)
            if name in numeric:
                if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                    raise Invalid(f"{where}feature {name!r} must be a number or null, got {type(v).__name__}")
                if v is None:
                    row.append(np.nan)
                    continue
                try:
                    x = float(v)
                except OverflowError:  # an integer beyond any float
                    x = math.inf
                lo, hi, why = bounds.get(name, (-math.inf, math.inf, ""))
                if not (math.isfinite(x) and lo <= x <= hi):
                    raise Invalid(f"{where}feature {name!r} is out of bounds: must be finite and within "
                                  f"[{lo:.6g}, {hi:.6g}] ({why})")
                row.append(x)
            else:
                if v is not None and not isinstance(v, str):
                    raise Invalid(f"{where}feature {name!r} must be a string or null, got {type(v).__name__}")
                if v is not None and len(v) > MAX_TEXT:
                    raise Invalid(f"{where}feature {name!r} is longer than {MAX_TEXT} characters")
                allowed = categories.get(name)
                if v is not None and allowed is not None and v not in allowed:
                    raise Invalid(f"{where}feature {name!r} must be one of {sorted(allowed)[:20]} (the values model "
                                  f"version {slot.version} was trained on)")
                row.append(v)
        missing = [f for f in slot.required if values.get(f) is None]
        if missing:
            raise Invalid(f"{where}missing required feature(s) {missing}: demographics every enrolled subject has, "
                          "which the model cannot impute meaningfully")
        keys.append(key)
        rows.append(row)
    return keys, rows


class TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, or TooLarge as soon as it is known to exceed ``limit`` (from Content-Length, before
    reading anything; else while streaming a chunked body)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


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


def create_app(model_name: str = settings.MODEL_NAME, tracking_uri: str | None = None, challenger_share: float = 0.1,
               reload_seconds: float = 5.0, log_path: Path | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               require_auth: bool = False, token: str | None = None, feature_store: Any = None,
               feature_log_share: float = 0.05) -> Starlette:
    """``feature_store``: the ``FeatureStore`` resource to read subjects' features from (default: from settings);
    ``feature_log_share``: the share of online-fetched feature vectors written to the prediction log."""
    from ct_assets.serving.online import NotMaterialized, OnlineFeatures, Unavailable

    if not 0.0 <= challenger_share <= 1.0:
        raise ValueError("challenger_share must be between 0 and 1")
    if not 0.0 <= feature_log_share <= 1.0:
        raise ValueError("feature_log_share must be between 0 and 1")
    online = OnlineFeatures(feature_store)
    expected = (token or serving_token()).encode()
    models = Models(model_name, tracking_uri or settings.mlflow_tracking_uri())
    log = PredictionLog(log_path or settings.predictions_log())
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
        online.open_in_background()
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

    def json(obj: Any, status: int = 200, headers: dict | None = None) -> Response:
        return Response(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), status, headers,
                        media_type="application/json")

    def refused(request: Request) -> Response | None:
        """401 unless the request carries the bearer token (compared in constant time)."""
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected):
            return None
        return json({"error": "a bearer token is required (Authorization: Bearer ...; see the README, Security)"}, 401,
                    {"WWW-Authenticate": "Bearer"})

    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        if require_auth and (denied := refused(request)) is not None:
            requests.labels("401").inc()
            return denied
        if not _is_json(request.headers.get("content-type")):
            requests.labels("415").inc()
            return json({"error": "the body must be JSON (Content-Type: application/json)"}, 415)
        try:
            raw = await _read_body(request, max_body_bytes)
        except TooLarge:
            requests.labels("413").inc()
            return json({"error": f"the body is over {max_body_bytes} bytes: send fewer instances per request"}, 413,
                        {"Connection": "close"})
        slots = models.slots
        champion, challenger = slots[CHAMPION], slots[CHALLENGER]
        if champion is None:
            requests.labels("503").inc()
            return json({"error": "no champion model is loaded"}, 503)
        fetched: dict[int, dict] = {}
        stamps: dict[int, int] = {}
        try:
            body = orjson.loads(raw)
            _rows(body, champion, lookups_pending=True)  # what costs nothing first: no lookup for a refused request
            instances = _instances(body) or []
            by_key = [i for i, inst in enumerate(instances) if isinstance(inst, dict) and "features" not in inst
                      and is_pseudonym(inst.get("subject_key"))]
            if by_key:
                wanted = [instances[i]["subject_key"] for i in by_key]
                try:
                    found = await online.fetch(wanted)
                except NotMaterialized as err:
                    requests.labels("404").inc()
                    return json({"error": f"no subject is in the online feature store yet: {err}", "unknown": wanted[:100]},
                                404)
                except Unavailable as err:
                    requests.labels("503").inc()
                    return json({"error": f"cannot score by subject key: {err}"}, 503)
                unknown = [k for k, got in zip(wanted, found) if got is None]
                if unknown:
                    requests.labels("404").inc()
                    return json({"error": f"subject(s) {unknown[:5]} not in the online feature store "
                                          f"({online.kind()}, project {online.settings.project}): no features to score "
                                          "by; send the subject's features instead", "unknown": unknown[:100]}, 404)
                for i, (values, ts) in zip(by_key, found):
                    fetched[i], stamps[i] = values, ts
            keys, rows = _rows(body, champion, fetched)
        except (orjson.JSONDecodeError, Invalid) as err:
            requests.labels("422").inc()
            return json({"error": str(err) if isinstance(err, Invalid) else f"malformed JSON: {err}"}, 422)
        except Skew as err:
            requests.labels("503").inc()
            return json({"error": f"training/serving skew: {err}"}, 503)
        use_challenger = challenger is not None and challenger.version != champion.version
        arms = [challenger if use_challenger and routes_to_challenger(k, challenger_share) else champion for k in keys]
        results: list[dict] = [{}] * len(keys)
        for slot in {id(a): a for a in arms}.values():
            idx = [i for i, a in enumerate(arms) if a is slot]
            slot_rows = rows
            if slot.features != champion.features:  # a challenger trained on other columns: validate for it
                try:
                    _, slot_rows = _rows(body, slot, fetched)
                except Invalid as err:
                    requests.labels("422").inc()
                    return json({"error": str(err)}, 422)
                except Skew as err:
                    requests.labels("503").inc()
                    return json({"error": f"training/serving skew: {err}"}, 503)
            risks = await batcher.score(slot, [slot_rows[i] for i in idx])
            for i, risk in zip(idx, risks):
                results[i] = {"subject_key": keys[i], "risk": float(risk), "alias": slot.alias, "version": slot.version}
                if i in stamps:
                    results[i] |= {"feature_timestamp": _iso(stamps[i]), "features_from": "online_store"}
            predictions.labels(slot.alias, str(slot.version)).inc(len(idx))
        now = time.time()
        # What-if scoring (features sent, not fetched) is marked: it is no prediction of a real subject's risk, and
        # stays out of the A/B report.
        records = [r | {"ts": now} | ({} if i in stamps else {"what_if": True}) for i, r in enumerate(results)]
        for i in stamps:
            records[i] = records[i] | {"feature_timestamp": stamps[i]}
            if feature_log_share and random.random() < feature_log_share:  # for the skew check (serving_skew)
                model = arms[i]
                records[i]["features"] = {f: fetched[i][f] for f in model.features}
        log.add(records)
        requests.labels("200").inc()
        latency.observe(time.perf_counter() - started)
        return json(results[0] if "instances" not in body else {"predictions": results})

    async def health(request: Request) -> Response:
        return json({"status": "ok"})

    async def index(request: Request) -> Response:  # what `ct open` shows a browser
        return json({"service": "adverse-event-predictor model server", "predict": "POST /predict",
                     "api": "/openapi.json", "ready": "/ready", "health": "/health", "metrics": "/metrics"})

    async def ready(request: Request) -> Response:
        champion = models.slots[CHAMPION]
        if champion is None:
            return json({"ready": False, "reason": models.error or "no champion alias in the registry"}, 503)
        return json({"ready": True, "champion_version": champion.version})

    async def versions(request: Request) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        return json({alias: (s.version if s else None) for alias, s in models.slots.items()}
                    | {f"{alias}_scorer": ("numpy" if s and s.fast else "pipeline") for alias, s in models.slots.items()}
                    | {"challenger_share": challenger_share, "model_name": model_name, "registry_error": models.error})

    async def reload(request: Request) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        changed = await asyncio.get_running_loop().run_in_executor(None, models.refresh)
        return json({"changed": changed} | {alias: (s.version if s else None) for alias, s in models.slots.items()})

    async def metrics(request: Request) -> Response:
        for alias, slot in models.slots.items():
            served.labels(alias).set(slot.version if slot else math.nan)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(request: Request) -> Response:
        return json(openapi_document(models.slots[CHAMPION], require_auth, max_body_bytes))

    return Starlette(routes=[
        Route("/predict", predict, methods=["POST"]),
        Route("/", index), Route("/health", health), Route("/ready", ready), Route("/models", versions),
        Route("/reload", reload, methods=["POST"]), Route("/metrics", metrics),
        Route("/openapi.json", openapi),
    ], lifespan=lifespan)


def _iso(epoch_seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_seconds))


def openapi_document(champion: Slot | None, require_auth: bool, max_body_bytes: int) -> dict:
    """OpenAPI 3.0 of this server, with the champion's features, types and bounds (what a client,
    and the schemathesis fuzz of the tests, need to know)."""
    features: dict = {}
    required: list[str] = []
    if champion is not None:
        for name in champion.features:
            nullable = name not in champion.required
            if name in champion.numeric:
                lo, hi, why = (champion.bounds or {}).get(name, (None, None, ""))
                schema = {"type": "number", "description": why} | ({"minimum": lo, "maximum": hi} if lo is not None else {})
            else:
                allowed = (champion.categories or {}).get(name)
                schema = {"type": "string", "maxLength": MAX_TEXT} | ({"enum": sorted(allowed)} if allowed else {})
            features[name] = schema | ({"nullable": True} if nullable else {})
        required = list(champion.required)
    instance = {"type": "object", "additionalProperties": False, "required": ["subject_key"], "properties": {
        "subject_key": {"type": "string", "pattern": PSEUDONYM_RE.pattern.replace("\\Z", "$").replace("\\-", "-"),
                        "description": "the subject's pseudonym, never a raw USUBJID"},
        "features": {"type": "object", "additionalProperties": False, "properties": features,
                     "description": "what-if scoring; without it, the subject's features come from the online store"} | (
            {"required": required} if required else {})}}
    prediction = {"type": "object", "required": ["subject_key", "risk", "alias", "version"], "properties": {
        "subject_key": {"type": "string"}, "risk": {"type": "number", "minimum": 0, "maximum": 1},
        "alias": {"type": "string", "enum": [CHAMPION, CHALLENGER]}, "version": {"type": "integer"},
        "feature_timestamp": {"type": "string", "format": "date-time",
                              "description": "by subject key: the landmark the stored features hold as of"},
        "features_from": {"type": "string", "enum": ["online_store"]}}}
    error = {"description": "refused, with the reason", "content": {"application/json": {"schema": {
        "type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}}}}
    ok = {"type": "object"}

    def answer(schema: dict, description: str = "OK") -> dict:
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    secured = [{"bearer": []}]
    predict = {"summary": "Risk of a clinically significant adverse event, per subject",
               "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
                   {"$ref": "#/components/schemas/Instance"},
                   {"type": "object", "additionalProperties": False, "required": ["instances"], "properties": {
                       "instances": {"type": "array", "minItems": 1, "maxItems": MAX_INSTANCES,
                                     "items": {"$ref": "#/components/schemas/Instance"}}}}]}}}},
               "responses": {"200": answer({"oneOf": [prediction, {
                   "type": "object", "required": ["predictions"],
                   "properties": {"predictions": {"type": "array", "items": prediction}}}]}),
                   "401": error, "404": error | {"description": "a subject key the online feature store does not know"},
                   "413": error | {"description": f"body over {max_body_bytes} bytes"},
                   "415": error, "422": error, "503": error}}
    if require_auth:
        predict["security"] = secured
    else:
        predict["security"] = []
    return {
        "openapi": "3.0.3",
        "info": {"title": "adverse-event-predictor model server", "version": "1"},
        "servers": [{"url": "/"}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                       "schemas": {"Instance": instance}},
        "security": secured,
        "paths": {
            "/predict": {"post": predict},
            "/health": {"get": {"security": [], "responses": {"200": answer(ok)}}},
            "/ready": {"get": {"security": [], "responses": {"200": answer(ok), "503": answer(ok, "not ready")}}},
            "/metrics": {"get": {"security": [], "responses": {"200": {"description": "Prometheus text",
                                                                        "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/models": {"get": {"responses": {"200": answer(ok), "401": error}}},
            "/reload": {"post": {"responses": {"200": answer(ok), "401": error}}},
            "/openapi.json": {"get": {"security": [], "responses": {"200": answer(ok)}}},
        },
    }
