"""Hyperparameter search: a parent MLflow run, one child run per trial, the one-standard-error choice."""

from __future__ import annotations

import json
from typing import Any

from ct_kfp.steps.common import mlflow_client, tracking_uri
from ct_kfp.steps.models import cv_score, params_of

# A small grid that runs locally in about a minute; the Katib manifest covers the same space.
# Ordered from the simplest model to the most complex: selection prefers the earliest point whose
# CV AUROC is within one standard error of the best (the one-standard-error rule).
SEARCH_SPACE: list[dict[str, Any]] = [
    {"model_type": "logistic_regression", "C": c} for c in (0.003, 0.01, 0.03, 0.1)
] + [
    {"model_type": "hist_gradient_boosting", "max_depth": d, "learning_rate": 0.05, "max_iter": 100} for d in (1, 2, 3)
]


def hpo_start(uri: str, experiment: str, search_space: list[dict]) -> str:
    from ct_assets.core.registry import ensure_experiment

    client = mlflow_client(uri)
    run = client.create_run(ensure_experiment(tracking_uri(uri), experiment), run_name="hpo-search",
                            tags={"orchestrator": "kfp", "hpo": "parent"})
    client.log_param(run.info.run_id, "n_trials", len(search_space))
    client.log_text(run.info.run_id, json.dumps(search_space, indent=1), "search_space.json")
    return run.info.run_id


def hpo_trial(training_set_path: str, params: dict, uri: str, parent_run_id: str) -> dict[str, Any]:
    from mlflow.entities import Metric, Param

    auroc, se = cv_score(training_set_path, params)
    client = mlflow_client(uri)
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
    client = mlflow_client(uri)
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
    client = mlflow_client(uri)
    for name, value in result.items():
        client.log_metric(parent_run_id, name, value)
    client.set_terminated(parent_run_id)
    return result
