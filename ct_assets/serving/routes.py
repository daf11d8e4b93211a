"""The model server's routes, one function each. What they share (the served models, the online store, the
prediction log, the metrics, the settings the server was started with) is the app's ``State`` (app.py), on
``request.app.state.serving``.

``/predict`` goes through its steps in order of cost, each refusing with a ``Refused`` (status and reason, counted
in ``ct_predict_requests``): admitted (token, JSON, size), parsed and checked for the champion (features sent, or
fetched by subject key from the online store), scored per arm, logged.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import random
import time
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ct_assets.core.privacy import is_pseudonym
from ct_assets.core.registry import CHALLENGER, CHAMPION, routes_to_challenger
from ct_assets.serving.inputs import Invalid, Skew, TooLarge, feature_rows, instances_of, is_json, read_body
from ct_assets.serving.online import NotMaterialized, Unavailable
from ct_assets.serving.openapi import openapi_document

if TYPE_CHECKING:
    from ct_assets.serving.app import State
    from ct_assets.serving.models import Slot

TOKEN_REQUIRED = {"error": "a bearer token is required (Authorization: Bearer ...; see docs/security.md)"}
CHALLENGE = {"WWW-Authenticate": "Bearer"}


def json(obj: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), status, headers,
                    media_type="application/json")


def state_of(request: Request) -> State:
    return request.app.state.serving


def authorized(request: Request, state: State) -> bool:
    """Whether the request carries the bearer token (compared in constant time)."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), state.token)


def unauthorized() -> Response:
    return json(TOKEN_REQUIRED, 401, CHALLENGE)


class Refused(Exception):
    """A prediction request answered with an error: its status and the JSON body saying why."""

    def __init__(self, status: int, body: dict, headers: dict | None = None):
        super().__init__(status)
        self.status = status
        self.response = json(body, status, headers)


# --- POST /predict -------------------------------------------------------------------------------------------------

async def predict(request: Request) -> Response:
    state = state_of(request)
    started = time.perf_counter()
    try:
        raw = await _admitted(request, state)
        slots = state.models.slots
        champion, challenger = slots[CHAMPION], slots[CHALLENGER]
        if champion is None:
            raise Refused(503, {"error": "no champion model is loaded"})
        body, keys, rows, fetched, stamps = await _parsed(state, raw, champion)
        results, arms = await _scored(state, body, keys, rows, fetched, stamps, champion, challenger)
    except Refused as refusal:
        state.metrics.requests.labels(str(refusal.status)).inc()
        return refusal.response
    _log(state, results, arms, fetched, stamps)
    state.metrics.requests.labels("200").inc()
    state.metrics.latency.observe(time.perf_counter() - started)
    return json(results[0] if "instances" not in body else {"predictions": results})


async def _admitted(request: Request, state: State) -> bytes:
    """The raw body of a request with the token (when required), a JSON content type and a size within the limit
    (a larger body is refused unread)."""
    if state.require_auth and not authorized(request, state):
        raise Refused(401, TOKEN_REQUIRED, CHALLENGE)
    if not is_json(request.headers.get("content-type")):
        raise Refused(415, {"error": "the body must be JSON (Content-Type: application/json)"})
    try:
        return await read_body(request, state.max_body_bytes)
    except TooLarge:
        raise Refused(413, {"error": f"the body is over {state.max_body_bytes} bytes: send fewer instances per request"},
                      {"Connection": "close"}) from None


async def _parsed(state: State, raw: bytes, champion: Slot) -> tuple[Any, list[str], list[list], dict[int, dict],
                                                                      dict[int, int]]:
    """The body, its subject keys and feature rows for the champion, and per instance sent by key alone its features
    from the online store and their timestamp."""
    fetched: dict[int, dict] = {}
    stamps: dict[int, int] = {}
    try:
        body = orjson.loads(raw)
        feature_rows(body, champion, lookups_pending=True)  # what costs nothing first: no lookup for a refused request
        instances = instances_of(body) or []
        by_key = [i for i, inst in enumerate(instances) if isinstance(inst, dict) and "features" not in inst
                  and is_pseudonym(inst.get("subject_key"))]
        if by_key:
            fetched, stamps = await _looked_up(state, [instances[i]["subject_key"] for i in by_key], by_key)
        keys, rows = feature_rows(body, champion, fetched)
    except (orjson.JSONDecodeError, Invalid) as err:
        raise Refused(422, {"error": str(err) if isinstance(err, Invalid) else f"malformed JSON: {err}"}) from None
    except Skew as err:
        raise Refused(503, {"error": f"training/serving skew: {err}"}) from None
    return body, keys, rows, fetched, stamps


async def _looked_up(state: State, wanted: list[str], by_key: list[int]) -> tuple[dict[int, dict], dict[int, int]]:
    """Per instance index in ``by_key``, the subject's features and their timestamp from the online store; a subject
    it does not know is a 404 naming the subject."""
    online = state.online
    try:
        found = await online.fetch(wanted)
    except NotMaterialized as err:
        raise Refused(404, {"error": f"no subject is in the online feature store yet: {err}",
                            "unknown": wanted[:100]}) from None
    except Unavailable as err:
        raise Refused(503, {"error": f"cannot score by subject key: {err}"}) from None
    unknown = [k for k, got in zip(wanted, found) if got is None]
    if unknown:
        raise Refused(404, {"error": f"subject(s) {unknown[:5]} not in the online feature store "
                                     f"({online.kind()}, project {online.settings.project}): no features to score "
                                     "by; send the subject's features instead", "unknown": unknown[:100]})
    fetched: dict[int, dict] = {}
    stamps: dict[int, int] = {}
    for i, (values, ts) in zip(by_key, found):
        fetched[i], stamps[i] = values, ts
    return fetched, stamps


async def _scored(state: State, body: Any, keys: list[str], rows: list[list], fetched: dict[int, dict],
                  stamps: dict[int, int], champion: Slot, challenger: Slot | None) -> tuple[list[dict], list[Slot]]:
    """Each subject's risk from its arm (sticky by subject key), micro-batched per model version."""
    use_challenger = challenger is not None and challenger.version != champion.version
    arms = [challenger if use_challenger and routes_to_challenger(k, state.challenger_share) else champion for k in keys]
    results: list[dict] = [{}] * len(keys)
    for slot in {id(a): a for a in arms}.values():
        idx = [i for i, a in enumerate(arms) if a is slot]
        slot_rows = rows
        if slot.features != champion.features:  # a challenger trained on other columns: validate for it
            try:
                _, slot_rows = feature_rows(body, slot, fetched)
            except Invalid as err:
                raise Refused(422, {"error": str(err)}) from None
            except Skew as err:
                raise Refused(503, {"error": f"training/serving skew: {err}"}) from None
        risks = await state.batcher.score(slot, [slot_rows[i] for i in idx])
        for i, risk in zip(idx, risks):
            results[i] = {"subject_key": keys[i], "risk": float(risk), "alias": slot.alias, "version": slot.version}
            if i in stamps:
                results[i] |= {"feature_timestamp": _iso(stamps[i]), "features_from": "online_store"}
        state.metrics.predictions.labels(slot.alias, str(slot.version)).inc(len(idx))
    return results, arms


def _log(state: State, results: list[dict], arms: list[Slot], fetched: dict[int, dict], stamps: dict[int, int]) -> None:
    now = time.time()
    # What-if scoring (features sent, not fetched) is marked: it is no prediction of a real subject's risk, and
    # stays out of the A/B report.
    records = [r | {"ts": now} | ({} if i in stamps else {"what_if": True}) for i, r in enumerate(results)]
    for i in stamps:
        records[i] = records[i] | {"feature_timestamp": stamps[i]}
        if state.feature_log_share and random.random() < state.feature_log_share:  # for the skew check (serving_skew)
            model = arms[i]
            records[i]["features"] = {f: fetched[i][f] for f in model.features}
    state.log.add(records)


def _iso(epoch_seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_seconds))


# --- The other routes ----------------------------------------------------------------------------------------------

async def health(request: Request) -> Response:
    return json({"status": "ok"})


async def index(request: Request) -> Response:  # what `ct open` shows a browser
    return json({"service": "adverse-event-predictor model server", "predict": "POST /predict",
                 "api": "/openapi.json", "ready": "/ready", "health": "/health", "metrics": "/metrics"})


async def ready(request: Request) -> Response:
    models = state_of(request).models
    champion = models.slots[CHAMPION]
    if champion is None:
        return json({"ready": False, "reason": models.error or "no champion alias in the registry"}, 503)
    return json({"ready": True, "champion_version": champion.version})


async def versions(request: Request) -> Response:
    state = state_of(request)
    if not authorized(request, state):
        return unauthorized()
    slots = state.models.slots
    return json({alias: (s.version if s else None) for alias, s in slots.items()}
                | {f"{alias}_scorer": ("numpy" if s and s.fast else "pipeline") for alias, s in slots.items()}
                | {"challenger_share": state.challenger_share, "model_name": state.model_name,
                   "registry_error": state.models.error})


async def reload(request: Request) -> Response:
    state = state_of(request)
    if not authorized(request, state):
        return unauthorized()
    models = state.models
    changed = await asyncio.get_running_loop().run_in_executor(None, models.refresh)
    return json({"changed": changed} | {alias: (s.version if s else None) for alias, s in models.slots.items()})


async def metrics(request: Request) -> Response:
    state = state_of(request)
    for alias, slot in state.models.slots.items():
        state.metrics.served.labels(alias).set(slot.version if slot else math.nan)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    state = state_of(request)
    return json(openapi_document(state.models.slots[CHAMPION], state.require_auth, state.max_body_bytes))


def routes() -> list[Route]:
    return [
        Route("/predict", predict, methods=["POST"]),
        Route("/", index), Route("/health", health), Route("/ready", ready), Route("/models", versions),
        Route("/reload", reload, methods=["POST"]), Route("/metrics", metrics),
        Route("/openapi.json", openapi),
    ]
