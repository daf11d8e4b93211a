"""The model server against a real MLflow registry, started on a free 127.0.0.1 port: routing
split and stickiness, alias switch and rollback picked up without restart, bad input rejected with
a reason, a burst of malformed requests survived, predictions logged with their version; hostile
requests (raw ids, huge or non-JSON bodies, absurd values, no token) refused and never logged; the
API fuzzed from its OpenAPI document."""

import contextlib
import json
import os
import queue
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pandas as pd
import pytest

from ct_assets.core import training as training_logic
from ct_assets.core.privacy import SPLIT_BUCKET, SUBJECT_KEY
from ct_assets.core.registry import CHALLENGER, CHAMPION, ensure_experiment, point_mlflow, promote, rollback
from ct_assets.core.tracking import log_candidate, register_challenger
from ct_assets.serving.server import serving_token
from tests.conftest import ROOT, private_home
from tests.kafka_broker import free_port
from tests.procs import stop_group

NAME = "adverse-event-predictor"


def key(i: int) -> str:
    """A well-formed pseudonym (S- and 20 hex digits) outside the training set's."""
    return f"S-{i + 10**9:020x}"


class Server(str):
    """The server's URL, with its pid and what it printed."""

    pid: int
    lines: list


def _training_set(n: int = 240, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    df = pd.DataFrame(x, columns=["HR_change", "SYSBP_slope", "ALT_last", "AGE"])
    df["AGE"] = 60 + 10 * df["AGE"]
    df["SEX"] = rng.choice(["F", "M"], n)
    df["ARMCD"] = rng.choice(["Pbo", "Xan_Hi"], n)
    df.loc[rng.random(n) < 0.2, "ALT_last"] = np.nan  # sparse labs: null is a valid value
    df[training_logic.LABEL] = (rng.random(n) < 1 / (1 + np.exp(-1.5 * x[:, 0]))).astype(int)
    df[SUBJECT_KEY] = [f"S-{i:020x}" for i in range(n)]
    df[SPLIT_BUCKET] = rng.integers(0, 2**16, n)
    df[training_logic.SPLIT] = np.where(np.arange(n) % 4 == 0, "holdout", "train")
    return df


@contextlib.contextmanager
def trained_registry(home_dir, strengths: tuple[float, ...]):
    """MLflow on SQLite under a private $CT_HOME at ``home_dir``: one registered version per regularisation
    strength, trained on the synthetic set, version 1 the champion. Yields (home, uri, client, training set)."""
    with private_home(home_dir) as home:
        uri = f"sqlite:///{home / 'mlflow.db'}"
        point_mlflow(uri)
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        ts = _training_set()
        for C in strengths:
            with mlflow.start_run(experiment_id=ensure_experiment(uri, NAME)):
                record = log_candidate(ts, training_logic.ModelParams(C=C), source="synthetic")
            register_challenger(client, NAME, record["model_uri"], 0.7, training_logic.holdout_of(ts), 0.0, 1.0, {})
        promote(client, NAME, 1)
        yield home, uri, client, ts


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Two registered versions: 1 is champion, 2 is challenger."""
    with trained_registry(tmp_path_factory.mktemp("serve") / "ct", (0.05, 1.0)) as (home, _, client, ts):
        client.set_registered_model_alias(NAME, CHALLENGER, 2)
        yield home, client, ts


def start_server(*args: str) -> tuple[subprocess.Popen, Server]:
    """``python -m ct_assets.serving`` on a free port, as `make serve` runs it; returns once it has
    printed its URL, which it does only when /ready is true."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ct_assets.serving", "--port", str(port), *args], cwd=ROOT,
                            env=dict(os.environ), start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = Server(f"http://127.0.0.1:{port}")
    url.pid, url.lines = proc.pid, []
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    deadline = time.monotonic() + 120
    while not any(line.startswith("serving ") for line in url.lines):
        assert proc.poll() is None, "".join(url.lines)
        assert time.monotonic() < deadline, "the server did not say it was serving"
        try:
            url.lines.append(lines.get(timeout=0.5))
        except queue.Empty:
            pass
    assert _get(url, "/ready")["ready"] is True  # announced only once ready
    assert f"on {url} " in url.lines[-1]
    return proc, url


@pytest.fixture(scope="module")
def server(registry):
    """One server for the module, with /predict behind the token too (--require-auth)."""
    proc, url = start_server("--challenger-share", "0.2", "--reload-seconds", "0.5", "--require-auth")
    yield url
    stop_group(proc)


def _auth(token: str | None = "default") -> dict:
    token = serving_token() if token == "default" else token
    return {"Authorization": f"Bearer {token}"} if token else {}


def _get(url: str, path: str, token: str | None = None) -> dict:
    with urllib.request.urlopen(urllib.request.Request(url + path, headers=_auth(token)), timeout=10) as resp:
        return json.loads(resp.read())


def _status(url: str, path: str, method: str = "GET", token: str | None = None, **headers) -> int:
    req = urllib.request.Request(url + path, data=b"" if method == "POST" else None, method=method,
                                 headers=_auth(token) | headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def _post(url: str, body, token: str | None = "default", content_type: str | None = "application/json") -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = _auth(token) | ({"Content-Type": content_type} if content_type else {})
    try:
        with urllib.request.urlopen(urllib.request.Request(url + "/predict", data, headers), timeout=30) as resp:
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
    instances = [_instance(row, key(i)) for i in range(3000)]
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
        json.dumps({"subject_key": key(1), "features": {"AGE": "old"}}).encode(): "'AGE' must be a number",
        json.dumps({"subject_key": key(1), "features": {"SEX": 1}}).encode(): "'SEX' must be a string",
        json.dumps({"subject_key": key(1), "features": {"USUBJID": "01-701-1015"}}).encode(): "unknown feature",
        json.dumps({"instances": []}).encode(): "non-empty",
    }
    for body, reason in cases.items():
        status, out = _post(server, body)
        assert status == 422 and reason in out["error"], (body, out)
    for i in range(300):
        _post(server, bytes([i % 256]) * (i + 1))
    assert _get(server, "/health") == {"status": "ok"}
    assert _post(server, good)[0] == 200
    metrics = urllib.request.urlopen(server + "/metrics").read().decode()  # open, no token
    assert 'ct_predict_requests_total{status="422"}' in metrics and 'ct_served_version{alias="champion"} 1.0' in metrics


def test_alias_switch_and_rollback_are_served_without_restart(server, registry):
    home, client, ts = registry
    promote(client, NAME, 2)  # the challenger becomes champion; version 1 is kept as previous_champion
    deadline = time.monotonic() + 30
    while _get(server, "/models", "default")["champion"] != 2:
        assert time.monotonic() < deadline, "alias switch not picked up"
        time.sleep(0.2)
    assert _post(server, _instance(ts.iloc[2]))[1]["version"] == 2
    rollback(client, NAME, "test: the new champion misbehaves")
    while _get(server, "/models", "default")["champion"] != 1:
        assert time.monotonic() < deadline, "rollback not picked up"
        time.sleep(0.2)
    status, out = _post(server, _instance(ts.iloc[2], key(7)))
    assert status == 200 and out["version"] in (1, 2) and (out["alias"] == CHAMPION) == (out["version"] == 1)


def test_every_prediction_is_logged_with_its_version(server, registry):
    home, _, ts = registry
    logged_key = key(8)
    _post(server, _instance(ts.iloc[3], logged_key))
    path = home / "serving" / "predictions.jsonl"
    deadline = time.monotonic() + 10
    while not (path.exists() and logged_key in path.read_text()):
        assert time.monotonic() < deadline, "prediction not logged"
        time.sleep(0.2)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    logged = [json.loads(line) for line in path.read_text().splitlines()]
    entry = next(e for e in logged if e["subject_key"] == logged_key)
    assert set(entry) == {"subject_key", "risk", "alias", "version", "ts", "what_if"}  # features sent: what-if
    assert not any("01-7" in line for line in path.read_text().splitlines())  # pseudonyms only


def test_deployment_assets_reload_the_server_and_report_the_arms(server, registry):
    """model_deployment against the running server, the KServe manifest, and the A/B report from the
    server's own prediction log joined with the labels."""
    import dagster as dg
    import yaml

    from ct_assets.core import lake as lake_io
    from ct_assets.definitions import defs
    from ct_assets.defs import keys
    from ct_assets.defs.resources import Lake

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
        # Every prediction here was sent with its features (what-if: this module has no online store), so the
        # A/B report leaves them all out ...
        assert result.output_for_node("ab_test_report")["decision"] == "insufficient data"
        # ... and the same log, as predictions served by key would be, gives both arms and a test.
        from ct_assets.defs.deployment import served_arms_test

        logged = pd.read_json(home / "serving" / "predictions.jsonl", lines=True)
        assert logged["what_if"].eq(True).all()
        report = served_arms_test(logged.drop(columns="what_if"), ts[[SUBJECT_KEY, training_logic.LABEL]],
                                  {CHAMPION: 1, CHALLENGER: 2}, 0.05, 20, 500)
        report["arms"] = report["arms"].to_dict(orient="records")
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
    assert _get(server, "/models", "default")["champion_scorer"] == "numpy"


def test_model_deployment_starts_a_server_when_asked(registry):
    import signal

    import dagster as dg

    from ct_assets.definitions import defs
    from ct_assets.defs import keys

    endpoint = f"http://127.0.0.1:{free_port()}"
    config = {"ops": {"model_deployment": {"config": {"endpoint": endpoint, "start_server": True}}}}
    with dg.instance_for_test() as instance:
        result = dg.materialize(list(defs.assets), selection=[keys.MODEL_DEPLOYMENT], resources=defs.resources,
                                instance=instance, run_config=config)
    record = result.output_for_node("model_deployment")
    try:
        assert record["server"] == "running" and record["served"][CHAMPION] == record["champion_version"]
        assert _get(endpoint, "/ready")["ready"] is True
        # Without --require-auth, /predict is open; /models and /reload never are.
        assert _status(endpoint, "/models") == 401 and _status(endpoint, "/reload", "POST") == 401
        assert _post(endpoint, _instance(_training_set().iloc[0], key(9)), token=None)[0] == 200
    finally:
        os.killpg(record["server_pid"], signal.SIGTERM)


def _raw_request(url: str, head: bytes, body_chunks=()) -> tuple[int, float]:
    """A hand-made HTTP request: the status answered and the seconds it took."""
    host, port = url.split("//")[1].split(":")
    started = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        for chunk in body_chunks:
            try:
                sock.sendall(chunk)
            except OSError:  # the server answered and closed: it will read no more
                break
        data = b""
        while b"\r\n" not in data and (part := sock.recv(4096)):
            data += part
    return int(data.split(b" ")[1]), time.perf_counter() - started


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024


def test_raw_subject_ids_are_refused_and_never_logged(server, registry):
    from ct_assets.core.privacy import is_pseudonym

    home, _, ts = registry
    good = _instance(ts.iloc[4])
    for bad in ["01-701-1015", "S-" + "A" * 20, key(1) + "\n", key(1)[:-1], "S-" + "g" * 20, " " + key(1),
                "x" * 100_000, 17, None]:
        status, out = _post(server, good | {"subject_key": bad})
        assert status == 422 and "pseudonym" in out["error"], (bad, out)
        assert str(bad).strip() not in out["error"]  # a refused id is not even echoed
    huge = json.dumps(good | {"subject_key": "x" * 10 * 2**20}).encode()  # 10 MB: refused unread
    head = (f"POST /predict HTTP/1.1\r\nHost: {server.split('//')[1]}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {serving_token()}\r\nContent-Length: {len(huge)}\r\n\r\n").encode()
    assert _raw_request(server, head, [huge[i:i + 2**16] for i in range(0, len(huge), 2**16)])[0] == 413
    assert _post(server, {"instances": [good, good | {"subject_key": "01-701-1023"}]})[0] == 422  # nothing of it served
    time.sleep(1.5)  # the log is flushed every second
    lines = (home / "serving" / "predictions.jsonl").read_text().splitlines()
    assert lines and all(is_pseudonym(json.loads(line)["subject_key"]) for line in lines)
    assert max(len(line) for line in lines) < 200


def test_oversized_and_non_json_bodies_are_refused_unread(server, registry):
    _, _, ts = registry
    host, token = server.split("//")[1], serving_token()
    rss = _rss_mib(server.pid)
    announced = (f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                 f"Authorization: Bearer {token}\r\nContent-Length: {600 * 2**20}\r\n\r\n").encode()
    status, seconds = _raw_request(server, announced, [b"[" * 65536] * 8)  # 600 MB announced
    assert status == 413 and seconds < 2, seconds
    chunked = (f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
               f"Authorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    status, _ = _raw_request(server, chunked, [b"%x\r\n%s\r\n" % (65536, b" " * 65536)] * 48)  # 3 MiB, no length
    assert status == 413
    started = time.perf_counter()
    assert _get(server, "/health") == {"status": "ok"} and time.perf_counter() - started < 0.5
    assert _rss_mib(server.pid) - rss < 20, "the refused bodies were buffered"
    good = _instance(ts.iloc[5])
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        status, out = _post(server, good, content_type=content_type)
        assert status == 415 and "application/json" in out["error"], content_type
    assert _post(server, good, content_type="application/json; charset=utf-8")[0] == 200
    batch = {"instances": [_instance(r, key(i)) for i, (_, r) in enumerate(ts.iloc[[0] * 1000].iterrows())]}
    assert len(json.dumps(batch)) < 2**20 and _post(server, batch)[0] == 200  # a full batch fits


def test_absurd_values_and_missing_demographics_are_refused(server, registry):
    _, _, ts = registry
    good = _instance(ts.iloc[6])
    for name, value in [("AGE", 1e308), ("HR_change", 1e30), ("SYSBP_slope", -1e308), ("ALT_last", 1e300),
                        ("AGE", -1), ("AGE", 121), ("HR_change", 2**70)]:
        status, out = _post(server, good | {"features": good["features"] | {name: value}})
        assert status == 422 and f"'{name}' is out of bounds" in out["error"], (name, value, out)
    assert _post(server, good | {"features": good["features"] | {"AGE": 1e400}})[0] == 422  # inf: not JSON
    status, out = _post(server, good | {"features": {}})
    assert status == 422 and "missing required feature(s) ['AGE', 'SEX', 'ARMCD']" in out["error"]
    status, out = _post(server, good | {"features": good["features"] | {"ARMCD": None}})
    assert status == 422 and "['ARMCD']" in out["error"]
    demographics = {f: good["features"][f] for f in ("AGE", "SEX", "ARMCD")}
    status, out = _post(server, good | {"features": demographics})  # vitals and labs may be missing
    assert status == 200 and 0.0 < out["risk"] < 1.0
    status, out = _post(server, good | {"features": good["features"] | {"AGE": 119.5, "HR_change": 8.0}})
    assert status == 200 and 0.0 < out["risk"] < 1.0  # extreme but plausible and near enough the training data


def test_cheap_limits_are_judged_before_any_lookup(server, registry):
    """No online store here: a request by key that reached a lookup would get 404. These get 422 first."""
    _, _, ts = registry
    status, out = _post(server, {"instances": [{"subject_key": key(i)} for i in range(24_000)]})  # ~1 MB of keys
    assert status == 422 and "at most 1000 instances" in out["error"]
    status, out = _post(server, {"instances": [{"subject_key": key(1)}, {"subject_key": key(2)}, {"subject_key": key(1)}]})
    assert status == 422 and "repeated in the batch" in out["error"]
    good = _instance(ts.iloc[3])
    status, out = _post(server, {"instances": [{"subject_key": key(5)}, good | {"features": good["features"] | {"SEX": "M" * 10_000}}]})
    assert status == 422 and "longer than 64 characters" in out["error"]
    status, out = _post(server, {"instances": [{"subject_key": key(5)}, good | {"features": good["features"] | {"HR_change": 1e30}}]})
    assert status == 422 and "out of bounds" in out["error"]
    assert _post(server, {"subject_key": key(5)})[0] == 404  # the same key alone does reach the lookup


def test_categories_are_those_the_model_was_trained_on(server, registry):
    _, _, ts = registry
    good = _instance(ts.iloc[4])
    for value in ("X", "female", "m"):
        status, out = _post(server, good | {"features": good["features"] | {"SEX": value}})
        assert status == 422 and "'SEX' must be one of ['F', 'M']" in out["error"], out
    assert _post(server, good | {"features": good["features"] | {"ARMCD": "Xan_Lo"}})[0] == 422


def test_every_training_subject_is_scorable(server, registry):
    _, _, ts = registry
    status, out = _post(server, {"instances": [_instance(r, key(i)) for i, (_, r) in enumerate(ts.iterrows())]})
    assert status == 200 and len(out["predictions"]) == len(ts), out


def test_what_if_scoring_is_marked_and_stays_out_of_the_ab_report(server, registry):
    from ct_assets import settings
    from ct_assets.defs.deployment import served_arms_test

    _, _, ts = registry
    subject = key(77)
    assert _post(server, _instance(ts.iloc[9], subject))[0] == 200
    deadline = time.monotonic() + 20
    while True:
        logged = [json.loads(line) for line in settings.predictions_log().read_text().splitlines()]
        mine = [r for r in logged if r["subject_key"] == subject]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert mine and all(r["what_if"] is True for r in mine)
    predictions = pd.DataFrame(logged)
    labels = pd.DataFrame({SUBJECT_KEY: predictions["subject_key"].unique(), training_logic.LABEL: 1})
    report = served_arms_test(predictions, labels, {CHAMPION: 1, CHALLENGER: 2}, 0.05, 1, 10)
    assert report["decision"] == "insufficient data"  # every logged prediction here was what-if


def test_token_guards_models_reload_and_predict(server, registry):
    home, _, ts = registry
    token_file = home / "secrets" / "serving.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    for method, path in (("GET", "/models"), ("POST", "/reload")):
        assert _status(server, path, method) == 401
        assert _status(server, path, method, token="not-the-token") == 401
        assert _status(server, path, method, token="default") == 200
    good = _instance(ts.iloc[7])
    assert _post(server, good, token=None)[0] == 401 and _post(server, good, token="nope")[0] == 401
    for path in ("/health", "/ready", "/metrics", "/openapi.json"):
        assert _status(server, path) == 200, path


def test_api_conforms_to_its_openapi_document_under_fuzzing(server, tmp_path):
    """schemathesis (its CLI: the pytest plugin of 4.32 does not run on pytest 9) generates requests,
    valid and invalid, for every operation of /openapi.json, boundary values included: no 5xx,
    answers as documented, valid data accepted, invalid data refused, auth enforced where declared.
    Bounded: 10 examples per operation in the coverage phase, fuzzing stopped at 15 s (about 700
    requests), one worker, a fixed seed."""
    started = time.perf_counter()
    run = subprocess.run([os.path.join(os.path.dirname(sys.executable), "st"), "run", server + "/openapi.json",
                          "--header", f"Authorization: Bearer {serving_token()}", "--checks", "all",
                          "--phases", "examples,coverage,fuzzing", "--max-examples", "10", "--max-time", "15",
                          "--workers", "1", "--seed", "1", "--request-timeout", "10", "--warnings", "off"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout and "Coverage" in run.stdout, run.stdout[-2000:]
    assert time.perf_counter() - started < 60
