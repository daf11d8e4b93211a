"""The legacy Airflow view: the five emitted DAGs load in a real Airflow 2.11 and a real Airflow 3 (with
no connection and no metadata database at parse time), agree with the Dagster jobs, and, in an Airflow
started as `make airflow` (2.11: scheduler and webserver, SQLite and PostgreSQL) and `make airflow
AIRFLOW=3` (scheduler, DAG processor and API server) start it, their tasks run through the scheduler
and launch the Dagster assets on a real `dagster dev`."""

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml

from airflow_compat.emit import LEGACY_DEFAULTS, definitions_for, emit
from ct_assets.defs import keys
from ct_assets.defs.jobs import CRON, LEGACY_TASKS
from ct_assets.defs.pools import LEGACY_POOLS
from tests.procs import stop_group

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_PY = Path(os.environ.get("CT_AIRFLOW_PYTHON", ROOT / ".venv-airflow/bin/python"))
AIRFLOW3_PY = Path(os.environ.get("CT_AIRFLOW3_PYTHON", ROOT / ".venv-airflow3/bin/python"))
PYTHONS = {"2": AIRFLOW_PY, "3": AIRFLOW3_PY}
CONFIG = ROOT / "airflow_compat/config"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dags(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dags")
    emit(out)
    return out


@pytest.fixture(scope="module", params=["2", "3"], ids=["airflow2", "airflow3"])
def dagbag(request, dags, tmp_path_factory) -> dict:
    """What Airflow (2.11, then 3) makes of the same DAG files, parsed as its scheduler or DAG processor
    does: no connection defined and a metadata database that cannot be opened (any database access at
    parse time is an import error)."""
    home = tmp_path_factory.mktemp(f"airflow{request.param}_bag")
    out = home / "dagbag.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env |= {"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/no/such/dir/airflow.db"}
    proc = subprocess.run([str(PYTHONS[request.param]), "-m", "airflow_compat", "dagbag", str(dags), "--out", str(out)],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    bag = json.loads(out.read_text())
    assert bag["airflow_version"].split(".")[0] == request.param
    return bag


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


def test_dag_files_parse_without_connection_database_or_dagster(dagbag):
    """The dagbag fixture has no connection and no usable metadata database: the files still load,
    without importing Dagster, in milliseconds each (the first file of a process also pays for
    Airflow's own lazy imports)."""
    assert dagbag["import_errors"] == {} and len(dagbag["dags"]) == 5
    assert not dagbag["dagster_imported"]
    times = sorted(dagbag["parse_s"].values())
    print("DagBag parse time per file (s):", dagbag["parse_s"])
    assert len(times) == 5 and times[-2] < 0.2 and times[-1] < 3, dagbag["parse_s"]


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


# --- end to end: a real Dagster webserver, Airflow started as `make airflow` starts it ---------------------------

ADMIN_PASSWORD = "test-only-not-a-secret"
MINIMAL_PATH = "/usr/local/bin:/usr/bin:/bin"  # no venv on it: the start command must not need one


def _graphql(url: str, query: str) -> dict:
    req = urllib.request.Request(url, data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["data"]


@pytest.fixture(scope="module")
def dagster_web(tmp_path_factory):
    home = tmp_path_factory.mktemp("ct_home")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CT_", "DAGSTER_"))} | {
        "PATH": MINIMAL_PATH, "CT_HOME": str(home), "CT_DAGSTER_PORT": str(port)}
    log = open(home / "webserver.log", "w")
    # `make dev` as the README runs it: the legacy pools, then webserver and daemon (the daemon dequeues the runs the
    # webserver launches) over the four code locations of workspace.yaml.
    proc = subprocess.Popen(["make", "--no-print-directory", "dev"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
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
        yield url, home, proc
    finally:
        stop_group(proc)
        log.close()


class Airflow:
    """An Airflow deployment started by ``python -m airflow_compat start`` (the command `make airflow`
    runs) in its own process group: scheduler and webserver (2.11), or scheduler, DAG processor and
    API server (3), as separate processes."""

    def __init__(self, proc: subprocess.Popen, home: Path, port: int, log: Path, version: str = "2"):
        self.proc, self.home, self.port, self.log, self.version = proc, home, port, log, version
        self.python = PYTHONS[version]
        self.base = f"http://127.0.0.1:{port}"
        self.health = f"{self.base}/api/v2/monitor/health" if version == "3" else f"{self.base}/health"
        # The environment docs/airflow.md gives the CLI: AIRFLOW_HOME, nothing else.
        self.cli_env = {"PATH": MINIMAL_PATH, "HOME": os.environ.get("HOME", "/root"), "AIRFLOW_HOME": str(home)}

    def cli(self, *args, timeout=300) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.python.with_name("airflow")), *args], env=self.cli_env, cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout)

    def token(self, password: str) -> str | None:
        """Airflow 3's login for the REST API: a JWT from ``POST /auth/token``."""
        req = urllib.request.Request(f"{self.base}/auth/token", method="POST", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"username": "admin", "password": password}).encode())
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read())["access_token"]
        except urllib.error.HTTPError:
            return None

    def api(self, method: str, path: str, body: dict | None = None, password: str = ADMIN_PASSWORD):
        """The REST API, as ops scripts call it (2.11: /api/v1 with basic auth; 3: /api/v2 with a
        bearer token); returns (status, json)."""
        if self.version == "3":
            token = self.token(password)
            if token is None:
                return 401, None
            auth, version = f"Bearer {token}", "v2"
        else:
            auth, version = "Basic " + base64.b64encode(f"admin:{password}".encode()).decode(), "v1"
        req = urllib.request.Request(f"{self.base}/api/{version}/{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": auth, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, None

    def tail(self) -> str:
        return self.log.read_text()[-4000:]


def start_airflow(graphql: str, home: Path, version: str = "2", **extra_env) -> Airflow:
    """`make airflow` (`make airflow AIRFLOW=3`) as docs/airflow.md runs it, in a plain shell's PATH: it emits
    the DAGs into $CT_HOME/airflow/dags and starts Airflow on them."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {
        "PATH": MINIMAL_PATH, "CT_HOME": str(home), "CT_AIRFLOW_PORT": str(port),
        "CT_AIRFLOW_ADMIN_PASSWORD": ADMIN_PASSWORD, "CT_DAGSTER_URL": graphql, **extra_env}
    log = home / "airflow.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["make", "--no-print-directory", "airflow", f"AIRFLOW={version}"], env=env,
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    airflow = Airflow(proc, home / ("airflow3" if version == "3" else "airflow"), port, log, version)
    deadline = time.monotonic() + 300
    try:
        while True:  # up when the webserver answers, the scheduler heartbeats and the five DAGs are in the database
            assert proc.poll() is None, airflow.tail()
            assert time.monotonic() < deadline, "Airflow did not come up: " + airflow.tail()
            try:
                with urllib.request.urlopen(airflow.health, timeout=10) as resp:
                    health = json.loads(resp.read())
                if health["scheduler"]["status"] == "healthy" and airflow.api("GET", "dags")[1]["total_entries"] == 5:
                    return airflow
            except (OSError, KeyError, TypeError, ValueError):
                pass
            time.sleep(2)
    except BaseException:
        stop_airflow(airflow)
        raise


@pytest.fixture(scope="module")
def airflow(dagster_web, tmp_path_factory):
    """Airflow on SQLite with the SequentialExecutor, the default of `make airflow`."""
    url, _, _ = dagster_web
    started = time.monotonic()
    af = start_airflow(url, tmp_path_factory.mktemp("ct_airflow"))
    print(f"Airflow up in {time.monotonic() - started:.1f} s")
    try:
        yield af
    finally:
        stop_airflow(af)


def _descendants(*roots: int) -> set[int]:
    """``roots`` and all their descendants (Airflow puts each task process in a process group of its own)."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parent[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            pass
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += [child for child, ppid in parent.items() if ppid == pid]
    return found


def _listeners(*roots: int) -> set[tuple[str, int, str]]:
    """(address, port, process) of every listening TCP socket of ``roots`` and their descendants (`ss -ltnp`)."""
    pids = _descendants(*roots)
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        address, _, port = line.split()[3].rpartition(":")
        for name, pid in re.findall(r'\("([^"]+)",pid=(\d+)', line):
            if int(pid) in pids:
                # A JVM (Spark) binds IPv4 through a dual-stack socket: ::ffff:127.0.0.1 is 127.0.0.1.
                found.add((address.strip("[]").removeprefix("::ffff:"), int(port), name))
    return found


def stop_airflow(af: Airflow) -> None:
    """Stop the start command's process group, then any task process left in a group of its own."""
    leftovers = _descendants(af.proc.pid) - {af.proc.pid}
    stop_group(af.proc)
    for pid in leftovers:
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def _drain(af: Airflow, dag_id: str, run_id: str, timeout: float = 300) -> None:
    """After a pause: wait until no task of the run is queued or running."""
    deadline = time.monotonic() + timeout
    while True:
        tis = af.api("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances")[1]["task_instances"]
        if not [t for t in tis if t["state"] in ("queued", "running")]:
            return
        assert time.monotonic() < deadline, tis
        time.sleep(2)


def _wait_for_runs(af: Airflow, dag_id: str, manual: set[str], roots: tuple[int, ...], timeout: float = 1200) -> tuple:
    """Wait until the DAG's first scheduled run (switching it on creates one) and its manual runs
    ``manual`` have succeeded; listeners seen meanwhile. (A later 4-hour tick may add a run: ignored.)"""
    deadline, listeners = time.monotonic() + timeout, set()
    while True:
        assert af.proc.poll() is None, af.tail()
        listeners |= _listeners(*roots)
        order = "run_after" if af.version == "3" else "execution_date"
        runs = af.api("GET", f"dags/{dag_id}/dagRuns?order_by={order}")[1]["dag_runs"]
        mine = [r for r in runs if r["run_type"] == "scheduled"][:1] + [r for r in runs if r["dag_run_id"] in manual]
        assert not [r for r in mine if r["state"] == "failed"], (runs, af.tail())
        if len(mine) == 1 + len(manual) and all(r["state"] == "success" for r in mine):
            return mine, listeners
        assert time.monotonic() < deadline, (runs, af.tail())
        time.sleep(5)


def _switch_on_and_trigger(af: Airflow, dag_id: str, run_id: str, dagster_pid: int) -> tuple:
    """Switch the DAG on through the REST API (what the UI toggle does: the scheduler runs its latest
    interval), add run ``run_id`` with `airflow dags trigger`, wait for both; (runs, listeners seen)."""
    started = time.monotonic()
    status, _ = af.api("PATCH", f"dags/{dag_id}?update_mask=is_paused", {"is_paused": False})
    assert status == 200
    trigger = af.cli("dags", "trigger", dag_id, "--run-id", run_id)
    assert trigger.returncode == 0, trigger.stderr[-2000:]
    runs, listeners = _wait_for_runs(af, dag_id, {run_id}, (af.proc.pid, dagster_pid))
    print(f"2 runs of {dag_id} through the Airflow {af.version} scheduler in {time.monotonic() - started:.1f} s")
    assert [r["run_type"] for r in runs] == ["scheduled", "manual"]
    return runs, listeners


def test_airflow_configuration_seen_by_operators(airflow, dagster_web):
    """`make airflow` imported the legacy pools, variables and connections; the CLI in docs/airflow.md's
    environment (AIRFLOW_HOME only) sees the same deployment and only the five DAGs, paused at creation;
    the REST API answers to basic auth for admin, and to nothing else."""
    pools = {p["pool"]: int(p["slots"]) for p in json.loads(airflow.cli("pools", "list", "-o", "json").stdout)}
    assert {k: pools[k] for k in LEGACY_POOLS} == LEGACY_POOLS
    with dg.DagsterInstance.from_config(str(dagster_web[1] / "dagster")) as instance:  # and `make dev` set Dagster's
        assert {k: instance.event_log_storage.get_concurrency_info(k).slot_count for k in LEGACY_POOLS} == LEGACY_POOLS
    assert airflow.cli("variables", "get", "data_quality_threshold").stdout.strip() == "0.95"
    conns = json.loads(airflow.cli("connections", "list", "-o", "json").stdout)
    assert {"kafka_clinical", "mlflow_tracking", "model_serving", "dagster_default"} <= {c["conn_id"] for c in conns}
    listed = json.loads(airflow.cli("dags", "list", "-o", "json").stdout.splitlines()[-1])  # after parsing logs
    assert sorted(d["dag_id"] for d in listed) == sorted(LEGACY_TASKS)
    status, body = airflow.api("GET", "dags")
    assert status == 200 and sorted(d["dag_id"] for d in body["dags"]) == sorted(LEGACY_TASKS)
    assert all(d["is_paused"] for d in body["dags"])
    assert airflow.api("GET", "dags", password="wrong")[0] in (401, 403)
    assert ADMIN_PASSWORD not in airflow.log.read_text()  # a given password is never printed
    assert "New DAGs are paused" in airflow.log.read_text()
    readable = [str(p) for p in airflow.home.rglob("*") if not p.is_symlink() and p.stat().st_mode & 0o077]
    assert not readable, readable  # webserver_config.py, pid files, logs: owner-only


def test_a_dag_switched_on_and_triggered_runs_through_the_scheduler(airflow, dagster_web):
    """Switched on (what the UI toggle does, here through the REST API) the scheduler runs the DAG's
    latest interval; `airflow dags trigger` adds a run. Every task runs as an `airflow tasks run`
    process launched by the scheduler, and each launches its assets in Dagster."""
    _, home, dagster_proc = dagster_web
    dag_id = "data_quality_monitoring"
    runs, listeners = _switch_on_and_trigger(airflow, dag_id, "cli_trigger", dagster_proc.pid)
    # Switched off again from the CLI: no run at the next 4-hour tick.
    assert airflow.cli("dags", "pause", dag_id).returncode == 0
    assert airflow.api("GET", f"dags/{dag_id}")[1]["is_paused"] is True
    for run in airflow.api("GET", f"dags/{dag_id}/dagRuns")[1]["dag_runs"]:
        _drain(airflow, dag_id, run["dag_run_id"])
    # Nothing the scheduler, the webserver, the task processes or Dagster opened listens beyond loopback.
    assert {ip for ip, _, _ in listeners} == {"127.0.0.1"}, listeners
    assert airflow.port in {port for _, port, _ in listeners}

    tasks = sorted(t for t, _ in LEGACY_TASKS[dag_id])
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        dagster_runs = instance.get_runs(dg.RunsFilter(tags={"airflow/dag_id": dag_id}))
        for run in runs:
            mine = [r for r in dagster_runs if r.tags["airflow/run_id"] == run["dag_run_id"]]
            assert sorted(r.tags["airflow/task_id"] for r in mine) == tasks, run["dag_run_id"]
            assert all(r.status == dg.DagsterRunStatus.SUCCESS and r.job_name == dag_id for r in mine)
        report = instance.get_latest_materialization_event(keys.DATA_QUALITY_REPORT).asset_materialization
        assert report.metadata["score"].value >= 0.95
        job = definitions_for("ct_assets").resolve_job_def(dag_id)
        for key in job.asset_layer.selected_asset_keys:
            assert instance.get_latest_materialization_event(key) is not None, key
        # The Variable reached the Dagster run config.
        run = next(r for r in dagster_runs if r.tags["airflow/task_id"] == "generate_quality_report")
        assert run.run_config["resources"]["quality"]["config"]["min_quality_score"] == 0.95
    # The task instance names its Dagster run (XCom run_id; the log has its URL).
    status, body = airflow.api("GET", f"dags/{dag_id}/dagRuns/cli_trigger/taskInstances/generate_quality_report/"
                                      "xcomEntries/run_id")
    assert status == 200, body
    assert body["value"] == next(r.run_id for r in dagster_runs if r.tags["airflow/run_id"] == "cli_trigger"
                                 and r.tags["airflow/task_id"] == "generate_quality_report")


def _psql(sql: str) -> subprocess.CompletedProcess:
    return subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql],
                          capture_output=True, text=True)


def test_legacy_setting_postgres_and_local_executor(dagster_web, tmp_path_factory):
    """The legacy deployment's variant (CT_AIRFLOW_DB_URL: PostgreSQL, LocalExecutor) starts the same
    way; a run triggered through the REST API runs once the DAG is switched on from the CLI, its first
    task through the scheduler and Dagster. (Whole DAG runs are the SQLite test's; this one stops there.)"""
    if shutil.which("psql") is None or _psql("select 1").returncode != 0:
        pytest.skip("no PostgreSQL server on 127.0.0.1:5432")
    url, home, dagster_proc = dagster_web
    db = f"ct_airflow_{uuid.uuid4().hex[:8]}"
    assert _psql(f"create database {db}").returncode == 0
    af = None
    try:
        started = time.monotonic()
        af = start_airflow(url, tmp_path_factory.mktemp("ct_airflow_pg"),
                           CT_AIRFLOW_DB_URL=f"postgresql+psycopg2://postgres@127.0.0.1:5432/{db}")
        print(f"Airflow (PostgreSQL, LocalExecutor) up in {time.monotonic() - started:.1f} s")
        assert "(LocalExecutor)" in af.log.read_text()
        # Triggered through the REST API while paused (it waits, queued), then switched on from the CLI.
        # Its logical date is before the scheduled run's that switching on adds, so it runs first.
        status, _ = af.api("POST", "dags/data_quality_monitoring/dagRuns",
                           {"dag_run_id": "rest_trigger", "logical_date": "2026-01-01T00:00:00Z"})
        assert status == 200
        unpause = af.cli("dags", "unpause", "data_quality_monitoring")
        assert unpause.returncode == 0, unpause.stderr[-2000:]
        deadline, listeners = time.monotonic() + 600, set()
        path = "dags/data_quality_monitoring/dagRuns/rest_trigger/taskInstances/check_data_completeness"
        while True:
            assert af.proc.poll() is None, af.tail()
            listeners |= _listeners(af.proc.pid, dagster_proc.pid)
            state = af.api("GET", path)[1]["state"]
            assert state not in ("failed", "up_for_retry", "upstream_failed"), af.tail()
            if state == "success":
                break
            assert time.monotonic() < deadline, af.tail()
            time.sleep(3)
        print(f"first task through the LocalExecutor {time.monotonic() - started:.1f} s after start")
        # Paused from the CLI, the run stops after the tasks already started.
        assert af.cli("dags", "pause", "data_quality_monitoring").returncode == 0
        _drain(af, "data_quality_monitoring", "rest_trigger")
        assert {ip for ip, _, _ in listeners} == {"127.0.0.1"}, listeners
        with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
            mine = instance.get_runs(dg.RunsFilter(tags={"airflow/run_id": "rest_trigger",
                                                         "airflow/task_id": "check_data_completeness"}))
            assert [r.status for r in mine] == [dg.DagsterRunStatus.SUCCESS]
    finally:
        if af:
            stop_airflow(af)
        _psql(f"drop database if exists {db} with (force)")


def test_a_failing_dagster_run_fails_the_airflow_task(airflow, dagster_web):
    _, home, _ = dagster_web
    (home / "lake/validated/validated_sv.parquet").unlink()  # the consistency check's input is gone
    proc = airflow.cli("tasks", "test", "data_quality_monitoring", "check_data_consistency",
                       "2026-11-23T06:00:00+00:00", timeout=600)
    assert proc.returncode != 0
    assert "failed" in (proc.stdout + proc.stderr)
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        runs = instance.get_runs(dg.RunsFilter(tags={"airflow/task_id": "check_data_consistency"}), limit=1)
        assert runs[0].status == dg.DagsterRunStatus.FAILURE


def test_airflow3_a_dag_switched_on_and_triggered_runs_through_the_scheduler(dagster_web, tmp_path_factory):
    """The same DAG files on Airflow 3, started as `make airflow AIRFLOW=3` starts it (scheduler, DAG
    processor and API server; SQLite, LocalExecutor): the legacy pools and variables are imported, the
    five DAGs arrive paused, the REST API (/api/v2) logs admin in with a token and no one else; switched
    on over the REST API and triggered with `airflow dags trigger`, both runs succeed through the
    scheduler, each task a Dagster run of the bridge built on Dagster's GraphQL client."""
    _, home, dagster_proc = dagster_web
    url = dagster_web[0]
    dag_id = "data_quality_monitoring"
    started = time.monotonic()
    af = start_airflow(url, tmp_path_factory.mktemp("ct_airflow3"), version="3")
    try:
        print(f"Airflow 3 up in {time.monotonic() - started:.1f} s")
        pools = {p["pool"]: int(p["slots"]) for p in json.loads(af.cli("pools", "list", "-o", "json").stdout)}
        assert {k: pools[k] for k in LEGACY_POOLS} == LEGACY_POOLS
        assert af.cli("variables", "get", "data_quality_threshold").stdout.strip() == "0.95"
        status, body = af.api("GET", "dags")
        assert status == 200 and sorted(d["dag_id"] for d in body["dags"]) == sorted(LEGACY_TASKS)
        assert all(d["is_paused"] for d in body["dags"])
        assert af.api("GET", "dags", password="wrong")[0] == 401
        assert ADMIN_PASSWORD not in af.log.read_text() and "New DAGs are paused" in af.log.read_text()

        runs, listeners = _switch_on_and_trigger(af, dag_id, "af3_trigger", dagster_proc.pid)
        assert af.cli("dags", "pause", dag_id).returncode == 0
        for run in runs:
            _drain(af, dag_id, run["dag_run_id"])
        assert {ip for ip, _, _ in listeners} == {"127.0.0.1"}, listeners
        assert af.port in {port for _, port, _ in listeners}

        with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
            mine = instance.get_runs(dg.RunsFilter(tags={"airflow/dag_id": dag_id, "airflow/run_id": "af3_trigger"}))
            assert sorted(r.tags["airflow/task_id"] for r in mine) == sorted(t for t, _ in LEGACY_TASKS[dag_id])
            assert all(r.status == dg.DagsterRunStatus.SUCCESS and r.job_name == dag_id for r in mine)
            report = next(r for r in mine if r.tags["airflow/task_id"] == "generate_quality_report")
            assert report.run_config["resources"]["quality"]["config"]["min_quality_score"] == 0.95
        # The task instance names its Dagster run (XCom run_id) and its log streams the run's URL and status.
        status, body = af.api("GET", f"dags/{dag_id}/dagRuns/af3_trigger/taskInstances/generate_quality_report/"
                                     "xcomEntries/run_id")
        assert status == 200 and report.run_id in str(body["value"]), body
        log = next((af.home / "logs" / f"dag_id={dag_id}" / "run_id=af3_trigger" /
                    "task_id=generate_quality_report").glob("attempt=*.log")).read_text()
        assert f"runs/{report.run_id}" in log and f"Dagster run {report.run_id}: SUCCESS" in log
    finally:
        stop_airflow(af)


def test_readme_task_table_is_current():
    from airflow_compat.emit import task_table

    readme = (ROOT / "docs/airflow.md").read_text()
    assert task_table() in readme, "re-generate the table in docs/airflow.md"
