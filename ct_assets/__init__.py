"""Clinical-trials MLOps on Dagster. ``dagster ... -m ct_assets`` loads ``defs``.

``defs`` is loaded on first access (PEP 562), so that importing a plain module of the package
(``ct_assets.training.logic`` in a KFP component, say) does not build the whole code location.
"""

__all__ = ["defs"]


def __getattr__(name: str):
    if name == "defs":
        from ct_assets.definitions import defs

        return defs
    raise AttributeError(f"module 'ct_assets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "defs"])
