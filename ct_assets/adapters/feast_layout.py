"""The online store's layout as Feast writes and reads it, which is private to Feast: the platform writes and
reads it directly (one transaction per materialization; one HGETALL per subject), because Feast's own writer
and ``get_online_features`` cost seconds per thousand subjects where this costs milliseconds.

Everything that depends on Feast's private helpers (``_mmh3``, ``_versioned_fv_name``, ``_redis_key``) is in
this module, behind ``require_known_feast``: on a Feast version whose layout has not been checked against
Feast's own writer (tests/integration/test_feature_store.py compares them byte for byte), it fails loudly
instead of writing a layout Feast no longer reads.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import TYPE_CHECKING, Any

from ct_assets.core.privacy import SUBJECT_KEY

if TYPE_CHECKING:  # numpy and pandas are imported where frames are handled, not when the code location loads
    import pandas as pd

from ct_assets.adapters.feast_schema import (
    CREATED_TS,
    EVENT_TS,
    FEATURE_VIEW,
    StoreSettings,
    feast_value_to_python,
    feast_values,
    pd_utc,
)

# Feast versions whose online layout the byte-for-byte tests have checked. Add one only after those tests pass on it.
KNOWN_FEAST = ("0.67.",)


class UnknownFeast(RuntimeError):
    """The installed Feast's online layout was never checked against this module."""


def require_known_feast() -> None:
    from importlib.metadata import version

    found = version("feast")
    if not found.startswith(KNOWN_FEAST):
        raise UnknownFeast(f"Feast {found}: the online store layout in ct_assets/adapters/feast_layout.py was checked "
                           f"against Feast {', '.join(v + 'x' for v in KNOWN_FEAST)} only; run "
                           "tests/integration/test_feature_store.py on it, then add it to KNOWN_FEAST")


def writes_like_feast(config, view) -> bool:
    """Whether ``write_latest`` knows the layout Feast's writer would use here: its plain SQLite table
    (no vector or numeric search columns) or a single Redis server, double and string features."""
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig
    from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
    from feast.types import Float64, String

    online = config.online_store
    if isinstance(online, SqliteOnlineStoreConfig):
        plain = not online.vector_enabled and not getattr(online, "enable_openai_compatible_store", False)
    elif isinstance(online, RedisOnlineStoreConfig):
        plain = online.redis_type == "redis" and online.skip_dedup
    else:
        plain = False
    return plain and all(f.dtype in (Float64, String) for f in view.features)




WRITE_CHUNK = 2000  # subjects converted at a time (memory), all written in one transaction


WRITE_GROUP = 400  # SQLite: features per statement, 3 + 2 x 400 parameters, under SQLite's oldest limit (999)


def write_latest(store, s: StoreSettings, view, latest: pd.DataFrame) -> None:
    """``latest`` (one row per subject) into the online store, in the layout Feast's own writer
    (``online_write_batch``) gives it, which is private to Feast: SQLite, one row per subject and feature
    in the view's table (serialized entity key, feature name, serialized Value, its text, event and
    created times as Feast's SQLite adapter stores them), upserted; Redis, one hash per subject (key: the
    serialized entity key and the project) with a field per feature (murmur3 of view:feature) and the
    event time (``_ts:view``). Entity keys, field names and time encodings come from Feast's own helpers;
    tests/test_feature_store.py holds both stores byte for byte to what Feast writes for the same rows,
    so a Feast upgrade that changes the layout fails there. One transaction (SQLite), as Feast's."""
    require_known_feast()
    import sqlite3

    import numpy as np
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.infra.online_stores.helpers import _mmh3, compute_table_id
    from feast.infra.online_stores.redis import _versioned_fv_name
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.types import String
    from feast.utils import make_tzaware, to_naive_utc
    from google.protobuf.timestamp_pb2 import Timestamp

    config = store.config
    version = config.entity_key_serialization_version
    features = [(f.name, "string" if f.dtype == String else "float") for f in view.features]
    subjects = latest[SUBJECT_KEY].astype(str).tolist()
    entity_keys = [serialize_entity_key(EntityKey(join_keys=[SUBJECT_KEY], entity_values=[Value(string_val=k)]), version)
                   for k in subjects]
    order = sorted(range(len(subjects)), key=entity_keys.__getitem__)  # the table's key order: appends, not inserts
    frame = latest.iloc[order].reset_index(drop=True)
    entity_keys = [entity_keys[i] for i in order]

    def naive(column: str) -> list:  # as Feast reads the offline times: naive UTC datetimes
        return [to_naive_utc(t.to_pydatetime()) for t in pd_utc(frame[column]).dt.tz_localize(None)]

    event = naive(EVENT_TS)
    created = naive(CREATED_TS) if CREATED_TS in frame.columns else [None] * len(frame)

    def chunks():
        for lo in range(0, len(frame), WRITE_CHUNK):
            part = frame.iloc[lo:lo + WRITE_CHUNK]
            yield lo, [(name, *feast_values(part[name], kind)) for name, kind in features]

    if s.redis_url:
        import redis

        table = _versioned_fv_name(view, config)
        ts_key, fields = f"_ts:{table}", [_mmh3(f"{table}:{name}") for name, _ in features]
        ttl = config.online_store.key_ttl_seconds
        client = redis.Redis.from_url(s.redis_url)

        def commands():
            for lo, columns in chunks():
                m = len(columns[0][1]) if columns else 0
                # Per subject the HSET arguments Feast's writer sends: the time field, then field, value per feature.
                args = np.empty((m, 2 + 2 * len(columns)), dtype=object)
                args[:, 0] = ts_key
                for i in range(m):
                    ts = Timestamp()
                    ts.FromDatetime(make_tzaware(event[lo + i]))
                    args[i, 1] = ts.SerializeToString()
                for j, (field, (_, values, _)) in enumerate(zip(fields, columns)):
                    args[:, 2 + 2 * j], args[:, 3 + 2 * j] = field, values
                yield [(entity_keys[lo + i] + config.project.encode("utf-8"), row) for i, row in enumerate(args.tolist())]

        def send(batch: list) -> None:
            with client.pipeline(transaction=False) as pipe:
                for key, row in batch:
                    pipe.execute_command("HSET", key, *row)
                    if ttl:
                        pipe.expire(name=key, time=ttl)
                pipe.execute()

        overlapped(commands(), send)
        return
    # What sqlite3 passes for a datetime: Feast registers its adapter (epoch seconds) when imported.
    adapt = sqlite3.adapters.get((dt.datetime, sqlite3.PrepareProtocol), lambda t: t)
    event_db = [adapt(t) for t in event]
    created_db = [None if t is None else adapt(t) for t in created]
    table = compute_table_id(config.project, view, config.registry.enable_online_feature_view_versioning)

    def upsert(names: list[str]) -> str:
        """One subject's rows (as Feast's writer sends them: the view's features in order) in one statement:
        its key and times bound once (?1-?3), each feature's value and text, the names as literals.
        Binding 6 values per row, one statement per row, spent more time in sqlite3 than in SQLite."""
        rows = ", ".join(f"(?1, '{name.replace(chr(39), chr(39) * 2)}', ?{4 + 2 * j}, ?{5 + 2 * j}, ?2, ?3)"
                         for j, name in enumerate(names))
        return (f'INSERT INTO "{table}" (entity_key, feature_name, value, value_text, event_ts, created_ts) '
                f"SELECT * FROM (VALUES {rows}) WHERE true ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
                "value = excluded.value, value_text = excluded.value_text, event_ts = excluded.event_ts, "
                "created_ts = excluded.created_ts")

    def statements():
        for lo, columns in chunks():
            for g in range(0, len(columns), WRITE_GROUP):
                part = columns[g:g + WRITE_GROUP]
                m = len(part[0][1])
                params = np.empty((m, 3 + 2 * len(part)), dtype=object)
                params[:, 0] = np.array(entity_keys[lo:lo + m], dtype=object)
                params[:, 1] = np.array(event_db[lo:lo + m], dtype=object)
                params[:, 2] = np.array(created_db[lo:lo + m], dtype=object)
                for j, (_, values, texts) in enumerate(part):
                    params[:, 3 + 2 * j], params[:, 4 + 2 * j] = values, texts
                yield upsert([name for name, _, _ in part]), params.tolist()

    # One connection, one transaction; used by one thread at a time (overlapped waits for each write).
    with contextlib.closing(sqlite3.connect(s.online_path, check_same_thread=False)) as conn, conn:
        overlapped(statements(), lambda statement: conn.executemany(*statement))


def overlapped(batches, send) -> None:
    """``send`` each batch in a thread of its own while the next batch is built: the store (SQLite's
    writes, Redis' server) works while Python converts; one batch in flight at a time, in order."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as sender:
        pending = None
        for batch in batches:
            if pending is not None:
                pending.result()
            pending = sender.submit(send, batch)
        if pending is not None:
            pending.result()


class OnlineReader:
    """Single-subject reads for the model server. Feast's ``get_online_features`` plans the request and
    builds a response object on every call (6-7 ms per subject with 200 features here, under load); this
    reads the same entries with the online store's own ``online_read`` (SQLite), or, for Redis, the hash
    Feast wrote for the subject with one HGETALL, keyed and decoded with Feast's own helpers. A test holds
    both to ``get_online_features``' answers, so a Feast upgrade that changes its layout fails there."""

    def __init__(self, store, redis_url: str | None = None):
        require_known_feast()
        from feast.infra.online_stores.helpers import _mmh3
        from feast.infra.online_stores.redis import RedisOnlineStore, _versioned_fv_name
        from feast.infra.provider import get_provider

        self.config = store.config
        self.view = store.get_feature_view(FEATURE_VIEW)
        self.names = [f.name for f in self.view.features]
        self.online = get_provider(store.config).online_store
        self.redis_url = redis_url if isinstance(self.online, RedisOnlineStore) else None
        if self.redis_url and getattr(self.config.online_store, "redis_type", "redis") != "redis":
            self.redis_url = None  # cluster and sentinel: Feast's own read
        table = _versioned_fv_name(self.view, self.config)
        self.fields = [(_mmh3(f"{table}:{n}"), n) for n in self.names]
        self.ts_field = f"_ts:{table}".encode()
        self.client = self.client_loop = None

    def _keys(self, keys: list[str]) -> list:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        return [EntityKey(join_keys=[SUBJECT_KEY], entity_values=[Value(string_val=k)]) for k in keys]

    def _parse(self, rows: list) -> list[tuple[dict, int] | None]:
        out: list[tuple[dict, int] | None] = []
        for ts, values in rows:
            if ts is None or values is None or ts.timestamp() == 0:  # Redis answers an unknown key with the epoch
                out.append(None)
                continue
            out.append(({n: feast_value_to_python(values[n]) if n in values else None for n in self.names}, int(ts.timestamp())))
        return out

    # A copy of the names each time: Feast's Redis store appends its timestamp key to the list it is given.
    def read(self, keys: list[str]) -> list[tuple[dict, int] | None]:
        return self._parse(self.online.online_read(self.config, self.view, self._keys(keys), list(self.names)))

    async def read_async(self, keys: list[str]) -> list[tuple[dict, int] | None]:
        if not self.redis_url:
            return self._parse(await self.online.online_read_async(self.config, self.view, self._keys(keys),
                                                                   list(self.names)))
        import asyncio

        from feast.infra.online_stores.helpers import _redis_key
        from feast.protos.feast.types.Value_pb2 import Value
        from google.protobuf.timestamp_pb2 import Timestamp

        loop = asyncio.get_running_loop()
        if self.client is None or self.client_loop is not loop:  # an asyncio client belongs to one event loop
            import redis.asyncio

            self.client, self.client_loop = redis.asyncio.Redis.from_url(self.redis_url), loop
        version = self.config.entity_key_serialization_version
        redis_keys = [_redis_key(self.config.project, k, version) for k in self._keys(keys)]
        if len(redis_keys) == 1:
            hashes = [await self.client.hgetall(redis_keys[0])]
        else:
            async with self.client.pipeline(transaction=False) as pipe:
                for key in redis_keys:
                    pipe.hgetall(key)
                hashes = await pipe.execute()
        out: list[tuple[dict, int] | None] = []
        for entry in hashes:
            stamp = entry.get(self.ts_field) if entry else None
            seconds = Timestamp.FromString(stamp).seconds if stamp else 0
            if not seconds:
                out.append(None)
                continue
            out.append(({n: feast_value_to_python(Value.FromString(entry[f])) if f in entry else None for f, n in self.fields}, seconds))
        return out


def online_subjects(store, s: StoreSettings) -> dict[str, Any]:
    """Every subject the online store holds for the feature view, with where (its Redis key or SQLite
    entity key), read from the store's own tables or keys: what "rows online" means, extras included."""
    return {name: where for name, (where, _) in held_subjects(store, s, stamps=False).items()}


def online_stamps(store, s: StoreSettings) -> dict[str, tuple[Any, int | None]]:
    """``online_subjects`` with each subject's feature timestamp online, in epoch seconds, as Feast's
    read gives it (None when the subject's rows disagree, which Feast's read would hide)."""
    return held_subjects(store, s, stamps=True)


def held_subjects(store, s: StoreSettings, stamps: bool) -> dict[str, tuple[Any, int | None]]:
    require_known_feast()
    import sqlite3

    from feast.infra.key_encoding_utils import deserialize_entity_key
    from feast.infra.online_stores.helpers import compute_table_id
    from feast.infra.online_stores.redis import _versioned_fv_name

    view = store.get_feature_view(FEATURE_VIEW)
    version = store.config.entity_key_serialization_version

    def subject(serialized: bytes) -> str | None:
        try:
            key = deserialize_entity_key(serialized, version)
        except Exception:  # another project's key that merely ends like ours
            return None
        if list(key.join_keys) != [SUBJECT_KEY]:
            return None
        return key.entity_values[0].string_val or None

    out: dict[str, tuple[Any, int | None]] = {}
    if s.redis_url:
        import redis
        from google.protobuf.timestamp_pb2 import Timestamp

        client = redis.Redis.from_url(s.redis_url)
        suffix, ts_field = s.project.encode(), f"_ts:{_versioned_fv_name(view, store.config)}"
        keys = list(client.scan_iter(match=b"*" + suffix, count=1000))
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                if stamps:
                    pipe.hget(key, ts_field)
                else:
                    pipe.hexists(key, ts_field)
            present = pipe.execute()
        for key, got in zip(keys, present):
            if got and (name := subject(key[:-len(suffix)])):
                out[name] = (key, Timestamp.FromString(got).seconds if stamps else None)
        return out
    if not s.online_path.exists():
        return out
    table = compute_table_id(s.project, view, store.config.registry.enable_online_feature_view_versioning)
    query = (f'SELECT entity_key, MIN(event_ts), MAX(event_ts) FROM "{table}" GROUP BY entity_key' if stamps
             else f'SELECT DISTINCT entity_key, NULL, NULL FROM "{table}"')
    with contextlib.closing(sqlite3.connect(s.online_path)) as conn:
        try:
            rows = conn.execute(query).fetchall()
        except sqlite3.OperationalError:  # not materialized yet
            return out
    # Feast's SQLite read: the column's converter (its own, registered when imported), the result as UTC.
    convert = sqlite3.converters.get("TIMESTAMP")

    def seconds(stored) -> int:
        ts = convert(str(stored).encode()) if convert is not None else stored
        if isinstance(ts, dt.datetime):
            ts = ts.astimezone(dt.UTC) if ts.tzinfo is not None else ts.replace(tzinfo=dt.UTC)
            return int(ts.timestamp())
        return int(ts)

    for serialized, low, high in rows:
        if name := subject(serialized):
            out[name] = (serialized, (seconds(low) if low == high else None) if stamps else None)
    return out


def prune_online(store, s: StoreSettings, keep: set[str], held: dict[str, tuple[Any, int | None]] | None = None) -> list[str]:
    """Remove from the online store the subjects the offline store no longer has (a subject withdrawn or
    quarantined since): Feast's materialization only ever adds. ``held``: what the store holds, as ``online_stamps``
    read it (read here if not given). Returns the subjects removed."""
    require_known_feast()
    import sqlite3

    from feast.infra.online_stores.helpers import _mmh3, compute_table_id
    from feast.infra.online_stores.redis import _versioned_fv_name

    held = online_subjects(store, s) if held is None else {name: where for name, (where, _) in held.items()}
    stale = sorted(set(held) - keep)
    if not stale:
        return stale
    view = store.get_feature_view(FEATURE_VIEW)
    if s.redis_url:
        import redis

        table = _versioned_fv_name(view, store.config)
        fields = [_mmh3(f"{table}:{f.name}") for f in view.features] + [f"_ts:{table}".encode()]
        client = redis.Redis.from_url(s.redis_url)
        with client.pipeline(transaction=False) as pipe:
            for name in stale:  # this view's fields only: other views of the project share the hash
                pipe.hdel(held[name], *fields)
            pipe.execute()
        return stale
    table = compute_table_id(s.project, view, store.config.registry.enable_online_feature_view_versioning)
    with contextlib.closing(sqlite3.connect(s.online_path)) as conn, conn:
        conn.executemany(f'DELETE FROM "{table}" WHERE entity_key = ?', [(held[name],) for name in stale])
    return stale
