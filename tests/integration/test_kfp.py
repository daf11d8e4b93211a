"""Kubeflow Pipelines: components on small inputs, every pipeline for real through kfp.local, the
compiled YAML, the Katib manifest and the Dagster HPO asset, against a real MLflow SQLite store."""

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml
from kfp.dsl import Artifact, Dataset, Metrics

from ct_assets.core import training as training_logic
from ct_assets.core.registry import CHALLENGER, CHAMPION, alias_version
from ct_assets.settings import MODEL_NAME
from ct_kfp import components as c
from ct_kfp import steps
from ct_kfp.compile import check, compile_all
from ct_kfp.katib import experiment
from ct_kfp.runner import run_local
from tests.conftest import ROOT, private_home
from tests.studies import build_other_study


def _client():
    import mlflow

    return mlflow.MlflowClient(tracking_uri=steps.tracking_uri(""), registry_uri=steps.tracking_uri(""))


# --- compile -------------------------------------------------------------------------------------

def test_every_pipeline_compiles_and_loads_back(tmp_path):
    from kfp import components

    paths = compile_all(tmp_path)
    assert sorted(p.name for p in paths) == ["ab_test_pipeline.yaml", "deployment_pipeline.yaml", "hpo_pipeline.yaml",
                                             "training_pipeline.yaml"]
    for path in paths:
        loaded = components.load_component_from_file(str(path))
        assert loaded.name.startswith("ct-")
        spec, platform = list(yaml.safe_load_all(path.read_text()))
        executors = spec["deploymentSpec"]["executors"]
        assert all(e["container"]["image"] == c.IMAGE for e in executors.values())
        # The pseudonym key reaches the validation pod from a Kubernetes Secret, nothing else does.
        secrets = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        assert list(secrets) == ["exec-data-validation"]
        assert secrets["exec-data-validation"]["secretAsEnv"][0]["keyToEnv"][0]["envVar"] == "CT_PSEUDONYM_KEY"
    hpo = next(yaml.safe_load_all((tmp_path / "hpo_pipeline.yaml").read_text()))
    loop = hpo["root"]["dag"]["tasks"]["for-loop-1"]
    assert loop["iteratorPolicy"]["parallelismLimit"] == 2
    train = hpo["root"]["dag"]["tasks"]["train-model"]
    assert train["retryPolicy"]["maxRetryCount"] == 3 and train["cachingOptions"] == {}


def test_committed_yaml_is_current():
    assert check(ROOT / "kfp" / "compiled") == []


def test_import_kfp_is_the_sdk_and_cli_help():
    out = subprocess.run([sys.executable, "-c", "import kfp, ct_kfp; print(kfp.__file__); print(ct_kfp.__file__)"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert "site-packages" in out[0] and out[1].startswith(str(ROOT / "kfp" / "ct_kfp"))
    help_text = subprocess.run([sys.executable, "-m", "ct_kfp", "--help"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout
    for command in ("compile", "run", "submit", "katib", "trial"):
        assert command in help_text


# --- components on small inputs -------------------------------------------------------------------

def test_data_validation_component_reconciles_and_quarantines(tmp_path, ct_home):
    study = build_other_study(tmp_path / "study", n_subjects=30)
    lb = pd.read_csv(study / "lb.csv")
    lb.loc[0, "LBDTC"] = "2021-13-45"  # not ISO 8601
    lb.to_csv(study / "lb.csv", index=False)
    validated, quarantine = Dataset(name="v", uri=str(tmp_path / "v")), Dataset(name="q", uri=str(tmp_path / "q"))
    metrics = Metrics(name="m", uri=str(tmp_path / "m"))
    score = c.data_validation.python_func(study_dir=str(study), validated=validated, quarantine=quarantine,
                                          metrics=metrics)
    assert metrics.metadata["rows"] == metrics.metadata["validated"] + metrics.metadata["quarantined"]
    assert metrics.metadata["LB_quarantined"] == 1 and 0.99 < score < 1.0
    bad = pd.read_parquet(tmp_path / "q" / "LB.parquet")
    assert "LBDTC" in bad["_QUARANTINE_REASON"].iloc[0]
    good = pd.read_parquet(tmp_path / "v" / "DM.parquet")
    assert "USUBJID" not in good and good["SUBJECT_KEY"].str.startswith("S-").all()


def test_one_standard_error_rule_prefers_the_simpler_point():
    trials = [{"cv_auroc": 0.60, "cv_auroc_se": 0.01}, {"cv_auroc": 0.655, "cv_auroc_se": 0.02},
              {"cv_auroc": 0.66, "cv_auroc_se": 0.02}, {"cv_auroc": 0.62, "cv_auroc_se": 0.01}]
    assert steps.select_one_se(trials) == 1  # within one SE of the best (0.64), and earlier than the best
    assert steps.select_one_se([{"cv_auroc": 0.7, "cv_auroc_se": 0.0}, {"cv_auroc": 0.71, "cv_auroc_se": 0.0}]) == 1


def test_selection_does_not_depend_on_the_order_trials_arrive_in():
    space = steps.SEARCH_SPACE
    scores = [0.60, 0.59, 0.58, 0.57, 0.664, 0.676, 0.680]
    trials = [{"params": json.loads(json.dumps({k: float(v) if isinstance(v, int) else v for k, v in p.items()})),
               "cv_auroc": a, "cv_auroc_se": 0.02} for p, a in zip(space, scores)]
    for shuffled in (trials, trials[::-1], trials[3:] + trials[:3]):
        ordered = steps.in_search_order(shuffled, space)
        assert [t["cv_auroc"] for t in ordered] == scores
        assert steps.params_of(ordered[steps.select_one_se(ordered)]["params"]).max_depth == 1
    with pytest.raises(ValueError):
        steps.in_search_order(trials[:-1], space)


def test_auroc_tests_agree_with_sklearn_and_find_a_real_difference():
    from sklearn.metrics import roc_auc_score

    from ct_assets.core.stats import auroc_of, independent_auroc_test, paired_auroc_test

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    a, b = rng.random(200) + 0.3 * y, np.round(rng.random(200), 1)  # ties in b
    expected = roc_auc_score(y, a) - roc_auc_score(y, b)
    assert auroc_of(y, a) - auroc_of(y, b) == pytest.approx(expected)
    batch = auroc_of(y, np.stack([a, b])) - auroc_of(y, np.stack([b, a]))
    assert batch == pytest.approx([expected, -expected])
    diff, p_value = paired_auroc_test(y, a, b, n_resamples=500)
    assert diff == pytest.approx(expected) and p_value < 0.01  # a informs, b is noise
    assert paired_auroc_test(y, b, np.round(rng.random(200), 1), n_resamples=500)[1] > 0.01  # noise vs noise
    diff, p_value = independent_auroc_test(y[:100], a[:100], y[100:], b[100:], n_resamples=300)
    assert diff == pytest.approx(roc_auc_score(y[:100], a[:100]) - roc_auc_score(y[100:], b[100:])) and p_value < 0.05


def test_canary_routing_is_sticky_and_near_the_share():
    keys = pd.Series([f"S-{i:020x}" for i in range(20_000)])
    routed = steps.routed_to_challenger(keys, 0.1)
    assert abs(routed.mean() - 0.1) < 0.01
    assert (steps.routed_to_challenger(keys, 0.1) == routed).all()
    assert not (routed & ~steps.routed_to_challenger(keys, 0.3)).any()  # a bigger share keeps the canary's subjects


def test_katib_experiment_matches_the_search_space():
    exp = experiment("s3://bucket/training_set.parquet", namespace="team-a")
    spec = exp["spec"]
    assert exp["kind"] == "Experiment" and exp["metadata"]["namespace"] == "team-a"
    assert spec["maxTrialCount"] == len(steps.SEARCH_SPACE)
    assert spec["parameters"][0]["feasibleSpace"]["list"] == [str(i) for i in range(len(steps.SEARCH_SPACE))]
    assert spec["objective"]["objectiveMetricName"] == "cv_auroc"
    command = spec["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    assert "${trialParameters.point}" in command and "python -m ct_kfp trial" in command


# --- every pipeline through kfp.local ---------------------------------------------------------------

@pytest.fixture(scope="module")
def kfp_home(tmp_path_factory):
    """One $CT_HOME for the pipelines below, which build on each other's registry state."""
    with private_home(tmp_path_factory.mktemp("kfp") / "ct", "KFP_HOST") as home:
        yield home


@pytest.fixture(scope="module")
def trained(kfp_home):
    run = run_local("training")
    return run


def test_training_pipeline_registers_a_challenger(trained, kfp_home):
    assert trained.output is True  # the champion gate passed on the bundled study
    version = alias_version(_client(), MODEL_NAME, CHALLENGER)
    assert version is not None and version.tags["orchestrator"] == "kfp"
    run = _client().get_run(version.run_id)
    assert run.data.metrics["holdout_auroc"] == pytest.approx(float(version.tags["holdout_auroc"]), abs=1e-4)
    training_set = pd.read_parquet(Path(trained.run_dir) / "feature-engineering" / "training_set")
    assert "USUBJID" not in training_set and training_set["SUBJECT_KEY"].str.startswith("S-").all()
    assert set(training_set[training_logic.SPLIT]) == {"train", "holdout"}
    # KFP's view of the evaluation: metrics, ROC curve and report artifacts, equal to MLflow's.
    out = json.loads((Path(trained.run_dir) / "evaluate-model" / "executor_output.json").read_text())["artifacts"]
    kfp_metrics = out["metrics"]["artifacts"][0]["metadata"]
    assert kfp_metrics["auroc"] == pytest.approx(run.data.metrics["holdout_auroc"])
    assert kfp_metrics["auroc_ci_low"] < kfp_metrics["auroc"] < kfp_metrics["auroc_ci_high"]
    roc = out["roc"]["artifacts"][0]["metadata"]["confidenceMetrics"]
    assert roc[0]["recall"] == 0.0 and roc[-1]["recall"] == 1.0
    assert (Path(trained.run_dir) / "evaluate-model" / "report").read_text().startswith("## Holdout evaluation")
    assert 0.5 < run.data.metrics["holdout_auroc"] < 1.0


@pytest.fixture(scope="module")
def deployed(trained, kfp_home):
    return run_local("deployment", {"traffic_share": 0.2})


def test_deployment_pipeline_promotes_the_first_canary(deployed, kfp_home):
    run = deployed
    assert run.output == "promote"
    client = _client()
    assert alias_version(client, MODEL_NAME, CHAMPION).version == alias_version(client, MODEL_NAME, CHALLENGER).version
    manifest = yaml.safe_load((Path(run.run_dir) / "deploy-model" / "deployment" / "inferenceservice.yaml").read_text())
    assert manifest["kind"] == "InferenceService"
    assert manifest["spec"]["predictor"]["canaryTrafficPercent"] == 20
    # Every alias the KFP steps moved is in the audit log, with the step as actor.
    from ct_assets.core import audit

    moves = {(e["object"], e["actor"]) for e in audit.entries(kfp_home / "audit" / "audit.jsonl") if e["action"] == "alias_set"}
    assert (f"{MODEL_NAME}@challenger", "kfp:register_model") in moves
    assert (f"{MODEL_NAME}@champion", "kfp:deployment_pipeline") in moves
    assert audit.verify(kfp_home / "audit" / "audit.jsonl") == []


@pytest.fixture(scope="module")
def searched(deployed, kfp_home):
    """The HPO pipeline through the Dagster asset and its KFP resource (kfp.local)."""
    from ct_kfp.location import defs

    with dg.DagsterInstance.get() as instance:
        result = dg.materialize([defs.get_assets_def("hpo_search")], resources=defs.resources, instance=instance)
    assert result.success
    return result


def test_dagster_hpo_asset_runs_the_search_and_beats_the_defaults(searched, kfp_home):
    md = searched.asset_materializations_for_node("hpo_search")[0].metadata
    assert md["kfp_run_url"].value.startswith("file://") and md["kfp_run_id"].value.startswith("ct-hpo-")
    # The selected point generalises at least as well as the default hyperparameters. A fact of the
    # bundled study, the same on every machine: folds and fits do not follow the pseudonym key.
    assert md["holdout_auroc_best"].value >= md["holdout_auroc_default"].value
    client = _client()
    parent = client.get_run(md["mlflow_parent_run_id"].value)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    trials = [r for r in children if r.data.tags.get("hpo") == "trial"]
    assert len(trials) == len(steps.SEARCH_SPACE) and all("cv_auroc" in r.data.metrics for r in trials)
    assert {r.info.run_name for r in children} >= {"hpo-best", "hpo-default"}
    assert parent.info.status == "FINISHED" and "holdout_auroc_gain" in parent.data.metrics
    challenger = alias_version(client, MODEL_NAME, CHALLENGER)
    champion = alias_version(client, MODEL_NAME, CHAMPION)
    assert challenger.version != champion.version  # the search's model is the new challenger


def test_ab_test_pipeline_decides_between_champion_and_challenger(searched, kfp_home):
    run = run_local("ab_test", {"n_resamples": 500})
    assert run.output in {"champion", "challenger"}
    report = (Path(run.run_dir) / "ab-test" / "report").read_text()
    assert "paired permutation test p = " in report and "Decision" in report
    p_value = float(report.split("p = ")[1].split(" ")[0])
    assert 0.0 < p_value <= 1.0


def test_canary_rollback_keeps_the_champion(searched, kfp_home, tmp_path):
    """The rollback branch of deployment_pipeline, through the components' python_func."""
    client = _client()
    champion_before = alias_version(client, MODEL_NAME, CHAMPION).version
    deployment = Artifact(name="deployment", uri=str(tmp_path / "deployment"))
    challenger = c.deploy_model.python_func(model_name=MODEL_NAME, mlflow_tracking_uri="", traffic_share=0.1,
                                            endpoint="aep", deployment=deployment)
    training_set = Dataset(name="ts", uri=str(next(Path(kfp_home, "kfp").glob("ct-training-*/feature-engineering/training_set"))))
    metrics = Metrics(name="m", uri=str(tmp_path / "m"))
    # A challenger must beat the champion by a full AUROC point here: impossible, so the canary rolls back.
    decision = c.canary_check.python_func(deployment=deployment, training_set=training_set, mlflow_tracking_uri="",
                                          tolerance=-1.0, metrics=metrics)
    assert decision == "rollback" and metrics.metadata["valid_predictions"] == 1.0
    c.rollback_model.python_func(deployment=deployment, mlflow_tracking_uri="")
    assert alias_version(client, MODEL_NAME, CHAMPION).version == champion_before
    assert client.get_model_version(MODEL_NAME, challenger).tags["canary"] == "rolled_back"
    manifest = yaml.safe_load((tmp_path / "deployment" / "inferenceservice-rollback.yaml").read_text())
    assert manifest["spec"]["predictor"]["canaryTrafficPercent"] == 0


def test_katib_trial_command_prints_the_objective(searched, kfp_home):
    training_set = next(Path(kfp_home, "kfp").glob("ct-training-*/feature-engineering/training_set"))
    out = subprocess.run([sys.executable, "-m", "ct_kfp", "trial", "--training-set", str(training_set),
                          "--search-space", json.dumps(steps.SEARCH_SPACE[:2]), "--point", "1"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    value = float(out.split("cv_auroc=")[1].split()[0])
    assert 0.3 < value < 1.0

