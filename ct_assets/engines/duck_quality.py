"""The data-quality monitors on one machine: each findings domain in one DuckDB pass over the lake Parquet.

The measures are those of ``core.report`` (pandas, one frame in memory: the definitions the unit tests read) and of
``engines.spark.anomalies_spark`` (a cluster); tests/integration/test_visit_engines.py and test_spark_anomalies.py hold the three to the same
figures on the pilot, on partial dates and on a synth study. Memory stays flat with the study: DuckDB streams the
Parquet and spills its aggregates, where the pandas definitions would hold every row.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from ct_assets.core.lake import parquet_columns, parquet_files, parquet_rows
from ct_assets.core.privacy import SUBJECT_KEY
from ct_assets.engines.duck import connect, date_bounds, files, ident, text


def require(path: Path) -> Path:
    """``path``, a lake dataset its asset wrote (an absent domain is an empty dataset, never a missing one)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{Path(path).name}: missing from the lake at {path}; materialize its asset again")
    return Path(path)


def rows(path: Path) -> int:
    """Rows of a lake dataset, from the Parquet footers; a missing dataset fails (``require``)."""
    return parquet_rows(require(path))


def subjects_in_dm(raw: Path, dm_subjects: pd.Series) -> float:
    """Share of a raw findings dataset's rows whose USUBJID is a subject of raw DM (1.0 when it has no rows)."""
    if not parquet_files(require(raw)):
        return 1.0
    has_subject = "USUBJID" in parquet_columns(raw)
    with connect() as con:
        con.register("dm_subjects", pd.DataFrame({"USUBJID": dm_subjects.dropna().astype(str).unique()}))
        known = ("count(*) FILTER (WHERE CAST(USUBJID AS VARCHAR) IN (SELECT USUBJID FROM dm_subjects))"
                 if has_subject else "0")
        found, total = con.execute(f"SELECT {known}, count(*) FROM read_parquet({files(raw)}, union_by_name = true)").fetchone()
    return found / total if total else 1.0


def dates_within_period(validated: Path, domain: str, period: pd.DataFrame) -> float | None:
    """``core.report.dates_within_period`` over a validated findings dataset: the share of assessable dates inside
    their subject's study period (a partial date is inside when its whole interval is, outside when none of it is);
    None when nothing can be assessed."""
    if not parquet_files(require(validated)):
        return 1.0
    dtc = f"{domain}DTC"
    columns = parquet_columns(validated)
    with connect() as con:
        source = f"read_parquet({files(validated)}, union_by_name = true)"
        if dtc not in columns:
            return None if con.execute(f"SELECT count(*) FROM {source}").fetchone()[0] else 1.0
        con.register("period", period[[SUBJECT_KEY, "start", "end"]])
        # Rows counted per subject and date first, the bounds per distinct date (a few per visit): far fewer rows
        # reach the date arithmetic and the joins.
        lo, hi = date_bounds("x")
        inside, outside = "lo >= p.start AND hi <= p.\"end\"", "hi < p.start OR lo > p.\"end\""
        inside_n, known, total = con.execute(
            f"WITH f AS (SELECT f.{ident(SUBJECT_KEY)} AS k, CAST(f.{ident(dtc)} AS VARCHAR) AS x, count(*) AS n "
            f"FROM {source} f GROUP BY ALL), "
            f"b AS (SELECT x, {lo} AS lo, {hi} AS hi FROM (SELECT DISTINCT x FROM f WHERE x IS NOT NULL)), "
            f"j AS (SELECT n, lo, hi, p.start, p.\"end\", ({inside}) AS inside, ({outside}) AS outside "
            f"FROM f LEFT JOIN b USING (x) LEFT JOIN (SELECT {ident(SUBJECT_KEY)} AS k, CAST(start AS DATE) AS start, "
            "CAST(\"end\" AS DATE) AS \"end\" FROM period) p USING (k)), "
            "a AS (SELECT n, inside, coalesce(lo IS NOT NULL AND start IS NOT NULL AND \"end\" IS NOT NULL "
            "AND (inside OR outside), false) AS known FROM j) "
            "SELECT coalesce(sum(n) FILTER (WHERE known AND inside), 0), coalesce(sum(n) FILTER (WHERE known), 0), "
            "coalesce(sum(n), 0) FROM a").fetchone()
    if not total:
        return 1.0
    return inside_n / known if known else None


def visit_order(visits: Path, date_col: str) -> float | None:
    """``core.report.visit_order`` over a Parquet dataset: the share of consecutive scheduled visits (integer
    VISITNUM) whose dates (whole dates only) do not go backwards; None when visits or their dates are absent."""
    if not parquet_files(require(visits)):
        return 1.0
    columns = parquet_columns(visits)
    source = f"read_parquet({files(visits)}, union_by_name = true)"
    with connect() as con:
        if "VISITNUM" not in columns or date_col not in columns:
            return None if con.execute(f"SELECT count(*) FROM {source}").fetchone()[0] else 1.0
        day = f"try_strptime(substr(CAST({ident(date_col)} AS VARCHAR), 1, 10), '%Y-%m-%d')"
        total, visitnums, dates = con.execute(
            f"SELECT count(*), count(VISITNUM), count({ident(date_col)}) FROM {source}").fetchone()
        if not total:
            return 1.0
        if not visitnums or not dates:
            return None
        steps, forward = con.execute(
            f"WITH v AS (SELECT {ident(SUBJECT_KEY)} AS k, CAST(VISITNUM AS DOUBLE) AS n, CAST({day} AS DATE) AS d "
            f"FROM {source}), "
            "g AS (SELECT k, n, min(d) AS d FROM v WHERE n % 1 = 0 AND d IS NOT NULL GROUP BY k, n), "
            "s AS (SELECT d - lag(d) OVER (PARTITION BY k ORDER BY n) AS step FROM g) "
            "SELECT count(step), count(*) FILTER (WHERE step >= 0) FROM s").fetchone()
    return forward / steps if steps else 1.0


# Results per anomaly query: an exact median holds every value of its test, and the query holds them twice (values,
# then deviations). A 100,000-subject study's LB (19.4 M results) runs in one query under ``duck.MEMORY_LIMIT``; a
# million subjects' (195 M) did not. Tests are queried a group at a time under this count: one query per domain up to
# 100,000 subjects, about ten for LB at a million.
RESULTS_PER_QUERY = 25_000_000


def anomalies(paths: Mapping[str, Path], z_limit: float = 6.0) -> pd.DataFrame:
    """``core.report.anomalies`` for validated findings datasets by domain: per test, the results more than ``z_limit``
    robust z-scores (|x - median| / (1.4826 MAD)) from the test's median (none when the MAD is 0). Each domain's
    tests are counted first, then queried in groups of at most ``RESULTS_PER_QUERY`` results (DuckDB cannot spill
    an exact median)."""
    from ct_assets.core.report import anomaly_table

    table = []
    with connect() as con:
        for d, path in sorted(paths.items()):
            res, test = f"{d}STRESN", f"{d}TESTCD"
            if not parquet_files(require(path)) or not {res, test} <= set(parquet_columns(path)):
                continue
            results = (f"SELECT CAST({ident(test)} AS VARCHAR) AS t, CAST({ident(res)} AS DOUBLE) AS v "
                       f"FROM read_parquet({files(path)}, union_by_name = true) "
                       f"WHERE {ident(test)} IS NOT NULL AND {ident(res)} IS NOT NULL")
            counts = con.execute(f"SELECT t, count(*) FROM ({results}) WHERE NOT isnan(v) GROUP BY t ORDER BY t").fetchall()
            for group in _groups(counts, RESULTS_PER_QUERY):
                table += [{"test": f"{d}_{t}", "results": n, "anomalies": a} for t, n, a in con.execute(
                    f"WITH x AS (SELECT * FROM ({results}) WHERE NOT isnan(v) AND t IN ({', '.join(map(text, group))})), "
                    "m AS (SELECT t, median(v) AS med FROM x GROUP BY t), "
                    "dev AS (SELECT x.t, abs(x.v - m.med) AS dev FROM x JOIN m USING (t)), "
                    "mad AS (SELECT t, median(dev) * 1.4826 AS mad FROM dev GROUP BY t) "
                    f"SELECT dev.t, count(*), count(*) FILTER (WHERE mad.mad > 0 AND dev.dev / mad.mad > {float(z_limit)!r}) "
                    "FROM dev JOIN mad USING (t) GROUP BY dev.t").fetchall()]
    return anomaly_table(table)


def _groups(counts: list[tuple[str, int]], limit: int) -> list[list[str]]:
    """Tests in order, grouped so that each group's results stay under ``limit`` (a larger test is a group alone)."""
    groups: list[list[str]] = []
    held = limit
    for test, n in counts:
        if held + n > limit:
            groups.append([])
            held = 0
        groups[-1].append(test)
        held += n
    return groups
