"""Scale of the data path: the whole graph on the bundled pilot and on synth studies of growing size, time and memory.

For each size: a synth study (``python -m ct_assets.core.synth``, not timed), then the whole graph as a
user runs it (``python -m ct_assets.demo``, a new process, fresh $CT_HOME) while the resident memory of
the whole process tree (Python, its workers and any JVM) is sampled every 0.2 s; per-step times from the run's
Dagster event log; validation throughput (raw findings rows / validation step time, the steps sharing the cores
with others; then VS and LB validated again alone); then each local DuckDB step against a hand-written DuckDB query
doing the same work on the same lake Parquet, in the same run (``processed_visits``, ``data_anomalies``,
``data_consistency``: the ratio of the step's time to the query's). ``--pilot`` runs the bundled demo twice and
reports the second (warm) run; ``--spark`` adds the Spark visit job on the same Parquet (local JVM).

    python benchmarks/scale.py --pilot --subjects 20000          # about 3 min on 2 cores
    python benchmarks/scale.py --subjects 100000                 # about 29 M findings rows

Targets on a 2-core, 24 GiB machine (issue 31): the bundled demo under 25 s warm; 20,000 subjects under 60 s;
100,000 under 3 min and 3 GiB; 1,000,000 under 30 min and 8 GiB; each local step within 2x of the hand-written
query; validation at least 500 k rows/s from 20,000 subjects. Each size's ``targets:`` line says which of those that
apply to it were met.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GIB = 1024**3
PAGE = os.sysconf("SC_PAGE_SIZE")


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def tree_rss(root: int) -> tuple[int, int]:
    """Resident bytes of ``root`` and all its descendants: (total, of which JVMs)."""
    tree, total, jvm, stack = _children(), 0, 0, [root]
    while stack:
        pid = stack.pop()
        stack += tree.get(pid, [])
        try:
            with open(f"/proc/{pid}/statm") as fh:
                rss = int(fh.read().split()[1]) * PAGE
            with open(f"/proc/{pid}/comm") as fh:
                is_java = fh.read().strip() == "java"
        except OSError:
            continue
        total += rss
        jvm += rss if is_java else 0
    return total, jvm


class PeakSampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.every, self.peak, self.peak_jvm, self.done = pid, every, 0, 0, threading.Event()
        self.peak_python = self.max_jvm = 0  # each part's own peak: the Python processes' and the JVMs'
        self.peak_at = 0.0  # when the whole tree peaked (epoch seconds)

    def run(self) -> None:
        while not self.done.is_set():
            total, jvm = tree_rss(self.pid)
            if total > self.peak:
                self.peak, self.peak_jvm, self.peak_at = total, jvm, time.time()
            self.peak_python, self.max_jvm = max(self.peak_python, total - jvm), max(self.max_jvm, jvm)
            self.done.wait(self.every)


# (the subjects it is for: from, to or None for no upper bound; what; the figure's key; bound; at most?)
# on 2 cores, 24 GiB. Subjects 0: the bundled pilot. Validation from 20,000 subjects: below that, starting the
# workers dominates.
PILOT = 0
TARGETS = [
    ((PILOT, PILOT), "bundled demo under 25 s warm", "wall_s", 25.0, True),
    ((20_000, 20_000), "whole graph under 60 s", "wall_s", 60.0, True),
    ((100_000, 100_000), "whole graph under 3 min", "wall_s", 180.0, True),
    ((100_000, 100_000), "peak memory under 3 GiB", "peak_gib", 3.0, True),
    ((1_000_000, 1_000_000), "whole graph under 30 min", "wall_s", 1800.0, True),
    ((1_000_000, 1_000_000), "peak memory under 8 GiB", "peak_gib", 8.0, True),
    ((20_000, None), "each local step within 2x hand-written DuckDB", "worst_step_ratio", 2.0, True),
    ((20_000, None), "validation alone at least 500 k rows/s", "validation_alone_rows_per_s", 500_000.0, False),
    ((20_000, None), "validation in the graph at least 500 k rows/s", "validation_rows_per_s", 500_000.0, False),
]


def verdicts(res: dict) -> list[str]:
    """The targets that apply to this size, each met or not."""
    out = []
    n = res["subjects"]
    for (low, high), what, key, bound, at_most in TARGETS:
        if low <= n and (high is None or n <= high) and key in res:
            ok = res[key] <= bound if at_most else res[key] >= bound
            out.append(f"{what}: {'met' if ok else 'NOT met'}")
    return out


def findings_rows(study: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in study.glob("*.parquet") if p.name[:2] in ("vs", "lb"))


def step_stats(dagster_home: Path) -> list:
    """The steps of the (only) run in the instance, from its event log (start and end in epoch seconds)."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(dagster_home)
    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs(limit=1)
        return [s for s in instance.get_run_step_stats(run.run_id) if s.end_time and s.start_time]


def run_graph(study: Path | None, home: Path, env_extra: dict[str, str]) -> dict:
    """``python -m ct_assets.demo`` on ``study`` (None: the bundled pilot) in a fresh home, its process tree sampled."""
    env = {k: v for k, v in os.environ.items() if k != "CT_STUDY_DIR"} | {
        "CT_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "PYTHONUNBUFFERED": "1"} | env_extra
    if study is not None:
        env["CT_STUDY_DIR"] = str(study)
    home.parent.mkdir(parents=True, exist_ok=True)
    log = home.parent / f"{home.name}-demo.out"
    started = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ct_assets.demo"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=ROOT)
        sampler = PeakSampler(proc.pid)
        sampler.start()
        code = proc.wait()
        sampler.done.set()
        sampler.join()
    wall = time.perf_counter() - started
    summary = [line for line in log.read_text().splitlines() if line.startswith("Run ")]
    return {"exit": code, "wall_s": wall, "peak_gib": sampler.peak / GIB, "peak_jvm_gib": sampler.peak_jvm / GIB,
            "peak_at": sampler.peak_at,
            "summary": summary[-1] if summary else log.read_text()[-1500:], "log": str(log)}


VISITS_SPARK = """
import sys, time, json
from ct_assets.defs.resources import Spark
t0 = time.perf_counter()
spark = Spark().spark_session
start = time.perf_counter() - t0
from spark import visits as job
lake = sys.argv[1]
def once():
    t = time.perf_counter()
    findings = {d: spark.read.parquet(f"{lake}/validated/validated_{d.lower()}.parquet") for d in ("VS", "LB")}
    dm = spark.read.parquet(f"{lake}/validated/validated_dm.parquet")
    job.process_visits(findings, dm).write.mode("overwrite").parquet(sys.argv[2])
    return time.perf_counter() - t
cold = once(); warm = once()
print(json.dumps({"session_start_s": start, "cold_s": cold, "warm_s": warm}))
"""

# Each local DuckDB step's work written by hand as plain DuckDB over the same lake Parquet, timed in a process of its
# own (the query only): the visit table (long findings in standard units, study day from DM where missing, one
# column per test), the anomaly counts (median and MAD per test) and the consistency shares (subjects in DM, whole
# dates inside each subject's period, visit order). The steps' own statements (engines/duck_*.py) also read partial
# dates as intervals and handle absent columns; these do not.
REFERENCE_DUCKDB = """
import sys, time, json, os, duckdb
from ct_assets.core.units import UNIT_CONVERSIONS
lake = sys.argv[1]
con = duckdb.connect()
def src(name):
    path = f"{lake}/{name}"
    return f"read_parquet('{path}/*.parquet')" if os.path.isdir(path) else f"read_parquet('{path}')"
vs, lb, dm = src("validated/validated_vs.parquet"), src("validated/validated_lb.parquet"), src("validated/validated_dm.parquet")
out = {}
conv = " ".join(f"WHEN '{u}' THEN {f} * VALUE + {o}" for u, (_, f, o) in UNIT_CONVERSIONS.items())
flags = "('HIGH','LOW','ABNORMAL','H','L','A','HH','LL')"
def long(d, source):
    cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()]
    nrind = f"upper(coalesce({d}NRIND, ''))" if f"{d}NRIND" in cols else "''"
    return (f"SELECT SUBJECT_KEY, CAST(VISITNUM AS DOUBLE) VISITNUM, CAST({d}DY AS DOUBLE) DY, {d}DTC DTC, "
            f"'{d}_' || {d}TESTCD TEST, CAST({d}STRESN AS DOUBLE) VALUE, {d}STRESU UNIT, "
            f"CAST({nrind} IN {flags} AS INT) ABNORMAL FROM {source} WHERE {d}STRESN IS NOT NULL")
t = time.perf_counter()
con.execute(f"CREATE TEMP VIEW long AS SELECT SUBJECT_KEY, VISITNUM, DY, DTC, TEST, CASE UNIT {conv} ELSE VALUE END VALUE, "
            f"ABNORMAL FROM ({long('VS', vs)} UNION ALL BY NAME {long('LB', lb)})")
con.execute(f"CREATE TEMP VIEW dm AS SELECT SUBJECT_KEY, TRY_CAST(substr(RFSTDTC, 1, 10) AS DATE) RFST FROM {dm}")
con.execute("CREATE TEMP VIEW l2 AS SELECT l.*, coalesce(DY, CASE WHEN d >= 0 THEN d + 1 ELSE d END) DY2 FROM "
            "(SELECT long.*, date_diff('day', dm.RFST, TRY_CAST(substr(DTC, 1, 10) AS DATE)) d FROM long LEFT JOIN dm USING (SUBJECT_KEY)) l")
con.execute(f"COPY (SELECT s.*, p.* EXCLUDE (SUBJECT_KEY, VISITNUM) FROM "
            f"(SELECT SUBJECT_KEY, VISITNUM, min(DY2) STUDY_DAY, sum(ABNORMAL) N_ABNORMAL, count(*) N_RESULTS FROM l2 GROUP BY ALL) s "
            f"JOIN (PIVOT (SELECT SUBJECT_KEY, VISITNUM, TEST, VALUE FROM l2) ON TEST USING avg(VALUE) GROUP BY SUBJECT_KEY, VISITNUM) p "
            f"USING (SUBJECT_KEY, VISITNUM) ORDER BY SUBJECT_KEY, VISITNUM) TO '{sys.argv[2]}' (FORMAT parquet)")
out["processed_visits"] = time.perf_counter() - t
t = time.perf_counter()
con.execute(f"WITH x AS (SELECT 'VS_' || VSTESTCD t, VSSTRESN v FROM {vs} WHERE VSSTRESN IS NOT NULL "
            f"UNION ALL SELECT 'LB_' || LBTESTCD, LBSTRESN FROM {lb} WHERE LBSTRESN IS NOT NULL), "
            "m AS (SELECT t, median(v) med FROM x GROUP BY t), d AS (SELECT t, abs(v - med) dev FROM x JOIN m USING (t)), "
            "s AS (SELECT t, median(dev) * 1.4826 mad FROM d GROUP BY t) "
            "SELECT t, count(*), count(*) FILTER (WHERE mad > 0 AND dev / mad > 6) FROM d JOIN s USING (t) GROUP BY t").fetchall()
out["data_anomalies"] = time.perf_counter() - t
t = time.perf_counter()
raw_dm = src("raw/raw_dm.parquet")
for d, raw, val in (("VS", src("raw/raw_vs.parquet"), vs), ("LB", src("raw/raw_lb.parquet"), lb)):
    con.execute(f"SELECT count(*) FILTER (WHERE USUBJID IN (SELECT USUBJID FROM {raw_dm})), count(*) FROM {raw}").fetchall()
    con.execute(f"WITH p AS (SELECT SUBJECT_KEY, TRY_CAST(substr(least(RFICDTC, RFSTDTC), 1, 10) AS DATE) - 60 lo, "
                f"TRY_CAST(substr(greatest(RFPENDTC, RFENDTC), 1, 10) AS DATE) + 60 hi FROM {dm}), "
                f"f AS (SELECT SUBJECT_KEY, TRY_CAST(substr({d}DTC, 1, 10) AS DATE) dd FROM {val}) "
                "SELECT count(*) FILTER (WHERE dd BETWEEN lo AND hi), count(dd) FROM f JOIN p USING (SUBJECT_KEY)").fetchall()
con.execute(f"WITH g AS (SELECT SUBJECT_KEY k, VISITNUM n, min(TRY_CAST(substr(SVSTDTC, 1, 10) AS DATE)) d "
            f"FROM {src('validated/validated_sv.parquet')} WHERE VISITNUM % 1 = 0 GROUP BY ALL), "
            "s AS (SELECT d - lag(d) OVER (PARTITION BY k ORDER BY n) step FROM g) "
            "SELECT count(step), count(*) FILTER (WHERE step >= 0) FROM s").fetchall()
out["data_consistency"] = time.perf_counter() - t
print(json.dumps(out))
"""


# Validation of VS and LB on their own: the same streamed path as the steps, with nothing else running beside it.
VALIDATION_ALONE = """
import sys, json, time, tempfile
from pathlib import Path
import pandas as pd
from ct_assets import settings
from ct_assets.engines.stream import validate_stream
from ct_assets.engines.pandas import accepted_subjects
lake = Path(sys.argv[1])
if __name__ == "__main__":
    known = accepted_subjects(pd.read_parquet(lake / "raw/raw_dm.parquet"), pd.read_parquet(lake / "validated/validated_dm.parquet"))
    out = {}
    for d in ("VS", "LB"):
        with tempfile.TemporaryDirectory(dir=sys.argv[2]) as tmp:
            t = time.perf_counter()
            split = validate_stream(d, lake / f"raw/raw_{d.lower()}.parquet", known, settings.data_cutoff(),
                                    Path(tmp) / "validated", Path(tmp) / "quarantine")
            out[d] = {"rows": split.raw, "s": time.perf_counter() - t}
    print(json.dumps(out))
"""


def validation_alone(home: Path, work: Path) -> dict | str:
    script = work / "validation_alone.py"  # a file, not -c: the worker processes are spawned and import __main__
    script.write_text(VALIDATION_ALONE)
    proc = subprocess.run([sys.executable, str(script), str(home / "lake"), str(work)], cwd=ROOT, capture_output=True,
                          text=True, env=os.environ | {"CT_HOME": str(home), "PYTHONPATH": str(ROOT)})
    return json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else proc.stderr[-800:]


def spark_visits(home: Path, work: Path) -> dict | str:
    """The Spark visit job on the same validated Parquet, with a local JVM (``--spark``)."""
    proc = subprocess.run([sys.executable, "-c", VISITS_SPARK, str(home / "lake"), str(work / "visits_spark")], cwd=ROOT,
                          capture_output=True, text=True, env=os.environ | {"CT_HOME": str(home)})
    return json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else proc.stderr[-800:]


def step_ratios(home: Path, work: Path, steps: dict[str, float]) -> dict | str:
    """Each local DuckDB step's time over the hand-written query's on the same Parquet."""
    proc = subprocess.run([sys.executable, "-c", REFERENCE_DUCKDB, str(home / "lake"), str(work / "visits_reference.parquet")],
                          cwd=ROOT, capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(ROOT)})
    if proc.returncode != 0:
        return proc.stderr[-800:]
    reference = json.loads(proc.stdout.strip().splitlines()[-1])
    return {step: {"step_s": steps[step], "duckdb_s": secs, "ratio": steps[step] / secs}
            for step, secs in reference.items() if step in steps and secs > 0}


def _size(n: int) -> str:
    return "pilot" if n == PILOT else f"{n:,}"


def measure(n: int, work: Path, spark: bool) -> dict:
    """One size: the whole graph, its steps, validation alone, the local steps against hand-written DuckDB."""
    home = work / f"home-{n}"
    shutil.rmtree(home, ignore_errors=True)
    if n == PILOT:  # the bundled study, as `make demo` runs it: once to warm up (not counted), then measured
        from ct_assets.core.sdtm import study_path

        study, rows = None, findings_rows(study_path(bundled=True))
        print(f"--- the bundled pilot, {rows / 1e6:.2f} M findings rows (VS+LB); a warm-up run first", flush=True)
        run_graph(None, work / "home-warmup", {})
    else:
        study = work / f"study-{n}"
        if not study.exists():
            subprocess.run([sys.executable, "-m", "ct_assets.core.synth", "--out", str(study), "--subjects", str(n)],
                           check=True, cwd=ROOT, capture_output=True)
        rows = findings_rows(study)
        print(f"--- {n:,} subjects, {rows / 1e6:.2f} M findings rows (VS+LB)", flush=True)
    res = {"subjects": n, "findings_rows": rows} | run_graph(study, home, {})
    print(f"whole graph: {res['wall_s']:.1f} s, peak {res['peak_gib']:.2f} GiB (JVM {res['peak_jvm_gib']:.2f}), "
          f"exit {res['exit']}\n  {res['summary']}", flush=True)
    if res["exit"] != 0:
        return res
    stats = step_stats(home / "dagster")
    steps = res["steps"] = {s.step_key: s.end_time - s.start_time for s in stats}
    at_peak = sorted(s.step_key for s in stats if s.start_time <= res["peak_at"] <= s.end_time)
    res["steps_at_peak"] = at_peak
    print(f"  steps running at the peak: {', '.join(at_peak) or 'none (between steps)'}", flush=True)
    for key, secs in sorted(steps.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {secs:7.1f} s  {key}")
    validation = sum(steps.get(f"validate_{d}", 0.0) for d in ("vs", "lb"))
    if validation:
        res["validation_rows_per_s"] = rows / validation
        print(f"  validation: {rows / validation / 1e3:,.0f} k rows/s in the graph (VS+LB rows / the sum of the "
              "validate_vs and validate_lb step times, which may overlap and share the cores with other steps)")
    alone = res["validation_alone"] = validation_alone(home, work)
    if isinstance(alone, dict):
        secs = sum(v["s"] for v in alone.values())
        res["validation_alone_rows_per_s"] = sum(v["rows"] for v in alone.values()) / secs
        print(f"  validation alone (nothing else running): {res['validation_alone_rows_per_s'] / 1e3:,.0f} k rows/s "
              f"(VS {alone['VS']['s']:.1f} s, LB {alone['LB']['s']:.1f} s)", flush=True)
    else:
        print(f"  validation alone FAILED: {alone.strip().splitlines()[-1] if alone.strip() else 'no output'}",
              file=sys.stderr, flush=True)
    ratios = res["step_ratios"] = step_ratios(home, work, steps)
    if isinstance(ratios, dict) and ratios:
        res["worst_step_ratio"] = max(r["ratio"] for r in ratios.values())
        print("  local steps / hand-written DuckDB: " + "; ".join(
            f"{step} {r['step_s']:.2f} s / {r['duckdb_s']:.2f} s = {r['ratio']:.1f}x" for step, r in ratios.items()), flush=True)
    else:
        print(f"  hand-written DuckDB FAILED: {str(ratios).strip()[-300:]}", file=sys.stderr, flush=True)
    if spark:
        figures = res["spark_visits"] = spark_visits(home, work)
        if isinstance(figures, dict):
            print(f"  visit job on local Spark: {figures['warm_s']:.1f} s warm ({figures['cold_s']:.1f} s cold, session "
                  f"start {figures['session_start_s']:.1f} s)", flush=True)
        else:
            print(f"  visit job on Spark FAILED: {figures.strip()[-300:]}", file=sys.stderr, flush=True)
    return res


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, nargs="*", default=[1000, 20000],
                        help="synth study sizes to run, in subjects (default: 1000 20000)")
    parser.add_argument("--pilot", action="store_true", help="also the bundled pilot, as `make demo` runs it (warm)")
    parser.add_argument("--workdir", help="where studies and homes go (default: a temp dir, removed)")
    parser.add_argument("--spark", action="store_true", help="also the Spark visit job on the same Parquet (local JVM)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--keep-lake", action="store_true", help="keep each run's lake under --workdir (for a closer look)")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ct-scale-"))
    results = []
    try:
        for n in ([PILOT] if args.pilot else []) + args.subjects:
            res = measure(n, work, args.spark)
            if found := verdicts(res):
                print("  targets: " + "; ".join(found), flush=True)
            results.append(res)
            if not args.keep_lake:
                shutil.rmtree(work / f"home-{n}" / "lake", ignore_errors=True)
        print("\n subjects  rows(M)  wall(s)  peak(GiB)  of which JVM  validation in graph / alone (k rows/s)  "
              "worst local step / DuckDB")
        for r in results:
            worst = f"{r['worst_step_ratio']:.1f}x" if "worst_step_ratio" in r else "-"
            print(f"{_size(r['subjects']):>9}  {r['findings_rows'] / 1e6:7.2f}  {r['wall_s']:7.1f}  {r['peak_gib']:9.2f}  "
                  f"{r['peak_jvm_gib']:12.2f}  {r.get('validation_rows_per_s', 0) / 1e3:27.0f} / "
                  f"{r.get('validation_alone_rows_per_s', 0) / 1e3:5.0f}  {worst:>24}")
        synth = [r for r in results if r["subjects"] != PILOT and r["exit"] == 0]
        if len(synth) > 1:
            a, b = synth[0], synth[-1]
            drows = (b["findings_rows"] - a["findings_rows"]) / 1e6
            if drows > 0:
                print(f"growth from {a['subjects']:,} to {b['subjects']:,} subjects: {(b['wall_s'] - a['wall_s']) / drows:.1f} s "
                      f"and {(b['peak_gib'] - a['peak_gib']) * 1024 / drows:.0f} MiB per million findings rows")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    comparisons_ok = all(isinstance(r.get("step_ratios", {}), dict) and isinstance(r.get("validation_alone", {}), dict)
                         and isinstance(r.get("spark_visits", {}), dict) for r in results)
    return 0 if all(r["exit"] == 0 for r in results) and comparisons_ok else 1


if __name__ == "__main__":
    sys.exit(main())
