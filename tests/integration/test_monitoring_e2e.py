"""Drift drill end to end: real study, real instance, real daemon.

1. clinical_data_pipeline trains a champion on (a copy of) the pilot study;
2. model_monitoring on unchanged data: no breach, the sensor asks for nothing;
3. a shifted batch of new subjects is dropped into the study folder;
4. model_monitoring flags drift; the sensor asks for retraining once, not again for the same breach;
5. the drift drill of docs/operations.md, run as written, makes a real daemon's sensor launch scheduled_retraining once;
6. then the quick start's `ct` lines, as written, start the whole local stack (Airflow included) on what
   the demo and the drill left, find it healthy, summarise it and stop it.
"""

import contextlib
import os
import shutil
import subprocess
import time

import dagster as dg
import pytest

from ct_assets.core.synth import grow_study
from ct_assets.definitions import defs
from ct_assets.defs import keys
from ct_assets.defs.sensors import drift_retraining_sensor
from tests.conftest import ROOT
from tests.procs import stop_group
from tests.studies import pilot_dir

SHIFT = {("VS", "SYSBP"): 40.0, ("VS", "DIABP"): 25.0, ("VS", "PULSE"): 30.0, ("VS", "WEIGHT"): 15.0}


@pytest.fixture(scope="module")
def drill(tmp_path_factory):
    base = tmp_path_factory.mktemp("drill")
    home, study = base / "ct", base / "study"
    study.mkdir()
    for name in ("dm", "vs", "lbch", "lbhe", "lbur", "ae", "ds", "ex", "sv"):
        shutil.copy(pilot_dir() / f"{name}.parquet", study / f"{name}.parquet")
    env = {"CT_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "CT_STUDY_DIR": str(study)}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        for var in ("MLFLOW_TRACKING_URI", "CT_PSEUDONYM_KEY", "CT_ALERT_WEBHOOK_URL"):
            mp.delenv(var, raising=False)
        (home / "dagster").mkdir(parents=True)
        (home / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        with dg.DagsterInstance.get() as instance:
            assert defs.resolve_job_def("clinical_data_pipeline").execute_in_process(instance=instance).success
            yield {"home": home, "study": study, "instance": instance, "env": env, "cursor": None}


def _monitor(instance) -> dict:
    result = defs.resolve_job_def("model_monitoring").execute_in_process(instance=instance)
    assert result.success
    [report] = [e.materialization.metadata for e in result.get_asset_materialization_events()
                if e.asset_key == keys.MONITORING_REPORT]
    return report


def _sense(drill):
    ctx = dg.build_sensor_context(instance=drill["instance"], cursor=drill["cursor"])
    result = drift_retraining_sensor(ctx)
    drill["cursor"] = ctx.cursor
    return [] if isinstance(result, dg.SkipReason) else result


def test_unshifted_data_is_no_breach(drill):
    report = _monitor(drill["instance"])
    assert report["breach"].value is False, report["reasons"].value
    assert _sense(drill) == []


def test_shifted_batch_breaches_and_requests_retraining_once(drill):
    grow_study(pilot_dir(), drill["study"], 150, seed=3, shift=SHIFT, suffix="batch2", id_prefix="NEW")
    report = _monitor(drill["instance"])
    assert report["breach"].value is True
    assert "data_drift" in report["reasons"].value and "VS_SYSBP" in report["reasons"].value
    [request] = _sense(drill)
    assert request.tags["ct/breach_id"] == report["breach_id"].value
    # Two hours later the same breach is reported again: no second retraining.
    assert _monitor(drill["instance"])["breach_id"].value == report["breach_id"].value
    assert _sense(drill) == []


def _doc_block(marker: str) -> list[str]:
    """The commands of the docs/operations.md block after ``<!-- marker: ...-->``, as written (continuation lines
    joined)."""
    text = (ROOT / "docs" / "operations.md").read_text()
    block = text.split(f"<!-- {marker}:")[1].split("```bash\n")[1].split("```")[0]
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


PLAIN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory):
    """A folder laid out like the project root, where the commands of docs/operations.md run."""
    root = tmp_path_factory.mktemp("readme")
    for name in (".venv", ".venv-airflow", "workspace.yaml"):
        (root / name).symlink_to(ROOT / name)
    return root


def test_readme_drill_as_written_requests_retraining_once(project_copy):
    """The drift drill of docs/operations.md, run line by line in one bash with a plain PATH, from a folder laid out
    like the project root: a real daemon's sensor launches scheduled_retraining exactly once."""
    tmp_path, env = project_copy, PLAIN_ENV
    script = "set -euo pipefail\n" + "\n".join(_doc_block("drift-drill")) + "\n"
    shell = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = shell.communicate(timeout=600)
        assert shell.returncode == 0, out[-3000:]
        with dg.DagsterInstance.from_config(str(tmp_path / ".ct" / "drill" / "dagster")) as instance:
            reports = instance.fetch_materializations(keys.MONITORING_REPORT, limit=10, ascending=True).records
            before, after = (r.asset_materialization.metadata for r in (reports[0], reports[-1]))
            assert before["breach"].value is False  # the demo's monitoring on the unchanged copy
            assert after["breach"].value is True and "VS_SYSBP" in after["reasons"].value
            deadline, runs = time.time() + 240, []
            while time.time() < deadline and not runs:
                runs = instance.get_runs(dg.RunsFilter(job_name="scheduled_retraining",
                                                       tags={"ct/trigger": "drift_retraining_sensor"}))
                time.sleep(3)
            assert len(runs) == 1, "the daemon's sensor launched no retraining"
            assert runs[0].tags["ct/breach_id"] == after["breach_id"].value
            time.sleep(35)  # one more sensor tick: the same breach is not acted on again
            assert len(instance.get_runs(dg.RunsFilter(job_name="scheduled_retraining"))) == 1
    finally:
        with contextlib.suppress(ProcessLookupError):
            stop_group(shell, timeout=30)  # the daemon the drill left running, and the run it launched


def test_readme_ct_lines_after_the_demo_start_check_summarise_and_stop_everything(project_copy):
    """The quick start's `ct` lines as written, in the home the demo and the drill filled: Dagster,
    Airflow (scheduler and webserver), MLflow and the model server start, are healthy, the summary
    shows the demo's runs, the champion and the Airflow DAGs, and `ct stop` leaves nothing running."""
    from tests.kafka_broker import free_port

    home = project_copy / ".ct" / "drill"
    env = PLAIN_ENV | {"CT_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    env |= {f"CT_{c.upper()}_PORT": str(free_port()) for c in ("dagster", "airflow", "mlflow", "serving")}
    lines = _doc_block("ct-quickstart")
    assert [line.split("#")[0].split()[:2] for line in lines] == [
        [".venv/bin/ct", verb] for verb in ("start", "health-check", "summary", "stop")]
    outputs = []
    try:
        for line in lines:
            proc = subprocess.run(["bash", "-c", line], cwd=project_copy, env=env, capture_output=True, text=True,
                                  timeout=600)
            assert proc.returncode == 0, f"{line}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            outputs.append(proc.stdout)
    finally:
        subprocess.run([str(project_copy / ".venv/bin/ct"), "stop"], cwd=project_copy, env=env, capture_output=True,
                       timeout=120)
    started, health, summary, stopped = outputs
    for component in ("dagster", "airflow", "mlflow", "serving"):
        assert f"http://127.0.0.1:{env[f'CT_{component.upper()}_PORT']}" in started, started
    assert health.rstrip().endswith("healthy: dagster, airflow, mlflow, serving"), health
    assert "ok    airflow scheduler" in health and "ok    dagster daemon" in health, health
    for job in ("clinical_data_pipeline", "model_monitoring", "scheduled_retraining"):
        assert job in summary, summary
    assert "champion    version" in summary and "no monitoring report yet" not in summary, summary
    dags = summary.split("Airflow DAGs")[1]
    for dag in ("clinical_data_pipeline", "model_monitoring", "data_quality_monitoring", "scheduled_retraining",
                "feature_backfill"):
        assert f"  {dag}" in dags, summary
    assert "stopped:" in stopped and not list((home / "run").glob("*.pid"))
