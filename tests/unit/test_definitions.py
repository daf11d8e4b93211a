"""The code location loads, is laid out by stage, and the kfp/ folder never shadows the SDK."""

import subprocess
import sys

import dagster as dg

from ct_assets.definitions import defs
from ct_assets.defs import keys
from tests.conftest import ROOT

GROUPS = {"ingestion", "quality", "processing", "features", "training", "monitoring", "deployment"}


def test_definitions_load_and_resolve():
    dg.Definitions.validate_loadable(defs)
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.executor_def.name == "in_process"


def test_assets_are_grouped_by_stage_and_cover_the_graph():
    specs = list(defs.resolve_all_asset_specs())
    assert {s.group_name for s in specs} == GROUPS
    names = {s.key.to_user_string() for s in specs}
    for domain in ("DM", "VS", "LB", "AE", "DS", "EX", "SV"):
        assert {f"raw_{domain.lower()}", f"validated_{domain.lower()}", f"quarantine_{domain.lower()}"} <= names
    for key in (keys.PROCESSED_VISITS, keys.SUBJECT_FEATURES, keys.TRAINING_SET, keys.CANDIDATE_MODEL,
                keys.MODEL_EVALUATION, keys.REGISTERED_MODEL, keys.CHAMPION_MODEL):
        assert key.to_user_string() in names
    deps = {s.key: {d.asset_key for d in s.deps} for s in specs}
    assert keys.validated("VS") in deps[keys.PROCESSED_VISITS]
    assert keys.PROCESSED_VISITS in deps[keys.SUBJECT_FEATURES]
    assert keys.REGISTERED_MODEL in deps[keys.CHAMPION_MODEL]


def test_champion_gate_is_a_blocking_check():
    graph = defs.resolve_asset_graph()
    checks = {k.name: graph.get_check_spec(k) for k in graph.asset_check_keys}
    assert checks["champion_gate"].blocking
    assert {"rows_reconcile", "quality_score"} <= set(checks)


def test_import_kfp_from_repository_root_is_the_sdk():
    out = subprocess.run([sys.executable, "-c", "import kfp, kfp.dsl; print(kfp.__file__)"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert "site-packages" in out, out


def test_demo_has_help():
    out = subprocess.run([sys.executable, "-m", "ct_assets.demo", "--help"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert "--study-dir" in out and "CT_STUDY_DIR" in out


def test_every_workspace_location_loads():
    import importlib

    import yaml

    locations = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"]
    modules = [entry["python_module"]["module_name"] for entry in locations]
    assert modules == ["ct_assets.definitions", "ct_assets.locations.backfill", "ct_kfp.location", "ct_assets.locations.kafka"]
    for module in modules:
        dg.Definitions.validate_loadable(importlib.import_module(module).defs)


def test_plain_modules_do_not_build_the_code_location():
    """A KFP component imports ct_assets' logic without paying for the Dagster definitions."""
    code = "import sys, ct_assets.core.tracking, ct_assets.engines.pandas; print('ct_assets.definitions' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_loading_the_code_locations_imports_nothing_heavy():
    """Every `dagster` command, Airflow task and UI reload loads the code locations: no Spark, MLflow,
    scikit-learn, scipy, pandera, pandas, numpy, pyarrow or feature-store client on the way (the
    load-time benchmark's own check, run as a user runs it; its timing stays in the benchmark)."""
    proc = subprocess.run([sys.executable, "benchmarks/load_time.py", "--imports-only"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("nothing heavy") == 4, proc.stdout
