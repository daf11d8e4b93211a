"""Atomic writes into the local data lake: a reader never sees a half-written file."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pandas as pd


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


def write_parquet(df: pd.DataFrame, path: Path) -> Path:
    """Write ``df`` to ``path`` atomically (temp file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # An all-null text column would be written with Parquet's NULL type, which Spark cannot read.
    empty_text = [c for c in df.columns if df[c].dtype == object and df[c].isna().all()]
    df = df.astype({c: "string" for c in empty_text}) if empty_text else df
    tmp = _tmp_sibling(path)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(obj: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def new_version_dir(link: Path) -> Path:
    """A fresh folder next to ``link`` for a writer (Spark) that produces a directory."""
    link.parent.mkdir(parents=True, exist_ok=True)
    return link.with_name(f".{link.name}.{uuid.uuid4().hex}")


def publish_dir(version_dir: Path, link: Path) -> Path:
    """Atomically point ``link`` (a symlink) at ``version_dir`` and remove the previous version.

    Directories cannot be renamed over non-empty ones, so the stable path is a symlink swapped
    with a single rename.
    """
    previous = link.resolve() if link.is_symlink() else None
    if link.exists() and not link.is_symlink():
        shutil.rmtree(link)  # a plain folder left by an older layout
    tmp_link = _tmp_sibling(link)
    os.symlink(version_dir.name, tmp_link)
    os.replace(tmp_link, link)
    if previous is not None and previous != version_dir.resolve() and previous.exists():
        shutil.rmtree(previous, ignore_errors=True)
    return link


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive lock next to ``path`` for read-modify-write updates by concurrent runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
