"""The data path scaled out: on a real Spark standalone cluster (master and worker on 127.0.0.1), and in
memory that does not grow with the study (a 2,000-subject study against the pilot's 306).

Each run is a new process, as a deployment's run worker is: the Spark session of the test process (local)
cannot be pointed at a cluster once started, and the memory sampled is that run's whole process tree
(Python, the Spark JVM, its Python workers).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.scale import PeakSampler
from ct_assets import settings
from tests.conftest import ROOT
from tests.spark_cluster import standalone_cluster

# The data path: ingestion, validation with quarantine, the Spark visit table and the data-quality monitors.
DATA_PATH = """
import json, sys
import dagster as dg
from ct_assets.defs import keys
from ct_assets.definitions import defs
selection = dg.AssetSelection.assets(keys.PROCESSED_VISITS, keys.DATA_QUALITY_REPORT).upstream()
with dg.DagsterInstance.get() as instance:
    job = defs.resolve_implicit_global_asset_job_def()
    found = selection.required_multi_asset_neighbors().resolve(defs.resolve_asset_graph())
    result = job.execute_in_process(instance=instance, asset_selection=list(found), raise_on_error=False)
    md = {e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()
                                         if isinstance(v.value, (int, float, str))}
          for e in result.get_asset_materialization_events()}
    checks = {f"{c.asset_key.to_user_string()}.{c.check_name}": c.passed for c in result.get_asset_check_evaluations()}
print(json.dumps({"success": result.success, "metadata": md, "checks": checks}))
"""


def run_data_path(home: Path, study: Path | None, **env) -> tuple[dict, PeakSampler]:
    """The data path in a new process; (its result, the resident memory of its process tree, sampled)."""
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    environ = {k: v for k, v in os.environ.items() if k not in ("CT_STUDY_DIR", "CT_SPARK_MASTER", "CT_PSEUDONYM_KEY")}
    environ |= {"CT_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "CT_DATA_CUTOFF": "2026-11-30"} | env
    if study is not None:
        environ["CT_STUDY_DIR"] = str(study)
    proc = subprocess.Popen([sys.executable, "-c", DATA_PATH], cwd=ROOT, env=environ, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    sampler = PeakSampler(proc.pid)
    sampler.start()
    out, err = proc.communicate(timeout=900)
    sampler.done.set()
    sampler.join()
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1]), sampler


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory):
    """One standalone master and one worker (2 cores, 2 GiB) for the whole session, stopped at its end."""
    with standalone_cluster(tmp_path_factory.mktemp("spark-cluster")) as master:
        yield master


def test_data_path_runs_on_a_standalone_cluster(tmp_path, spark_cluster):
    result, _ = run_data_path(tmp_path / "ct", None, CT_SPARK_MASTER=spark_cluster, SPARK_LOCAL_IP="127.0.0.1")
    assert result["success"], result
    md = result["metadata"]
    for key in ("validated_vs", "validated_lb", "processed_visits"):
        assert md[key]["spark_master"] == spark_cluster, key
    assert all(result["checks"].values()), result["checks"]
    lake = tmp_path / "ct/lake"
    for d in ("vs", "lb"):
        raw = pd.read_parquet(lake / f"raw/raw_{d}.parquet", columns=["_SOURCE_ROW"])
        validated = pd.read_parquet(lake / f"validated/validated_{d}.parquet")
        quarantined = pd.read_parquet(lake / f"quarantine/quarantine_{d}.parquet", columns=["_SOURCE_ROW"])
        assert len(raw) == len(validated) + len(quarantined) == md[f"raw_{d}"]["dagster/row_count"]
        assert "USUBJID" not in validated and validated["SUBJECT_KEY"].str.fullmatch(r"S-[0-9a-f]{20}").all()
    visits = pd.read_parquet(lake / "processed/processed_visits.parquet")
    assert len(visits) == md["processed_visits"]["dagster/row_count"] > 0


# At 2,000 subjects (0.6 M findings rows, 6.5x the pilot) the Python processes' peak may exceed the pilot's by
# at most this much: they hold batches, not domains. (Before the findings path moved to Spark, the Python
# process grew by about 1.5 KB per findings row: some 0.7 GiB here.) The Spark JVM grows its heap as it
# pleases up to its bound (spark.driver.memory) and no further: its resident size stays under that plus
# an allowance for metaspace, threads and Arrow buffers.
MEMORY_BOUND_GIB = 0.35
JVM_ALLOWANCE_GIB = 1.0
GIB = 1024**3


@pytest.fixture(scope="module")
def study_2000(tmp_path_factory):
    from ct_assets.core.synth import grow_study
    from tests.studies import pilot_dir

    study = tmp_path_factory.mktemp("study-2000")
    grow_study(pilot_dir(), study, 2000, seed=1)
    return study


def assert_flat(tmp_path, study: Path, **env) -> dict:
    """The data path on the pilot and on ``study``: the Python processes' peak grows by MEMORY_BOUND_GIB at most."""
    pilot, pilot_mem = run_data_path(tmp_path / "pilot", None, **env)
    grown, grown_mem = run_data_path(tmp_path / "grown", study, **env)
    assert pilot["success"] and grown["success"]
    rows = {name: sum(r["metadata"][f"raw_{d}"]["dagster/row_count"] for d in ("vs", "lb"))
            for name, r in (("pilot", pilot), ("grown", grown))}
    assert rows["grown"] > 6 * rows["pilot"]
    for name, mem in (("pilot", pilot_mem), ("2,000 subjects", grown_mem)):
        print(f"data path, {name}: peak {mem.peak / GIB:.2f} GiB, Python {mem.peak_python / GIB:.2f} GiB, "
              f"JVM {mem.max_jvm / GIB:.2f} GiB ({rows['pilot' if name == 'pilot' else 'grown']:,} findings rows)")
    growth = (grown_mem.peak_python - pilot_mem.peak_python) / GIB
    assert growth <= MEMORY_BOUND_GIB, f"the Python processes grew by {growth:.2f} GiB from the pilot to 2,000 subjects"
    return {"result": grown, "memory": grown_mem}


def test_memory_stays_flat_from_the_pilot_to_2000_subjects_on_spark(tmp_path, study_2000):
    grown = assert_flat(tmp_path, study_2000, CT_PROFILE="test")  # findings validated on Spark, however small
    value = settings.spark_config()["spark.driver.memory"].lower()  # e.g. 2g or 1536m
    heap = float(value[:-1]) / (1024 if value.endswith("m") else 1)
    max_jvm = grown["memory"].max_jvm / GIB
    assert max_jvm <= heap + JVM_ALLOWANCE_GIB, f"the JVM reached {max_jvm:.2f} GiB"


def test_memory_stays_flat_on_the_default_local_path(tmp_path, study_2000):
    """What a local run does by default: findings streamed through the rules by worker processes, no JVM."""
    grown = assert_flat(tmp_path, study_2000)
    md = grown["result"]["metadata"]
    assert all(md[f"validated_{d}"]["spark_master"].startswith("none: streamed") for d in ("vs", "lb"))


def test_the_scale_benchmark_prints_its_figures(tmp_path):
    """`benchmarks/scale.py` as docs/processing.md runs it, on a small study: the whole graph's time and peak memory
    (no JVM on the default local path), per-step times, validation in the graph and alone, each local DuckDB step
    against the hand-written query, the Spark visit job with ``--spark``, and the summary table; the figures also as
    JSON."""
    out = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, "benchmarks/scale.py", "--subjects", "200", "--spark", "--workdir",
                           str(tmp_path / "work"), "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={k: v for k, v in os.environ.items() if not k.startswith(("CT_", "DAGSTER_"))})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    [figures] = json.loads(out.read_text())
    for line in ("--- 200 subjects", "whole graph:", "steps running at the peak:", "validation:", "validation alone",
                 "local steps / hand-written DuckDB: processed_visits", "visit job on local Spark",
                 "validation in graph / alone", "worst local step / DuckDB"):
        assert line in proc.stdout, (line, proc.stdout)
    assert figures["exit"] == 0 and figures["wall_s"] > 0 and figures["peak_gib"] > 0
    assert figures["peak_jvm_gib"] == 0  # the default local graph starts no JVM: validation streamed, visits on DuckDB
    assert {"raw_vs", "validate_lb", "processed_visits"} <= set(figures["steps"])
    alone = figures["validation_alone"]
    assert alone["VS"]["rows"] + alone["LB"]["rows"] == figures["findings_rows"] > 0
    ratios = figures["step_ratios"]
    assert set(ratios) == {"processed_visits", "data_anomalies", "data_consistency"}
    assert figures["worst_step_ratio"] == max(r["step_s"] / r["duckdb_s"] for r in ratios.values()) > 0
    assert figures["spark_visits"]["warm_s"] > 0
    assert "targets:" not in proc.stdout  # every target is for the pilot or 20,000 subjects or more


def test_the_scale_benchmark_says_which_targets_a_size_meets():
    from benchmarks.scale import PILOT, verdicts

    big = {"subjects": 100_000, "wall_s": 170.0, "peak_gib": 3.2, "worst_step_ratio": 1.5,
           "validation_rows_per_s": 544e3, "validation_alone_rows_per_s": 608e3}
    assert verdicts(big) == ["whole graph under 3 min: met", "peak memory under 3 GiB: NOT met",
                             "each local step within 2x hand-written DuckDB: met",
                             "validation alone at least 500 k rows/s: met",
                             "validation in the graph at least 500 k rows/s: met"]
    mid = {"subjects": 20_000, "wall_s": 74.7, "worst_step_ratio": 4.1, "validation_rows_per_s": 406e3}
    assert verdicts(mid) == ["whole graph under 60 s: NOT met", "each local step within 2x hand-written DuckDB: NOT met",
                             "validation in the graph at least 500 k rows/s: NOT met"]
    assert verdicts({"subjects": PILOT, "wall_s": 23.0, "worst_step_ratio": 9.0}) == ["bundled demo under 25 s warm: met"]
    assert verdicts({"subjects": 1000, "wall_s": 40.0, "validation_rows_per_s": 1.0}) == []
