"""`ct`, the operator command, in the default (embedded) profile: the installed console script starts
Dagster (`dagster dev`: webserver + daemon, four code locations), the MLflow server and the model
server in the background on free ports, says what already runs when asked again, reports real health
(and fails, naming the component, when one dies), summarises the platform's state, lists and draws
it, and stops exactly what it started. (Airflow through `ct start` is the production-profile test's;
Airflow's own start is test_airflow_compat's.)

The state `ct summary` reads is made cheaply instead of by a whole `make demo`: DM ingested and
validated by a real materialization, and a small model registered as champion."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import mlflow
import pytest

from ct_assets.core import training as T
from ct_assets.core.registry import CHAMPION, point_mlflow
from ct_assets.core.tracking import log_candidate
from ct_assets.defs import keys
from ct_assets.defs.ingestion import raw_assets
from ct_assets.defs.profiles import profile_resources
from ct_assets.defs.quality import validation_assets
from tests.conftest import ROOT, private_home
from tests.integration.test_serving import _training_set as small_training_set  # a small, labelled, split training set
from tests.kafka_broker import free_port

CT = Path(sys.executable).with_name("ct")
NAME = "adverse-event-predictor"
COMPONENTS = "dagster,mlflow,serving"


def register_champion(uri: str, artifact_location: str | None = None) -> str:
    """Log a small model with its holdout AUROC in a run, register it and make it champion; its version."""
    point_mlflow(uri)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name(NAME)
    experiment_id = exp.experiment_id if exp else client.create_experiment(NAME, artifact_location=artifact_location)
    with mlflow.start_run(experiment_id=experiment_id):
        record = log_candidate(small_training_set(), T.ModelParams(C=0.05), source="synthetic")
        mlflow.log_metric("holdout_auroc", 0.7)
    version = mlflow.register_model(record["model_uri"], NAME).version
    client.set_registered_model_alias(NAME, CHAMPION, version)
    return str(version)


def ct(*args: str, env: dict, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([str(CT), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def pid_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def group_members(groups: set[int]) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) in groups:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            pass
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with private_home(tmp_path_factory.mktemp("ct_cli") / "ct", "CT_PROFILE", "CT_POSTGRES_URL") as home:
        selection = [a for a in raw_assets + validation_assets if set(a.keys) & {keys.raw("DM"), keys.validated("DM")}]
        with dg.DagsterInstance.get() as instance:
            assert dg.materialize(selection, resources=profile_resources(), instance=instance).success
        register_champion(f"sqlite:///{home / 'mlflow.db'}", (home / "mlflow-artifacts" / NAME).as_uri())
        ports = {f"CT_{c.upper()}_PORT": str(free_port()) for c in ("dagster", "airflow", "mlflow", "serving")}
        env = dict(os.environ) | ports
        started = time.monotonic()
        proc = ct("start", "--only", COMPONENTS, env=env)
        print(f"ct start ({COMPONENTS}) in {time.monotonic() - started:.1f} s")
        try:
            assert proc.returncode == 0, proc.stdout + proc.stderr
            yield home, env, proc.stdout
        finally:
            ct("stop", env=env)


def state(home: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (home / "run").glob("*.json")}


def test_start_prints_urls_and_a_second_start_reports_what_runs(stack):
    home, env, out = stack
    for component in ("dagster", "mlflow", "serving"):
        assert f"http://127.0.0.1:{env[f'CT_{component.upper()}_PORT']}" in out, out
    before = state(home)
    assert set(before) == {"dagster", "mlflow", "serving"}
    assert all((home / "run" / f"{name}.pid").read_text().strip() == str(s["pid"]) for name, s in before.items())
    again = ct("start", "--only", COMPONENTS, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "everything asked for already runs" in again.stdout
    assert {n: s["pid"] for n, s in state(home).items()} == {n: s["pid"] for n, s in before.items()}


def test_health_check_passes_with_real_component_health(stack):
    _, env, _ = stack
    proc = ct("health-check", "--json", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    checks = {(c["component"], c["name"]): c for c in report["checks"]}
    assert report["healthy"] and all(c["ok"] for c in checks.values())
    locations = {n for (comp, n) in checks if n.startswith("code location")}
    assert locations == {f"code location {n}" for n in ("ct_assets", "ct_feature_backfill", "ct_kfp", "ct_kafka")}
    assert "heartbeating" in checks[("dagster", "daemon")]["detail"]
    assert checks[("serving", "ready")]["detail"] == "champion version 1"
    assert json.loads(checks[("serving", "served versions")]["detail"])["champion"] == 1
    assert ("airflow", "webserver") not in checks and report["not_checked"] == ["airflow"]  # not started: named
    text = ct("health-check", env=env).stdout
    assert "--    airflow: not started by ct start, not checked" in text
    assert text.rstrip().endswith("healthy: dagster, mlflow, serving (not checked: airflow)")


def test_summary_open_and_visualize(stack, tmp_path):
    home, env, _ = stack
    proc = ct("summary", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["profile"] == "local"
    assert set(summary["dagster"]["jobs"]) == {"clinical_data_pipeline", "model_monitoring", "data_quality_monitoring",
                                               "scheduled_retraining", "feature_backfill"}
    assert summary["dagster"]["latest_run"]["status"] == "SUCCESS"
    assert summary["dagster"]["quarantined"] == {"DM": 0}
    assert summary["instigators"]["schedules"]["model_monitoring_schedule"] == {"on": False, "cron": "0 */2 * * *"}
    assert summary["instigators"]["sensors"]["drift_retraining_sensor"]["on"] is True
    assert summary["models"]["champion"]["version"] == "1"
    assert summary["models"]["champion"]["holdout"] == {"auroc": 0.7}
    text = ct("summary", env=env).stdout
    assert "champion    version 1: auroc=0.7" in text and "quarantined rows: DM 0" in text
    opened = ct("open", "--no-browser", env=env).stdout
    assert f"serving  http://127.0.0.1:{env['CT_SERVING_PORT']}" in opened
    svg = tmp_path / "platform.svg"
    drawn = ct("visualize", "--out", str(svg), env=env)
    assert drawn.returncode == 0, drawn.stderr
    picture = svg.read_text()
    assert picture.startswith("<svg") and ">champion_model<" in picture and "serving: up" in picture
    assert "registered_model --> champion_model" in svg.with_suffix(".mmd").read_text()


def test_a_dead_component_fails_the_health_check_and_legacy_flags_bring_it_back(stack):
    home, env, _ = stack
    serving = state(home)["serving"]
    os.killpg(serving["pid"], signal.SIGKILL)  # a crash, not a `ct stop`
    deadline = time.monotonic() + 30
    while pid_alive(serving["pid"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc = ct("health-check", env=env)
    assert proc.returncode == 1, proc.stdout
    assert "UNHEALTHY: serving" in proc.stdout
    assert "FAIL  serving process serving" in proc.stdout and "exited" in proc.stdout
    # The legacy manager's combined flags: start (only what is missing) then health-check.
    proc = ct("--only", COMPONENTS, "-s", "--health-check", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "dagster: already running" in proc.stdout and "starting serving" in proc.stdout
    assert proc.stdout.rstrip().endswith("healthy: dagster, mlflow, serving (not checked: airflow)")


def test_stop_stops_exactly_what_start_started(stack):
    home, env, _ = stack
    started = state(home)
    groups = {s["pid"] for s in started.values()}
    members = group_members(groups)
    assert len(members) > len(groups)  # dagster dev's webserver, daemon and code servers are in its group
    proc = ct("stop", env=env)
    assert proc.returncode == 0 and "stopped:" in proc.stdout
    assert not [pid for pid in members if pid_alive(pid)]
    assert not list((home / "run").glob("*.json")) and not list((home / "run").glob("*.pid"))
    assert "nothing was running" in ct("stop", env=env).stdout
    assert ct("health-check", "--only", "serving", env=env).returncode == 1
