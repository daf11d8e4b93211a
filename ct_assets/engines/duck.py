"""SQL pieces the DuckDB steps share: a connection with bounded memory, quoting, a lake dataset's files, SDTM
dates as the interval they allow."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ct_assets.core.dates import DATE_PATTERN

# DuckDB's own default is 80% of the machine's memory. The local steps spill their aggregates to disk past this,
# so a million-subject study stays inside the process tree's memory budget (issue 31: 8 GiB in all).
MEMORY_LIMIT = "3GiB"


def connect(threads: int | None = None) -> Any:
    """An in-memory DuckDB connection that spills past ``MEMORY_LIMIT`` into a folder of its own under the system's
    temporary directory (DuckDB's default for an in-memory database is ``.tmp`` in the working directory). Of its
    own: DuckDB 2.0 deletes every spill file of a shared folder when one of its users closes, under the others'
    running queries (duckdb/duckdb#24758); it creates this one at the first spill and removes it on close."""
    import os
    import uuid

    import duckdb

    spill = Path(tempfile.gettempdir()) / f"ct-duckdb-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    config = {"memory_limit": MEMORY_LIMIT, "temp_directory": str(spill)}
    return duckdb.connect(config=config | ({"threads": threads} if threads else {}))


def text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def files(path: Path) -> str:
    from ct_assets.core import lake

    return "[" + ", ".join(text(str(p)) for p in lake.parquet_files(path)) + "]"


def date_bounds(column: str) -> tuple[str, str]:
    """``core.dates.date_bounds`` in SQL: the earliest and latest day an SDTM date allows (NULL when not a date)."""
    pattern = text(DATE_PATTERN)
    year, month, day = (f"regexp_extract({column}, {pattern}, {i})" for i in (1, 2, 3))
    start = (f"CASE WHEN {year} <> '' THEN try_cast({year} || '-' || CASE WHEN {month} = '' THEN '01' ELSE {month} END "
             f"|| '-' || CASE WHEN {day} = '' THEN '01' ELSE {day} END AS DATE) END")
    latest = (f"CASE WHEN {start} IS NULL THEN NULL WHEN {day} <> '' THEN {start} WHEN {month} <> '' THEN last_day({start}) "
              f"ELSE try_cast({year} || '-12-31' AS DATE) END")
    return start, latest


def study_day(delta: str) -> str:
    return f"CAST(CASE WHEN ({delta}) >= 0 THEN ({delta}) + 1 ELSE ({delta}) END AS DOUBLE)"
