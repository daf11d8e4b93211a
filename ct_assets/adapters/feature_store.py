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
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from ct_assets.core.privacy import SUBJECT_KEY

if TYPE_CHECKING:  # numpy and pandas are imported where frames are handled, not when the code location loads
    import pandas as pd

from ct_assets.adapters.feast_layout import (  # noqa: F401  (the store's API includes the online layout's functions)
    OnlineReader,
    online_stamps,
    online_subjects,
    overlapped,
    prune_online,
    require_known_feast,
    write_latest,
    writes_like_feast,
)
from ct_assets.adapters.feast_schema import (  # noqa: F401  (re-exported: the store's names and settings)
    CREATED_TS,
    ENTITY,
    ENTITY_TS,
    EPOCH,
    EVENT_TS,
    FEATURE_VIEW,
    TIMESTAMPS,
    StoreSettings,
    default_settings,
    feast_value_to_python,
    load_feast,
    online_kind,
    pd_utc,
)


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
    load_feast()
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
    load_feast()
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, String

    entity = Entity(name=ENTITY, join_keys=[SUBJECT_KEY], value_type=ValueType.STRING,
                    description="A trial subject, by pseudonym (ct_assets.core.privacy)")
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
    if not writes_like_feast(store.config, view):
        with contextlib.redirect_stdout(io.StringIO()):  # Feast prints coloured progress lines: not for a run's console
            store.materialize(start_date=start, end_date=end, feature_views=[FEATURE_VIEW])
        return {"start": start.isoformat(), "end": end.isoformat()}
    if latest is None:
        latest = latest_rows(pd.read_parquet(s.offline_path))
    write_latest(store, s, view, latest)
    store.registry.apply_materialization(view, store.project, start, end)
    return {"start": start.isoformat(), "end": end.isoformat()}


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


def verify_online(store, s: StoreSettings, latest: pd.DataFrame, sample: int = 50, seed: int = 0,
                  held: dict | None = None) -> dict:
    """The online store against the offline store's latest rows: every subject found with the same
    feature timestamp (read in bulk from the store's own table or keys by ``online_stamps``, unless ``held`` is
    that read), and a sample of subjects read back whole, value by value, through Feast's ``get_online_features``."""
    import pandas as pd

    names = list(feature_names(s.offline_path))
    held = online_stamps(store, s) if held is None else held
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


def prune_and_verify(store, s: StoreSettings, latest: pd.DataFrame) -> tuple[list[str], dict]:
    """After a write of ``latest``: one read of what the store holds (``online_stamps``), the subjects the offline store
    no longer has removed (``prune_online``), then ``verify_online`` on what is left. Returns (removed, verdict)."""
    held = online_stamps(store, s)
    pruned = prune_online(store, s, set(latest[SUBJECT_KEY]), held)
    gone = set(pruned)
    return pruned, verify_online(store, s, latest, held={k: v for k, v in held.items() if k not in gone})


def served_vectors(log_path: Path, limit: int = 500) -> pd.DataFrame:
    """The latest ``limit`` feature vectors the model server fetched online and scored (its prediction
    log keeps them for a share of predictions), one per subject and feature timestamp."""
    import orjson
    import pandas as pd

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
