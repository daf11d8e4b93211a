"""Data quality monitoring: the report over all domains, and the re-check of quarantined rows."""

import dagster as dg
import pandas as pd
from pydantic import Field

from ct_assets import keys
from ct_assets.alerts import AlertWebhook
from ct_assets.lib.metadata import table_md
from ct_assets.lib.sdtm import DOMAINS, FINDINGS_DOMAINS, domain_files
from ct_assets.quality import report as R
from ct_assets.quality.schemas import domain_schema
from ct_assets.quality.validate import REASON, RULES, split_valid
from ct_assets.resources import Lake, StudySource


class DataQualityConfig(dg.Config):
    min_quality_score: float = Field(default=0.95, description="Legacy data quality threshold.")
    max_age_days: float = Field(default=7.0, description="Newest source file older than this: data is stale.")
    anomaly_z: float = Field(default=6.0, description="Robust z-score above which a result is anomalous.")


def _read(lake: Lake, name: str) -> pd.DataFrame:
    return pd.read_parquet(lake.path_for(name))


@dg.asset(
    key=keys.DATA_QUALITY_REPORT, group_name="quality", kinds={"pandas"},
    deps=[keys.validated(d) for d in DOMAINS] + [keys.quarantine(d) for d in DOMAINS]
    + [keys.raw("DM")] + [keys.raw(d) for d in FINDINGS_DOMAINS],
    check_specs=[dg.AssetCheckSpec("score_above_threshold", asset=keys.DATA_QUALITY_REPORT,
                                   description="overall data quality score at least the threshold"),
                 dg.AssetCheckSpec("fresh", asset=keys.DATA_QUALITY_REPORT,
                                   description="newest study file younger than max_age_days")],
    description="Completeness, validity, cross-domain consistency, freshness and anomalies of the study, "
                "and one score against the data quality threshold.",
)
def data_quality_report(context: dg.AssetExecutionContext, config: DataQualityConfig, lake: Lake, study: StudySource,
                        alerts: AlertWebhook):
    validated = {d: _read(lake, f"validated_{d.lower()}") for d in DOMAINS}
    quarantined = {d: _read(lake, f"quarantine_{d.lower()}") for d in DOMAINS}
    raw_dm = _read(lake, "raw_dm")
    period = R.study_period(validated["DM"])
    rows = []
    for d in DOMAINS:
        total = len(validated[d]) + len(quarantined[d])
        row = {"domain": d, "rows": total, "validity": len(validated[d]) / total if total else 1.0,
               "completeness": R.completeness(validated[d], d)}
        if d in FINDINGS_DOMAINS:
            row["subjects_in_dm"] = R.subjects_in_dm(_read(lake, f"raw_{d.lower()}"), raw_dm)
            row["dates_in_study_period"] = R.dates_within_period(validated[d], d, period)
        rows.append(row)
    per_domain = pd.DataFrame(rows)
    visits = validated["SV"] if len(validated["SV"]) else validated["VS"]
    order = R.visit_order(visits, "SVSTDTC" if len(validated["SV"]) else "VSDTC") if len(visits) else 1.0
    present = per_domain[per_domain["rows"] > 0]
    components = {
        "validity": float((present["validity"] * present["rows"]).sum() / present["rows"].sum()),
        "completeness": float(present["completeness"].mean()),
        "subjects_in_dm": float(present["subjects_in_dm"].dropna().mean()) if present["subjects_in_dm"].notna().any() else 1.0,
        "dates_in_study_period": float(present["dates_in_study_period"].dropna().mean())
        if present["dates_in_study_period"].notna().any() else 1.0,
        "visit_order": order,
    }
    anomalies = pd.concat([R.anomalies(validated[d], d, config.anomaly_z) for d in FINDINGS_DOMAINS], ignore_index=True)
    anomaly_share = float(anomalies["anomalies"].sum() / anomalies["results"].sum()) if len(anomalies) else 0.0
    components["non_anomalous"] = 1.0 - anomaly_share
    score = R.quality_score(components)
    files = [p for d in DOMAINS for p in domain_files(study.path(), d)]
    age = R.freshness_days(files)
    if score < config.min_quality_score:
        alerts.send(f":warning: data quality score {score:.3f} below {config.min_quality_score}", context.log)
    report = {"score": score, "components": components, "age_days": age, "anomaly_share": anomaly_share,
              "per_domain": per_domain.to_dict(orient="records")}
    yield dg.Output(report, metadata={"score": round(score, 4), "age_days": round(age, 2), "anomalies": int(anomalies["anomalies"].sum()),
                                      **{k: round(v, 4) for k, v in components.items()},
                                      "per_domain": table_md(per_domain), "anomalous_tests": table_md(anomalies, 10)})
    yield dg.AssetCheckResult(check_name="score_above_threshold", passed=score >= config.min_quality_score,
                              metadata={"score": round(score, 4), "threshold": config.min_quality_score})
    yield dg.AssetCheckResult(check_name="fresh", passed=age <= config.max_age_days, severity=dg.AssetCheckSeverity.WARN,
                              metadata={"age_days": round(age, 2), "max_age_days": config.max_age_days})


@dg.asset(
    key=keys.QUARANTINE_RECHECK, group_name="quality", kinds={"pandera"},
    deps=[keys.quarantine(d) for d in DOMAINS] + [keys.raw("DM")],
    description="Quarantined rows validated again with today's rules and subjects: how many a rule or data fix "
                "would now release. The data_cleaning sensor re-runs validation for those domains.",
)
def quarantine_recheck(lake: Lake) -> dg.Output[dict]:
    known = set(_read(lake, "raw_dm")["USUBJID"].dropna().astype(str))
    rows = []
    for d in DOMAINS:
        path = lake.path_for(f"quarantine_{d.lower()}")
        if not path.exists():  # domain not validated yet: nothing quarantined to re-check
            continue
        q = pd.read_parquet(path)
        if q.empty:
            rows.append({"domain": d, "quarantined": 0, "now_valid": 0})
            continue
        again = split_valid(q.drop(columns=[REASON, RULES]), domain_schema(d, None if d == "DM" else known))
        rows.append({"domain": d, "quarantined": len(q), "now_valid": len(again.accepted)})
    table = pd.DataFrame(rows)
    release = table.loc[table["now_valid"] > 0, "domain"].tolist()
    return dg.Output({"domains_to_revalidate": release, "table": table.to_dict(orient="records")},
                     metadata={"quarantined": int(table["quarantined"].sum()), "now_valid": int(table["now_valid"].sum()),
                               "domains_to_revalidate": ", ".join(release) or "none", "by_domain": table_md(table)})
