"""Data quality monitoring, one asset per legacy check: completeness, consistency, freshness and
anomalies feed the report and its score; the re-check of quarantined rows follows."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from ct_assets.core import audit
from ct_assets.core.audit import dagster_actor
from ct_assets.core.lake import parquet_columns, parquet_files, parquet_rows
from ct_assets.core.privacy import SUBJECT_KEY
from ct_assets.core.sdtm import DOMAINS, FINDINGS_DOMAINS, SOURCE_COLS, domain_files
from ct_assets.defs import keys
from ct_assets.defs.alerts import AlertWebhook
from ct_assets.defs.frames import Frame
from ct_assets.defs.metadata import table_md
from ct_assets.defs.resources import Lake, QualityPolicy, Spark, StudySource


class FreshnessConfig(dg.Config):
    max_age_days: float = Field(default=7.0, description="Newest source file older than this: data is stale.")


class AnomalyConfig(dg.Config):
    anomaly_z: float = Field(default=6.0, description="Robust z-score above which a result is anomalous.")


def _read(lake: Lake, name: str, columns: list[str] | None = None) -> Frame:
    """A lake dataset in pandas: whole, or those of ``columns`` it has."""
    import pandas as pd

    path = lake.path_for(name)
    return pd.read_parquet(path, columns=None if columns is None else [c for c in columns if c in parquet_columns(path)])


def _mean(values) -> float | None:
    """Mean of the values that could be assessed; None when none could."""
    values = [v for v in values if v is not None and v == v]
    return float(sum(values) / len(values)) if values else None


def _rounded(values: dict) -> dict:
    return {k: "not assessable" if v is None else round(v, 4) for k, v in values.items()}


@dg.asset(key=keys.DATA_COMPLETENESS, group_name="quality", kinds={"parquet"}, deps=[keys.raw(d) for d in DOMAINS],
          description="Share of non-null values in the SDTM columns each domain carries, as received.")
def data_completeness(lake: Lake) -> dg.Output[Frame]:
    # From the Parquet footers' null counts: no row is read, whatever the study's size.
    import pandas as pd

    from ct_assets.core import report as quality_report

    measured = {d: quality_report.dataset_completeness(lake.path_for(f"raw_{d.lower()}"), d) for d in DOMAINS}
    table = pd.DataFrame([{"domain": d, "rows": n, "completeness": c} for d, (n, c) in measured.items()])
    present = table[table["rows"] > 0]
    return dg.Output(table, metadata=_rounded({"completeness": _mean(present["completeness"])}) | {"by_domain": table_md(table)})


@dg.asset(key=keys.DATA_CONSISTENCY, group_name="quality", kinds={"duckdb"},
          deps=[keys.raw("DM")] + [keys.raw(d) for d in FINDINGS_DOMAINS] + [keys.validated(d) for d in ("DM", "SV", *FINDINGS_DOMAINS)],
          description="Cross-domain consistency: findings subjects known to DM, dates within each subject's "
                      "study period, scheduled visits in date order.")
def data_consistency(lake: Lake) -> dg.Output[dict]:
    import pandas as pd

    from ct_assets.core import report as quality_report
    from ct_assets.engines import duck_quality  # one DuckDB pass per findings domain, on any cluster setting too

    raw_dm = _read(lake, "raw_dm", ["USUBJID"])  # DM's columns that the measures read, not the domain
    dm = _read(lake, "validated_dm", [SUBJECT_KEY, *quality_report.PERIOD_STARTS, *quality_report.PERIOD_ENDS])
    period = quality_report.study_period(dm)
    notes = []
    if period["end"].isna().all():
        notes.append("dates_in_study_period not assessable: no subject has an end date "
                     f"({', '.join(c for c in quality_report.PERIOD_ENDS)} absent or empty in DM)")
    rows = [{"domain": d,
             "subjects_in_dm": duck_quality.subjects_in_dm(lake.path_for(f"raw_{d.lower()}"), raw_dm["USUBJID"]),
             "dates_in_study_period": duck_quality.dates_within_period(lake.path_for(f"validated_{d.lower()}"), d, period)}
            for d in FINDINGS_DOMAINS]
    sv = lake.path_for("validated_sv")
    visits, date_col = (sv, "SVSTDTC") if duck_quality.rows(sv) else (lake.path_for("validated_vs"), "VSDTC")
    table = pd.DataFrame(rows)
    result = {"subjects_in_dm": _mean(table["subjects_in_dm"]), "dates_in_study_period": _mean(table["dates_in_study_period"]),
              "visit_order": duck_quality.visit_order(visits, date_col)}
    if result["visit_order"] is None:
        notes.append(f"visit_order not assessable: VISITNUM or {date_col} absent or empty")
    return dg.Output(result | {"by_domain": table.to_dict(orient="records"), "not_assessable": notes},
                     metadata=_rounded(result) | {"by_domain": table_md(table), "engine": "duckdb",
                                                  "not_assessable": "; ".join(notes) or "none"})


@dg.asset(key=keys.DATA_FRESHNESS, group_name="quality", kinds={"pandas"}, deps=[keys.raw(d) for d in DOMAINS],
          check_specs=[dg.AssetCheckSpec("fresh", asset=keys.DATA_FRESHNESS,
                                         description="newest study file younger than max_age_days")],
          description="Age of the newest file of the study source.")
def data_freshness(config: FreshnessConfig, study: StudySource):
    from ct_assets.core import report as quality_report

    files = [p for d in DOMAINS for p in domain_files(study.path(), d)]
    age = quality_report.freshness_days(files)
    yield dg.Output({"age_days": age, "files": len(files)}, metadata={"age_days": round(age, 2), "files": len(files)})
    yield dg.AssetCheckResult(check_name="fresh", passed=age <= config.max_age_days, severity=dg.AssetCheckSeverity.WARN,
                              metadata={"age_days": round(age, 2), "max_age_days": config.max_age_days})


@dg.asset(key=keys.DATA_ANOMALIES, group_name="quality", kinds={"duckdb", "spark"}, pool="spark_jobs",
          deps=[keys.validated(d) for d in FINDINGS_DOMAINS],
          description="Results far from their test's median (robust z-score on the median absolute deviation).")
def data_anomalies(config: AnomalyConfig, lake: Lake, pyspark: Spark) -> dg.Output[Frame]:
    from ct_assets.defs.failures import external
    from ct_assets.engines import duck_quality
    from ct_assets.engines import spark as spark_engine

    paths = {d: lake.path_for(f"validated_{d.lower()}") for d in FINDINGS_DOMAINS}
    if not pyspark.takes(sum(parquet_rows(p) for p in paths.values())):
        table, engine = duck_quality.anomalies(paths, z_limit=config.anomaly_z), "duckdb in the step's process"
    else:
        with external("Spark", pyspark.master()):
            spark = pyspark.spark_session
            findings = {d: spark.read.parquet(str(p)) for d, p in paths.items()}
            table, engine = spark_engine.anomalies_spark(findings, z_limit=config.anomaly_z), f"spark {spark.sparkContext.master}"
    share = float(table["anomalies"].sum() / table["results"].sum()) if len(table) else 0.0
    return dg.Output(table, metadata={"anomalies": int(table["anomalies"].sum()), "anomaly_share": round(share, 4),
                                      "anomalous_tests": table_md(table, 10), "engine": engine})


@dg.asset(
    key=keys.DATA_QUALITY_REPORT, group_name="quality", kinds={"pandas"},
    ins={"completeness": dg.AssetIn(keys.DATA_COMPLETENESS), "consistency": dg.AssetIn(keys.DATA_CONSISTENCY),
         "freshness": dg.AssetIn(keys.DATA_FRESHNESS), "anomalies": dg.AssetIn(keys.DATA_ANOMALIES)},
    deps=[keys.validated(d) for d in DOMAINS] + [keys.quarantine(d) for d in DOMAINS],
    check_specs=[dg.AssetCheckSpec("score_above_threshold", asset=keys.DATA_QUALITY_REPORT,
                                   description="overall data quality score at least the threshold")],
    description="Validity, completeness, consistency and anomalies of the study in one score against the data "
                "quality threshold; alerts below it.",
)
def data_quality_report(context: dg.AssetExecutionContext, quality: QualityPolicy, lake: Lake, alerts: AlertWebhook,
                        completeness: Frame, consistency: dict, freshness: dict, anomalies: Frame):
    import pandas as pd

    from ct_assets.core import report as quality_report

    counts = pd.DataFrame([{"domain": d, "validated": parquet_rows(lake.path_for(f"validated_{d.lower()}")),
                            "quarantined": parquet_rows(lake.path_for(f"quarantine_{d.lower()}")),
                            "partial_dates": quality_report.partial_dates(lake.path_for(f"validated_{d.lower()}"))}
                           for d in DOMAINS])
    per_domain = counts.merge(completeness[["domain", "completeness"]], on="domain")
    per_domain = per_domain.merge(pd.DataFrame(consistency["by_domain"], columns=["domain", "subjects_in_dm", "dates_in_study_period"]),
                                  on="domain", how="left")
    total = per_domain["validated"] + per_domain["quarantined"]
    per_domain["validity"] = (per_domain["validated"] / total.where(total > 0)).fillna(1.0)
    present = per_domain[total > 0]
    anomaly_share = float(anomalies["anomalies"].sum() / anomalies["results"].sum()) if len(anomalies) else 0.0
    components = {
        "validity": float(present["validated"].sum() / total.sum()) if total.sum() else 1.0,
        "completeness": _mean(present["completeness"]),
        "subjects_in_dm": consistency["subjects_in_dm"],
        "dates_in_study_period": consistency["dates_in_study_period"],
        "visit_order": consistency["visit_order"],
        "non_anomalous": 1.0 - anomaly_share,
    }
    score = quality_report.quality_score(components)
    if score < quality.min_quality_score:
        alerts.send(f":warning: data quality score {score:.3f} below {quality.min_quality_score}", context.log)
    report = {"score": score, "components": components, "age_days": freshness["age_days"], "anomaly_share": anomaly_share,
              "per_domain": per_domain.to_dict(orient="records")}
    yield dg.Output(report, metadata={"score": round(score, 4), "age_days": round(freshness["age_days"], 2),
                                      "partial_dates": int(per_domain["partial_dates"].sum()),
                                      **_rounded(components), "per_domain": table_md(per_domain),
                                      "not_assessable": "; ".join(consistency.get("not_assessable", [])) or "none"})
    yield dg.AssetCheckResult(check_name="score_above_threshold", passed=score >= quality.min_quality_score,
                              metadata={"score": round(score, 4), "threshold": quality.min_quality_score})


def _released_locally(lake: Lake, domain: str, known: set[str], cutoff: str, workers: int | None) -> int:
    """How many quarantined rows of a findings domain the streamed engine accepts today (as it validated them on
    one machine): the domain validated again into a scratch folder, then the quarantined rows' provenance joined
    with the accepted rows' in DuckDB, on the Parquet."""
    import tempfile

    from ct_assets.engines.duck import connect
    from ct_assets.engines.stream import validate_stream

    with tempfile.TemporaryDirectory(prefix=".recheck-", dir=lake.base()) as tmp:
        accepted, rejected = Path(tmp) / "validated", Path(tmp) / "quarantine"
        validate_stream(domain, lake.path_for(f"raw_{domain.lower()}"), known, cutoff, accepted, rejected,
                        processes=workers)
        quarantine = lake.path_for(f"quarantine_{domain.lower()}")
        with connect() as con:
            return con.execute(
                "SELECT count(*) FROM read_parquet(?) q SEMI JOIN read_parquet(?) v USING (_SOURCE_FILE, _SOURCE_ROW)",
                [[str(p) for p in parquet_files(quarantine)], [str(p) for p in parquet_files(accepted)]]).fetchone()[0]


def _released_on_spark(pyspark: Spark, lake: Lake, domain: str, known: set[str], cutoff: str) -> int:
    import pandas as pd

    from ct_assets.core.privacy import pseudonymise
    from ct_assets.defs.failures import external
    from ct_assets.engines.spark import released_rows

    ids = pd.Series(sorted(known), dtype=object)
    with external("Spark", pyspark.master()):
        return released_rows(pyspark.spark_session, domain, lake.path_for(f"raw_{domain.lower()}"),
                             lake.path_for(f"quarantine_{domain.lower()}"),
                             pd.DataFrame({"USUBJID": ids, "SUBJECT_KEY": pseudonymise(ids)}), cutoff)


@dg.asset(
    key=keys.QUARANTINE_RECHECK, group_name="quality", kinds={"pandera", "duckdb"},
    deps=[keys.quarantine(d) for d in DOMAINS] + [keys.raw(d) for d in DOMAINS],
    description="Quarantined rows validated again, in their domain as delivered, with today's rules and subjects: "
                "how many a rule or data fix would now release. The data_cleaning sensor re-runs validation for those domains.",
)
def quarantine_recheck(context: dg.AssetExecutionContext, lake: Lake, pyspark: Spark,
                       quality: QualityPolicy) -> dg.Output[dict]:
    import pandas as pd

    from ct_assets.core.schemas import domain_schema
    from ct_assets.engines.pandas import split_valid

    # Today's subjects: those whose DM row, as delivered now, passes today's rules.
    known = set(split_valid(_read(lake, "raw_dm"), domain_schema("DM", cutoff=quality.cutoff())).accepted["USUBJID"].astype(str))
    rows = []
    for d in DOMAINS:
        path = lake.path_for(f"quarantine_{d.lower()}")
        if not path.exists():  # domain not validated yet: nothing quarantined to re-check
            continue
        q = pd.read_parquet(path, columns=SOURCE_COLS)  # quarantined rows are few; the domain may not be
        if q.empty:
            rows.append({"domain": d, "quarantined": 0, "now_valid": 0})
            continue
        # The whole domain again, not the quarantined rows alone: a rule such as "one version of
        # each DM subject" can only be judged next to the rows that were accepted.
        if d in FINDINGS_DOMAINS and not pyspark.takes(parquet_rows(lake.path_for(f"raw_{d.lower()}"))):
            now_valid = _released_locally(lake, d, known, quality.cutoff(), quality.validation_workers)  # as validated
        elif d in FINDINGS_DOMAINS:  # on Spark, as they were validated
            now_valid = _released_on_spark(pyspark, lake, d, known, quality.cutoff())
        else:
            schema = domain_schema(d, None if d == "DM" else known, quality.cutoff())
            again = split_valid(_read(lake, f"raw_{d.lower()}"), schema)
            now_valid = len(q.merge(again.accepted[SOURCE_COLS], on=SOURCE_COLS, how="inner"))
        rows.append({"domain": d, "quarantined": len(q), "now_valid": now_valid})
    table = pd.DataFrame(rows)
    release = table.loc[table["now_valid"] > 0, "domain"].tolist()
    audit.record("quarantine_recheck", "quarantine", dagster_actor(context), f"domains to re-validate: {release or 'none'}",
                 after=table.to_dict(orient="records"))
    return dg.Output({"domains_to_revalidate": release, "table": table.to_dict(orient="records")},
                     metadata={"quarantined": int(table["quarantined"].sum()), "now_valid": int(table["now_valid"].sum()),
                               "domains_to_revalidate": ", ".join(release) or "none", "by_domain": table_md(table)})
