"""What a model version was made from: data, rules, code, split and libraries, as digests.

The same values go to the model version's MLflow tags (``ct.*``) and to the Dagster metadata, and
their digest (``ct.provenance``) is what an approval is bound to.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ct_assets import settings

if TYPE_CHECKING:
    import pandas as pd

LIBRARIES = ("dagster", "mlflow", "scikit-learn", "pandas", "pyarrow", "pandera", "pyspark", "numpy")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def frame_digest(df: pd.DataFrame) -> str:
    """Content digest of a data frame: its columns and every cell, independent of the file it came from."""
    import pandas as pd

    h = hashlib.sha256(json.dumps([str(c) for c in df.columns]).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


def _check_spec(check) -> dict[str, Any]:
    return {"name": check.name, "error": check.error, "statistics": {k: repr(v) for k, v in (check.statistics or {}).items()}}


def ruleset_version() -> str:
    """Digest of the validation rules as they stand: every domain schema's columns (type, nullability,
    whether required, uniqueness) and checks (name, message, parameters), the plausibility bounds, the
    date rules and the texts read as non-numbers. Any rule changed, a different version."""
    from ct_assets.core import schemas
    from ct_assets.core.sdtm import DOMAINS

    spec = {}
    for domain in DOMAINS:
        schema = schemas.domain_schema(domain, known_subjects=["*"], cutoff="9999-12-31")
        spec[domain] = {
            "columns": {name: {"dtype": str(col.dtype), "nullable": col.nullable, "required": col.required,
                               "unique": col.unique, "checks": [_check_spec(c) for c in col.checks]}
                        for name, col in schema.columns.items()},
            "checks": [_check_spec(c) for c in schema.checks],
            "unique": schema.unique,
        }
    spec["plausible_ranges"] = sorted((f"{t}|{u}", lo, hi) for (t, u), (lo, hi) in schemas.PLAUSIBLE_RANGES.items())
    spec["dates"] = [schemas.ISO8601_RE.pattern, schemas.EARLIEST_DATE]
    spec["non_numbers"] = sorted(schemas.NON_NUMBERS)
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def code_version() -> dict[str, str]:
    """The git commit and whether the tree had changes, else the installed package's version."""
    root = settings.PROJECT_ROOT
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=10, check=True).stdout.strip())
        return {"git_commit": commit, "git_dirty": str(dirty).lower()}
    except (OSError, subprocess.SubprocessError):
        return {"package_version": metadata.version("clinical-trials-mlops")}


def library_versions() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def source_digests(files: list[Path]) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(files)}


# The per-file listing stays in the ``ct.sources`` tag up to this many characters (some 200 files); past it the tag
# gives way to the listing's digest and file count, and the listing is an artifact of the model's MLflow run
# (SOURCES_ARTIFACT): MLflow refuses a registry tag over 100,000 characters, which a delivery of 1,400 files passes.
SOURCES_TAG_LIMIT = 20_000
SOURCES_ARTIFACT = "provenance/sources.json"


def sources_tags(digests: dict[str, str]) -> dict[str, str]:
    """``ct.sources_sha256`` and ``ct.sources_files`` always; ``ct.sources`` (the listing) when it fits the tag, else
    ``ct.sources_artifact`` (the caller logs the listing there)."""
    listing = json.dumps(digests, sort_keys=True)
    tags = {"ct.sources_sha256": hashlib.sha256(listing.encode()).hexdigest(), "ct.sources_files": str(len(digests))}
    return tags | ({"ct.sources": listing} if len(listing) <= SOURCES_TAG_LIMIT else {"ct.sources_artifact": SOURCES_ARTIFACT})


def model_provenance(sources: dict[str, str], training_set: pd.DataFrame, quarantined: dict[str, int], split_seed: int,
                     holdout_subjects: pd.Series, asset_code_versions: dict[str, str]) -> dict[str, str]:
    """The provenance of a model version as flat string tags (``sources``: each study file's SHA-256, see
    ``sources_tags``); ``ct.provenance`` digests all the others."""
    tags = sources_tags(sources) | {
        "ct.training_set_sha256": frame_digest(training_set),
        "ct.ruleset_version": ruleset_version(),
        "ct.quarantined": json.dumps(quarantined, sort_keys=True),
        "ct.split_seed": str(split_seed),
        "ct.holdout_sha256": hashlib.sha256("\n".join(sorted(map(str, holdout_subjects))).encode()).hexdigest(),
        "ct.asset_code_versions": json.dumps(asset_code_versions, sort_keys=True),
        "ct.libraries": json.dumps(library_versions(), sort_keys=True),
    } | {f"ct.{k}": v for k, v in code_version().items()}
    tags["ct.provenance"] = hashlib.sha256(json.dumps(tags, sort_keys=True).encode()).hexdigest()
    return tags


def module_code_version(*modules: str) -> str:
    """A Dagster ``code_version`` from the source of the modules that hold an asset's logic: the UI
    shows the asset stale when that logic changes. Reads files only (cheap at load)."""
    import importlib.util

    h = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec and spec.origin:
            h.update(Path(spec.origin).read_bytes())
    return h.hexdigest()[:12]


def package_modules(package: str) -> tuple[str, ...]:
    """Every module of ``package``, found on disk without importing it: a new engine is covered at once."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    folders = spec.submodule_search_locations if spec else []
    return tuple(sorted(f"{package}.{p.stem}" for folder in folders for p in Path(folder).glob("*.py")
                        if p.stem != "__init__"))


# The modules holding each stage's logic: their source is the stage's Dagster code_version. Validation is
# the rules and every engine that applies them (pandas, streamed, Spark), whichever is configured.
STAGE_LOGIC = {
    "validation": ("ct_assets.core.schemas", "ct_assets.core.rules", "ct_assets.core.values", "ct_assets.core.dates",
                   "ct_assets.core.sdtm",
                   *package_modules("ct_assets.engines")),
    "processing": ("spark.visits", "ct_assets.engines.duck_visits", "ct_assets.engines.duck", "ct_assets.core.dates", "ct_assets.core.units",
                   "ct_assets.engines.spark_dates"),
    "features": ("ct_assets.core.features", "ct_assets.core.dates"),
    "training": ("ct_assets.core.training", "ct_assets.core.tracking"),
}


def stage_code_versions() -> dict[str, str]:
    return {stage: module_code_version(*modules) for stage, modules in STAGE_LOGIC.items()}
