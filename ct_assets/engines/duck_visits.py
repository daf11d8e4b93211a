"""Processed visits on one machine: ``spark/visits.py``'s job as one DuckDB query over the same lake Parquet.

On a single machine a JVM's start and its hand-over cost more than the visit table itself (decision 0013): the
asset runs this query with a local master and the Spark job on a cluster. The rules are those of the Spark job,
stated from the same tables (``core.units`` for the conversions, ``core.dates.DATE_PATTERN`` for reading a
partial date as the interval it allows), and the tests hold the two engines to the same visit table: one
row per subject and visit, results in standard units, one column per test (repeated measures averaged);
STUDY_DAY the visit's first known day, EARLIEST_DAY and LATEST_DAY the bounds of all its results.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ct_assets.core.units import UNIT_CONVERSIONS
from ct_assets.engines.duck import connect, date_bounds, files, ident, study_day, text

SUBJECT = "SUBJECT_KEY"
ABNORMAL_FLAGS = ["HIGH", "LOW", "ABNORMAL", "H", "L", "A", "HH", "LL"]  # as spark/visits.py


def _findings_long(domain: str, path: Path, columns: set[str]) -> str:
    """One row per numeric result, as ``spark.visits.findings_long``: subject, visit, day, date, test, value, unit."""
    d = domain

    def col(name: str, kind: str = "VARCHAR") -> str:
        return f"CAST({ident(name)} AS {kind})" if name in columns else f"CAST(NULL AS {kind})"

    flags = ", ".join(text(f) for f in ABNORMAL_FLAGS)
    return (f"SELECT {ident(SUBJECT)} AS SUBJECT_KEY, CAST(VISITNUM AS DOUBLE) AS VISITNUM, {col(d + 'DY', 'DOUBLE')} AS DY, "
            f"{col(d + 'DTC')} AS DTC, {text(d + '_')} || {ident(d + 'TESTCD')} AS TEST, "
            f"CAST({ident(d + 'STRESN')} AS DOUBLE) AS VALUE, {col(d + 'STRESU')} AS UNIT, "
            f"CAST(upper(coalesce({col(d + 'NRIND')}, '')) IN ({flags}) AS INTEGER) AS ABNORMAL "
            f"FROM read_parquet({files(path)}, union_by_name = true) WHERE {ident(d + 'STRESN')} IS NOT NULL")


def _long(findings: Mapping[str, Path]) -> str:
    """``WITH ... long AS (...)``: every numeric result of the findings domains, in standard units."""
    import pyarrow.parquet as pq

    from ct_assets.core import lake

    parts = []
    for domain, path in sorted(findings.items()):
        columns = {n for p in lake.parquet_files(path) for n in pq.read_schema(p).names}
        parts.append(_findings_long(domain, path, columns))
    if not parts:
        raise ValueError("no findings domain to process")
    conversions = ", ".join(f"({text(u)}, {text(t)}, {f!r}, {o!r})" for u, (t, f, o) in UNIT_CONVERSIONS.items())
    return (f"WITH long_raw AS ({' UNION ALL '.join(parts)}), "
            f"conv(UNIT, TARGET, FACTOR, OFFSET_) AS (VALUES {conversions}), "
            "long AS (SELECT l.SUBJECT_KEY, l.VISITNUM, l.DY, l.DTC, l.TEST, l.ABNORMAL, "
            "CASE WHEN c.FACTOR IS NOT NULL THEN l.VALUE * c.FACTOR + c.OFFSET_ ELSE l.VALUE END AS VALUE, "
            "coalesce(c.TARGET, l.UNIT) AS UNIT FROM long_raw l LEFT JOIN conv c ON l.UNIT = c.UNIT)")


def visit_query(findings: Mapping[str, Path], dm: Path, tests: list[str] | None = None) -> str:
    """The query for the visit table of ``findings`` (validated domains by SDTM code, Parquet paths) and ``dm``;
    ``tests``: the test columns when known, else found by a pass over the findings."""
    long = _long(findings)
    if tests is None:
        with connect() as con:
            tests = [r[0] for r in con.execute(f"{long} SELECT DISTINCT TEST FROM long").fetchall()]
    tests = sorted(tests)
    lo, hi = date_bounds("l.DTC")
    ref_lo, ref_hi = date_bounds("r.RFSTDTC")
    first, last = study_day("l._LO - r._REF_HI"), study_day("l._HI - r._REF_LO")
    means = "".join(f", avg(VALUE) FILTER (WHERE TEST = {text(t)}) AS {ident(t)}" for t in tests)
    query = (f"{long}, dated AS (SELECT l.*, {lo} AS _LO, {hi} AS _HI FROM long l), "
             f"ref AS (SELECT {ident(SUBJECT)} AS SUBJECT_KEY, {ref_lo} AS _REF_LO, {ref_hi} AS _REF_HI "
             f"FROM read_parquet({files(dm)}, union_by_name = true) r), "
             f"days AS (SELECT l.*, {first} AS _FIRST, {last} AS _LAST FROM dated l LEFT JOIN ref r USING (SUBJECT_KEY)), "
             "bounded AS (SELECT *, coalesce(DY, _FIRST) AS EARLIEST_DAY, coalesce(DY, _LAST) AS LATEST_DAY, "
             "coalesce(DY, CASE WHEN _FIRST = _LAST THEN _FIRST END) AS DAY FROM days) "
             "SELECT SUBJECT_KEY, VISITNUM, min(DAY) AS STUDY_DAY, min(EARLIEST_DAY) AS EARLIEST_DAY, "
             "max(LATEST_DAY) AS LATEST_DAY, CAST(sum(ABNORMAL) AS INTEGER) AS N_ABNORMAL, "
             f"CAST(count(*) AS INTEGER) AS N_RESULTS{means} FROM bounded GROUP BY SUBJECT_KEY, VISITNUM "
             "ORDER BY SUBJECT_KEY, VISITNUM")
    return query


def test_units(findings: Mapping[str, Path]) -> dict[str, str]:
    """The standard unit of every test column: the most common after conversion (``spark.visits.test_units``)."""
    with connect() as con:
        rows = con.execute(f"{_long(findings)} SELECT TEST, mode(UNIT) FROM long GROUP BY TEST").fetchall()
    return {test: unit or "" for test, unit in rows}


def process_visits(findings: Mapping[str, Path], dm: Path, out_dir: Path, tests: list[str] | None = None,
                   threads: int | None = None) -> int:
    """Write the visit table as Parquet into ``out_dir`` (the caller publishes it); returns its rows."""
    query = visit_query(findings, dm, tests)
    out_dir.mkdir(parents=True, exist_ok=True)
    with connect(threads) as con:
        con.execute(f"COPY ({query}) TO {text(str(out_dir / 'part-0.parquet'))} (FORMAT parquet)")
        return con.execute(f"SELECT count(*) FROM read_parquet({text(str(out_dir / 'part-0.parquet'))})").fetchone()[0]
