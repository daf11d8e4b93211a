"""SQL pieces the DuckDB steps share: quoting, a lake dataset's files, SDTM dates as the interval they allow."""

from __future__ import annotations

from pathlib import Path

from ct_assets.core.dates import DATE_PATTERN


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
