"""The five legacy jobs, their schedules, the sensors and the alerts."""

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import pandas as pd
import pytest

from ct_assets.definitions import defs
from ct_assets.defs import keys
from ct_assets.defs.alerts import AlertWebhook, alert_on_run_failure
from ct_assets.defs.ingestion import raw_assets
from ct_assets.defs.jobs import CRON, LEGACY_TASKS, clinical_data_pipeline_schedule
from ct_assets.defs.profiles import profile_resources
from ct_assets.defs.resources import StudySource
from ct_assets.defs.sensors import drift_retraining_sensor
from ct_assets.locations.backfill import defs as backfill_defs
from tests.studies import pilot_dir

LEGACY = {"clinical_data_pipeline": "0 */6 * * *", "model_monitoring": "0 */2 * * *",
          "data_quality_monitoring": "0 */4 * * *", "scheduled_retraining": "0 3 * * 0", "feature_backfill": None}


def test_five_legacy_jobs_with_their_schedules():
    assert CRON == LEGACY
    assert set(LEGACY_TASKS) == set(LEGACY)
    for name, cron in LEGACY.items():
        location = backfill_defs if name == "feature_backfill" else defs
        assert location.resolve_job_def(name).name == name
        schedules = [s for s in location.schedules or [] if s.job_name == name]
        assert [s.cron_schedule for s in schedules] == ([cron] if cron else [])
    assert len(LEGACY_TASKS["clinical_data_pipeline"]) == 10 and len(LEGACY_TASKS["model_monitoring"]) == 6


@pytest.mark.parametrize("name", ["model_monitoring", "data_quality_monitoring", "scheduled_retraining"])
def test_schedule_tick_requests_its_job(name):
    schedule = defs.resolve_schedule_def(f"{name}_schedule")
    with dg.instance_for_test() as instance:
        data = schedule.evaluate_tick(dg.build_schedule_context(instance=instance, repository_def=defs.get_repository_def()))
    assert len(data.run_requests) == 1
    assert schedule.job_name == name


@pytest.fixture
def study_copy(tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    for name in ("dm", "vs", "lbch", "lbhe", "lbur", "ae", "ds", "ex", "sv"):
        shutil.copy(pilot_dir() / f"{name}.parquet", folder / f"{name}.parquet")
    return folder


def _tick(instance, study):
    ctx = dg.build_schedule_context(instance=instance, repository_def=defs.get_repository_def(),
                                    resources={"study": StudySource(study_dir=str(study))})
    return clinical_data_pipeline_schedule.evaluate_tick(ctx)


def test_clinical_pipeline_processes_only_what_changed(ct_home, study_copy):
    with dg.instance_for_test() as instance:
        first = _tick(instance, study_copy).run_requests[0]
        assert keys.raw("DM") in first.asset_selection and keys.PROCESSED_VISITS in first.asset_selection
        assert first.tags["ct/changed_domains"] == "DM,VS,LB,AE,DS,EX,SV"
        resources = profile_resources() | {"study": StudySource(study_dir=str(study_copy))}
        assert dg.materialize(raw_assets, resources=resources, instance=instance).success
        # Raw domains are current; the model was never trained on this study: training only.
        second = _tick(instance, study_copy).run_requests[0]
        assert second.tags["ct/changed_domains"] == "none"
        assert keys.raw("VS") not in second.asset_selection and keys.CANDIDATE_MODEL in second.asset_selection
        # A new batch of vital signs: VS and what depends on it, never the other domains.
        pd.read_parquet(study_copy / "vs.parquet").head(10).to_parquet(study_copy / "vs_batch2.parquet")
        third = _tick(instance, study_copy).run_requests[0]
        assert third.tags["ct/changed_domains"] == "VS"
        selected = set(third.asset_selection)
        assert {keys.raw("VS"), keys.validated("VS"), keys.PROCESSED_VISITS, keys.SUBJECT_FEATURES} <= selected
        assert not selected & {keys.raw("DM"), keys.raw("LB"), keys.validated("LB"), keys.validated("AE")}


def _report(instance, breach: bool, breach_id: str = ""):
    instance.report_runless_asset_event(dg.AssetMaterialization(
        keys.MONITORING_REPORT, metadata={"breach": breach, "breach_id": breach_id, "reasons": "data_drift: x" if breach else "none"}))


def test_drift_sensor_requests_retraining_once_per_breach():
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance)
        _report(instance, False)
        assert isinstance(drift_retraining_sensor(ctx), dg.SkipReason)  # a report without breach
        _report(instance, True, "abc")
        requests = drift_retraining_sensor(dg.build_sensor_context(instance=instance, cursor=ctx.cursor))
        assert len(requests) == 1 and requests[0].tags["ct/breach_id"] == "abc"
        assert "data_drift" in requests[0].tags["ct/retrain_reason"]


def test_drift_sensor_cursor_remembers_acted_breaches():
    with dg.instance_for_test() as instance:
        _report(instance, True, "abc")
        ctx = dg.build_sensor_context(instance=instance)
        assert len(drift_retraining_sensor(ctx)) == 1
        _report(instance, True, "abc")  # the same breach reported again two hours later
        again = dg.build_sensor_context(instance=instance, cursor=ctx.cursor)
        assert isinstance(drift_retraining_sensor(again), dg.SkipReason)
        _report(instance, True, "def")  # a new breach
        assert len(drift_retraining_sensor(dg.build_sensor_context(instance=instance, cursor=again.cursor))) == 1


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        self.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook(monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hook.received = []
    monkeypatch.setenv("CT_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/hook")
    yield _Hook.received
    server.shutdown()


def test_alert_reaches_a_real_webhook(webhook):
    assert AlertWebhook().send("threshold breached")
    assert webhook == [{"text": "threshold breached"}]


def test_no_alert_without_url(monkeypatch):
    monkeypatch.delenv("CT_ALERT_WEBHOOK_URL", raising=False)
    assert AlertWebhook().send("nobody listens") is False


def test_run_failure_posts_an_alert(webhook, ct_home, tmp_path):
    empty = tmp_path / "empty_study"
    empty.mkdir()
    with dg.instance_for_test() as instance:
        resources = profile_resources() | {"study": StudySource(study_dir=str(empty))}
        result = dg.materialize([a for a in raw_assets if keys.raw("DM") in a.keys], resources=resources,
                                instance=instance, raise_on_error=False)
        assert not result.success  # a study without DM is an error, not an empty success
        failure = result.get_run_failure_event()
        ctx = dg.build_run_status_sensor_context(
            sensor_name="alert_on_run_failure", dagster_event=failure, dagster_instance=instance,
            dagster_run=result.dagster_run,
        ).for_run_failure()
        alert_on_run_failure(ctx, alerts=AlertWebhook())
    assert len(webhook) == 1 and "failed" in webhook[0]["text"] and result.dagster_run.job_name in webhook[0]["text"]
