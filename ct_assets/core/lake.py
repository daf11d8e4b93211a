"""Atomic writes into the local data lake: a reader never sees a half-written file."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd



def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


def free_space_problem(path: Path, need_mib: int) -> str | None:
    """The one-line reason a run cannot start on the disk holding ``path`` (too little free space), or None. SQLite
    stores on a full disk say only "disk I/O error", minutes into a run."""
    existing = Path(path)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free >= need_mib * 2**20:
        return None
    return (f"no space left on device: {path} has {free / 2**20:.1f} MiB free, and a run needs at least {need_mib} MiB "
            "(CT_MIN_FREE_MIB)")


def _no_space(err: OSError, path: Path) -> OSError:
    """``err`` with the path it could not write when the disk is full (errno ENOSPC); other errors unchanged."""
    import errno

    return OSError(errno.ENOSPC, f"no space left on device: writing {path}") if err.errno == errno.ENOSPC else err


def write_parquet(df: pd.DataFrame, path: Path) -> Path:
    """Write ``df`` to ``path`` atomically (temp file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # An all-null text column would be written with Parquet's NULL type, which Spark cannot read.
    empty_text = [c for c in df.columns if df[c].dtype == object and df[c].isna().all()]
    df = df.astype({c: "string" for c in empty_text}) if empty_text else df
    tmp = _tmp_sibling(path)
    previous = path.resolve() if path.is_symlink() else None  # a dataset folder published earlier
    try:
        df.to_parquet(tmp, index=False)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except OSError as err:
        raise _no_space(err, path) from None
    finally:
        tmp.unlink(missing_ok=True)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
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


def discard(version_dir: Path) -> None:
    """Remove a version folder that will not be published (a failed write)."""
    shutil.rmtree(version_dir, ignore_errors=True)


def publish_dir(version_dir: Path, link: Path) -> Path:
    """Atomically point ``link`` (a symlink) at ``version_dir`` and remove the previous version.

    Directories cannot be renamed over non-empty ones, so the stable path is a symlink swapped
    with a single rename.
    """
    previous = link.resolve() if link.is_symlink() else None
    if link.is_file() and not link.is_symlink():
        link.unlink()  # a single file written by the IO manager
    elif link.exists() and not link.is_symlink():
        shutil.rmtree(link)  # a plain folder left by an older layout
    tmp_link = _tmp_sibling(link)
    os.symlink(version_dir.name, tmp_link)
    os.replace(tmp_link, link)
    if previous is not None and previous != version_dir.resolve() and previous.exists():
        shutil.rmtree(previous, ignore_errors=True)
    return link


def parquet_files(path: Path) -> list[Path]:
    """The data files of a Parquet file or dataset folder (Spark's ``_SUCCESS`` and hidden files left out)."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.rglob("*.parquet") if not p.name.startswith(("_", ".")))
    return [path] if path.exists() else []


def parquet_batches(path: Path, batch_rows: int = 250_000) -> Iterator[pd.DataFrame]:
    """A Parquet file or dataset as pandas frames of at most ``batch_rows`` rows, in file order (for a
    dataset Spark sorted, the rows in sorted order): one batch in memory at a time."""
    import pyarrow.parquet as pq

    for file in parquet_files(path):
        for batch in pq.ParquetFile(file).iter_batches(batch_size=batch_rows):
            yield batch.to_pandas()


def parquet_rows(path: Path) -> int:
    """Rows of a Parquet file or dataset, from the footers (nothing is read)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in parquet_files(path))


def parquet_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    files = parquet_files(path)
    return pq.read_schema(files[0]).names if files else []


def parquet_null_counts(path: Path, columns: list[str]) -> dict[str, int]:
    """Nulls per column of a Parquet file or dataset, from the footers' statistics (a column without
    statistics is counted by reading that column alone)."""
    import pyarrow.parquet as pq

    nulls = dict.fromkeys(columns, 0)
    for file in parquet_files(path):
        meta = pq.ParquetFile(file).metadata
        index = {meta.schema.column(i).path: i for i in range(meta.num_columns)}
        for col in columns:
            if col not in index:
                nulls[col] += meta.num_rows  # absent from this part: all null
                continue
            stats = [meta.row_group(g).column(index[col]).statistics for g in range(meta.num_row_groups)]
            if all(st is not None and st.has_null_count for st in stats):
                nulls[col] += sum(st.null_count for st in stats)
            else:
                nulls[col] += pq.read_table(file, columns=[col]).column(0).null_count
    return nulls


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
