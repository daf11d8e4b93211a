"""The model server's side of the feature store: a subject's features from the online store by its
pseudonymous key (Feast's online store ``online_read``, see ``OnlineReader``; Redis read asynchronously,
SQLite in a worker thread).

Feast takes seconds to import: the store is opened in a background thread when the server starts, so
the server answers at once and a request by subject key waits only until the store is open.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any


class Unavailable(RuntimeError):
    """The online store cannot answer (not configured, not materialized, down): a 503 with the reason."""


class NotMaterialized(Unavailable):
    """No feature view registered yet: no subject can be known (a 404, like an unknown key)."""


class OnlineFeatures:
    def __init__(self, resource: Any = None):
        """``resource``: the store's ``StoreSettings``, or anything with a ``store_settings()`` (the
        ``feature_store`` resource of the Dagster definitions); default: from settings.py."""
        from ct_assets.adapters.feature_store import StoreSettings, default_settings

        self.resource = resource
        if resource is None:
            self.settings = default_settings()
        elif isinstance(resource, StoreSettings):
            self.settings = resource
        else:
            self.settings = resource.store_settings()
        self.store = None
        self.error: str | None = None
        self.names: list[str] | None = None
        self.reader = None
        self.names_at = 0.0
        self.is_async = bool(self.settings.redis_url)
        self.opened = threading.Event()

    def open_in_background(self) -> None:
        threading.Thread(target=self._open, name="feature-store-open", daemon=True).start()

    def _open(self) -> None:
        try:
            from ct_assets.adapters.feature_store import open_store

            self.store = open_store(self.settings)
            self._refresh_names()
        except Exception as err:  # served as 503 by key; explicit features still work
            self.error = f"{type(err).__name__}: {err}"
        finally:
            self.opened.set()

    def _refresh_names(self) -> None:
        from ct_assets.adapters.feature_store import FEATURE_VIEW, OnlineReader

        try:
            self.reader = OnlineReader(self.store, self.settings.redis_url)
        except Exception as err:
            self.names, self.reader = None, None
            self.error = (f"the feature store has no feature view {FEATURE_VIEW!r} ({type(err).__name__}): "
                          "materialize online_features first")
            return
        self.names, self.error, self.names_at = self.reader.names, None, time.monotonic()

    async def fetch(self, keys: list[str]) -> list[tuple[dict, int] | None]:
        """Per key: (features, feature timestamp in epoch seconds), or None for a subject the store lacks."""
        loop = asyncio.get_running_loop()
        if not self.opened.is_set():
            await loop.run_in_executor(None, self.opened.wait)
        if self.store is None:
            raise Unavailable(f"the feature store could not be opened: {self.error}")
        if self.names is None or time.monotonic() - self.names_at > 60:  # a re-applied view (other study, new tests)
            await loop.run_in_executor(None, self._refresh_names)
        reader = self.reader
        if self.names is None or reader is None:
            raise NotMaterialized(self.error or "no feature view")
        try:
            if self.is_async:
                return await reader.read_async(keys)
            return await loop.run_in_executor(None, reader.read, keys)
        except Exception as err:
            raise Unavailable(f"the online store did not answer: {type(err).__name__}: {str(err)[:200]}") from None

    def kind(self) -> str:
        return "redis" if self.settings.redis_url else "sqlite"
