"""The served models: champion and challenger loaded from the MLflow registry (``Models``, swapped whole when an
alias moves), each as a ``Slot`` with what the request checks need (features, types, bounds, categories), and the
``Batcher`` that scores requests arriving together in one call per model version."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ct_assets.core.bounds import DOMAIN_FILE, REQUIRED, feature_bounds
from ct_assets.core.registry import CHALLENGER, CHAMPION, alias_version, point_mlflow
from ct_assets.serving.fastpath import verified


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


def load_slot(client, name: str, alias: str) -> Slot | None:
    """The version ``alias`` points at, loaded with its signature, input example and input domain; None when
    the alias is not set."""
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
                    slots[alias] = load_slot(self.client, self.name, alias)
                    changed = True
            self.slots, self.error = slots, None
        except Exception as err:  # the registry is down: keep serving what is loaded
            self.error = f"{type(err).__name__}: {err}"
        return changed


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
