"""Model monitoring: is the data the champion sees still like the data it learned from, and does
it still predict well? Each breach is stated with its reason in the report."""

import hashlib
import json
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from ct_assets import settings
from ct_assets.adapters.feature_store import TIMESTAMPS  # constants only: no pandas, no Feast
from ct_assets.core import audit
from ct_assets.core.audit import dagster_actor
from ct_assets.core.privacy import SUBJECT_KEY
from ct_assets.core.registry import score
from ct_assets.defs import keys
from ct_assets.defs.alerts import AlertWebhook
from ct_assets.defs.frames import Frame
from ct_assets.defs.metadata import image_md, pyplot, save_figure, table_md
from ct_assets.defs.resources import MlflowSettings

if TYPE_CHECKING:
    from ct_assets.core import drift as monitoring_logic



class MonitoringConfig(dg.Config):
    psi_threshold: float = Field(default=0.25, description="PSI above which a feature has drifted (0.1 moderate, 0.25 major).")
    ks_alpha: float = Field(default=0.01, description="KS test level, Bonferroni-corrected over features.")
    max_drifted_share: float = Field(default=0.10, description="Share of drifted features that is a breach.")
    max_drifted_features: int = Field(default=2, description="More drifted features than this is a breach, whatever "
                                                            "the share (a study has hundreds of features).")
    prediction_psi_threshold: float = 0.25
    max_auroc_drop: float = Field(default=0.10, description="AUROC drop on newly labelled subjects that is a breach.")
    min_new_subjects: int = Field(default=20, description="Fewer newly labelled subjects than this: no verdict.")
    concept_alpha: float = Field(default=0.01, description="Level of the observed-vs-expected events test.")


def _features_only(df: Frame) -> Frame:
    from ct_assets.core import training as training_logic

    return df.drop(columns=[c for c in (SUBJECT_KEY, training_logic.LABEL, training_logic.SPLIT, "SPLIT_BUCKET", "SCORE",
                                        *TIMESTAMPS) if c in df.columns])


def _model_uri(reference_meta: dict) -> str:
    return f"models:/{reference_meta['model_name']}/{reference_meta['version']}"


@dg.multi_asset(
    outs={"monitoring_reference": dg.AssetOut(key=keys.MONITORING_REFERENCE, group_name="monitoring", kinds={"parquet"},
                                              description="The champion's training population with its risk scores: "
                                                          "what drift is measured against."),
          "monitoring_reference_meta": dg.AssetOut(key=keys.MONITORING_REFERENCE_META, group_name="monitoring",
                                                   kinds={"json"}, description="Which champion the reference belongs to.")},
    ins={"champion": dg.AssetIn(keys.CHAMPION_MODEL), "training_set": dg.AssetIn(keys.TRAINING_SET)},
)
def monitoring_reference(mlflow_settings: MlflowSettings, champion: dict, training_set: Frame):
    from ct_assets.core import training as training_logic

    with mlflow_settings.session():
        meta = {"model_name": champion["name"], "version": int(champion["version"])}
        reference = training_set.assign(SCORE=score(_model_uri(meta), training_set))
        y, p = _holdout_xy(reference)
        meta |= {"holdout_auroc": float(training_logic.binary_metrics(y, p)["auroc"]), "subjects": len(reference),
                 "holdout_oe_ratio": float(y.sum() / p.sum()) if p.sum() else 1.0}
        yield dg.Output(reference, output_name="monitoring_reference", metadata={"dagster/row_count": len(reference),
                                                                                 "champion_version": meta["version"]})
        yield dg.Output(meta, output_name="monitoring_reference_meta", metadata={k: v for k, v in meta.items()})


def _holdout_xy(reference: Frame):
    from ct_assets.core import training as training_logic

    hold = reference[reference[training_logic.SPLIT] == "holdout"]
    return hold[training_logic.LABEL], hold["SCORE"].to_numpy()


@dg.asset(key=keys.FEATURE_DRIFT, group_name="monitoring", kinds={"scipy"},
          ins={"features": dg.AssetIn(keys.SUBJECT_FEATURES), "reference": dg.AssetIn(keys.MONITORING_REFERENCE)},
          description="Per feature: PSI and KS test of current subjects against the champion's training "
                      "population, and the share of values outside the reference range.")
def feature_drift(config: MonitoringConfig, features: Frame, reference: Frame) -> dg.Output[Frame]:
    from ct_assets.core import drift as monitoring_logic
    from ct_assets.core.features import CATEGORICAL

    table = monitoring_logic.feature_drift(_features_only(reference), _features_only(features), CATEGORICAL)
    table["drifted"] = monitoring_logic.flag_drift(table, config.psi_threshold, config.ks_alpha)
    table = table.sort_values("psi", ascending=False, ignore_index=True)
    share = float(table["drifted"].mean()) if len(table) else 0.0
    return dg.Output(table, metadata={"features": len(table), "drifted": int(table["drifted"].sum()),
                                      "drifted_share": round(share, 4), "max_psi": round(float(table["psi"].max()), 4),
                                      "top": table_md(table, 12)})


@dg.asset(key=keys.PREDICTION_DRIFT, group_name="monitoring", kinds={"mlflow"},
          ins={"features": dg.AssetIn(keys.SUBJECT_FEATURES), "reference": dg.AssetIn(keys.MONITORING_REFERENCE),
               "reference_meta": dg.AssetIn(keys.MONITORING_REFERENCE_META)},
          description="The champion's risk scores on current subjects against its scores on its training population.")
def prediction_drift(mlflow_settings: MlflowSettings, features: Frame, reference: Frame, reference_meta: dict) -> dg.Output[dict]:
    import numpy as np
    import pandas as pd

    from ct_assets.core import drift as monitoring_logic

    with mlflow_settings.session():
        current = score(_model_uri(reference_meta), features)
        ks, pv = monitoring_logic.ks_test(reference["SCORE"], pd.Series(current))
        result = {"psi": monitoring_logic.psi_numeric(reference["SCORE"], pd.Series(current)), "ks_stat": ks, "ks_pvalue": pv,
                  "mean_score_reference": float(reference["SCORE"].mean()), "mean_score_current": float(np.mean(current)),
                  "subjects": len(current)}
        return dg.Output(result, metadata={k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()})


def newly_labelled(training_set: Frame, reference: Frame) -> Frame:
    """Subjects with an outcome label today whom the champion never saw (neither train nor holdout)."""
    return training_set[~training_set[SUBJECT_KEY].isin(reference[SUBJECT_KEY])].reset_index(drop=True)


@dg.asset(key=keys.MODEL_PERFORMANCE, group_name="monitoring", kinds={"mlflow"},
          ins={"training_set": dg.AssetIn(keys.TRAINING_SET), "reference": dg.AssetIn(keys.MONITORING_REFERENCE),
               "reference_meta": dg.AssetIn(keys.MONITORING_REFERENCE_META)},
          description="The champion on subjects labelled since it was trained, against its own holdout AUROC.")
def model_performance(config: MonitoringConfig, mlflow_settings: MlflowSettings, training_set: Frame,
                      reference: Frame, reference_meta: dict) -> dg.Output[dict]:
    from ct_assets.core import training as training_logic

    with mlflow_settings.session():
        new = newly_labelled(training_set, reference)
        result = {"new_subjects": len(new), "reference_auroc": reference_meta["holdout_auroc"], "auroc": None, "auroc_drop": None,
                  "enough_subjects": len(new) >= config.min_new_subjects}
        if len(new) and new[training_logic.LABEL].nunique() == 2:
            m = training_logic.binary_metrics(new[training_logic.LABEL], score(_model_uri(reference_meta), new))
            result |= {"auroc": m["auroc"], "brier": m["brier"], "auroc_drop": reference_meta["holdout_auroc"] - m["auroc"]}
        return dg.Output(result, metadata={k: v for k, v in result.items() if v is not None})


@dg.asset(key=keys.CONCEPT_DRIFT, group_name="monitoring", kinds={"mlflow", "scipy"},
          ins={"training_set": dg.AssetIn(keys.TRAINING_SET), "reference": dg.AssetIn(keys.MONITORING_REFERENCE),
               "reference_meta": dg.AssetIn(keys.MONITORING_REFERENCE_META)},
          description="Observed against expected outcomes on newly labelled subjects: has the link between "
                      "features and outcome moved?")
def concept_drift(mlflow_settings: MlflowSettings, training_set: Frame, reference: Frame, reference_meta: dict) -> dg.Output[dict]:
    from ct_assets.core import drift as monitoring_logic
    from ct_assets.core import training as training_logic

    with mlflow_settings.session():
        new = newly_labelled(training_set, reference)
        if new.empty:
            result = {"n": 0.0}
        else:
            result = monitoring_logic.observed_vs_expected(new[training_logic.LABEL], score(_model_uri(reference_meta), new),
                                            reference_meta.get("holdout_oe_ratio", 1.0))
        return dg.Output(result, metadata={k: round(v, 4) for k, v in result.items()})


def breaches(config: MonitoringConfig, drift: Frame, prediction: dict, performance: dict, concept: dict) -> "list[monitoring_logic.Breach]":
    from ct_assets.core import drift as monitoring_logic

    found = []
    share = float(drift["drifted"].mean()) if len(drift) else 0.0
    count = int(drift["drifted"].sum())
    if share > config.max_drifted_share or count > config.max_drifted_features:
        top = ", ".join(drift.loc[drift["drifted"], "feature"].head(5))
        found.append(monitoring_logic.Breach("data_drift", f"{count} features ({share:.0%}) drifted (PSI > {config.psi_threshold}): {top}"))
    if prediction["psi"] > config.prediction_psi_threshold:
        found.append(monitoring_logic.Breach("prediction_drift", f"score PSI {prediction['psi']:.2f}"))
    if performance["enough_subjects"] and performance["auroc_drop"] is not None and performance["auroc_drop"] > config.max_auroc_drop:
        found.append(monitoring_logic.Breach("performance", f"AUROC {performance['auroc']:.2f} on {performance['new_subjects']} new "
                                             f"subjects, {performance['auroc_drop']:.2f} below reference"))
    if concept.get("n", 0) >= config.min_new_subjects and concept["pvalue"] < config.concept_alpha:
        found.append(monitoring_logic.Breach("concept_drift", f"observed/expected events {concept['o_e_ratio']:.2f} (p={concept['pvalue']:.1e})"))
    return found


def _drift_plot(drift: Frame, threshold: float, path):
    import numpy as np

    top = drift.head(15).iloc[::-1]
    fig, ax = pyplot().subplots(figsize=(6, 4.5), dpi=100)
    ax.barh(top["feature"], top["psi"], color=np.where(top["drifted"], "tab:red", "tab:blue"))
    ax.axvline(threshold, ls="--", color="grey", label=f"threshold {threshold}")
    ax.set_xlabel("population stability index")
    ax.set_title("Feature drift against the champion's training data")
    ax.legend(loc="lower right")
    return save_figure(fig, path)


@dg.asset(key=keys.MONITORING_REPORT, group_name="monitoring", kinds={"pandas"},
          ins={"drift": dg.AssetIn(keys.FEATURE_DRIFT), "prediction": dg.AssetIn(keys.PREDICTION_DRIFT),
               "performance": dg.AssetIn(keys.MODEL_PERFORMANCE), "concept": dg.AssetIn(keys.CONCEPT_DRIFT),
               "reference_meta": dg.AssetIn(keys.MONITORING_REFERENCE_META)},
          description="Every monitoring verdict in one place; a breach triggers retraining (drift_retraining_sensor).")
def monitoring_report(context: dg.AssetExecutionContext, config: MonitoringConfig,
                      drift: Frame, prediction: dict, performance: dict, concept: dict, reference_meta: dict) -> dg.Output[dict]:
    import pandas as pd

    found = breaches(config, drift, prediction, performance, concept)
    kinds = sorted({b.kind for b in found})
    # The same breach (same champion, same kinds, same data) must trigger retraining only once.
    digest = hashlib.sha256(pd.util.hash_pandas_object(drift[["feature", "psi"]].round(6), index=False).values.tobytes()).hexdigest()
    breach_id = hashlib.sha256(json.dumps([reference_meta["version"], kinds, digest]).encode()).hexdigest()[:16] if found else None
    plot = _drift_plot(drift, config.psi_threshold, settings.reports_dir() / f"drift-{context.run.run_id}.png")
    report = {"breach": bool(found), "breach_id": breach_id, "reasons": [str(b) for b in found], "kinds": kinds,
              "champion_version": reference_meta["version"], "drifted_features": int(drift["drifted"].sum()),
              "prediction_psi": prediction["psi"], "performance": performance, "concept": concept}
    if found:
        audit.record("drift_breach", f"{reference_meta['model_name']}/{reference_meta['version']}", dagster_actor(context),
                     "; ".join(report["reasons"]), after={"breach_id": breach_id, "kinds": kinds})
    return dg.Output(report, metadata={
        "breach": bool(found), "breach_id": breach_id or "", "reasons": "; ".join(report["reasons"]) or "none",
        "champion_version": reference_meta["version"], "drift_plot": image_md(plot, "drift"),
        "drift_png": dg.MetadataValue.path(str(plot)),
    })


@dg.asset(key=keys.MONITORING_ALERTS, group_name="monitoring", kinds={"slack"}, pool="alert_processing",
          ins={"report": dg.AssetIn(keys.MONITORING_REPORT)},
          description="Posts a breach of the monitoring report to the alert webhook (the legacy send_alerts_if_needed).")
def monitoring_alerts(context: dg.AssetExecutionContext, alerts: AlertWebhook, report: dict) -> dg.Output[dict]:
    delivered = False
    if report["breach"]:
        delivered = alerts.send(f":warning: model monitoring breach for champion v{report['champion_version']}: "
                                + "; ".join(report["reasons"]), context.log)
    else:
        context.log.info("no breach: no alert")
    return dg.Output({"breach": report["breach"], "breach_id": report["breach_id"], "delivered": delivered},
                     metadata={"breach": report["breach"], "delivered": delivered, "webhook_configured": alerts.configured()})
