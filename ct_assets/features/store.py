"""The feature store, on Feast: the offline store is the Parquet file ``subject_features`` writes under
``$CT_HOME/feature_store/``; the online store is Redis (``$CT_REDIS_URL``, the legacy ``redis_features``) or,
with no Redis configured, Feast's SQLite store under ``$CT_HOME``; the registry is a file under ``$CT_HOME``
or a SQL registry on PostgreSQL (production profile).

The entity and the feature view are built here, in code, from the offline store's own columns, so
they always match what ``subject_features`` computed (a study with other tests has other features).
Each row carries two times: ``FEATURE_TIMESTAMP``, the subject's landmark (the end of study day
``landmark_day``: the values hold as of then), and ``CREATED_TIMESTAMP``, when they were computed (of
two rows with one landmark, the later computation wins). Feast's point-in-time join on them gives the
training set as of each subject's landmark: no value stamped later is ever used.

Feast is imported inside the functions only: the code location loads without it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from ct_assets.lib.privacy import SUBJECT_KEY

if TYPE_CHECKING:  # numpy and pandas are imported where frames are handled, not when the code location loads
    import pandas as pd

FEATURE_VIEW = "subject_features"
ENTITY = "subject"
EVENT_TS = "FEATURE_TIMESTAMP"
CREATED_TS = "CREATED_TIMESTAMP"
TIMESTAMPS = (EVENT_TS, CREATED_TS)
ENTITY_TS = "event_timestamp"  # the entity frame's "as of" column (Feast's convention)
EPOCH = "1970-01-01T00:00:00Z"  # where a subject whose reference start date cannot be placed is put in time


@dataclass(frozen=True)
class StoreSettings:
    """Where the store's parts live (resolved by the ``feature_store`` resource from settings.py)."""

    offline_path: Path
    project: str
    registry: str
    online_path: Path  # the SQLite online store, when there is no Redis
    redis_url: str | None = None


def landmark_time(rfstdtc: pd.Series, landmark_day: int) -> pd.Series:
    """When a subject's features become known: the end of study day ``landmark_day`` (study day 1 is
    RFSTDTC), as UTC midnight. A reference date that cannot be placed counts as the epoch (never the
    epoch itself, which online stores use for "not found"), for the stored features and the training
    set's entity alike."""
    import pandas as pd

    start = pd.to_datetime(rfstdtc.astype("string").str.slice(0, 10), format="ISO8601", errors="coerce", utc=True)
    return (start + pd.Timedelta(days=int(landmark_day))).fillna(pd.Timestamp(EPOCH) + pd.Timedelta(days=int(landmark_day)))


def stamp(features: pd.DataFrame, dm: pd.DataFrame, landmark_day: int, created: pd.Timestamp | None = None) -> pd.DataFrame:
    """The features with their feature timestamp (the subject's landmark) and creation time."""
    import pandas as pd

    ref = dm.drop_duplicates(SUBJECT_KEY).set_index(SUBJECT_KEY)["RFSTDTC"]
    out = features.copy()
    out[EVENT_TS] = landmark_time(features[SUBJECT_KEY].map(ref), landmark_day).to_numpy()
    out[CREATED_TS] = created if created is not None else pd.Timestamp.now(tz="UTC")
    return out


def without_timestamps(features: pd.DataFrame) -> pd.DataFrame:
    return features.drop(columns=[c for c in TIMESTAMPS if c in features.columns])


def feature_names(offline_path: Path) -> dict[str, str]:
    """Feature -> 'float' or 'string', in the offline store's column order (from its Parquet footer)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = {}
    for field in pq.read_schema(offline_path):
        if field.name in (SUBJECT_KEY, *TIMESTAMPS) or field.name.startswith("__"):
            continue
        out[field.name] = "string" if pa.types.is_string(field.type) or pa.types.is_large_string(field.type) else "float"
    return out


def redis_connection_string(url: str) -> str:
    """``redis://[user:password@]host:port/db`` as Feast's ``host:port,db=N,password=...``."""
    u = urlparse(url)
    if u.scheme not in ("redis", "rediss"):
        raise ValueError(f"CT_REDIS_URL must be redis://host:port/db or rediss://..., got scheme {u.scheme!r}")
    parts = [f"{u.hostname or '127.0.0.1'}:{u.port or 6379}", f"db={int((u.path or '/0').strip('/') or 0)}"]
    if u.password:
        parts.append(f"password={unquote(u.password)}")
    if u.username and u.username != "default":
        parts.append(f"username={unquote(u.username)}")
    if u.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def repo_config(s: StoreSettings):
    """Feast's RepoConfig, built in code (no feature_store.yaml)."""
    from feast import RepoConfig
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig
    from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
    from feast.repo_config import RegistryConfig

    if "://" in s.registry:
        from feast.infra.registry.sql import SqlRegistryConfig

        registry = SqlRegistryConfig(registry_type="sql", path=s.registry, cache_ttl_seconds=60,
                                     sqlalchemy_config_kwargs={"echo": False, "pool_pre_ping": True})
    else:
        Path(s.registry).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        registry = RegistryConfig(path=s.registry, cache_ttl_seconds=60)
    if s.redis_url:
        # skip_dedup: a corrected value keeps its subject's landmark (same event time), and Feast's Redis
        # writer would otherwise keep the old one; every write here is the latest row per subject.
        online = RedisOnlineStoreConfig(connection_string=redis_connection_string(s.redis_url), skip_dedup=True)
    else:
        s.online_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        online = SqliteOnlineStoreConfig(path=str(s.online_path))
    return RepoConfig(project=s.project, provider="local", registry=registry, online_store=online,
                      offline_store={"type": "file"}, entity_key_serialization_version=3,
                      repo_path=s.online_path.parent)


def open_store(s: StoreSettings):
    from feast import FeatureStore

    return FeatureStore(config=repo_config(s))


def definitions(s: StoreSettings) -> list:
    """The entity (the subject's pseudonym, never USUBJID) and the feature view, from the offline store."""
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, String

    entity = Entity(name=ENTITY, join_keys=[SUBJECT_KEY], value_type=ValueType.STRING,
                    description="A trial subject, by pseudonym (ct_assets.lib.privacy)")
    source = FileSource(name=f"{FEATURE_VIEW}_offline", path=str(s.offline_path), timestamp_field=EVENT_TS,
                        created_timestamp_column=CREATED_TS)
    schema = [Field(name=n, dtype=String if kind == "string" else Float64) for n, kind in feature_names(s.offline_path).items()]
    view = FeatureView(name=FEATURE_VIEW, entities=[entity], ttl=None, schema=schema, source=source, online=True,
                       description="subject_features: demographics, exposure and vitals/labs of the first days on study, "
                                   "as of each subject's landmark")
    return [entity, view]


def apply(store, s: StoreSettings) -> None:
    """Register (or update) the entity and feature view for the offline store as it is now."""
    store.apply(definitions(s))


def materialize_latest(store, s: StoreSettings, latest: pd.DataFrame | None = None) -> dict:
    """The latest row of every subject, from the offline store to the online store (``latest``: those
    rows, when the caller has them already).

    What Feast's ``materialize`` over the whole offline store writes, byte for byte, and recorded in the
    registry as it records it; but written for the whole view at once: Feast builds, converts and writes
    one protobuf per value (200 features x 20,000 subjects: 4 million), which took most of the asset's
    two minutes at that scale (issue 16). See ``write_latest`` for the layout this relies on."""
    import pandas as pd
    import pyarrow.parquet as pq

    stamps = pq.read_table(s.offline_path, columns=[EVENT_TS]).column(0).to_pandas()
    epoch = dt.datetime.fromisoformat(EPOCH)
    start = stamps.min().to_pydatetime() if len(stamps) else epoch
    end = (stamps.max().to_pydatetime() if len(stamps) else epoch) + dt.timedelta(seconds=1)  # end is exclusive
    view = store.get_feature_view(FEATURE_VIEW)
    if not _writes_like_feast(store.config, view):
        with contextlib.redirect_stdout(io.StringIO()):  # Feast prints coloured progress lines: not for a run's console
            store.materialize(start_date=start, end_date=end, feature_views=[FEATURE_VIEW])
        return {"start": start.isoformat(), "end": end.isoformat()}
    if latest is None:
        latest = latest_rows(pd.read_parquet(s.offline_path))
    write_latest(store, s, view, latest)
    store.registry.apply_materialization(view, store.project, start, end)
    return {"start": start.isoformat(), "end": end.isoformat()}


def _writes_like_feast(config, view) -> bool:
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


def feast_values(column: pd.Series, kind: str) -> tuple[list[bytes], list[str | None]]:
    """One offline column as Feast's conversion stores it (``python_values_to_proto_values``, then
    ``SerializeToString``): per value the bytes of its Feast ``Value`` (a double or a string; empty for a
    missing one), and its text (Feast's ``extract_text_and_num``: the SQLite store's ``value_text``).
    Doubles are encoded for the whole column at once, as protobuf lays them out (the field's tag, then
    the 8 bytes little-endian), rather than one protobuf object per value; the tag is protobuf's own."""
    import numpy as np
    import pandas as pd
    from feast.protos.feast.types.Value_pb2 import Value

    if kind == "string":
        known: dict[Any, tuple[bytes, str | None]] = {}
        for v in column.drop_duplicates().tolist():
            known[v] = (b"", None) if pd.isna(v) else (Value(string_val=str(v)).SerializeToString(), str(v))
        pairs = [known[v] for v in column.tolist()]
        return [p[0] for p in pairs], [p[1] for p in pairs]
    x = column.to_numpy(dtype=np.float64, na_value=np.nan)
    tag = Value(double_val=0.0).SerializeToString()[:-8]
    packed = np.empty(len(x), dtype=[("tag", f"S{len(tag)}"), ("double", "<f8")])  # unaligned: tag then value
    packed["tag"], packed["double"] = tag, x
    raw, size = packed.tobytes(), packed.dtype.itemsize
    encoded = [raw[i:i + size] for i in range(0, len(raw), size)]
    texts: list[str | None] = list(map(str, x.tolist()))
    for i in np.flatnonzero(np.isnan(x)).tolist():
        encoded[i], texts[i] = b"", None
    return encoded, texts


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


def pd_utc(times: pd.Series) -> pd.Series:
    """Times as UTC (naive ones taken as UTC, as Feast takes them)."""
    import pandas as pd

    times = pd.to_datetime(times)
    return times.dt.tz_localize("UTC") if times.dt.tz is None else times.dt.tz_convert("UTC")


def write_online(store, rows: pd.DataFrame) -> None:
    """Rows of the offline store (with their timestamps) straight into the online store: a backfill's
    cohorts, nothing else."""
    store.write_to_online_store(FEATURE_VIEW, rows)


def feature_refs(names) -> list[str]:
    return [f"{FEATURE_VIEW}:{n}" for n in names]


def parse_online(response: dict, names: list[str], n: int) -> list[tuple[dict, int] | None]:
    """Per requested subject: (feature values, feature timestamp in epoch seconds), or None when the
    online store does not know the subject."""
    out: list[tuple[dict, int] | None] = []
    for i in range(n):
        ts = max((response[f"{name}__ts"][i] for name in names), default=0)
        if not ts:
            out.append(None)
            continue
        out.append(({name: response[name][i] for name in names}, int(ts)))
    return out


def read_online(store, keys: list[str], names: list[str]) -> list[tuple[dict, int] | None]:
    response = store.get_online_features(features=feature_refs(names),
                                         entity_rows=[{SUBJECT_KEY: k} for k in keys]).to_dict(include_event_timestamps=True)
    return parse_online(response, names, len(keys))


async def read_online_async(store, keys: list[str], names: list[str]) -> list[tuple[dict, int] | None]:
    response = await store.get_online_features_async(features=feature_refs(names),
                                                     entity_rows=[{SUBJECT_KEY: k} for k in keys])
    return parse_online(response.to_dict(include_event_timestamps=True), names, len(keys))


class OnlineReader:
    """Single-subject reads for the model server. Feast's ``get_online_features`` plans the request and
    builds a response object on every call (6-7 ms per subject with 200 features here, under load); this
    reads the same entries with the online store's own ``online_read`` (SQLite), or, for Redis, the hash
    Feast wrote for the subject with one HGETALL, keyed and decoded with Feast's own helpers. A test holds
    both to ``get_online_features``' answers, so a Feast upgrade that changes its layout fails there."""

    def __init__(self, store, redis_url: str | None = None):
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
            out.append(({n: _python(values[n]) if n in values else None for n in self.names}, int(ts.timestamp())))
        return out

    # A copy of the names each time: Feast's Redis store appends its timestamp key to the list it is given.
    def read(self, keys: list[str]) -> list[tuple[dict, int] | None]:
        return self._parse(self.online.online_read(self.config, self.view, self._keys(keys), list(self.names)))

    async def read_async(self, keys: list[str]) -> list[tuple[dict, int] | None]:
        if not self.redis_url:
            return self._parse(await self.online.online_read_async(self.config, self.view, self._keys(keys),
                                                                   list(self.names)))
        from feast.infra.online_stores.helpers import _redis_key
        from feast.protos.feast.types.Value_pb2 import Value
        from google.protobuf.timestamp_pb2 import Timestamp

        import asyncio

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
            out.append(({n: _python(Value.FromString(entry[f])) if f in entry else None for f, n in self.fields}, seconds))
        return out


def _python(value) -> Any:
    """A Feast value (double, string, ... or unset) as Python."""
    kind = value.WhichOneof("val")
    return None if kind is None or kind == "null_val" else getattr(value, kind)


def latest_rows(offline: pd.DataFrame) -> pd.DataFrame:
    """The latest row of each subject (the online store's content): latest landmark, then latest computation."""
    return (offline.sort_values([SUBJECT_KEY, EVENT_TS, CREATED_TS], kind="stable")
            .drop_duplicates(SUBJECT_KEY, keep="last").reset_index(drop=True))


def as_of(store, s: StoreSettings, entities: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time features: for each (SUBJECT_KEY, event_timestamp) the subject's row stamped at or
    before that time (latest computation first). Subjects with no such row are left out."""
    names = list(feature_names(s.offline_path))
    frame = store.get_historical_features(entity_df=entities[[SUBJECT_KEY, ENTITY_TS]],
                                          features=feature_refs(names)).to_df()
    found = frame[names].notna().any(axis=1)
    return frame[found][[SUBJECT_KEY, ENTITY_TS, *names]].sort_values(SUBJECT_KEY, ignore_index=True)


def training_features(store, s: StoreSettings, dm: pd.DataFrame, landmark_day: int) -> pd.DataFrame:
    """The features every subject on study had at their landmark, in the offline store's column order."""
    import pandas as pd

    on_study = dm[dm["RFSTDTC"].notna()].drop_duplicates(SUBJECT_KEY)
    entities = pd.DataFrame({SUBJECT_KEY: on_study[SUBJECT_KEY].to_numpy(),
                             ENTITY_TS: landmark_time(on_study["RFSTDTC"], landmark_day).to_numpy()})
    return as_of(store, s, entities).drop(columns=[ENTITY_TS])


def differences(served: pd.DataFrame, offline: pd.DataFrame, names: list[str], rtol: float = 1e-12) -> dict[str, int]:
    """Per feature, how many of the served vectors differ from the offline store's values (aligned rows);
    missing equals missing, numbers within ``rtol``."""
    import numpy as np

    out: dict[str, int] = {}
    for name in names:
        a, b = served[name], offline[name]
        na = a.isna() & b.isna()
        if a.dtype == object or b.dtype == object:
            same = na | (a.astype(object) == b.astype(object))
        else:
            x, y = a.to_numpy(dtype=float), b.to_numpy(dtype=float)
            same = na.to_numpy() | np.isclose(x, y, rtol=rtol, atol=0.0)
        bad = int((~np.asarray(same, dtype=bool)).sum())
        if bad:
            out[name] = bad
    return out


def to_python(value: Any) -> Any:
    """A feature value as JSON has it (NaN is null)."""
    import numpy as np

    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def verify_online(store, s: StoreSettings, latest: pd.DataFrame, sample: int = 50, seed: int = 0) -> dict:
    """The online store against the offline store's latest rows: every subject found with the same
    feature timestamp (read in bulk from the store's own table or keys, as ``online_stamps`` does), and a
    sample of subjects read back whole, value by value, through Feast's ``get_online_features``."""
    import pandas as pd

    names = list(feature_names(s.offline_path))
    held = online_stamps(store, s)
    found, stale = 0, 0
    expected_ts = (pd_utc(latest[EVENT_TS]).dt.as_unit("ns").astype("int64") // 10**9).tolist() if len(latest) else []
    for key, want in zip(latest[SUBJECT_KEY].tolist(), expected_ts):
        got = held.get(key)
        if got is None or got[1] == 0:  # not there, or stamped with the epoch: Feast's "not found"
            continue
        found += 1
        stale += got[1] != want
    picked = latest.sample(min(sample, len(latest)), random_state=seed) if len(latest) else latest
    served = read_online(store, picked[SUBJECT_KEY].tolist(), names)
    rows = [got[0] if got is not None else {} for got in served]
    online = pd.DataFrame(rows, columns=names, index=picked.index)
    return {"found": found, "stale": stale, "sampled": len(picked), "online_rows": len(held),
            "differing_features": differences(online, picked[names], names)}


def online_subjects(store, s: StoreSettings) -> dict[str, Any]:
    """Every subject the online store holds for the feature view, with where (its Redis key or SQLite
    entity key), read from the store's own tables or keys: what "rows online" means, extras included."""
    return {name: where for name, (where, _) in _held(store, s, stamps=False).items()}


def online_stamps(store, s: StoreSettings) -> dict[str, tuple[Any, int | None]]:
    """``online_subjects`` with each subject's feature timestamp online, in epoch seconds, as Feast's
    read gives it (None when the subject's rows disagree, which Feast's read would hide)."""
    return _held(store, s, stamps=True)


def _held(store, s: StoreSettings, stamps: bool) -> dict[str, tuple[Any, int | None]]:
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


def prune_online(store, s: StoreSettings, keep: set[str]) -> list[str]:
    """Remove from the online store the subjects the offline store no longer has (a subject withdrawn or
    quarantined since): Feast's materialization only ever adds. Returns the subjects removed."""
    import sqlite3

    from feast.infra.online_stores.helpers import _mmh3, compute_table_id
    from feast.infra.online_stores.redis import _versioned_fv_name

    held = online_subjects(store, s)
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


def served_vectors(log_path: Path, limit: int = 500) -> pd.DataFrame:
    """The latest ``limit`` feature vectors the model server fetched online and scored (its prediction
    log keeps them for a share of predictions), one per subject and feature timestamp."""
    import pandas as pd

    import orjson

    records = []
    if log_path.exists():
        with open(log_path, "rb") as fh:
            for line in fh:
                if b'"features"' in line:
                    records.append(orjson.loads(line))
    frame = pd.DataFrame([{SUBJECT_KEY: r["subject_key"], "feature_ts": r["feature_timestamp"], "served_at": r["ts"],
                           **r["features"]} for r in records])
    if frame.empty:
        return frame
    return frame.drop_duplicates([SUBJECT_KEY, "feature_ts"], keep="last").tail(limit).reset_index(drop=True)


def serving_skew(log_path: Path, offline_path: Path, limit: int = 500) -> dict:
    """Served vectors against the offline store's row of the same subject and feature timestamp. A
    vector served before that row was computed (a correction since) is not compared; one with no
    offline row at its timestamp counts as unmatched."""
    import pandas as pd

    served = served_vectors(log_path, limit)
    if served.empty:
        return {"compared": 0, "superseded": 0, "unmatched": 0, "differing_features": {}}
    offline = latest_rows_at(pd.read_parquet(offline_path))
    offline["feature_ts"] = offline[EVENT_TS].astype("int64") // 10**9
    created = offline[CREATED_TS].astype("int64") / 1e9
    offline = offline.assign(created_s=created)
    joined = served.merge(offline, on=[SUBJECT_KEY, "feature_ts"], how="left", suffixes=("", "__offline"),
                          indicator=True)
    unmatched = int((joined["_merge"] == "left_only").sum())
    matched = joined[joined["_merge"] == "both"]
    current = matched[matched["served_at"] >= matched["created_s"]]
    names = [c for c in served.columns if c not in (SUBJECT_KEY, "feature_ts", "served_at")]
    names = [n for n in names if f"{n}__offline" in current.columns]
    offline_values = current[[f"{n}__offline" for n in names]].set_axis(names, axis=1)
    return {"compared": len(current), "superseded": len(matched) - len(current), "unmatched": unmatched,
            "differing_features": differences(current[names], offline_values, names)}


def latest_rows_at(offline: pd.DataFrame) -> pd.DataFrame:
    """Per subject and feature timestamp, the latest computation."""
    return (offline.sort_values([SUBJECT_KEY, EVENT_TS, CREATED_TS], kind="stable")
            .drop_duplicates([SUBJECT_KEY, EVENT_TS], keep="last").reset_index(drop=True))
