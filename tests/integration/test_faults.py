"""Failures that a retry can fix are retried; the others fail at once, in one line that names the cause.

Against real components: an MLflow tracking server started on a free port (or nothing listening
there), a Spark standalone master address with nothing behind it, the local Spark session.
"""

import os
import socket
import subprocess
import sys
import threading
import time

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from ct_assets.core.faults import ServiceUnavailable, StudyDataError, is_transient, probe_spark_master
from ct_assets.core.lake import write_parquet
from ct_assets.defs import keys
from ct_assets.defs.processing import processed_visits
from ct_assets.defs.profiles import profile_resources
from ct_assets.defs.training import candidate_model
from tests.procs import stop_group


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_training_set(n: int = 48, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = np.array([0, 1] * (n // 2))
    return pd.DataFrame({
        "SUBJECT_KEY": [f"S-{i:020x}" for i in range(n)], "AGE": rng.normal(70, 8, n), "SEX": rng.choice(["M", "F"], n),
        "VS_SYSBP__baseline": rng.normal(130, 15, n) + 10 * label, "LABEL": label,
        "SPLIT": np.where(np.arange(n) % 4 == 0, "holdout", "train"), "SPLIT_BUCKET": np.arange(n),
    })


def _train(ct_home, instance) -> tuple[dg.ExecuteInProcessResult, float]:
    write_parquet(tiny_training_set(), ct_home / "lake/training/training_set.parquet")
    started = time.perf_counter()
    result = dg.materialize([dg.AssetSpec(keys.TRAINING_SET), candidate_model], resources=profile_resources(), instance=instance,
                            selection=[keys.CANDIDATE_MODEL], raise_on_error=False)
    return result, time.perf_counter() - started


def _failure_text(instance, run_id) -> str:
    [event] = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    data = event.dagster_event.step_failure_data
    text, err = [], data.error
    while err is not None:
        text.append(err.message)
        err = err.cause
    return " | ".join(text)


def test_retries_of_a_dead_service_wait_two_minutes_in_all_not_the_legacy_fifteen(monkeypatch):
    from ct_assets import settings

    for var in ("CT_RETRIES", "CT_RETRY_BUDGET_SECONDS", "CT_RETRY_DELAY_SECONDS"):
        monkeypatch.delenv(var, raising=False)
    retries, delay = settings.retry_policy()
    assert retries == 3 and retries * delay == 120
    monkeypatch.setenv("CT_RETRY_BUDGET_SECONDS", "30")
    assert settings.retry_policy() == (3, 10.0)
    monkeypatch.setenv("CT_RETRY_DELAY_SECONDS", "2")
    assert settings.retry_policy() == (3, 2.0)
    monkeypatch.setenv("CT_RETRIES", "0")
    assert settings.retry_policy() == (0, 0.0)


def test_transient_and_data_errors_are_told_apart():
    import requests

    assert is_transient(ConnectionRefusedError("refused"))
    assert is_transient(_caused_by(TimeoutError("read timed out")))
    response = requests.Response()
    response.status_code = 503
    assert is_transient(requests.HTTPError("503", response=response))
    assert not is_transient(StudyDataError("no outcome"))
    assert not is_transient(ValueError("n_splits=5 cannot be greater than the number of members in each class"))
    assert not is_transient(KeyError("RFSTDTC"))


def _caused_by(cause: Exception) -> Exception:
    try:
        try:
            raise cause
        except Exception as inner:
            raise RuntimeError("MLflow call failed") from inner
    except RuntimeError as outer:
        return outer


def test_unreachable_mlflow_fails_within_seconds_naming_the_uri(ct_home, monkeypatch):
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("CT_RETRIES", "0")
    with dg.instance_for_test() as instance:
        result, elapsed = _train(ct_home, instance)
        assert not result.success and elapsed < 30
        text = _failure_text(instance, result.run_id)
        assert uri in text and "MLflow" in text


def test_mlflow_down_for_the_first_attempt_is_retried_and_succeeds(ct_home, monkeypatch, tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("CT_RETRIES", "6")
    monkeypatch.setenv("CT_RETRY_DELAY_SECONDS", "10")
    server = None
    with dg.instance_for_test() as instance:
        outcome = {}
        worker = threading.Thread(target=lambda: outcome.update(zip(("result", "elapsed"), _train(ct_home, instance))))
        worker.start()
        try:
            deadline = time.time() + 120
            while time.time() < deadline and not instance.get_event_records(
                    dg.EventRecordsFilter(dg.DagsterEventType.STEP_UP_FOR_RETRY), limit=1):
                time.sleep(0.5)
            assert worker.is_alive(), "the step did not wait for a retry"
            # The server comes up only now: the retry must find it.
            server = subprocess.Popen(
                [os.path.join(os.path.dirname(sys.executable), "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                 "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts-destination",
                 str(tmp_path / "artifacts"), "--workers", "1"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            worker.join(timeout=240)
            assert not worker.is_alive()
            result = outcome["result"]
            assert result.success
            retries = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
            assert len(retries) >= 1
            import mlflow

            runs = mlflow.MlflowClient(tracking_uri=uri).search_runs(
                [mlflow.MlflowClient(tracking_uri=uri).get_experiment_by_name("adverse-event-predictor").experiment_id])
            assert len(runs) == 1 and "cv_auroc_mean" in runs[0].data.metrics
        finally:
            if server is not None:
                stop_group(server, timeout=30)


def test_unreachable_spark_master_fails_within_seconds_naming_it(ct_home, monkeypatch):
    master = f"spark://127.0.0.1:{free_port()}"
    monkeypatch.setenv("CT_SPARK_MASTER", master)
    monkeypatch.setenv("CT_RETRIES", "0")
    frame = pd.DataFrame({"SUBJECT_KEY": ["S-" + "0" * 20], "VISITNUM": [1.0]})
    for name in ("validated_vs", "validated_lb", "validated_dm"):
        write_parquet(frame, ct_home / f"lake/validated/{name}.parquet")
    with dg.instance_for_test() as instance:
        started = time.perf_counter()
        result = dg.materialize([processed_visits], resources=profile_resources(), instance=instance, raise_on_error=False)
        assert not result.success and time.perf_counter() - started < 30
        text = _failure_text(instance, result.run_id)
        assert master in text and "Spark master" in text


def test_spark_probe_passes_a_listening_master_and_names_the_dead_one():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        probe_spark_master(f"spark://127.0.0.1:{listener.getsockname()[1]}")  # answers: no error
    dead = f"spark://127.0.0.1:{free_port()}"
    with pytest.raises(ServiceUnavailable, match=dead):
        probe_spark_master(dead)
    probe_spark_master("local[*]")  # nothing to probe


def test_a_stopped_spark_session_is_replaced_on_the_next_attempt():
    """A failed attempt can leave the session stopped; the retry must get a live one (in a child
    process: the test session's own Spark must stay up)."""
    code = (
        "from ct_assets.defs.resources import Spark\n"
        "from ct_assets.settings import spark_config\n"
        "r = Spark(spark_config=spark_config())\n"
        "first = r.spark_session\n"
        "first.stop()\n"
        "second = r.spark_session\n"
        "assert second.sparkContext._jsc is not None\n"
        "assert second.range(3).count() == 3\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
