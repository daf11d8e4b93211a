"""The feature store (Feast) with the real Redis on 127.0.0.1:6379 (a database and a Feast project of
the tests' own, torn down at the end): point-in-time training sets that never use a value stamped
after a subject's landmark; the online_features asset and its check; the model server scoring a
subject by key from Redis (model version and feature timestamp in the answer, 404 for an unknown key,
sent features still scored); the serving-skew check passing on what was served and failing, with the
feature named, once the offline store disagrees."""

import json
import os
import time
import urllib.error
import urllib.request

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
import pytest

from ct_assets.adapters import feast_layout
from ct_assets.adapters import feature_store as fs
from ct_assets.core import training as training_logic
from ct_assets.core.features import subject_features as build_features
from ct_assets.core.lake import write_parquet
from ct_assets.core.privacy import SPLIT_BUCKET, SUBJECT_KEY
from ct_assets.core.registry import ensure_experiment, point_mlflow, promote
from tests.conftest import private_home
from tests.integration.test_serving import start_server
from tests.procs import stop_group

REDIS_DB = 11
NAME = "adverse-event-predictor"
LANDMARK = 30


def _redis_up() -> bool:
    import redis

    try:
        return redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB, socket_timeout=2).ping()
    except redis.exceptions.ConnectionError:
        return False


pytestmark = pytest.mark.skipif(os.environ.get("CI") != "true" and not _redis_up(),
                                reason="Redis on 127.0.0.1:6379 is not running (CI must have it)")


def study(n: int = 80, seed: int = 7):
    """``n`` subjects enrolled over a year, visits from day -7 to 90, exposure, pseudonymous keys."""
    rng = np.random.default_rng(seed)
    keys = [f"S-{i:020x}" for i in range(n)]
    start = pd.Timestamp("2013-01-05") + pd.to_timedelta(rng.integers(0, 360, n), unit="D")
    dm = pd.DataFrame({SUBJECT_KEY: keys, "RFSTDTC": start.strftime("%Y-%m-%d"), "AGE": rng.normal(72, 7, n).round(),
                       "SEX": rng.choice(["F", "M"], n), "RACE": rng.choice(["WHITE", "BLACK"], n),
                       "ARMCD": rng.choice(["Pbo", "Xan_Hi"], n), SPLIT_BUCKET: rng.integers(0, 2**16, n)})
    days = np.arange(-7, 91, 14)
    visits = pd.DataFrame([(k, i + 1, float(d), int(rng.integers(0, 3)), 2) for k in keys for i, d in enumerate(days)],
                          columns=[SUBJECT_KEY, "VISITNUM", "STUDY_DAY", "N_ABNORMAL", "N_RESULTS"])
    visits["EARLIEST_DAY"] = visits["LATEST_DAY"] = visits["STUDY_DAY"]
    visits["VS_SYSBP"] = rng.normal(130, 12, len(visits))
    visits["LB_ALT"] = rng.normal(25, 6, len(visits))
    ex = pd.DataFrame({SUBJECT_KEY: keys, "EXSTDY": 1.0, "EXENDY": rng.integers(5, 80, n).astype(float), "EXDOSE": 54.0,
                       "EXSTDTC": None, "EXENDTC": None})
    return dm, visits, ex


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """$CT_HOME with the offline store written as subject_features writes it, Redis as online store."""
    project = f"ct_test_{os.getpid()}"
    with private_home(tmp_path_factory.mktemp("fstore") / "ct") as home, pytest.MonkeyPatch.context() as mp:
        mp.setenv("CT_REDIS_URL", f"redis://127.0.0.1:6379/{REDIS_DB}")
        mp.setenv("CT_FEAST_PROJECT", project)
        from ct_assets.defs.resources import FeatureStore

        dm, visits, ex = study()
        features = build_features(visits, dm, ex, LANDMARK)
        offline = fs.stamp(features, dm, LANDMARK)
        resource = FeatureStore()
        write_parquet(offline, resource.store_settings().offline_path)
        yield home, resource, dm, features
        resource.store().teardown()  # the project's keys out of Redis
        import redis

        leftover = [k for k in redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).scan_iter(count=1000)
                    if project.encode() in k]
        assert not leftover, f"{len(leftover)} keys of {project} left in Redis db {REDIS_DB}"


def test_training_set_is_as_of_each_landmark_and_ignores_a_planted_late_value(home):
    _, resource, dm, features = home
    s = resource.store_settings()
    offline = pd.read_parquet(s.offline_path)
    a, b = offline[SUBJECT_KEY].iloc[0], offline[SUBJECT_KEY].iloc[1]
    # A: a value stamped one day after A's landmark (data the model must not see). B: a correction stamped
    # at B's landmark, computed later: it is what B's features were at the landmark, and must be used.
    late = offline[offline[SUBJECT_KEY] == a].assign(VS_SYSBP__last=999.0)
    late[fs.EVENT_TS] += pd.Timedelta(days=1)
    fix = offline[offline[SUBJECT_KEY] == b].assign(VS_SYSBP__last=111.0)
    fix[fs.CREATED_TS] += pd.Timedelta(hours=1)
    write_parquet(pd.concat([offline, late, fix], ignore_index=True), s.offline_path)
    try:
        store = resource.store()
        fs.apply(store, s)
        got = fs.training_features(store, s, dm, LANDMARK).set_index(SUBJECT_KEY)
        assert len(got) == len(dm) and list(got.columns) == [c for c in features.columns if c != SUBJECT_KEY]
        assert got.loc[a, "VS_SYSBP__last"] == features.set_index(SUBJECT_KEY).loc[a, "VS_SYSBP__last"] != 999.0
        assert got.loc[b, "VS_SYSBP__last"] == 111.0
        others = features.set_index(SUBJECT_KEY).drop(index=[a, b])
        pd.testing.assert_frame_equal(got.drop(index=[a, b]).loc[others.index], others, check_dtype=False)
        # One day earlier as of, A's row is not known yet at all: A drops out rather than get later data.
        entities = pd.DataFrame({SUBJECT_KEY: [a], fs.ENTITY_TS: offline.loc[offline[SUBJECT_KEY] == a, fs.EVENT_TS]
                                 - pd.Timedelta(days=1)})
        assert fs.as_of(store, s, entities).empty
    finally:
        write_parquet(offline, s.offline_path)


def test_online_features_asset_fills_redis_and_its_check_can_fail(home):
    from ct_assets.defs.features import online_check, online_features

    _, resource, dm, features = home
    s, store = resource.store_settings(), resource.store()
    # A subject online that the offline store no longer has (withdrawn since) is removed, not served.
    fs.apply(store, s)
    gone = pd.read_parquet(s.offline_path).head(1).assign(**{SUBJECT_KEY: "S-" + "a" * 20})
    fs.write_online(store, gone)
    assert "S-" + "a" * 20 in fs.online_subjects(store, s)
    result = dg.materialize([online_features], resources={"feature_store": resource})
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert [c.passed for c in checks] == [True], checks[0].description
    md = result.asset_materializations_for_node("online_features")[0].metadata
    assert md["dagster/row_count"].value == md["subjects"].value == len(dm) and md["online_store"].value == "redis"
    assert md["pruned"].value == 1 and fs.read_online(store, ["S-" + "a" * 20], ["AGE"]) == [None]
    assert set(fs.online_subjects(store, s)) == set(dm[SUBJECT_KEY])

    key = features[SUBJECT_KEY].iloc[5]
    values, ts = fs.read_online(store, [key], ["AGE", "VS_SYSBP__change", "SEX"])[0]
    row = features.set_index(SUBJECT_KEY).loc[key]
    assert values == {"AGE": row["AGE"], "VS_SYSBP__change": row["VS_SYSBP__change"], "SEX": row["SEX"]}
    assert ts == int(fs.landmark_time(dm.set_index(SUBJECT_KEY).loc[[key], "RFSTDTC"], LANDMARK).iloc[0].timestamp())
    assert fs.read_online(store, ["S-" + "f" * 20], ["AGE"]) == [None]
    # The server's reader (one HGETALL per subject on Feast's layout) answers exactly as get_online_features.
    import asyncio

    reader = fs.OnlineReader(store, s.redis_url)
    every = features[SUBJECT_KEY].tolist() + ["S-" + "f" * 20]
    expected = fs.read_online(store, every, reader.names)
    assert asyncio.run(reader.read_async(every)) == expected == reader.read(every)
    assert asyncio.run(reader.read_async([key])) == expected[5:6] and expected[-1] is None

    # A wrong value online (written behind the store's back) is found and named by the check.
    latest = fs.latest_rows(pd.read_parquet(s.offline_path))
    wrong = latest[latest[SUBJECT_KEY] == key].assign(LB_ALT__slope=42.0)
    fs.write_online(store, wrong)
    verdict = fs.verify_online(store, s, latest, sample=len(latest))
    assert verdict["differing_features"] == {"LB_ALT__slope": 1}
    failed = online_check(verdict, len(latest))
    assert not failed.passed and "LB_ALT__slope" in failed.description
    extra = online_check(verdict | {"differing_features": {}, "online_rows": len(latest) + 2}, len(latest))
    assert not extra.passed and "2 subjects online that the offline store does not have" in extra.description
    fs.write_online(store, latest[latest[SUBJECT_KEY] == key])  # put it right for the tests after


@pytest.mark.parametrize("online", ["sqlite", "redis"])
def test_online_write_is_byte_for_byte_what_feast_materialize_writes(home, tmp_path, monkeypatch, online):
    """materialize_latest writes the online store itself, for the whole view at once (issue 16): its
    SQLite rows and Redis hashes must be exactly those Feast's own materialize writes for the same
    offline store, awkward values included, and Feast's reads must answer the same."""
    import redis

    from ct_assets.defs.resources import FeatureStore

    _, _, dm, _ = home
    offline = pd.read_parquet(FeatureStore().store_settings().offline_path).head(30).reset_index(drop=True)
    odd = [np.nan, -0.0, 0.0, np.inf, -np.inf, 1e300, 5e-324, 0.1, 3.0, -123456789.125]
    offline.loc[: len(odd) - 1, "VS_SYSBP__change"] = odd
    offline.loc[0, "SEX"], offline.loc[1, "SEX"], offline.loc[2, "RACE"] = None, "Ü ñ ✓", ""
    offline["LB_ALT__slope"] = np.nan  # a feature no subject has
    offline["AGE"] = offline["AGE"].fillna(0).astype("int64")  # integers in a Float64 feature
    # A correction of subject 3 (same landmark, computed later) and an older row of subject 4: the latest wins.
    fix = offline.iloc[[3]].assign(AGE=99)
    fix[fs.CREATED_TS] += pd.Timedelta(hours=1)
    old = offline.iloc[[4]].assign(AGE=11)
    old[fs.EVENT_TS] -= pd.Timedelta(days=3)
    offline = pd.concat([offline, fix, old], ignore_index=True)
    if online == "sqlite":
        monkeypatch.delenv("CT_REDIS_URL")
    monkeypatch.setattr(feast_layout, "WRITE_CHUNK", 8)  # several chunks, the last one short
    monkeypatch.setattr(feast_layout, "WRITE_GROUP", 7)  # SQLite: several statements per subject, the last one short
    stores = {}
    for way in ("feast", "ours"):
        resource = FeatureStore(root=str(tmp_path / way), project=f"ct_test_{os.getpid()}_{way}")  # a registry each
        s = resource.store_settings()
        write_parquet(offline, s.offline_path)
        store = resource.store()
        fs.apply(store, s)
        with monkeypatch.context() as mp:
            if way == "feast":
                mp.setattr(fs, "writes_like_feast", lambda config, view: False)  # Feast's own materialize
            else:
                assert fs.writes_like_feast(store.config, store.get_feature_view(fs.FEATURE_VIEW))
            fs.materialize_latest(store, s)
        stores[way] = (store, s)
    try:
        (feast, sf), (ours, so) = stores["feast"], stores["ours"]
        if online == "sqlite":
            import sqlite3

            def rows(s):
                table = f"{s.project}_{fs.FEATURE_VIEW}"
                with sqlite3.connect(s.online_path) as conn:
                    return conn.execute(f'SELECT entity_key, feature_name, value, value_text, vector_value, event_ts, '
                                        f'created_ts, typeof(value), typeof(event_ts) FROM "{table}" '
                                        "ORDER BY entity_key, feature_name").fetchall()

            written = rows(so)
            assert written == rows(sf) and len(written) == 30 * len(fs.feature_names(so.offline_path))
        else:
            client = redis.Redis.from_url(so.redis_url)

            def hashes(s):
                suffix = s.project.encode()
                return {k[:-len(suffix)]: client.hgetall(k) for k in client.scan_iter(match=b"*" + suffix, count=1000)}

            written = hashes(so)
            assert written == hashes(sf) and len(written) == 30
        names = list(fs.feature_names(so.offline_path))
        every = offline[SUBJECT_KEY].drop_duplicates().tolist()
        assert fs.read_online(ours, every, names) == fs.read_online(feast, every, names)
        got = {k: v for k, v in zip(every, fs.read_online(ours, every, ["AGE"]))}
        assert got[offline[SUBJECT_KEY][3]][0] == {"AGE": 99.0} and got[offline[SUBJECT_KEY][4]][0]["AGE"] != 11
        intervals = [v.materialization_intervals for v in (ours.get_feature_view(fs.FEATURE_VIEW),
                                                          feast.get_feature_view(fs.FEATURE_VIEW))]
        assert intervals[0] == intervals[1] and len(intervals[0]) == 1
        latest = fs.latest_rows(offline)
        verdict = fs.verify_online(ours, so, latest, sample=len(latest))
        assert (verdict["found"], verdict["online_rows"], verdict["stale"], verdict["differing_features"]) == (30, 30, 0, {})
    finally:
        for store, _ in stores.values():
            store.teardown()


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url + "/predict", json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def champion(home):
    """A model trained on the store's features (synthetic labels), registered and champion. A fifth of the subjects
    are left out of training, as subjects with an event before the landmark are: the server must score them too."""
    from ct_assets.core.tracking import log_candidate, register_challenger

    root, resource, dm, features = home
    rng = np.random.default_rng(1)
    trained = features[np.arange(len(features)) % 5 != 0]
    ts = trained.assign(**{training_logic.LABEL: (rng.random(len(trained)) < 0.4).astype(int)})
    ts[SPLIT_BUCKET] = dm.set_index(SUBJECT_KEY).loc[ts[SUBJECT_KEY], SPLIT_BUCKET].to_numpy()
    ts[training_logic.SPLIT] = training_logic.assign_split(ts, 0.25)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    point_mlflow(uri)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    with mlflow.start_run(experiment_id=ensure_experiment(uri, NAME)):
        record = log_candidate(ts, training_logic.ModelParams(), source="synthetic", cv_folds=2, population=features)
    register_challenger(client, NAME, record["model_uri"], 0.7, training_logic.holdout_of(ts), 0.0, 1.0, {})
    promote(client, NAME, 1)
    return mlflow.sklearn.load_model(record["model_uri"])


@pytest.fixture(scope="module")
def server(home, champion):
    from ct_assets.defs.features import online_features

    _, resource, _, _ = home
    assert dg.materialize([online_features], resources={"feature_store": resource}).success
    proc, url = start_server("--challenger-share", "0", "--feature-log-share", "1")
    yield url
    stop_group(proc)


def test_predict_by_subject_key_from_redis(home, champion, server):
    _, _, dm, features = home
    key = features[SUBJECT_KEY].iloc[7]
    t0 = time.monotonic()
    status, out = _post(server, {"subject_key": key})
    assert status == 200, out
    row = features[features[SUBJECT_KEY] == key].drop(columns=[SUBJECT_KEY])[list(champion.feature_names_in_)]
    assert out["risk"] == pytest.approx(champion.predict_proba(row)[0, 1], abs=1e-9)  # the store's values were scored
    assert out["version"] == 1 and out["features_from"] == "online_store"
    landmark = fs.landmark_time(dm.set_index(SUBJECT_KEY).loc[[key], "RFSTDTC"], LANDMARK).iloc[0]
    assert out["feature_timestamp"] == landmark.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert time.monotonic() - t0 < 60

    status, out = _post(server, {"subject_key": "S-" + "e" * 20})
    assert status == 404 and "not in the online feature store" in out["error"] and out["unknown"] == ["S-" + "e" * 20]
    status, out = _post(server, {"subject_key": "01-701-1015"})  # a raw USUBJID is never looked up
    assert status == 422 and "pseudonym" in out["error"]

    # What-if: sent features are scored as sent, with no feature timestamp.
    what_if = {c: (None if pd.isna(v) else v) for c, v in row.iloc[0].items()} | {"AGE": 50.0}
    status, out = _post(server, {"subject_key": key, "features": what_if})
    assert status == 200 and "feature_timestamp" not in out
    assert out["risk"] == pytest.approx(champion.predict_proba(row.assign(AGE=50.0))[0, 1], abs=1e-9)

    # A batch mixes both; one unknown key fails the batch with 404.
    status, out = _post(server, {"instances": [{"subject_key": key}, {"subject_key": key, "features": what_if}]})
    assert status == 200 and [p.get("features_from") for p in out["predictions"]] == ["online_store", None]
    assert _post(server, {"instances": [{"subject_key": key}, {"subject_key": "S-" + "d" * 20}]})[0] == 404


def test_every_subject_in_the_online_store_is_scored_by_key(home, server):
    """Subjects the model was trained on and those it never saw alike: the server's bounds come from the
    training values with a margin, so no real subject of the study is refused."""
    _, _, _, features = home
    keys = features[SUBJECT_KEY].tolist()
    for start in range(0, len(keys), 1000):
        status, out = _post(server, {"instances": [{"subject_key": k} for k in keys[start:start + 1000]]})
        assert status == 200, out
        assert [p["subject_key"] for p in out["predictions"]] == keys[start:start + 1000]


def test_serving_skew_check_passes_on_served_vectors_and_names_a_differing_feature(home, server):
    from ct_assets import settings
    from ct_assets.defs.features import serving_skew

    _, resource, _, features = home
    keys = features[SUBJECT_KEY].iloc[10:20].tolist()
    for k in keys:
        assert _post(server, {"subject_key": k})[0] == 200
    deadline = time.monotonic() + 20
    while len(fs.served_vectors(settings.predictions_log())) < len(keys):  # the log is flushed every second
        assert time.monotonic() < deadline, "served vectors not logged"
        time.sleep(0.3)
    ok = serving_skew(feature_store=resource)
    assert ok.passed, ok.description
    assert ok.metadata["compared"].value >= len(keys)

    s = resource.store_settings()
    offline = pd.read_parquet(s.offline_path)
    tampered = offline.copy()
    tampered.loc[tampered[SUBJECT_KEY] == keys[3], "VS_SYSBP__slope"] += 0.5
    write_parquet(tampered, s.offline_path)
    try:
        bad = serving_skew(feature_store=resource)
        assert not bad.passed
        assert "VS_SYSBP__slope (1 of" in bad.description and bad.metadata["differing_features"].value == "VS_SYSBP__slope"
    finally:
        write_parquet(offline, s.offline_path)


def test_production_profile_keeps_the_registry_in_postgresql(home, monkeypatch):
    """CT_PROFILE=production: `ct start` gives its services Feast's SQL registry in the database <prefix>_feast on
    CT_POSTGRES_URL (CT_FEAST_REGISTRY, which the production resource set requires); a second store object (another
    process, in production) finds the feature view there."""
    import shutil
    import subprocess
    import uuid

    from ct_assets.defs.resources import FeatureStore

    def psql(sql: str) -> subprocess.CompletedProcess:
        return subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql],
                              capture_output=True, text=True)

    if shutil.which("psql") is None or psql("select 1").returncode != 0:
        pytest.skip("no PostgreSQL server on 127.0.0.1:5432")
    prefix = f"ct_test_{uuid.uuid4().hex[:8]}"
    assert psql(f"create database {prefix}_feast").returncode == 0
    monkeypatch.setenv("CT_PROFILE", "production")
    monkeypatch.setenv("CT_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
    monkeypatch.setenv("CT_POSTGRES_DB_PREFIX", prefix)
    from ct_assets.ops.stack import stack_env

    registry = stack_env()["CT_FEAST_REGISTRY"]
    assert registry == f"postgresql+psycopg://postgres@127.0.0.1:5432/{prefix}_feast"
    monkeypatch.setenv("CT_FEAST_REGISTRY", registry)  # as a service of `ct start` sees it
    resource = FeatureStore(project=f"ct_test_pg_{os.getpid()}")
    s = resource.store_settings()
    assert s.registry == registry
    store = resource.store()
    try:
        fs.apply(store, s)
        fs.materialize_latest(store, s)
        again = resource.store()
        assert [v.name for v in again.list_feature_views()] == [fs.FEATURE_VIEW]
        key = home[3][SUBJECT_KEY].iloc[0]
        assert fs.read_online(again, [key], ["AGE"])[0][0] == {"AGE": home[3].set_index(SUBJECT_KEY).loc[key, "AGE"]}
    finally:
        store.teardown()
        psql(f"drop database if exists {prefix}_feast with (force)")
