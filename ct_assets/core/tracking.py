"""Training, evaluation and registration as MLflow does them, for every orchestrator.

The Dagster assets (inside the MLflow run the mlflow_settings resource opens per Dagster run) and the KFP
components (inside a run of their own) call these same functions.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ct_assets.core import training as training_logic
from ct_assets.core.bounds import DOMAIN_FILE, input_domain
from ct_assets.core.registry import CHALLENGER, CHAMPION, alias_version, score, set_alias

if TYPE_CHECKING:
    import pandas as pd


def pip_requirements() -> list[str]:
    """Explicit requirements of a logged model: inferring them costs seconds per model."""
    import numpy as np
    import pandas as pd
    import sklearn
    import skops

    return [f"scikit-learn=={sklearn.__version__}", f"pandas=={pd.__version__}", f"numpy=={np.__version__}",
            f"skops=={skops.__version__}"]


def log_candidate(training_set: pd.DataFrame, params: training_logic.ModelParams, source: str, cv_folds: int = 5,
                  population: pd.DataFrame | None = None) -> dict[str, Any]:
    """Fit on the train split and log params, CV and train metrics, the dataset and the model
    (signature, input example) to the active MLflow run. Returns the candidate record. ``population``: the study's
    subjects with their features (the offline store), every one of whom the server must be able to score,
    including those the training set leaves out (an event before the landmark)."""
    import mlflow
    import skops.io as sio
    from mlflow.models import infer_signature

    started = time.perf_counter()
    model, columns = training_logic.fit(training_set, params)
    fitted = time.perf_counter()
    train = training_set[training_set[training_logic.SPLIT] == "train"]
    cv_mean, cv_std = training_logic.cross_validated_auroc(training_set, params, cv_folds)
    seconds = {"fit_seconds": round(fitted - started, 3), "cv_seconds": round(time.perf_counter() - fitted, 3),
               "cv_workers": training_logic.cv_workers(len(train), cv_folds, len(columns))}
    metrics = {"cv_auroc_mean": cv_mean, "cv_auroc_std": cv_std,
               "train_auroc": training_logic.binary_metrics(train[training_logic.LABEL], model.predict_proba(train[columns])[:, 1])["auroc"]}
    run = mlflow.active_run()
    mlflow.log_params(params.as_dict() | {"n_features": len(columns), "n_train": len(train)})
    mlflow.log_metrics(metrics)
    dataset = mlflow.data.from_pandas(training_set, source=source, name="training_set", targets=training_logic.LABEL)
    mlflow.log_input(dataset, context="training")
    example = train[columns].head(5)
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        signature=infer_signature(example, model.predict_proba(example)),
        input_example=example,
        pip_requirements=pip_requirements(),
        pyfunc_predict_fn="predict_proba",
        # Trust exactly the types of the model we just built, so it loads back without prompts.
        skops_trusted_types=sio.get_untrusted_types(data=sio.dumps(model)),
    )
    # What the server may accept: every training subject's raw values and categories (serving/bounds.py).
    import pandas as pd

    numeric, categorical = training_logic.feature_columns(training_set)
    seen = training_set if population is None else pd.concat([training_set[columns], population.reindex(columns=columns)])
    mlflow.log_dict(input_domain(seen, numeric, categorical), DOMAIN_FILE)
    return {"run_id": run.info.run_id, "model_uri": info.model_uri, "features": columns,
            "params": params.as_dict(), "metrics": metrics, "seconds": seconds}


def evaluate_and_log(model_uri: str, training_set: pd.DataFrame, plot_path: Path) -> dict[str, Any]:
    """Holdout discrimination, calibration and subgroups, logged to the active MLflow run."""
    import mlflow
    import numpy as np

    holdout = training_logic.holdout_of(training_set)
    p = score(model_uri, holdout)
    metrics = training_logic.binary_metrics(holdout[training_logic.LABEL], p)
    metrics["auroc_ci_low"], metrics["auroc_ci_high"] = training_logic.bootstrap_auroc_ci(holdout[training_logic.LABEL], p)
    subgroups = training_logic.subgroup_metrics(holdout, p)
    plot = training_logic.calibration_plot(holdout[training_logic.LABEL], p, plot_path, f"Calibration, holdout (n={len(holdout)})")
    mlflow.log_metrics({f"holdout_{k}": v for k, v in metrics.items() if np.isfinite(v)})
    mlflow.log_table(subgroups, "evaluation/subgroups.json")
    mlflow.log_artifact(str(plot), "evaluation")
    return {"metrics": metrics, "subgroups": subgroups.to_dict(orient="records"), "plot": str(plot)}


def register_challenger(client, name: str, model_uri: str, auroc: float, holdout: pd.DataFrame, min_auroc: float,
                        tolerance: float, tags: dict[str, str], actor: str | None = None) -> dict[str, Any]:
    """Register ``model_uri`` as a version with alias challenger and judge the champion gate: at
    least ``min_auroc`` on the holdout and not worse than the current champion on the same holdout.
    The registration, the alias and the verdict go to the audit log."""
    import mlflow
    import numpy as np

    from ct_assets.core import audit

    version = mlflow.register_model(model_uri, name, tags={"holdout_auroc": f"{auroc:.4f}"} | tags)
    audit.record("model_registered", f"{name}/{version.version}", actor, "candidate evaluated on the holdout",
                 after={"model_uri": model_uri, "holdout_auroc": round(auroc, 4), "provenance": tags.get("ct.provenance"),
                        "tags": {k: str(v) for k, v in tags.items() if k.startswith("ct.")}})
    set_alias(client, name, CHALLENGER, version.version, actor, "newly registered")
    champion = alias_version(client, name, CHAMPION)
    champion_auroc = None
    if champion is not None:
        champion_auroc = training_logic.binary_metrics(holdout[training_logic.LABEL], score(f"models:/{name}@{CHAMPION}", holdout))["auroc"]
    meets_min = bool(np.isfinite(auroc) and auroc >= min_auroc)
    not_worse = champion_auroc is None or auroc >= champion_auroc - tolerance
    verdict = {"name": name, "version": version.version, "holdout_auroc": auroc, "min_auroc": min_auroc,
               "champion_version": champion.version if champion else None, "champion_auroc": champion_auroc,
               "gate_passed": bool(meets_min and not_worse)}
    audit.record("champion_gate", f"{name}/{version.version}", actor,
                 "passed" if verdict["gate_passed"] else "failed: " + ("below min_auroc" if not meets_min else "worse than the champion"),
                 after={k: verdict[k] for k in ("holdout_auroc", "min_auroc", "champion_version", "champion_auroc", "gate_passed")})
    return verdict
