"""Clinical-trials MLOps on Dagster. ``dagster ... -m ct_assets`` loads ``defs``."""

from ct_assets.definitions import defs

__all__ = ["defs"]
