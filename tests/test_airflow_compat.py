"""The legacy Airflow view: the five emitted DAGs load in a real Airflow 2.11, agree with the
Dagster jobs, and their tasks run the Dagster assets through a real Dagster webserver."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
import yaml

from airflow_compat.emit import LEGACY_DEFAULTS, definitions_for, emit
from ct_assets import keys
from ct_assets.jobs import CRON, LEGACY_TASKS
from ct_assets.pools import LEGACY_POOLS
from tests.procs import stop_group

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_PY = Path(os.environ.get("CT_AIRFLOW_PYTHON", ROOT / ".venv-airflow/bin/python"))
CONFIG = ROOT / "airflow_compat/config"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _airflow_env(home: Path, dags: Path, graphql: str) -> dict[str, str]:
    assert AIRFLOW_PY.exists(), f"no Airflow venv at {AIRFLOW_PY}: run `make airflow-install`"
    return dict(os.environ, AIRFLOW_HOME=str(home), CT_AIRFLOW_ADMIN_PASSWORD="test-only-not-a-secret",
                AIRFLOW__CORE__DAGS_FOLDER=str(dags), AIRFLOW__CORE__LOAD_EXAMPLES="False",
                AIRFLOW_CONN_DAGSTER_DEFAULT=json.dumps({"conn_type": "dagster", "login": graphql}))


def _airflow(env, *args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([str(AIRFLOW_PY.with_name("airflow")), *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def dags(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dags")
    emit(out)
    return out


@pytest.fixture(scope="module")
def dagbag(dags, tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("airflow_bag")
    out = home / "dagbag.json"
    env = _airflow_env(home, dags, "http://127.0.0.1:9/graphql")
    proc = subprocess.run([str(AIRFLOW_PY), "-m", "airflow_compat", "dagbag", str(dags), "--out", str(out)],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_dagbag_loads_exactly_the_five_legacy_dags(dagbag):
    assert dagbag["import_errors"] == {}
    assert set(dagbag["dags"]) == set(LEGACY_TASKS)
    for dag_id, dag in dagbag["dags"].items():
        assert dag["schedule"] == CRON[dag_id]
        assert set(dag["tasks"]) == {task for task, _ in LEGACY_TASKS[dag_id]}
        for task in dag["tasks"].values():
            assert task["operator"] == "DagsterAssetsOperator" and task["job_name"] == dag_id
            assert task["retries"] == LEGACY_DEFAULTS["retries"]
            assert task["retry_delay_s"] == 60 * LEGACY_DEFAULTS["retry_delay_minutes"]
            assert task["timeout_s"] == 3600 * LEGACY_DEFAULTS["execution_timeout_hours"]
            assert task["pool"] in LEGACY_POOLS
    spark = dagbag["dags"]["clinical_data_pipeline"]["tasks"]["spark_data_processing"]
    assert spark["pool"] == "spark_jobs" and spark["upstream"] == ["validate_clinical_data"]


def _ancestors(tasks: dict, task_id: str) -> set[str]:
    seen, todo = set(), list(tasks[task_id]["upstream"])
    while todo:
        t = todo.pop()
        if t not in seen:
            seen.add(t)
            todo += tasks[t]["upstream"]
    return seen


@pytest.mark.parametrize("dag_id", list(LEGACY_TASKS))
def test_each_dag_matches_its_dagster_job(dagbag, dag_id):
    """Same assets and checks, each run by exactly one task, in an order the asset graph allows,
    and the same schedule as the Dagster job."""
    defs = definitions_for(dagbag["dags"][dag_id]["tasks"][LEGACY_TASKS[dag_id][0][0]]["location"])
    job = defs.resolve_job_def(dag_id)
    graph = job.asset_layer.asset_graph
    job_assets = {k.to_user_string() for k in job.asset_layer.selected_asset_keys}
    job_checks = {(c.asset_key.to_user_string(), c.name) for c in job.asset_layer.asset_graph.asset_check_keys
                  if c.asset_key.to_user_string() in job_assets}
    tasks = dagbag["dags"][dag_id]["tasks"]
    owner = {}
    for task_id, task in tasks.items():
        assert task["asset_keys"] or task["check_keys"], f"{task_id} runs nothing"
        for node in task["asset_keys"] + [tuple(c) for c in task["check_keys"]]:
            assert node not in owner, f"{node} run by {owner[node]} and {task_id}"
            owner[node] = task_id
    assert {n for n in owner if isinstance(n, str)} == job_assets
    assert {n for n in owner if isinstance(n, tuple)} == job_checks
    for child in job_assets:
        for parent in graph.get(dg.AssetKey.from_user_string(child)).parent_keys:
            p = parent.to_user_string()
            if p in job_assets and owner[p] != owner[child]:
                assert owner[p] in _ancestors(tasks, owner[child]), f"{p} -> {child}"
    for check, task_id in [(n, t) for n, t in owner.items() if isinstance(n, tuple)]:
        if owner[check[0]] != task_id:  # a check on its own comes after its asset, before its children
            assert owner[check[0]] in _ancestors(tasks, task_id)
    for task_id, task in tasks.items():  # and no edge without an asset dependency behind it
        mine = {dg.AssetKey.from_user_string(k) for k in task["asset_keys"]} | {
            dg.AssetKey.from_user_string(c[0]) for c in task["check_keys"]}
        needed = mine | {k for m in mine for k in _upstream_closure(graph, m)}
        for up in task["upstream"]:
            theirs = {dg.AssetKey.from_user_string(k) for k in tasks[up]["asset_keys"]} | {
                dg.AssetKey.from_user_string(c[0]) for c in tasks[up]["check_keys"]}
            assert theirs & needed, f"{up} >> {task_id} without an asset dependency"
    schedules = {s.job_name: s.cron_schedule for s in defs.schedules or []}
    assert schedules.get(dag_id) == CRON[dag_id] == dagbag["dags"][dag_id]["schedule"]


def _upstream_closure(graph, key: dg.AssetKey) -> set[dg.AssetKey]:
    seen, todo = set(), list(graph.get(key).parent_keys)
    while todo:
        k = todo.pop()
        if k not in seen and graph.has(k):
            seen.add(k)
            todo += graph.get(k).parent_keys
    return seen


def test_configuration_files_carry_the_legacy_settings_and_no_secret():
    pools = yaml.safe_load((CONFIG / "pools.yaml").read_text())
    assert {name: p["slots"] for name, p in pools.items()} == LEGACY_POOLS
    json.loads((CONFIG / "pools.yaml").read_text())  # `airflow pools import` reads JSON
    variables = json.loads((CONFIG / "variables.yaml").read_text())
    assert variables["model_name"] == "adverse-event-predictor" and variables["data_quality_threshold"] == 0.95
    assert variables["feature_window_days"] == 30 and "clinical_data" in variables["kafka_topics"]
    connections = yaml.safe_load((CONFIG / "connections.yaml").read_text())
    assert set(connections) == {"dagster_default", "kafka_clinical", "mlflow_tracking", "redis_features",
                                "minio_storage", "spark_cluster", "model_serving"}
    assert not any("password" in c for c in connections.values())
    assert all("127.0.0.1" in json.dumps(c) or c.get("host") == "local[*]" for c in connections.values())


# --- end to end: a real Dagster webserver, a real Airflow ------------------------------------------------------


def _graphql(url: str, query: str) -> dict:
    req = urllib.request.Request(url, data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["data"]


@pytest.fixture(scope="module")
def dagster_web(tmp_path_factory):
    home = tmp_path_factory.mktemp("ct_home")
    port = _free_port()
    env = dict(os.environ, CT_HOME=str(home), DAGSTER_HOME=str(home / "dagster"))
    (home / "dagster").mkdir()
    log = open(home / "webserver.log", "w")
    # webserver and daemon, as deployed: the daemon dequeues the runs the webserver launches.
    proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "dagster"), "dev", "-w", "workspace.yaml",
                             "-h", "127.0.0.1", "-p", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}/graphql"
    query = "{ repositoriesOrError { ... on RepositoryConnection { nodes { name } } } }"
    locations = len(yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"])
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (home / "webserver.log").read_text()[-3000:]
            try:
                if len(_graphql(url, query)["repositoriesOrError"]["nodes"]) == locations:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "Dagster webserver did not load the workspace"
            time.sleep(1)
        yield url, home
    finally:
        stop_group(proc)
        log.close()


@pytest.fixture(scope="module")
def airflow_home(dags, dagster_web, tmp_path_factory):
    """A fresh Airflow (SQLite) prepared by the documented start command: DB, admin, config imported."""
    url, _ = dagster_web
    home = tmp_path_factory.mktemp("airflow")
    env = _airflow_env(home, dags, url)
    proc = subprocess.run([str(AIRFLOW_PY), "-m", "airflow_compat", "start", "--dags", str(dags), "--init-only"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test-only-not-a-secret" not in proc.stdout  # a given password is never printed
    return env


def test_start_imports_pools_variables_and_connections(airflow_home):
    pools = {p["pool"]: int(p["slots"]) for p in json.loads(_airflow(airflow_home, "pools", "list", "-o", "json").stdout)}
    assert {k: pools[k] for k in LEGACY_POOLS} == LEGACY_POOLS
    assert _airflow(airflow_home, "variables", "get", "data_quality_threshold").stdout.strip() == "0.95"
    conns = json.loads(_airflow(airflow_home, "connections", "list", "-o", "json").stdout)
    assert {"kafka_clinical", "mlflow_tracking", "model_serving", "dagster_default"} <= {c["conn_id"] for c in conns}


def test_a_dag_run_in_airflow_materializes_its_assets_in_dagster(airflow_home, dagster_web):
    _, home = dagster_web
    proc = _airflow(airflow_home, "dags", "test", "data_quality_monitoring", "2026-11-23T00:00:00+00:00", timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        runs = instance.get_runs(dg.RunsFilter(tags={"airflow/dag_id": "data_quality_monitoring"}))
        assert sorted(r.tags["airflow/task_id"] for r in runs) == sorted(t for t, _ in LEGACY_TASKS["data_quality_monitoring"])
        assert all(r.status == dg.DagsterRunStatus.SUCCESS and r.job_name == "data_quality_monitoring" for r in runs)
        report = instance.get_latest_materialization_event(keys.DATA_QUALITY_REPORT).asset_materialization
        assert report.metadata["score"].value >= 0.95
        job = definitions_for("ct_assets").resolve_job_def("data_quality_monitoring")
        for key in job.asset_layer.selected_asset_keys:
            assert instance.get_latest_materialization_event(key) is not None, key
        # The Variable reached the Dagster run config.
        run = next(r for r in runs if r.tags["airflow/task_id"] == "generate_quality_report")
        assert run.run_config["ops"]["data_quality_report"]["config"]["min_quality_score"] == 0.95


def test_a_failing_dagster_run_fails_the_airflow_task(airflow_home, dagster_web):
    _, home = dagster_web
    (home / "lake/validated/validated_sv.parquet").unlink()  # the consistency check's input is gone
    proc = _airflow(airflow_home, "tasks", "test", "data_quality_monitoring", "check_data_consistency",
                    "2026-11-23T06:00:00+00:00", timeout=600)
    assert proc.returncode != 0
    assert "failed" in (proc.stdout + proc.stderr)
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        runs = instance.get_runs(dg.RunsFilter(tags={"airflow/task_id": "check_data_consistency"}), limit=1)
        assert runs[0].status == dg.DagsterRunStatus.FAILURE


def test_readme_task_table_is_current():
    from airflow_compat.emit import task_table

    readme = (ROOT / "airflow_compat/README.md").read_text()
    assert task_table() in readme, "re-generate the table in airflow_compat/README.md"
