"""The model server against a real MLflow registry, started on a free 127.0.0.1 port: routing
split and stickiness, alias switch and rollback picked up without restart, bad input rejected with
a reason, a burst of malformed requests survived, predictions logged with their version."""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pandas as pd
import pytest

from ct_assets.lib.registry import CHALLENGER, CHAMPION, point_mlflow, promote, rollback
from ct_assets.lib.privacy import SPLIT_BUCKET, SUBJECT_KEY
from ct_assets.training import logic as T
from ct_assets.training.tracking import ensure_experiment, log_candidate, register_challenger
from tests.conftest import ROOT, private_home
from tests.kafka_broker import free_port
from tests.procs import stop_group

NAME = "adverse-event-predictor"


def _training_set(n: int = 240, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    df = pd.DataFrame(x, columns=["HR_change", "SYSBP_slope", "ALT_last", "AGE"])
    df["AGE"] = 60 + 10 * df["AGE"]
    df["SEX"] = rng.choice(["F", "M"], n)
    df["ARMCD"] = rng.choice(["Pbo", "Xan_Hi"], n)
    df.loc[rng.random(n) < 0.2, "ALT_last"] = np.nan  # sparse labs: null is a valid value
    df[T.LABEL] = (rng.random(n) < 1 / (1 + np.exp(-1.5 * x[:, 0]))).astype(int)
    df[SUBJECT_KEY] = [f"S-{i:020x}" for i in range(n)]
    df[SPLIT_BUCKET] = rng.integers(0, 2**16, n)
    df[T.SPLIT] = np.where(np.arange(n) % 4 == 0, "holdout", "train")
    return df


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Two registered versions: 1 is champion, 2 is challenger."""
    with private_home(tmp_path_factory.mktemp("serve") / "ct") as home:
        uri = f"sqlite:///{home / 'mlflow.db'}"
        point_mlflow(uri)
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        ts = _training_set()
        for C in (0.05, 1.0):
            with mlflow.start_run(experiment_id=ensure_experiment(uri, NAME)):
                record = log_candidate(ts, T.ModelParams(C=C), source="synthetic")
            register_challenger(client, NAME, record["model_uri"], 0.7, T.holdout_of(ts), 0.0, 1.0, {})
        promote(client, NAME, 1)
        client.set_registered_model_alias(NAME, CHALLENGER, 2)
        yield home, client, ts


@pytest.fixture(scope="module")
def server(registry):
    home, client, ts = registry
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ct_assets.serving", "--port", str(port), "--challenger-share", "0.2",
                             "--reload-seconds", "0.5"], cwd=ROOT, env=dict(os.environ), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if _get(url, "/ready")["ready"]:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "the server did not become ready"
        time.sleep(0.5)
    yield url
    stop_group(proc)


def _get(url: str, path: str) -> dict:
    with urllib.request.urlopen(url + path, timeout=10) as resp:
        return json.loads(resp.read())


def _post(url: str, body) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url + "/predict", data), timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _instance(row: pd.Series, key: str | None = None) -> dict:
    features = {c: (None if pd.isna(row[c]) else (row[c] if isinstance(row[c], str) else float(row[c])))
                for c in ("HR_change", "SYSBP_slope", "ALT_last", "AGE", "SEX", "ARMCD")}
    return {"subject_key": key or row[SUBJECT_KEY], "features": features}


def test_predictions_split_by_share_and_stick_to_the_subject(server, registry):
    _, _, ts = registry
    row = ts.iloc[0]
    instances = [_instance(row, f"S-{i:020x}-x") for i in range(3000)]
    status, out = _post(server, {"instances": instances[:1000]})
    assert status == 200
    arms = [p["alias"] for p in out["predictions"]]
    for chunk in (instances[1000:2000], instances[2000:]):
        arms += [p["alias"] for p in _post(server, {"instances": chunk})[1]["predictions"]]
    share = arms.count(CHALLENGER) / len(arms)
    assert abs(share - 0.2) < 0.03, share
    again = _post(server, {"instances": instances[:1000]})[1]["predictions"]
    assert [p["alias"] for p in again] == arms[:1000]  # sticky
    single = _post(server, instances[0])[1]
    assert single["alias"] == arms[0] and 0.0 < single["risk"] < 1.0
    versions = {p["alias"]: p["version"] for p in again}
    assert versions == {CHAMPION: 1, CHALLENGER: 2}


def test_bad_input_gets_a_reason_and_a_burst_does_not_hurt(server, registry):
    _, _, ts = registry
    good = _instance(ts.iloc[1])
    cases = {
        b"{nope": "malformed JSON",
        b"[1, 2]": "must be a JSON object",
        json.dumps({"features": good["features"]}).encode(): "subject_key",
        json.dumps({"subject_key": "S-1", "features": {"AGE": "old"}}).encode(): "'AGE' must be a number",
        json.dumps({"subject_key": "S-1", "features": {"SEX": 1}}).encode(): "'SEX' must be a string",
        json.dumps({"subject_key": "S-1", "features": {"USUBJID": "01-701-1015"}}).encode(): "unknown feature",
        json.dumps({"instances": []}).encode(): "non-empty",
    }
    for body, reason in cases.items():
        status, out = _post(server, body)
        assert status == 422 and reason in out["error"], (body, out)
    for i in range(300):
        _post(server, bytes([i % 256]) * (i + 1))
    assert _get(server, "/health") == {"status": "ok"}
    assert _post(server, good)[0] == 200
    metrics = urllib.request.urlopen(server + "/metrics").read().decode()
    assert 'ct_predict_requests_total{status="422"}' in metrics and 'ct_served_version{alias="champion"} 1.0' in metrics


def test_alias_switch_and_rollback_are_served_without_restart(server, registry):
    home, client, ts = registry
    promote(client, NAME, 2)  # the challenger becomes champion; version 1 is kept as previous_champion
    deadline = time.monotonic() + 30
    while _get(server, "/models")["champion"] != 2:
        assert time.monotonic() < deadline, "alias switch not picked up"
        time.sleep(0.2)
    assert _post(server, _instance(ts.iloc[2]))[1]["version"] == 2
    rollback(client, NAME)
    while _get(server, "/models")["champion"] != 1:
        assert time.monotonic() < deadline, "rollback not picked up"
        time.sleep(0.2)
    status, out = _post(server, _instance(ts.iloc[2], "S-rollback"))
    assert status == 200 and out["version"] in (1, 2) and (out["alias"] == CHAMPION) == (out["version"] == 1)


def test_every_prediction_is_logged_with_its_version(server, registry):
    home, _, ts = registry
    _post(server, _instance(ts.iloc[3], "S-logged"))
    path = home / "serving" / "predictions.jsonl"
    deadline = time.monotonic() + 10
    while not (path.exists() and "S-logged" in path.read_text()):
        assert time.monotonic() < deadline, "prediction not logged"
        time.sleep(0.2)
    logged = [json.loads(line) for line in path.read_text().splitlines()]
    entry = next(e for e in logged if e["subject_key"] == "S-logged")
    assert set(entry) == {"subject_key", "risk", "alias", "version", "ts"}
    assert not any("01-7" in line for line in path.read_text().splitlines())  # pseudonyms only


def test_deployment_assets_reload_the_server_and_report_the_arms(server, registry):
    """model_deployment against the running server, the KServe manifest, and the A/B report from the
    server's own prediction log joined with the labels."""
    import dagster as dg
    import yaml

    from ct_assets import keys
    from ct_assets.definitions import defs
    from ct_assets.lib import lake as lake_io
    from ct_assets.resources import Lake

    home, client, ts = registry
    status, out = _post(server, {"instances": [_instance(r) for _, r in ts.iterrows()]})
    assert status == 200
    lake_io.write_parquet(ts, Lake().path_for(keys.TRAINING_SET.path[-1]))  # the labels, where the graph keeps them
    time.sleep(1.5)  # the log is flushed every second
    every = list(defs.assets)
    run_config = {"ops": {"model_deployment": {"config": {"endpoint": server}},
                          "ab_test_report": {"config": {"n_resamples": 500}}}}
    with dg.instance_for_test() as instance:
        result = dg.materialize(every, selection=[keys.MODEL_DEPLOYMENT, keys.AB_TEST_REPORT], resources=defs.resources,
                                instance=instance, run_config=run_config)
        assert result.success
        record = result.output_for_node("model_deployment")
        assert record["server"] == "running" and record["served"][CHAMPION] == record["champion_version"] == 1
        report = result.output_for_node("ab_test_report")
        arms = {a["alias"]: a for a in report["arms"]}
        assert set(arms) == {CHAMPION, CHALLENGER} and arms[CHALLENGER]["version"] == 2
        assert sum(a["subjects"] for a in arms.values()) == len(ts)
        assert 0.0 < report["p_value"] <= 1.0 and report["decision"] in (
            "promote challenger", "keep champion", "keep champion (no significant difference)")

        kserve = {"ops": {"model_deployment": {"config": {"target": "kserve"}}}}
        result = dg.materialize(every, selection=[keys.MODEL_DEPLOYMENT], resources=defs.resources, instance=instance,
                                run_config=kserve)
    manifest = yaml.safe_load(open(result.output_for_node("model_deployment")["manifest"]))
    assert manifest["kind"] == "InferenceService" and manifest["spec"]["predictor"]["canaryTrafficPercent"] == 10


def test_numpy_scorer_reproduces_the_pipeline(registry, server):
    """The compiled scorer of the logistic model equals predict_proba on every subject, with
    missing labs and unseen categories; the server uses it for the champion."""
    from ct_assets.serving.fastpath import compile_linear

    _, _, ts = registry
    model = mlflow.sklearn.load_model(f"models:/{NAME}/1")
    features = list(model.feature_names_in_)
    frame = ts[features].copy()
    frame.loc[::7, "SEX"] = "X"  # unseen category
    frame.loc[::5, "AGE"] = np.nan
    rows = [[(v if isinstance(v, str) else float(v)) for v in r] for r in frame.itertuples(index=False)]
    scorer = compile_linear(model, features)
    np.testing.assert_allclose(scorer(rows), model.predict_proba(frame)[:, 1], rtol=0, atol=1e-12)
    assert _get(server, "/models")["champion_scorer"] == "numpy"


def test_model_deployment_starts_a_server_when_asked(registry):
    import signal

    import dagster as dg

    from ct_assets import keys
    from ct_assets.definitions import defs

    endpoint = f"http://127.0.0.1:{free_port()}"
    config = {"ops": {"model_deployment": {"config": {"endpoint": endpoint, "start_server": True}}}}
    with dg.instance_for_test() as instance:
        result = dg.materialize(list(defs.assets), selection=[keys.MODEL_DEPLOYMENT], resources=defs.resources,
                                instance=instance, run_config=config)
    record = result.output_for_node("model_deployment")
    try:
        assert record["server"] == "running" and record["served"][CHAMPION] == record["champion_version"]
        assert _get(endpoint, "/ready")["ready"] is True
    finally:
        os.killpg(record["server_pid"], signal.SIGTERM)
