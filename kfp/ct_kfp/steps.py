"""What each KFP component does, as plain functions of paths and values.

The components in ``components.py`` are thin typed wrappers around these functions, and these
functions call the same code as the Dagster assets (``ct_assets``): validation with the pandera
schemas, the Spark visits job, the subject features, the outcome label, training, evaluation and
the registry gate. Nothing here is a second copy of that logic.

Artifacts are folders of Parquet files (one per domain) or single Parquet files; MLflow is reached
at ``tracking_uri`` (empty: ``$MLFLOW_TRACKING_URI`` or the SQLite store under ``$CT_HOME``).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ct_assets import settings
from ct_assets.lib import lake, sdtm
from ct_assets.lib.privacy import SUBJECT_KEY
from ct_assets.lib.registry import point_mlflow
from ct_assets.training import logic as training_logic

# The legacy model settings: the default hyperparameters HPO must beat or equal.
DEFAULT_PARAMS: dict[str, Any] = {k: v for k, v in training_logic.ModelParams().as_dict().items() if v is not None}

# A small grid that runs locally in about a minute; the Katib manifest covers the same space.
# Ordered from the simplest model to the most complex: selection prefers the earliest point whose
# CV AUROC is within one standard error of the best (the one-standard-error rule).
CV_REPEATS = 3
SEARCH_SPACE: list[dict[str, Any]] = [
    {"model_type": "logistic_regression", "C": c} for c in (0.003, 0.01, 0.03, 0.1)
] + [
    {"model_type": "hist_gradient_boosting", "max_depth": d, "learning_rate": 0.05, "max_iter": 100} for d in (1, 2, 3)
]


def tracking_uri(uri: str) -> str:
    return uri or settings.mlflow_tracking_uri()


# --- data ---------------------------------------------------------------------------------------

def validate_study(study_dir: str, validated_dir: str, quarantine_dir: str) -> dict[str, Any]:
    """Validate every domain of the study; validated rows (pseudonymised) and quarantined rows
    (with the failed rule) go to one Parquet file per domain. Returns counts per domain."""
    from ct_assets.quality.validate import validate_study as validate_domains

    source = sdtm.study_path(study_dir or None)
    raw = {d: sdtm.read_domain(source, d) for d in sdtm.DOMAINS}
    if raw["DM"] is None:
        raise FileNotFoundError(f"the study at {source} has no DM domain: subjects cannot be known")
    counts: dict[str, Any] = {}
    for domain, result in validate_domains(raw).items():
        lake.write_parquet(result.validated, Path(validated_dir) / f"{domain}.parquet")
        lake.write_parquet(result.quarantined, Path(quarantine_dir) / f"{domain}.parquet")
        counts[domain] = {"raw": len(raw[domain]), "validated": len(result.validated),
                          "quarantined": len(result.quarantined), "score": result.score, "rules": result.rules}
    total_raw = sum(c["raw"] for c in counts.values())
    total_ok = sum(c["validated"] for c in counts.values())
    return {"domains": counts, "rows": total_raw, "validated": total_ok, "quarantined": total_raw - total_ok,
            "quality_score": total_ok / total_raw if total_raw else 1.0}


def _domain(validated_dir: str, domain: str) -> pd.DataFrame | None:
    path = Path(validated_dir) / f"{domain}.parquet"
    return pd.read_parquet(path) if path.exists() else None


def process_visits(validated_dir: str) -> pd.DataFrame:
    """The PySpark visits job of the Dagster ``processed_visits`` asset, on a session of its own
    (``local[*]`` unless ``CT_SPARK_MASTER`` says otherwise)."""
    from pyspark.sql import SparkSession

    from spark import visits as job

    present = {d: Path(validated_dir) / f"{d}.parquet" for d in sdtm.FINDINGS_DOMAINS}
    present = {d: p for d, p in present.items() if p.exists() and len(pd.read_parquet(p, columns=[SUBJECT_KEY]))}
    if not present:
        return pd.DataFrame()
    builder = SparkSession.builder
    for key, value in settings.spark_config().items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    try:
        findings = {d: spark.read.parquet(str(p)) for d, p in present.items()}
        dm = spark.read.parquet(str(Path(validated_dir) / "DM.parquet"))
        return job.process_visits(findings, dm).toPandas()
    finally:
        spark.stop()


def engineer_features(validated_dir: str, features_path: str, training_set_path: str, landmark_day: int = 30,
                      outcome: dict | None = None, holdout_fraction: float = 0.25) -> dict[str, Any]:
    """Processed visits -> subject features up to the landmark day -> training set labelled by events
    after it, with the fixed holdout split (one landmark for both, as in the Dagster assets)."""
    from ct_assets.features.logic import subject_features

    dm = _domain(validated_dir, "DM")
    visits = process_visits(validated_dir)
    features = subject_features(visits, dm, _domain(validated_dir, "EX"), landmark_day)
    outcome_def = training_logic.Outcome(**{k: tuple(v) if isinstance(v, list) else v for k, v in (outcome or {}).items()
                               if k != "after_day"}, after_day=landmark_day)
    labelled, excluded = training_logic.make_training_set(features, dm, _domain(validated_dir, "AE"), _domain(validated_dir, "DS"),
                                             outcome_def, holdout_fraction)
    lake.write_parquet(features, Path(features_path))
    lake.write_parquet(labelled, Path(training_set_path))
    return {"subjects": len(features), "features": len(features.columns) - 1, "labelled": len(labelled),
            "positives": int(labelled[training_logic.LABEL].sum()), "excluded_prior_event": excluded,
            "holdout": int((labelled[training_logic.SPLIT] == "holdout").sum())}


# --- models ---------------------------------------------------------------------------------------

def params_of(params: dict) -> training_logic.ModelParams:
    """Model parameters from a KFP dict (whose numbers arrive as floats), typed as the dataclass says."""
    fields = {f.name: f for f in dataclasses.fields(training_logic.ModelParams) if f.name != "extra"}
    unknown = set(params) - set(fields)
    if unknown:
        raise ValueError(f"unknown model parameters {sorted(unknown)}; known: {sorted(fields)}")
    typed = {}
    for name, value in (DEFAULT_PARAMS | params).items():
        kind = fields[name].type
        typed[name] = int(value) if kind == "int" else float(value) if kind == "float" else value
    return training_logic.ModelParams(**typed)


def cv_score(training_set_path: str, params: dict, folds: int = 5, repeats: int = CV_REPEATS) -> tuple[float, float]:
    """Repeated stratified k-fold AUROC on the train split only (HPO never looks at the holdout):
    its mean and standard error."""
    mean, std = training_logic.cross_validated_auroc(pd.read_parquet(training_set_path), params_of(params), folds, repeats)
    return mean, std / (folds * repeats) ** 0.5


def train(training_set_path: str, params: dict, model_dir: str, uri: str, experiment: str,
          run_name: str, parent_run_id: str = "") -> dict[str, Any]:
    """Fit, log to MLflow (params, CV metrics, dataset, model with signature) and save the MLflow
    model folder as the KFP artifact too, so that later steps need not reach MLflow to load it."""
    import mlflow

    from ct_assets.lib.registry import ensure_experiment
    from ct_assets.training.tracking import log_candidate

    training_set = pd.read_parquet(training_set_path)
    point_mlflow(tracking_uri(uri))
    experiment_id = ensure_experiment(tracking_uri(uri), experiment)
    tags = {"mlflow.parentRunId": parent_run_id} if parent_run_id else {}
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags | {"orchestrator": "kfp"}):
        record = log_candidate(training_set, params_of(params), source=training_set_path)
    with tempfile.TemporaryDirectory() as tmp:  # the logged model folder, byte for byte
        shutil.copytree(mlflow.artifacts.download_artifacts(artifact_uri=record["model_uri"], dst_path=tmp), model_dir)
    return record


def evaluate(model_dir: str, training_set_path: str, uri: str, run_id: str, plot_path: str) -> dict[str, Any]:
    """Holdout metrics, subgroups and the calibration plot, logged to the model's MLflow run."""
    import mlflow

    from ct_assets.training.tracking import evaluate_and_log

    point_mlflow(tracking_uri(uri))
    with mlflow.start_run(run_id=run_id):
        return evaluate_and_log(model_dir, pd.read_parquet(training_set_path), Path(plot_path))


def roc_points(model_dir: str, training_set_path: str) -> tuple[list[float], list[float], list[float]]:
    from sklearn.metrics import roc_curve

    from ct_assets.lib.registry import score

    holdout = training_logic.holdout_of(pd.read_parquet(training_set_path))
    fpr, tpr, thr = roc_curve(holdout[training_logic.LABEL], score(model_dir, holdout))
    thr = np.where(np.isfinite(thr), thr, 1.0)
    return fpr.tolist(), tpr.tolist(), thr.tolist()


def register(model_uri: str, training_set_path: str, uri: str, model_name: str, holdout_auroc: float,
             min_auroc: float, tolerance: float, tags: dict | None = None) -> dict[str, Any]:
    """A registry version with alias challenger, and the champion gate's verdict."""
    import mlflow

    from ct_assets.lib.provenance import model_provenance, stage_code_versions
    from ct_assets.training.tracking import register_challenger

    point_mlflow(tracking_uri(uri))
    client = mlflow.MlflowClient(tracking_uri=tracking_uri(uri), registry_uri=tracking_uri(uri))
    training_set = pd.read_parquet(training_set_path)
    holdout = training_logic.holdout_of(training_set)
    # The study files are read by the validation pod: here the training set, rules, split and code are bound.
    provenance = model_provenance([], training_set, {}, 0, holdout["SUBJECT_KEY"], stage_code_versions())
    return register_challenger(client, model_name, model_uri, holdout_auroc, holdout, min_auroc, tolerance,
                               (tags or {}) | provenance, "kfp:register_model")


def write_json(obj: Any, path: str) -> None:
    lake.write_json(obj, Path(path))


def read_json(path: str) -> Any:
    return json.loads(Path(path).read_text())


def write_text(path: str, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)


def evaluation_markdown(result: dict[str, Any]) -> str:
    m = result["metrics"]
    lines = [f"## Holdout evaluation (n={int(m['n'])})", "",
             f"AUROC {m['auroc']:.3f} (95% CI {m['auroc_ci_low']:.2f}-{m['auroc_ci_high']:.2f}), "
             f"AUPRC {m['auprc']:.3f}, Brier {m['brier']:.3f}", "", "| group | level | n | AUROC | Brier |", "|---|---|---|---|---|"]
    lines += [f"| {s['group']} | {s['level']} | {int(s['n'])} | {s['auroc']:.3f} | {s['brier']:.3f} |"
              for s in result["subgroups"]]
    return "\n".join(lines) + "\n"


# --- hyperparameter search ------------------------------------------------------------------------

def _client(uri: str):
    import mlflow

    point_mlflow(tracking_uri(uri))
    return mlflow.MlflowClient(tracking_uri=tracking_uri(uri), registry_uri=tracking_uri(uri))


def hpo_start(uri: str, experiment: str, search_space: list[dict]) -> str:
    from ct_assets.lib.registry import ensure_experiment

    client = _client(uri)
    run = client.create_run(ensure_experiment(tracking_uri(uri), experiment), run_name="hpo-search",
                            tags={"orchestrator": "kfp", "hpo": "parent"})
    client.log_param(run.info.run_id, "n_trials", len(search_space))
    client.log_text(run.info.run_id, json.dumps(search_space, indent=1), "search_space.json")
    return run.info.run_id


def hpo_trial(training_set_path: str, params: dict, uri: str, parent_run_id: str) -> dict[str, Any]:
    from mlflow.entities import Metric, Param

    auroc, se = cv_score(training_set_path, params)
    client = _client(uri)
    parent = client.get_run(parent_run_id)
    name = "trial-" + "-".join(f"{k}={v}" for k, v in params.items())
    run = client.create_run(parent.info.experiment_id, run_name=name[:250],
                            tags={"mlflow.parentRunId": parent_run_id, "orchestrator": "kfp", "hpo": "trial"})
    client.log_batch(run.info.run_id, metrics=[Metric("cv_auroc", auroc, 0, 0), Metric("cv_auroc_se", se, 0, 0)],
                     params=[Param(k, str(v)) for k, v in params_of(params).as_dict().items()])
    client.set_terminated(run.info.run_id)
    return {"params": params, "cv_auroc": auroc, "cv_auroc_se": se, "run_id": run.info.run_id}


def select_one_se(trials: list[dict]) -> int:
    """Index of the selected trial: the earliest (simplest) whose CV AUROC is within one standard
    error of the best. On a few hundred subjects the best mean is mostly noise; among models that
    are statistically alike, the simpler one generalises more reliably (Hastie et al., ESL 7.10)."""
    best = max(range(len(trials)), key=lambda i: (trials[i]["cv_auroc"], -i))
    bar = trials[best]["cv_auroc"] - trials[best]["cv_auroc_se"]
    return next(i for i, t in enumerate(trials) if t["cv_auroc"] >= bar)


def in_search_order(trials: list[dict], search_space: list[dict]) -> list[dict]:
    """Trials in the order of the search space (simplest first). dsl.Collected gathers them in no
    promised order (kfp.local: as they finish), and numbers come back as floats, so points are matched
    on their typed parameters."""
    def key(params: dict) -> str:
        return json.dumps(params_of(params).as_dict(), sort_keys=True)

    position = {key(p): i for i, p in enumerate(search_space)}
    missing = [t["params"] for t in trials if key(t["params"]) not in position]
    if missing or len(trials) != len(search_space):
        raise ValueError(f"trials do not match the search space: {missing or 'count differs'}")
    return sorted(trials, key=lambda t: position[key(t["params"])])


def hpo_select(trials: list[dict], uri: str, parent_run_id: str, search_space: list[dict]) -> tuple[dict, str]:
    trials = in_search_order(trials, search_space)
    chosen = select_one_se(trials)
    best = trials[chosen]
    client = _client(uri)
    client.log_metric(parent_run_id, "best_cv_auroc", max(t["cv_auroc"] for t in trials))
    client.log_metric(parent_run_id, "selected_cv_auroc", best["cv_auroc"])
    client.log_text(parent_run_id, json.dumps(trials, indent=1), "trials.json")
    client.set_tag(parent_run_id, "best_trial_run_id", best["run_id"])
    client.set_tag(parent_run_id, "best_params", json.dumps(best["params"]))
    rows = [f"| {i + 1} | {json.dumps(t['params'])} | {t['cv_auroc']:.4f} | {t['cv_auroc_se']:.4f} |"
            f" {'selected' if i == chosen else ''} |" for i, t in enumerate(trials)]
    markdown = "\n".join(["| point | params | CV AUROC | SE | |", "|---|---|---|---|---|", *rows]) + "\n"
    return best["params"], markdown


def hpo_compare(best_auroc: float, default_auroc: float, uri: str, parent_run_id: str) -> dict[str, float]:
    result = {"holdout_auroc_best": best_auroc, "holdout_auroc_default": default_auroc,
              "holdout_auroc_gain": best_auroc - default_auroc}
    client = _client(uri)
    for name, value in result.items():
        client.log_metric(parent_run_id, name, value)
    client.set_terminated(parent_run_id)
    return result


# --- deployment: canary and A/B test --------------------------------------------------------------

def _versions(client, model_name: str) -> tuple[Any, Any]:
    from ct_assets.lib.registry import CHALLENGER, CHAMPION, alias_version

    return alias_version(client, model_name, CHAMPION), alias_version(client, model_name, CHALLENGER)


def deploy(model_name: str, uri: str, traffic_share: float, endpoint: str, out_dir: str) -> dict[str, Any]:
    """Resolve champion and challenger, write the deployment record and the canary manifest.

    KServe rolls a canary by updating the predictor's storageUri to the new model and setting
    ``canaryTrafficPercent``: the previous revision keeps the rest of the traffic."""
    import yaml

    from ct_assets.lib.registry import inference_service

    if not 0.0 < traffic_share < 1.0:
        raise ValueError(f"traffic_share must be strictly between 0 and 1, got {traffic_share}")
    client = _client(uri)
    champion, challenger = _versions(client, model_name)
    if challenger is None:
        raise RuntimeError(f"{model_name} has no 'challenger' version: run the training or HPO pipeline first")
    record = {"model_name": model_name, "endpoint": endpoint, "traffic_share": traffic_share,
              "champion_version": int(champion.version) if champion else None,
              "challenger_version": int(challenger.version),
              "challenger_source": challenger.source}
    manifest = inference_service(endpoint, challenger.source, round(traffic_share * 100))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "inferenceservice.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    lake.write_json(record, out / "deployment.json")
    return record


def routed_to_challenger(subject_keys: pd.Series, share: float) -> np.ndarray:
    """The subjects the model server would route to the challenger at this share."""
    from ct_assets.lib.registry import routes_to_challenger

    return subject_keys.map(lambda s: routes_to_challenger(s, share)).to_numpy(dtype=bool)


def canary_check(deployment_dir: str, training_set_path: str, uri: str, tolerance: float) -> dict[str, Any]:
    """The holdout subjects routed as the canary would route them. Each arm's predictions must be
    valid risks; the challenger, shadow-scored on every subject, must not be worse than the champion
    by more than ``tolerance`` AUROC (too few subjects reach a 10 % canary for a metric of its own)."""
    from ct_assets.lib.registry import score

    _client(uri)  # points mlflow (and the models:/ URIs below) at the tracking store
    record = read_json(str(Path(deployment_dir) / "deployment.json"))
    holdout = training_logic.holdout_of(pd.read_parquet(training_set_path))
    name, challenger = record["model_name"], record["challenger_version"]
    p_new = score(f"models:/{name}/{challenger}", holdout)
    canary = routed_to_challenger(holdout[SUBJECT_KEY], record["traffic_share"])
    metrics: dict[str, float] = {"subjects": float(len(holdout)), "canary_subjects": float(canary.sum())}
    valid = bool(np.isfinite(p_new).all() and ((p_new >= 0) & (p_new <= 1)).all())
    new_auroc = training_logic.binary_metrics(holdout[training_logic.LABEL], p_new)["auroc"]
    metrics["challenger_auroc"] = new_auroc
    if record["champion_version"] is None:
        ok = valid and np.isfinite(new_auroc)
    else:
        p_old = score(f"models:/{name}/{record['champion_version']}", holdout)
        old_auroc = training_logic.binary_metrics(holdout[training_logic.LABEL], p_old)["auroc"]
        served = np.where(canary, p_new, p_old)
        metrics |= {"champion_auroc": old_auroc, "served_auroc": training_logic.binary_metrics(holdout[training_logic.LABEL], served)["auroc"]}
        ok = valid and new_auroc >= old_auroc - tolerance
    metrics["valid_predictions"] = float(valid)
    return {"decision": "promote" if ok else "rollback", "metrics": {k: v for k, v in metrics.items() if np.isfinite(v)}}


def promote_canary(deployment_dir: str, uri: str) -> str:
    import yaml

    from ct_assets.lib.registry import inference_service, promote

    record = read_json(str(Path(deployment_dir) / "deployment.json"))
    previous = promote(_client(uri), record["model_name"], record["challenger_version"], "kfp:deployment_pipeline",
                       "canary check passed")
    manifest = inference_service(record["endpoint"], record["challenger_source"], None)  # 100 % on the new model
    write_text(str(Path(deployment_dir) / "inferenceservice-promoted.yaml"), yaml.safe_dump(manifest, sort_keys=False))
    return f"version {record['challenger_version']} promoted (previous champion: {previous.version if previous else 'none'})"


def rollback_canary(deployment_dir: str, uri: str) -> str:
    import yaml

    from ct_assets.lib.registry import inference_service

    record = read_json(str(Path(deployment_dir) / "deployment.json"))
    client = _client(uri)
    client.set_model_version_tag(record["model_name"], str(record["challenger_version"]), "canary", "rolled_back")
    manifest = inference_service(record["endpoint"], record["challenger_source"], 0)  # all traffic to the champion
    write_text(str(Path(deployment_dir) / "inferenceservice-rollback.yaml"), yaml.safe_dump(manifest, sort_keys=False))
    return f"version {record['challenger_version']} rolled back; champion stays {record['champion_version']}"


def holdout_ab_test(training_set_path: str, uri: str, model_name: str, alpha: float, n_resamples: int,
                    seed: int = 0) -> dict[str, Any]:
    """Champion and challenger scored on the same holdout subjects. A paired permutation test
    (swapping the two models' scores within subjects) gives the p-value of the AUROC difference;
    the challenger wins only if it is better and the difference is significant at ``alpha``. (The
    live deployment's arms, which score different subjects, are compared by ``ab_test_report``.)"""
    from ct_assets.lib.registry import score
    from ct_assets.lib.stats import paired_auroc_test

    client = _client(uri)
    champion, challenger = _versions(client, model_name)
    if champion is None or challenger is None:
        raise RuntimeError(f"{model_name} needs both a 'champion' and a 'challenger' version for an A/B test")
    holdout = training_logic.holdout_of(pd.read_parquet(training_set_path))
    y = holdout[training_logic.LABEL].to_numpy()
    p_champ = score(f"models:/{model_name}/{champion.version}", holdout)
    p_chall = score(f"models:/{model_name}/{challenger.version}", holdout)
    arms = {"champion": training_logic.binary_metrics(y, p_champ), "challenger": training_logic.binary_metrics(y, p_chall)}
    diff, p_value = paired_auroc_test(y, p_chall, p_champ, n_resamples, seed)
    decision = "challenger" if diff > 0 and p_value < alpha else "champion"
    metrics = {f"{arm}_{k}": v for arm, m in arms.items() for k, v in m.items() if k != "n"}
    metrics |= {"subjects": float(len(y)), "auroc_difference": diff, "p_value": p_value}
    rows = [f"| {arm} | {v.version} | {arms[arm]['auroc']:.3f} | {arms[arm]['auprc']:.3f} | {arms[arm]['brier']:.3f} |"
            for arm, v in (("champion", champion), ("challenger", challenger))]
    markdown = "\n".join([
        f"## A/B test on {len(y)} holdout subjects", "", "| arm | version | AUROC | AUPRC | Brier |", "|---|---|---|---|---|",
        *rows, "", f"AUROC difference (challenger - champion): {diff:+.4f}; paired permutation test p = {p_value:.4f} "
        f"({n_resamples} resamples, alpha {alpha}).", "", f"**Decision: keep the {decision}.**" if decision == "champion"
        else "**Decision: the challenger wins.**"]) + "\n"
    return {"decision": decision, "metrics": {k: v for k, v in metrics.items() if np.isfinite(v)}, "markdown": markdown,
            "champion_version": int(champion.version), "challenger_version": int(challenger.version)}
