"""The production profile, run for real on the machine's PostgreSQL (127.0.0.1:5432).

`CT_PROFILE=production ct start` creates five databases (Dagster, MLflow and its users, Airflow, the Feast registry) and brings up: each Dagster code location in
its own `dagster code-server start` (gRPC), the webserver and the daemon as separate processes on a
PostgreSQL instance; `mlflow server` with its backend store on PostgreSQL, a local artifact
destination and MLflow's basic-auth app (no anonymous request; the platform writes as its service account); Airflow on PostgreSQL with the LocalExecutor; the model server reading the MLflow server.
Then, end to end:

- a model is logged and registered through the MLflow server (its rows in PostgreSQL, its files in
  the artifact destination) and made champion; the model server picks it up and predicts with it;
- an Airflow DAG run goes through the scheduler: its first task launches its Dagster run through the
  webserver, which the daemon dequeues and launches through the code server;
- a sensor request: the daemon evaluates `data_cleaning_sensor` in its code server and launches the
  re-validation it asks for. The sensor's input, a quarantine recheck naming DM, is reported by the
  test (on the bundled study no quarantined row ever passes again, so the asset would name none);
- `ct health-check` and `ct summary` see all of it; `ct stop` stops it.
"""

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import dagster as dg
import pytest

from ct_assets.defs import keys
from ct_assets.ops import config as ops_config
from tests.conftest import ROOT, private_home
from tests.integration.test_ct_cli import ct, register_champion, small_training_set
from tests.kafka_broker import free_port

AIRFLOW_PY = ROOT / ".venv-airflow/bin/python"
PASSWORD = "test-only-not-a-secret"
SERVER = "postgresql://postgres@127.0.0.1:5432"


def _psql(sql: str, db: str = "postgres") -> subprocess.CompletedProcess:
    return subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-At", "-v", "ON_ERROR_STOP=1",
                           "-c", sql], capture_output=True, text=True)


def _http(url: str, method: str = "GET", body: dict | None = None, auth: str | None = None, token: str | None = None):
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, method=method, headers=headers,
                                 data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, None


def _wait(what: str, predicate, timeout: float, every: float = 2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


@pytest.fixture(scope="module")
def production(tmp_path_factory):
    if shutil.which("psql") is None or _psql("select 1").returncode != 0:
        pytest.skip("no PostgreSQL server on 127.0.0.1:5432")
    if not AIRFLOW_PY.exists():
        pytest.skip("no Airflow venv (make airflow-install)")
    prefix = f"ct_t{uuid.uuid4().hex[:8]}"
    with private_home(tmp_path_factory.mktemp("ct_prod") / "ct", "MLFLOW_TRACKING_URI") as home:
        ports = {f"CT_{c.upper()}_PORT": str(free_port()) for c in ("dagster", "airflow", "mlflow", "serving")}
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | ports | {
            "CT_PROFILE": "production", "CT_POSTGRES_URL": SERVER, "CT_POSTGRES_DB_PREFIX": prefix,
            "CT_AIRFLOW_ADMIN_PASSWORD": PASSWORD}
        try:
            started = time.monotonic()
            proc = ct("start", env=env, timeout=900)
            print(f"ct start (production profile) in {time.monotonic() - started:.1f} s")
            assert proc.returncode == 0, proc.stdout + proc.stderr
            yield home, env, prefix, proc.stdout
        finally:
            ct("stop", env=env)
            for component in ops_config.PRODUCTION_DATABASES:
                _psql(f"drop database if exists {prefix}_{component} with (force)")


def check_dagster_runs(home, code_ports: set[int]) -> None:
    """The Airflow task's Dagster run, and a sensor request's run: in PostgreSQL, launched by the daemon
    through a code server."""
    from dagster._core.remote_origin import GrpcServerCodeLocationOrigin
    from dagster_postgres import PostgresRunStorage

    with dg.DagsterInstance.from_config(str(home / "dagster-production")) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        airflow_run = instance.get_runs(dg.RunsFilter(tags={"airflow/run_id": "ct_e2e",
                                                            "airflow/task_id": "check_data_completeness"}))[0]
        assert airflow_run.status == dg.DagsterRunStatus.SUCCESS
        origin = airflow_run.remote_job_origin.repository_origin.code_location_origin
        assert isinstance(origin, GrpcServerCodeLocationOrigin) and origin.port in code_ports

        # A sensor request launched by the daemon through the code server.
        instance.report_runless_asset_event(dg.AssetMaterialization(keys.QUARANTINE_RECHECK,
                                                                    metadata={"domains_to_revalidate": "DM"}))

        def sensor_run():
            runs = instance.get_runs(dg.RunsFilter(tags={"dagster/sensor_name": "data_cleaning_sensor"}))
            return runs if runs and runs[0].status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE) else None

        started = time.monotonic()
        runs = _wait("the sensor's run", sensor_run, timeout=240, every=3)
        print(f"sensor run finished {time.monotonic() - started:.1f} s after its input")
        assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS]
        assert runs[0].tags["ct/domains"] == "DM"
        assert runs[0].remote_job_origin.repository_origin.code_location_origin.port in code_ports
        landed = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=keys.validated("DM")), limit=10).records
        assert runs[0].run_id in {r.run_id for r in landed}


def test_production_profile_end_to_end(production):
    home, env, prefix, out = production
    url = {c: f"http://127.0.0.1:{env[f'CT_{c.upper()}_PORT']}" for c in ("dagster", "airflow", "mlflow", "serving")}
    assert (f"created PostgreSQL databases: {prefix}_dagster, {prefix}_mlflow, {prefix}_mlflow_auth, {prefix}_airflow, "
            f"{prefix}_feast") in out
    assert PASSWORD not in out + "".join(p.read_text() for p in (home / "run").glob("*.log"))
    run_state = {p.stem: json.loads(p.read_text()) for p in (home / "run").glob("*.json")}
    assert set(run_state) == {"dagster-code-ct_assets", "dagster-code-ct_feature_backfill", "dagster-code-ct_kfp",
                              "dagster-code-ct_kafka", "dagster-webserver", "dagster-daemon", "mlflow", "airflow",
                              "serving"}
    code_ports = {s["extra"]["port"] for n, s in run_state.items() if n.startswith("dagster-code-")}

    # A model logged and registered through the MLflow server as the platform's service account, served by the model server.
    service = ("ct-service", (home / "secrets" / "mlflow.password").read_text().strip())
    assert service[1] not in out + "".join(p.read_text() for p in (home / "run").glob("*"))  # never printed or recorded
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_USERNAME", service[0])
        mp.setenv("MLFLOW_TRACKING_PASSWORD", service[1])
        version = register_champion(url["mlflow"])
    # Nobody changes the registry anonymously, nor with a wrong password: the champion cannot be moved behind the
    # platform's back (MLflow's own REST API, as an attacker on this machine would call it).
    alias = {"name": "adverse-event-predictor", "alias": "champion"}
    assert _http(f"{url['mlflow']}/api/2.0/mlflow/registered-models/alias", "DELETE", alias)[0] == 401
    assert _http(f"{url['mlflow']}/api/2.0/mlflow/registered-models/alias", "DELETE", alias, auth="ct-service:guess")[0] == 401
    assert _http(f"{url['mlflow']}/api/2.0/mlflow/registered-models/get?name=adverse-event-predictor")[0] == 401
    status, body = _http(f"{url['mlflow']}/api/2.0/mlflow/registered-models/get?name=adverse-event-predictor",
                         auth=":".join(service))
    assert status == 200 and body["registered_model"]["aliases"][0]["version"] == version
    assert _psql("select name, version from model_versions", f"{prefix}_mlflow").stdout.split() == [
        f"adverse-event-predictor|{version}"]
    assert list((home / "mlflow-artifacts").rglob("MLmodel"))  # the server's artifact destination
    ready = _wait("the model server to serve the champion",
                  lambda: (r := _http(f"{url['serving']}/ready"))[0] == 200 and r[1], timeout=60)
    assert ready["champion_version"] == int(version)
    row = small_training_set().iloc[0]
    instance_ = {"subject_key": f"S-{10**9:020x}",
                 "features": {c: None if row[c] != row[c] else float(row[c]) for c in ("HR_change", "SYSBP_slope",
                                                                                     "ALT_last", "AGE")}
                 | {"SEX": row["SEX"], "ARMCD": row["ARMCD"]}}
    status, body = _http(f"{url['serving']}/predict", "POST", {"instances": [instance_]})
    assert status == 200, body
    assert body["predictions"][0]["version"] == int(version) and 0 <= body["predictions"][0]["risk"] <= 1

    # An Airflow DAG run through the scheduler (LocalExecutor, PostgreSQL): triggered while paused, then
    # switched on; its first task's Dagster run is launched by the daemon through the code server.
    api, auth = f"{url['airflow']}/api/v1", f"admin:{PASSWORD}"
    dag = "data_quality_monitoring"
    assert _http(f"{api}/dags/{dag}/dagRuns", "POST", {"dag_run_id": "ct_e2e", "logical_date": "2026-01-01T00:00:00Z"},
                 auth=auth)[0] == 200
    assert _http(f"{api}/dags/{dag}?update_mask=is_paused", "PATCH", {"is_paused": False}, auth=auth)[0] == 200
    task = f"{api}/dags/{dag}/dagRuns/ct_e2e/taskInstances/check_data_completeness"

    def first_task_done():
        state = _http(task, auth=auth)[1]["state"]
        assert state not in ("failed", "up_for_retry", "upstream_failed"), state
        return state == "success"

    _wait("the first task of the Airflow run", first_task_done, timeout=400, every=3)
    assert _http(f"{api}/dags/{dag}?update_mask=is_paused", "PATCH", {"is_paused": True}, auth=auth)[0] == 200
    assert _psql("select executor_config is not null from task_instance where run_id = 'ct_e2e' "
                 "and task_id = 'check_data_completeness' and state = 'success'", f"{prefix}_airflow").stdout.strip()
    assert "(LocalExecutor)" in (home / "run" / "airflow.log").read_text()

    with pytest.MonkeyPatch.context() as mp:  # the instance's dagster.yaml names the URL by this variable
        mp.setenv("DAGSTER_PG_URL", f"postgresql+psycopg2://postgres@127.0.0.1:5432/{prefix}_dagster")
        check_dagster_runs(home, code_ports)

    # The operator's view of all of it.
    health = ct("health-check", "--json", env=env)
    report = json.loads(health.stdout)
    assert health.returncode == 0 and report["healthy"], health.stdout
    names = {(c["component"], c["name"]) for c in report["checks"]}
    assert {("postgres", "databases"), ("airflow", "scheduler"), ("dagster", "daemon"), ("serving", "ready")} <= names
    summary = json.loads(ct("summary", "--json", env=env).stdout)
    assert summary["profile"] == "production"
    assert summary["models"]["champion"]["version"] == version
    assert summary["models"]["registry"] == url["mlflow"]
    assert summary["dagster"]["jobs"]["data_quality_monitoring"]["status"] != "never run"
    assert {d["dag_id"]: d["is_paused"] for d in summary["airflow"]["dags"]}[dag] is True
