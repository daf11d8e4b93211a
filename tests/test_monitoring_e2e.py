"""Drift drill end to end: real study, real instance, real daemon.

1. clinical_data_pipeline trains a champion on (a copy of) the pilot study;
2. model_monitoring on unchanged data: no breach, the sensor asks for nothing;
3. a shifted batch of new subjects is dropped into the study folder;
4. model_monitoring flags drift; the sensor asks for retraining once, not again for the same breach;
5. a real `dagster-daemon` ticks the sensor and launches scheduled_retraining, exactly once.
"""

import os
import shutil
import subprocess
import sys
import time

import dagster as dg
import pytest

from ct_assets import keys
from ct_assets.definitions import defs
from ct_assets.lib.synth import grow_study
from ct_assets.monitoring.sensors import drift_retraining_sensor
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


def test_daemon_tick_launches_retraining_exactly_once(drill):
    instance = drill["instance"]
    env = os.environ | drill["env"]
    daemon = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "dagster-daemon"), "run", "-w", "workspace.yaml"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline, runs = time.time() + 420, []
        while time.time() < deadline:
            runs = instance.get_runs(dg.RunsFilter(job_name="scheduled_retraining",
                                                   tags={"ct/trigger": "drift_retraining_sensor"}))
            if runs and runs[0].is_finished:
                break
            time.sleep(5)
        assert runs, "the daemon's sensor tick launched no retraining"
        assert runs[0].is_finished
        assert "data_drift" in runs[0].tags["ct/retrain_reason"]
        time.sleep(40)  # at least one more sensor tick: the same breach must not launch again
        runs = instance.get_runs(dg.RunsFilter(job_name="scheduled_retraining"))
        assert len(runs) == 1
        run = runs[0]
        if not run.is_success:
            # Retraining may legitimately keep the champion: then the champion gate is the only failure.
            failed = {e.step_key for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)}
            assert failed == {"registered_model"}
            gate = [e for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
                    if e.dagster_event.event_specific_data.check_name == "champion_gate"]
            assert len(gate) == 1 and not gate[0].dagster_event.event_specific_data.passed
    finally:
        stop_group(daemon, timeout=30)
