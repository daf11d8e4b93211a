"""Deployment steps: the canary (KServe manifest, check, promotion or rollback) and the paired A/B test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ct_assets.core import lake
from ct_assets.core import training as training_logic
from ct_assets.core.privacy import SUBJECT_KEY
from ct_kfp.steps.common import mlflow_client, read_json, write_text


def _versions(client, model_name: str) -> tuple[Any, Any]:
    from ct_assets.core.registry import CHALLENGER, CHAMPION, alias_version

    return alias_version(client, model_name, CHAMPION), alias_version(client, model_name, CHALLENGER)


def deploy(model_name: str, uri: str, traffic_share: float, endpoint: str, out_dir: str) -> dict[str, Any]:
    """Resolve champion and challenger, write the deployment record and the canary manifest.

    KServe rolls a canary by updating the predictor's storageUri to the new model and setting
    ``canaryTrafficPercent``: the previous revision keeps the rest of the traffic."""
    import yaml

    from ct_assets.core.registry import inference_service

    if not 0.0 < traffic_share < 1.0:
        raise ValueError(f"traffic_share must be strictly between 0 and 1, got {traffic_share}")
    client = mlflow_client(uri)
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
    from ct_assets.core.registry import routes_to_challenger

    return subject_keys.map(lambda s: routes_to_challenger(s, share)).to_numpy(dtype=bool)


def canary_check(deployment_dir: str, training_set_path: str, uri: str, tolerance: float) -> dict[str, Any]:
    """The holdout subjects routed as the canary would route them. Each arm's predictions must be
    valid risks; the challenger, shadow-scored on every subject, must not be worse than the champion
    by more than ``tolerance`` AUROC (too few subjects reach a 10 % canary for a metric of its own)."""
    from ct_assets.core.registry import score

    mlflow_client(uri)  # points mlflow (and the models:/ URIs below) at the tracking store
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

    from ct_assets.core.registry import inference_service, promote

    record = read_json(str(Path(deployment_dir) / "deployment.json"))
    previous = promote(mlflow_client(uri), record["model_name"], record["challenger_version"], "kfp:deployment_pipeline",
                       "canary check passed")
    manifest = inference_service(record["endpoint"], record["challenger_source"], None)  # 100 % on the new model
    write_text(str(Path(deployment_dir) / "inferenceservice-promoted.yaml"), yaml.safe_dump(manifest, sort_keys=False))
    return f"version {record['challenger_version']} promoted (previous champion: {previous.version if previous else 'none'})"


def rollback_canary(deployment_dir: str, uri: str) -> str:
    import yaml

    from ct_assets.core.registry import inference_service

    record = read_json(str(Path(deployment_dir) / "deployment.json"))
    client = mlflow_client(uri)
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
    from ct_assets.core.registry import score
    from ct_assets.core.stats import paired_auroc_test

    client = mlflow_client(uri)
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
