"""The feature store's names and settings: the view, the entity, the two timestamps, where each part of
the store lives, and how a value is encoded (Feast's public ``Value`` protobuf). Shared by the store (feature_store.py) and the online layout (feast_layout.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy and pandas are imported where frames are handled, not when the code location loads
    import pandas as pd


FEATURE_VIEW = "subject_features"


ENTITY = "subject"


EVENT_TS = "FEATURE_TIMESTAMP"


CREATED_TS = "CREATED_TIMESTAMP"


TIMESTAMPS = (EVENT_TS, CREATED_TS)


ENTITY_TS = "event_timestamp"  # the entity frame's "as of" column (Feast's convention)


EPOCH = "1970-01-01T00:00:00Z"  # where a subject whose reference start date cannot be placed is put in time


def load_feast() -> None:
    """Import Feast once per process, without typeguard instrumenting its classes as they are defined.

    Feast decorates its data sources and views with typeguard's ``@typechecked``, which parses and recompiles
    each class's source at import: 2.7 of Feast's 3.7 s import here, in every process that opens the store
    (a step, the model server). The decorator is a no-op under ``python -O``; this makes it one for Feast's
    import only, and restores it at once. What Feast checked at run time, the types the platform passes,
    the feature-store tests exercise."""
    import sys

    if "feast" in sys.modules:
        return
    import typeguard

    def unchecked(target=None, **_):
        return target if target is not None else (lambda t: t)

    original, typeguard.typechecked = typeguard.typechecked, unchecked
    try:
        import feast  # noqa: F401
    finally:
        typeguard.typechecked = original


@dataclass(frozen=True)
class StoreSettings:
    """Where the store's parts live (resolved by the ``feature_store`` resource from settings.py)."""

    offline_path: Path
    project: str
    registry: str
    online_path: Path  # the SQLite online store, when there is no Redis
    redis_url: str | None = None


def default_settings(root: str | Path | None = None, registry: str | None = None, project: str | None = None,
                     redis_url: str | None = None) -> StoreSettings:
    """The store's settings from settings.py (the environment), each overridable: what the ``feature_store``
    resource resolves, without Dagster (the model server reads them too). ``root``: a state folder other than
    $CT_HOME (then the registry is a file under it, whatever the profile)."""
    from ct_assets import settings

    home = Path(root).resolve() if root else settings.ct_home()
    feast_dir = home / "feature_store" / "feast"
    return StoreSettings(
        # Where the lake puts the asset subject_features (the Lake resource's path_for): the offline store.
        offline_path=home / "feature_store" / "subject_features.parquet",
        project=project or settings.feast_project(),
        registry=registry or (str(feast_dir / "registry.db") if root else settings.feast_registry()),
        online_path=feast_dir / "online.db",
        redis_url=redis_url or settings.redis_url(),
    )


def online_kind(redis_url: str | None = None) -> str:
    """Which online store the settings pick: "redis" ($CT_REDIS_URL or ``redis_url``), else "sqlite"."""
    from ct_assets import settings

    return "redis" if (redis_url or settings.redis_url()) else "sqlite"


def pd_utc(times: pd.Series) -> pd.Series:
    """Times as UTC (naive ones taken as UTC, as Feast takes them)."""
    import pandas as pd

    times = pd.to_datetime(times)
    return times.dt.tz_localize("UTC") if times.dt.tz is None else times.dt.tz_convert("UTC")


def feast_value_to_python(value) -> Any:
    """A Feast value (double, string, ... or unset) as Python."""
    kind = value.WhichOneof("val")
    return None if kind is None or kind == "null_val" else getattr(value, kind)


def feast_values(column: pd.Series, kind: str) -> tuple[list[bytes], list[str | None]]:
    """One offline column as Feast's conversion stores it (``python_values_to_proto_values``, then
    ``SerializeToString``): per value the bytes of its Feast ``Value`` (a double or a string; empty for a
    missing one), and its text (Feast's ``extract_text_and_num``: the SQLite store's ``value_text``).
    Doubles are encoded for the whole column at once, as protobuf lays them out (the field's tag, then
    the 8 bytes little-endian), rather than one protobuf object per value; the tag is protobuf's own."""
    import numpy as np
    import pandas as pd

    load_feast()
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
