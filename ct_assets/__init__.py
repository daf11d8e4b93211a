"""Clinical-trials MLOps on Dagster. The main code location is ``ct_assets.definitions`` (its definitions
are autoloaded from ``ct_assets/defs``); the layers are described in docs/architecture.md."""
