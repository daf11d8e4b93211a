"""What a prediction request must be, judged before it costs anything: JSON (``is_json``), no larger than the
limit (``read_body``: a 413 unread), and instances of pseudonymous subject keys with features of the served
model's types, bounds and categories (``feature_rows``: ``Invalid`` with the reason, which never quotes a
submitted value; ``Skew`` when the online store lacks a feature the model was trained on)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ct_assets.core.bounds import MAX_TEXT
from ct_assets.core.privacy import DIGEST_CHARS, PREFIX, is_pseudonym

if TYPE_CHECKING:
    from starlette.requests import Request

    from ct_assets.serving.models import Slot

MAX_INSTANCES = 1000
MAX_BODY_BYTES = 1024 * 1024


class Invalid(ValueError):
    pass


class Skew(RuntimeError):
    """The online store lacks a feature the model was trained on."""


INSTANCE_KEYS = frozenset({"subject_key", "features"})


def instances_of(body: Any) -> list | None:
    """The request's instances when it has the shape of one (validated in detail by ``feature_rows``)."""
    if not isinstance(body, dict):
        return None
    instances = body.get("instances") if "instances" in body else [body]
    return instances if isinstance(instances, list) else None


def feature_rows(body: Any, slot: Slot, fetched: dict[int, dict] | None = None,
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


async def read_body(request: Request, limit: int) -> bytes:
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


def is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))
