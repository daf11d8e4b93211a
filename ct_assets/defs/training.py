"""Training set, candidate model, holdout evaluation, registry version and the champion alias."""

from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from ct_assets import settings
from ct_assets.core.audit import dagster_actor
from ct_assets.core.privacy import SUBJECT_KEY
from ct_assets.core.provenance import (
    STAGE_LOGIC,
    model_provenance,
    module_code_version,
    source_digests,
    stage_code_versions,
)
from ct_assets.core.registry import CHALLENGER, ApprovalRequired, promote
from ct_assets.defs import keys
from ct_assets.defs.failures import fails_fast
from ct_assets.defs.features import require_landmark
from ct_assets.defs.frames import Frame
from ct_assets.defs.metadata import image_md, table_md
from ct_assets.defs.resources import FeatureStore, Lake, MlflowSettings, StudyDesign, StudySource

if TYPE_CHECKING:
    from ct_assets.core import training as training_logic



TRAINING_CODE = module_code_version(*STAGE_LOGIC["training"])


class OutcomeConfig(dg.Config):
    """Which events make the label (see ct_assets/core/training.py for the rationale)."""

    ae_serious: bool = Field(default=True, description="Count serious AEs (AESER = 'Y').")
    ae_severities: list[str] = Field(default=["SEVERE"], description="AESEV values that count.")
    ds_terms: list[str] = Field(default=["ADVERSE EVENT"], description="DS.DSDECOD values that count (discontinuation).")
    holdout_fraction: float = Field(default=0.25, description="Share of subjects held out for evaluation.")
    split_seed: int = 0

    def outcome(self, design: StudyDesign) -> "training_logic.Outcome":
        """The outcome after the study design's landmark day (shared with the features)."""
        from ct_assets.core import training as training_logic

        return training_logic.Outcome(self.ae_serious, tuple(self.ae_severities), tuple(self.ds_terms), design.landmark_day)


class ModelConfig(dg.Config):
    model_type: str = Field(default="logistic_regression", description="logistic_regression or hist_gradient_boosting")
    C: float = Field(default=0.01, description="Inverse L2 strength (logistic regression).")
    max_depth: int = 3
    learning_rate: float = 0.05
    max_iter: int = 200
    class_weight: str | None = Field(default=None, description="None keeps predicted risks calibrated; 'balanced' "
                                                                "reweights the rarer class and inflates risks.")
    seed: int = 0
    cv_folds: int = 5

    def params(self) -> "training_logic.ModelParams":
        from ct_assets.core import training as training_logic

        return training_logic.ModelParams(self.model_type, self.C, self.max_depth, self.learning_rate, self.max_iter,
                             self.class_weight, seed=self.seed)


class PromotionConfig(dg.Config):
    min_auroc: float = Field(default=0.6, description="Holdout AUROC a model needs before it can be champion.")
    tolerance: float = Field(default=0.0, description="How much worse than the champion (AUROC) is still acceptable.")


@dg.asset(
    key=keys.TRAINING_SET,
    group_name="training",
    code_version=TRAINING_CODE,
    kinds={"pandas", "parquet"},
    deps=[keys.SUBJECT_FEATURES],
    ins={"dm": dg.AssetIn(keys.validated("DM")), "ae": dg.AssetIn(keys.validated("AE")), "ds": dg.AssetIn(keys.validated("DS"))},
    description="Subject features as of each subject's landmark (a point-in-time retrieval from the feature store), "
    "with the outcome label and a fixed train / holdout split.",
)
def training_set(context: dg.AssetExecutionContext, config: OutcomeConfig, study_design: StudyDesign, study: StudySource,
                 feature_store: FeatureStore, dm: Frame, ae: Frame, ds: Frame) -> dg.Output[Frame]:
    from ct_assets.adapters import feature_store as fs
    from ct_assets.core import training as training_logic

    require_landmark(context.instance, study_design)
    # No feature value stamped after a subject's landmark reaches the model: Feast's point-in-time join.
    s = feature_store.store_settings()
    store = feature_store.store()
    fs.apply(store, s)
    features = fs.training_features(store, s, dm, study_design.landmark_day)
    on_study = int(dm.loc[dm["RFSTDTC"].notna(), SUBJECT_KEY].nunique())
    with fails_fast():
        labelled, excluded = training_logic.make_training_set(features, dm, ae, ds, config.outcome(study_design),
                                                 config.holdout_fraction, config.split_seed)
    counts = labelled.groupby(training_logic.SPLIT)[training_logic.LABEL].agg(["size", "sum"])
    context.log.info(f"{len(labelled)} subjects labelled; excluded: {excluded.prior_event} with an event inside the feature "
                     f"window, {excluded.ambiguous_event_dates} whose event dates allow either side of the landmark")
    return dg.Output(
        labelled,
        metadata={
            "dagster/row_count": len(labelled),
            "positives": int(labelled[training_logic.LABEL].sum()),
            "prevalence": round(float(labelled[training_logic.LABEL].mean()), 4) if len(labelled) else 0.0,
            "excluded_prior_event": excluded.prior_event,
            "ambiguous_event_dates": excluded.ambiguous_event_dates,
            "train_subjects": int(counts.loc["train", "size"]) if "train" in counts.index else 0,
            "holdout_subjects": int(counts.loc["holdout", "size"]) if "holdout" in counts.index else 0,
            "outcome": dg.MetadataValue.json(config.model_dump() | {"after_day": study_design.landmark_day}),
            "landmark_day": study_design.landmark_day,
            "features_as_of": "each subject's landmark (point-in-time, feature store)",
            "subjects_without_features_at_landmark": on_study - len(features),
            "study_fingerprint": study.fingerprint(),
        },
    )


@dg.asset(
    key=keys.CANDIDATE_MODEL,
    group_name="training",
    code_version=TRAINING_CODE,
    kinds={"mlflow", "scikitlearn"},
    pool="model_training",
    ins={"training_set": dg.AssetIn(keys.TRAINING_SET)},
    description="A classifier of adverse-event risk trained on the train split, tracked as an MLflow run.",
)
def candidate_model(context: dg.AssetExecutionContext, config: ModelConfig, mlflow_settings: MlflowSettings, lake: Lake,
                    feature_store: FeatureStore, training_set: Frame) -> dg.Output[dict]:
    import pandas as pd

    from ct_assets.core.tracking import log_candidate

    source = str(lake.path_for(keys.TRAINING_SET.path[-1]))
    offline = feature_store.store_settings().offline_path  # every subject the server must score, trained on or not
    population = pd.read_parquet(offline) if offline.exists() else None
    with mlflow_settings.active_run(context), fails_fast():
        record = log_candidate(training_set, config.params(), source, config.cv_folds, population)
    run_id, metrics, cv_mean = record["run_id"], record["metrics"], record["metrics"]["cv_auroc_mean"]
    context.log.info(f"candidate model logged to MLflow run {run_id}: cv AUROC {cv_mean:.3f}")
    return dg.Output(record, metadata={"mlflow_run_id": run_id, "model_uri": record["model_uri"],
                                       "features": len(record["features"])} | {k: round(v, 4) for k, v in metrics.items()}
                     | record["seconds"])  # the fit and the cross-validation's wall time


@dg.asset(
    key=keys.MODEL_EVALUATION,
    group_name="training",
    code_version=TRAINING_CODE,
    kinds={"mlflow"},
    pool="mlflow_operations",
    ins={"candidate": dg.AssetIn(keys.CANDIDATE_MODEL), "training_set": dg.AssetIn(keys.TRAINING_SET)},
    description="The candidate on the held-out subjects: discrimination, calibration and subgroups.",
)
def model_evaluation(context: dg.AssetExecutionContext, mlflow_settings: MlflowSettings, candidate: dict,
                     training_set: Frame) -> dg.Output[dict]:
    import pandas as pd

    from ct_assets.core.tracking import evaluate_and_log

    plot = settings.reports_dir() / f"calibration-{candidate['run_id']}.png"
    with mlflow_settings.active_run(context):
        result = evaluate_and_log(candidate["model_uri"], training_set, plot)
    metrics, subgroups = result["metrics"], pd.DataFrame(result["subgroups"])
    context.log.info(f"holdout AUROC {metrics['auroc']:.3f} (95% CI {metrics['auroc_ci_low']:.2f}-"
                     f"{metrics['auroc_ci_high']:.2f}), AUPRC {metrics['auprc']:.3f}, Brier {metrics['brier']:.3f}")
    return dg.Output(
        {"run_id": candidate["run_id"], "metrics": metrics, "subgroups": result["subgroups"]},
        metadata={f"holdout_{k}": round(v, 4) for k, v in metrics.items()}
        | {"subgroups": table_md(subgroups), "calibration_plot": image_md(plot, "calibration"),
           "calibration_png": dg.MetadataValue.path(str(plot))},
    )


@dg.asset(
    key=keys.REGISTERED_MODEL,
    group_name="training",
    code_version=TRAINING_CODE,
    kinds={"mlflow"},
    pool="mlflow_operations",  # no retry: a failed champion gate is a verdict, not a glitch
    ins={"candidate": dg.AssetIn(keys.CANDIDATE_MODEL), "evaluation": dg.AssetIn(keys.MODEL_EVALUATION),
         "training_set": dg.AssetIn(keys.TRAINING_SET)},
    check_specs=[dg.AssetCheckSpec(
        "champion_gate", asset=keys.REGISTERED_MODEL, blocking=True,
        description="Holdout AUROC at least the minimum and not worse than the current champion on the same holdout.",
    )],
    description="A version of adverse-event-predictor in the MLflow registry, alias 'challenger'.",
)
def registered_model(context: dg.AssetExecutionContext, config: PromotionConfig, mlflow_settings: MlflowSettings,
                     study: StudySource, lake: Lake, candidate: dict, evaluation: dict, training_set: Frame):
    from ct_assets.core import training as training_logic
    from ct_assets.core.tracking import register_challenger

    name, auroc = mlflow_settings.model_name, evaluation["metrics"]["auroc"]
    holdout = training_logic.holdout_of(training_set)
    sources = source_digests(study.source_files())
    provenance = model_provenance(sources, training_set, lake.quarantined_rows(), _split_seed(context),
                                  holdout[SUBJECT_KEY], stage_code_versions())
    with mlflow_settings.session() as client:
        if "ct.sources_artifact" in provenance:  # too many files for a tag: the listing beside the model
            client.log_dict(candidate["run_id"], sources, provenance["ct.sources_artifact"])
        gate = register_challenger(client, name, candidate["model_uri"], auroc, holdout, config.min_auroc, config.tolerance,
                                   {"dagster_run_id": context.run.run_id} | provenance, dagster_actor(context))
    champion_version, champion_auroc = gate["champion_version"], gate["champion_auroc"]
    yield dg.Output(
        {"name": name, "version": gate["version"], "run_id": candidate["run_id"], "holdout_auroc": auroc,
         "champion_version": champion_version, "champion_auroc": champion_auroc},
        metadata={"version": gate["version"], "alias": CHALLENGER, "holdout_auroc": round(auroc, 4)}
        | {k: v for k, v in provenance.items()},
    )
    if gate["gate_passed"]:
        verdict = "passed"
    elif not auroc >= config.min_auroc:
        verdict = f"holdout AUROC {auroc:.3f} < min_auroc {config.min_auroc} (holdout n={len(holdout)})"
    else:
        verdict = f"holdout AUROC {auroc:.3f} worse than champion v{champion_version}'s {champion_auroc:.3f} on the same holdout"
    yield dg.AssetCheckResult(
        check_name="champion_gate",
        passed=gate["gate_passed"],
        description=verdict,
        metadata={"verdict": verdict, "holdout_auroc": round(auroc, 4), "min_auroc": config.min_auroc,
                  "champion_version": champion_version or "none",
                  "champion_auroc_same_holdout": round(champion_auroc, 4) if champion_auroc is not None else "none"},
    )


def _split_seed(context: dg.AssetExecutionContext) -> int:
    event = context.instance.get_latest_materialization_event(keys.TRAINING_SET)
    outcome = event.asset_materialization.metadata.get("outcome") if event and event.asset_materialization else None
    return int(outcome.value.get("split_seed", 0)) if outcome else 0


@dg.asset(
    key=keys.CHAMPION_MODEL,
    group_name="training",
    kinds={"mlflow"},
    pool="mlflow_operations",
    ins={"registered": dg.AssetIn(keys.REGISTERED_MODEL)},
    deps=keys.SOUND_DATA,
    description="The production model: alias 'champion', set only when the champion gate passed and, in the same run, "
    "the data quality steps succeeded. The replaced champion keeps alias 'previous_champion' so that a rollback is one "
    "alias switch.",
)
def champion_model(context: dg.AssetExecutionContext, mlflow_settings: MlflowSettings, registered: dict) -> dg.Output[dict]:
    name = registered["name"]
    with mlflow_settings.session() as client:
        try:
            previous = promote(client, name, registered["version"], dagster_actor(context))
        except ApprovalRequired as err:
            raise dg.Failure(description=str(err), allow_retries=False) from None
    context.log.info(f"{name} version {registered['version']} is champion")
    record = {"name": name, "version": registered["version"], "previous_version": previous.version if previous else None}
    return dg.Output(record, metadata={"champion_version": registered["version"],
                                       "previous_champion": previous.version if previous else "none"})
