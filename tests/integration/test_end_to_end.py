"""The whole graph on real studies, with a real Dagster instance, Spark session and MLflow store."""

import json
import os
import subprocess
import sys

import dagster as dg
import mlflow
import pandas as pd
import pytest

from ct_assets import settings
from ct_assets.core.registry import point_mlflow
from ct_assets.core.sdtm import DOMAINS
from ct_assets.definitions import defs
from ct_assets.defs import keys
from tests.conftest import ROOT, private_home
from tests.studies import build_other_study, pilot_dir, raw_subject_ids, scan_for

MODEL = settings.MODEL_NAME


@pytest.fixture(scope="module")
def pilot_run(tmp_path_factory):
    """One run of the whole graph on the bundled CDISC pilot study, shared by the tests below."""
    with private_home(tmp_path_factory.mktemp("pilot") / "ct") as home, dg.DagsterInstance.get() as instance:
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance)
        yield home, result, instance


def _client(home):
    uri = f"sqlite:///{home / 'mlflow.db'}"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_every_asset_materializes(pilot_run):
    _, result, _ = pilot_run
    assert result.success
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert materialized == set(defs.resolve_all_asset_keys())
    assert all(c.passed for c in result.get_asset_check_evaluations())


def test_every_study_subject_is_scored_by_key(pilot_run):
    """The pilot's subjects from the online store, those the model was trained on and those the training set leaves
    out alike (an event before the landmark): none is refused by the server's input checks."""
    import pyarrow.parquet as pq

    from tests.integration.test_serving import _post, start_server
    from tests.procs import stop_group

    home, _, _ = pilot_run
    subjects = sorted({str(k) for k in pq.read_table(home / "feature_store/subject_features.parquet",
                                                     columns=["SUBJECT_KEY"]).column(0)})
    proc, url = start_server("--challenger-share", "0")
    try:
        status, out = _post(url, {"instances": [{"subject_key": k} for k in subjects]})
    finally:
        stop_group(proc)
    assert status == 200, out
    assert len(subjects) == 254 and all(p["features_from"] == "online_store" for p in out["predictions"])


def test_counts_reconcile_for_every_domain(pilot_run):
    home, _, _ = pilot_run
    for domain in DOMAINS:
        d = domain.lower()
        raw = pd.read_parquet(home / f"lake/raw/raw_{d}.parquet")
        validated = pd.read_parquet(home / f"lake/validated/validated_{d}.parquet")
        quarantined = pd.read_parquet(home / f"lake/quarantine/quarantine_{d}.parquet")
        assert len(raw) == len(validated) + len(quarantined) > 0, domain


def test_features_cover_on_study_subjects(pilot_run):
    home, _, _ = pilot_run
    features = pd.read_parquet(home / "feature_store/subject_features.parquet")
    dm = pd.read_parquet(pilot_dir() / "dm.parquet")
    assert len(features) == dm["RFSTDTC"].notna().sum() == 254  # screen failures have no day 1
    assert {"VS_SYSBP__baseline", "LB_ALT__slope", "EXPOSURE_DAYS_WINDOW", "AGE", "ARMCD"} <= set(features.columns)
    assert features["VS_SYSBP__baseline"].notna().mean() > 0.95


def test_model_registered_with_metrics_and_champion(pilot_run):
    home, _, _ = pilot_run
    client = _client(home)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert client.get_model_version_by_alias(MODEL, "challenger").version == champion.version == 1
    run = client.get_run(champion.run_id)
    for metric in ("holdout_auroc", "holdout_auprc", "holdout_brier", "cv_auroc_mean"):
        assert 0.0 <= run.data.metrics[metric] <= 1.0
    m = run.data.metrics
    assert m["holdout_auroc_ci_low"] < m["holdout_auroc"] < m["holdout_auroc_ci_high"]
    assert run.data.metrics["holdout_auroc"] > 0.6  # the gate's minimum, met on this study
    assert run.data.tags["dagster_run_id"] == pilot_run[1].run_id
    assert run.inputs.dataset_inputs[0].dataset.name == "training_set"
    # Provenance on the version, the same values as in the Dagster metadata.
    from ct_assets.core import audit, provenance

    tags = champion.tags
    sources = json.loads(tags["ct.sources"])
    assert sources["dm.parquet"] == provenance.sha256_file(pilot_dir() / "dm.parquet") and "lbch.parquet" in sources
    assert tags["ct.ruleset_version"] == provenance.ruleset_version()
    training = pd.read_parquet(home / "lake/training/training_set.parquet")
    assert tags["ct.training_set_sha256"] == provenance.frame_digest(training)
    assert {"ct.git_commit", "ct.libraries", "ct.asset_code_versions", "ct.holdout_sha256"} <= set(tags)
    registered = pilot_run[2].get_latest_materialization_event(keys.REGISTERED_MODEL).asset_materialization.metadata
    assert registered["ct.provenance"].value == tags["ct.provenance"]
    # The lifecycle is in the audit log, each step with the Dagster run as actor, and the chain holds.
    log = home / "audit" / "audit.jsonl"
    actions = {(e["action"], e["object"]) for e in audit.entries(log)}
    assert {("model_registered", f"{MODEL}/1"), ("champion_gate", f"{MODEL}/1"), ("alias_set", f"{MODEL}@challenger"),
            ("alias_set", f"{MODEL}@champion"), ("approval", f"{MODEL}/1"), ("data_delivery", "DM")} <= actions
    assert all(e["actor"].startswith(f"dagster:{pilot_run[1].run_id}") for e in audit.entries(log)
               if e["action"] in ("model_registered", "alias_set"))
    assert audit.verify(log) == []
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/subgroups.json" in artifacts
    assert any(p.endswith(".png") for p in artifacts)
    point_mlflow(f"sqlite:///{home / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")  # how a server would load it
    features = pd.read_parquet(home / "feature_store/subject_features.parquet")
    proba = model.predict(features.drop(columns=["SUBJECT_KEY"]).head(3))
    assert proba.shape == (3, 2)


def test_trace_report_files_the_chain_from_sources_to_serving(pilot_run):
    home, _, _ = pilot_run
    env = os.environ | {"CT_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    env.pop("MLFLOW_TRACKING_URI", None)
    ct = os.path.join(os.path.dirname(sys.executable), "ct")
    out = subprocess.run([ct, "audit", "trace", MODEL, "1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    report = (home / "reports" / f"trace-{MODEL}-1.md").read_text()
    from ct_assets.core import provenance

    assert provenance.sha256_file(pilot_dir() / "dm.parquet") in report  # the source file's digest
    assert "Aliases now: champion, challenger" in report and "### Subgroups" in report and "![calibration](" in report
    assert "| approval |" in report and "| alias_set |" in report
    verify = subprocess.run([ct, "audit", "verify"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0 and "chain intact" in verify.stdout


def test_no_raw_subject_id_reaches_features_models_mlflow_or_logs(pilot_run):
    home, _, _ = pilot_run
    ids = raw_subject_ids(pilot_dir())
    allowed = {home / "lake/raw", home / "lake/quarantine"}  # the restricted source zones
    roots = [p for p in home.iterdir() if p.is_dir() and p.name != "lake" and p.name != "secrets"]
    roots += [p for p in (home / "lake").iterdir() if p not in allowed]
    roots.append(home / "mlflow.db")
    hits = scan_for(ids, [r for r in roots if r.is_dir()]) + [
        (str(home / "mlflow.db"), i) for i in ids if i.encode() in (home / "mlflow.db").read_bytes()
    ]
    assert {r.name for r in roots} >= {"feature_store", "mlflow-artifacts", "dagster", "validated", "processed"}
    assert hits == []


def test_state_under_ct_home_is_owner_only(pilot_run):
    """After a whole run (Spark output, MLflow's database and artifacts, the Dagster instance, the
    lake with its raw and quarantine zones, reports), nothing under $CT_HOME is readable or
    traversable by another user: folders 0700, files 0600."""
    import stat

    home, _, _ = pilot_run
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    loose, seen = [], 0
    for root, dirs, files in os.walk(home):
        for name in dirs + files:
            path = os.path.join(root, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                continue  # a symlink's own mode means nothing; its target is scanned
            seen += 1
            if stat.S_IMODE(mode) & 0o077:
                loose.append((os.path.relpath(path, home), oct(stat.S_IMODE(mode))))
    assert loose == [], loose[:20]
    assert seen > 50 and (home / "mlflow.db").is_file() and any((home / "lake" / "raw").iterdir())
    assert any((home / "lake" / "processed").iterdir()) and any((home / "mlflow-artifacts").iterdir())


def test_champion_gate_blocks_a_worse_model_and_rerun_is_reproducible(pilot_run):
    home, first, instance = pilot_run
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CT_HOME", str(home))
        job = defs.resolve_implicit_job_def_def_for_assets([keys.TRAINING_SET])
        selection = [keys.TRAINING_SET, keys.CANDIDATE_MODEL, keys.MODEL_EVALUATION, keys.REGISTERED_MODEL,
                     keys.CHAMPION_MODEL]
        result = job.execute_in_process(
            instance=instance, asset_selection=selection, raise_on_error=False,
            run_config={"ops": {"registered_model": {"config": {"min_auroc": 0.99}}}},
        )
    assert not result.success
    gate = [c for c in result.get_asset_check_evaluations() if c.check_name == "champion_gate"]
    assert len(gate) == 1 and not gate[0].passed
    assert keys.CHAMPION_MODEL not in {e.asset_key for e in result.get_asset_materialization_events()}
    client = _client(home)
    assert client.get_model_version_by_alias(MODEL, "champion").version == 1  # unchanged
    challenger = client.get_model_version_by_alias(MODEL, "challenger")
    assert challenger.version == 2
    # Same data, same config: the re-run reproduces the holdout metrics exactly.
    assert challenger.tags["holdout_auroc"] == client.get_model_version(MODEL, 1).tags["holdout_auroc"]


def test_other_study_through_the_cli(tmp_path):
    """A differently shaped study (CSV; other tests, units and visits; no EX or SV) with no code change."""
    study = build_other_study(tmp_path / "other")
    home = tmp_path / "ct"
    env = os.environ | {"CT_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "CT_STUDY_DIR": str(study)}
    env.pop("MLFLOW_TRACKING_URI", None)
    (home / "dagster").mkdir(parents=True)
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    proc = subprocess.run([dagster, "asset", "materialize", "-m", "ct_assets.definitions", "--select", "*"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    features = pd.read_parquet(home / "feature_store/subject_features.parquet")
    assert {"VS_RESP__baseline", "VS_HR__slope", "LB_CRP__change"} <= set(features.columns)
    assert not any(c.startswith("VS_SYSBP") for c in features.columns)
    assert (features["EXPOSURE_DAYS_WINDOW"] == 0).all()  # no EX domain in this study
    visits = pd.read_parquet(home / "lake/processed/processed_visits.parquet")
    assert 35 < visits["VS_TEMP"].median() < 39  # Fahrenheit converted to Celsius
    assert 25.1 in set(visits["VISITNUM"])  # the unscheduled visit is kept
    client = _client(home)
    version = client.get_model_version_by_alias(MODEL, "champion")
    assert float(version.tags["holdout_auroc"]) > 0.6
    assert scan_for(raw_subject_ids(study), [home / "feature_store", home / "mlflow-artifacts", home / "dagster"]) == []


def test_feature_backfill_over_a_few_cohorts(pilot_run):
    """A correction (here: a fixed vital-signs file) backfilled over a range of three cohorts from the CLI;
    a backfill with another landmark day than the store's is refused, in one line."""
    import yaml

    from ct_assets.locations.backfill_assets import cohort_of

    home, _, instance = pilot_run
    cohorts = instance.get_dynamic_partitions("enrollment_cohorts")
    dm = pd.read_parquet(home / "lake/validated/validated_dm.parquet")
    assert set(cohorts) == set(cohort_of(dm).dropna())
    store_path = home / "feature_store/subject_features.parquet"
    before = pd.read_parquet(store_path).set_index("SUBJECT_KEY")
    chosen = cohorts[3:6]
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")

    def backfill(*config_args):
        return subprocess.run([dagster, "asset", "materialize", "-m", "ct_assets.locations.backfill", "--select",
                               "*", "--partition-range", f"{chosen[0]}...{chosen[-1]}", *config_args],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)

    other = home / "landmark.yaml"
    other.write_text(yaml.safe_dump({"resources": {"study_design": {"config": {"landmark_day": 14}}}}))
    refused = backfill("-c", str(other))
    assert refused.returncode != 0 and "computed with landmark day 30 and the study design now says 14" in refused.stderr

    from ct_assets.core.lake import new_version_dir, publish_dir

    visits_path = home / "lake/processed/processed_visits.parquet"
    visits = pd.read_parquet(visits_path)
    visits["VS_SYSBP"] = visits["VS_SYSBP"] + 5  # the site re-sent its blood pressures, recalibrated
    version = new_version_dir(visits_path)
    version.mkdir()
    visits.to_parquet(version / "part-0.parquet", index=False)
    publish_dir(version, visits_path)
    proc = backfill()
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in (keys.BACKFILL_INPUTS, keys.BACKFILL_FEATURES, keys.FEATURE_STORE_COHORTS, keys.BACKFILL_REPORT):
        assert instance.get_materialized_partitions(stage) == set(chosen)
    checks = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(k, n) for k, n in [(keys.BACKFILL_INPUTS, "inputs_valid"), (keys.BACKFILL_FEATURES, "features_valid"),
                                             (keys.FEATURE_STORE_COHORTS, "store_verified")]])
    assert len(checks) == 3 and all(c.status.value == "SUCCEEDED" for c in checks.values())
    event = instance.get_latest_materialization_event(keys.BACKFILL_REPORT).asset_materialization
    members = set(dm.loc[cohort_of(dm).isin(chosen) & dm["RFSTDTC"].notna(), "SUBJECT_KEY"])
    assert event.metadata["subjects"].value == len(members)  # counts verified against DM
    assert event.metadata["changed_subjects"].value > 0 and event.metadata["added"].value == 0
    after = pd.read_parquet(store_path).set_index("SUBJECT_KEY")
    assert sorted(after.index) == sorted(before.index)  # nobody lost or duplicated
    others = sorted(set(before.index) - members)
    pd.testing.assert_frame_equal(after.loc[others, before.columns], before.loc[others], check_like=True)
    changed = sorted(members)
    assert not after.loc[changed, before.columns].equals(before.loc[changed])
    for cohort in chosen:
        assert (home / f"feature_store/cohorts/cohort={cohort}.parquet").exists()
    # The online store (SQLite here) has the backfilled subjects' new values, and only theirs changed.
    from ct_assets.adapters import feature_store as fs
    from ct_assets.defs.resources import FeatureStore

    def online(keys: list[str]) -> list:
        return [got[0]["VS_SYSBP__baseline"] for got in fs.read_online(FeatureStore().store(), keys, ["VS_SYSBP__baseline"])]

    def expected(frame: pd.DataFrame, keys: list[str]) -> list:
        return [None if pd.isna(v) else v for v in frame.loc[keys, "VS_SYSBP__baseline"]]

    assert online(changed) == expected(after, changed) != expected(before, changed)
    assert online(others) == expected(before, others)


def test_rollback_restores_the_previous_champion(pilot_run):
    from ct_assets.core import registry
    from ct_assets.defs.rollback import rollback_champion

    home, _, instance = pilot_run
    client = _client(home)
    good = client.get_model_version_by_alias(MODEL, "champion")
    newer = client.create_model_version(MODEL, source=good.source, run_id=good.run_id)
    registry.promote(client, MODEL, newer.version)  # a new champion goes live ...
    assert client.get_model_version_by_alias(MODEL, "previous_champion").version == good.version
    result = rollback_champion.execute_in_process(  # ... and is rolled back, with a reason
        instance=instance, resources=defs.resources,
        run_config={"ops": {"swap_champion": {"config": {"reason": "test: the new champion misbehaves"}}}})
    assert result.success
    assert client.get_model_version_by_alias(MODEL, "champion").version == good.version
    assert client.get_model_version_by_alias(MODEL, "previous_champion").version == newer.version
    from ct_assets.core import audit

    last = audit.entries(home / "audit" / "audit.jsonl")[-1]
    assert last["action"] == "alias_set" and last["reason"] == "rollback: test: the new champion misbehaves"
    assert last["actor"].startswith(f"dagster:{result.run_id}")


def test_data_quality_monitoring_job(pilot_run):
    _, _, instance = pilot_run
    result = defs.resolve_job_def("data_quality_monitoring").execute_in_process(instance=instance)
    assert result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["score_above_threshold"].passed and checks["score_above_threshold"].metadata["score"].value >= 0.95
    assert checks["fresh"].metadata["age_days"].value >= 0
    report = {e.asset_key: e.materialization.metadata for e in result.get_asset_materialization_events()}
    md = report[keys.DATA_QUALITY_REPORT]
    for component in ("validity", "completeness", "subjects_in_dm", "dates_in_study_period", "visit_order", "non_anomalous"):
        assert 0.0 <= md[component].value <= 1.0
    assert md["visit_order"].value > 0.95 and md["subjects_in_dm"].value == 1.0
    assert report[keys.QUARANTINE_RECHECK]["now_valid"].value == 0


STAGES = [keys.PROCESSED_VISITS, keys.SUBJECT_FEATURES, keys.TRAINING_SET, keys.CANDIDATE_MODEL,
          keys.MODEL_EVALUATION, keys.REGISTERED_MODEL, keys.CHAMPION_MODEL, [keys.MONITORING_REFERENCE, keys.MONITORING_REFERENCE_META],
          keys.FEATURE_DRIFT, keys.PREDICTION_DRIFT, keys.MODEL_PERFORMANCE, keys.CONCEPT_DRIFT,
          keys.MONITORING_REPORT, keys.MONITORING_ALERTS, keys.DATA_COMPLETENESS, keys.DATA_CONSISTENCY, keys.DATA_FRESHNESS,
          keys.DATA_ANOMALIES, keys.DATA_QUALITY_REPORT, keys.QUARANTINE_RECHECK]


def test_each_asset_materializes_on_its_own(pilot_run):
    """Every stage through materialize(), alone, reading its inputs from the lake the run left.
    Last in this module: it registers and promotes new model versions."""
    _, _, instance = pilot_run
    assets = list(defs.assets)
    for stage in STAGES:
        selection = stage if isinstance(stage, list) else [stage]
        result = dg.materialize(assets, selection=selection, resources=defs.resources, instance=instance)
        assert result.success, selection
        assert set(selection) <= {e.asset_key for e in result.get_asset_materialization_events()}
