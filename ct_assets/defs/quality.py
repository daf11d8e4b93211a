"""Validated domains and their quarantine: every raw row ends in exactly one of the two.

Validated rows are pseudonymised here (USUBJID -> SUBJECT_KEY): nothing downstream sees a raw
subject id. Quarantined rows keep the raw id, since they must be traced back to the site to be
fixed; they stay in the restricted quarantine zone of the lake and their ids are never logged.
"""


from collections.abc import Iterator

import dagster as dg
from pydantic import Field

from ct_assets.core.provenance import STAGE_LOGIC, module_code_version
from ct_assets.core.sdtm import DOMAINS, FINDINGS_DOMAINS
from ct_assets.defs import keys
from ct_assets.defs.frames import Frame
from ct_assets.defs.resources import Lake, QualityPolicy, Spark

CODE_VERSION = module_code_version(*STAGE_LOGIC["validation"])  # stale in the UI when the rules change


class QualityConfig(dg.Config):
    min_quality_score: float | None = Field(
        default=None, description="This domain's threshold, when it differs from the quality policy's (resource 'quality')."
    )


def _rules_markdown(rule_counts: dict[str, int]) -> str:
    if not rule_counts:
        return "No row quarantined."
    lines = ["| rule | rows |", "|---|---|"] + [f"| {rule} | {n} |" for rule, n in rule_counts.items()]
    return "\n".join(lines)


def partial_dates_in(validated) -> int:
    """Partial dates in the --DTC columns of a validated frame: valid SDTM, counted, never quarantined."""
    from ct_assets.core.dates import is_partial

    return sum(int(is_partial(validated[c]).sum()) for c in validated.columns if c.endswith("DTC"))


def validation_asset(domain: str) -> dg.AssetsDefinition:
    validated_key, quarantine_key = keys.validated(domain), keys.quarantine(domain)
    on_spark = domain in FINDINGS_DOMAINS
    ins = {} if on_spark else {"raw": dg.AssetIn(keys.raw(domain))}
    if domain != "DM":  # a row's subject must have passed DM validation, not merely be in raw DM
        ins |= {"raw_dm": dg.AssetIn(keys.raw("DM")), "validated_dm": dg.AssetIn(keys.validated("DM"))}

    def validate(context: dg.AssetExecutionContext, config: QualityConfig, quality: QualityPolicy, raw: Frame,
                 known: set[str] | None) -> Iterator:
        from ct_assets.engines.pandas import reconciles, validate_domain

        threshold = quality.min_quality_score if config.min_quality_score is None else config.min_quality_score
        split = validate_domain(domain, raw, known, quality.cutoff())
        validated, rules = split.validated, split.rules
        yield dg.Output(
            validated,
            output_name="validated",
            metadata={
                "dagster/row_count": len(validated),
                "quality_score": round(split.score, 4),
                "subjects": int(validated["SUBJECT_KEY"].nunique()) if "SUBJECT_KEY" in validated else 0,
                "absent_columns": ", ".join(split.absent_columns) or "none",
                "partial_dates": partial_dates_in(validated),
            },
        )
        yield dg.Output(
            split.quarantined,
            output_name="quarantine",
            metadata={"dagster/row_count": len(split.quarantined), "rules": dg.MetadataValue.md(_rules_markdown(rules))},
        )
        yield dg.AssetCheckResult(
            check_name="rows_reconcile",
            asset_key=validated_key,
            passed=reconciles(raw, split),
            metadata={"raw": len(raw), "validated": len(validated), "quarantined": len(split.quarantined)},
        )
        yield dg.AssetCheckResult(
            check_name="quality_score",
            asset_key=validated_key,
            passed=split.score >= threshold,
            metadata={"score": round(split.score, 4), "threshold": threshold,
                      "rules": dg.MetadataValue.md(_rules_markdown(rules))},
        )
        if rules:
            context.log.warning(f"{domain}: {len(split.quarantined)} of {len(raw)} rows quarantined: {rules}")


    multi_asset = dg.multi_asset(
        name=f"validate_{domain.lower()}",
        deps=[keys.raw(domain)] if on_spark else None,
        pool="data_validation",
        ins=ins,
        outs={
            "validated": dg.AssetOut(
                key=validated_key, group_name="quality", code_version=CODE_VERSION,
                kinds={"pandera", "spark", "parquet"} if on_spark else {"pandera", "parquet"},
                description=f"SDTM {domain} rows that pass the SDTM rules, pseudonymised.",
            ),
            "quarantine": dg.AssetOut(
                key=quarantine_key, group_name="quality", kinds={"parquet"}, code_version=CODE_VERSION,
                description=f"SDTM {domain} rows that failed a rule, with the rule and the reason.",
            ),
        },
        check_specs=[
            dg.AssetCheckSpec("rows_reconcile", asset=validated_key,
                              description="raw rows = validated rows + quarantined rows"),
            dg.AssetCheckSpec("quality_score", asset=validated_key,
                              description="share of rows accepted is at least the data quality threshold"),
        ],
    )

    if domain in FINDINGS_DOMAINS:
        return _spark_validation(domain, multi_asset)

    if domain == "DM":
        @multi_asset
        def _validate_dm(context: dg.AssetExecutionContext, config: QualityConfig, quality: QualityPolicy,
                         raw: Frame) -> Iterator:
            yield from validate(context, config, quality, raw, None)

        return _validate_dm

    @multi_asset
    def _validate(context: dg.AssetExecutionContext, config: QualityConfig, quality: QualityPolicy, raw: Frame,
                  raw_dm: Frame, validated_dm: Frame) -> Iterator:
        from ct_assets.engines.pandas import accepted_subjects

        yield from validate(context, config, quality, raw, accepted_subjects(raw_dm, validated_dm))

    return _validate


def _spark_validation(domain: str, multi_asset) -> dg.AssetsDefinition:
    """A findings domain (tens of millions of rows in a pooled study) validated as a Spark job: raw,
    validated and quarantined rows stay in the lake as Parquet datasets, published atomically; only
    counts reach this process."""
    validated_key = keys.validated(domain)

    @multi_asset
    def _validate_on_spark(context: dg.AssetExecutionContext, config: QualityConfig, quality: QualityPolicy,
                           pyspark: Spark, lake: Lake, raw_dm: Frame, validated_dm: Frame) -> Iterator:
        import pandas as pd

        from ct_assets.core import lake as lake_files
        from ct_assets.core import report as quality_report
        from ct_assets.core.privacy import pseudonymise
        from ct_assets.defs.failures import external
        from ct_assets.engines.pandas import accepted_subjects
        from ct_assets.engines.spark import validate_findings
        from ct_assets.engines.stream import validate_stream

        threshold = quality.min_quality_score if config.min_quality_score is None else config.min_quality_score
        known = pd.Series(sorted(accepted_subjects(raw_dm, validated_dm)), dtype=object)
        subjects = pd.DataFrame({"USUBJID": known, "SUBJECT_KEY": pseudonymise(known)})
        links = {name: lake.path_for(key.path[-1]) for name, key in (("validated", validated_key),
                                                                      ("quarantine", keys.quarantine(domain)))}
        versions = {name: lake_files.new_version_dir(link) for name, link in links.items()}
        raw_path = lake.path_for(keys.raw(domain).path[-1])
        try:
            if not pyspark.takes(lake_files.parquet_rows(raw_path)):
                split = validate_stream(domain, raw_path, set(known), quality.cutoff(), versions["validated"],
                                        versions["quarantine"], processes=quality.validation_workers)
                master = "none: streamed by local processes (see the pyspark resource's min_rows)"
                engine = f"streamed by {split.processes} local process{'es' if split.processes > 1 else ''}"
            else:
                with external("Spark", pyspark.master()):
                    spark = pyspark.spark_session
                    spark.sparkContext.setLogLevel("WARN")
                    split = validate_findings(spark, domain, raw_path, subjects, quality.cutoff(), versions["validated"],
                                              versions["quarantine"])
                    master = spark.sparkContext.master
                    engine = f"spark {master}"
        except BaseException:
            for version in versions.values():
                lake_files.discard(version)
            raise
        for name, version in versions.items():
            lake_files.publish_dir(version, links[name])
        yield dg.Output(None, output_name="validated", metadata={
            "dagster/row_count": split.validated, "quality_score": round(split.score, 4), "subjects": split.subjects,
            "absent_columns": ", ".join(split.absent_columns) or "none", "engine": engine, "spark_master": master,
            "partial_dates": quality_report.partial_dates(links["validated"]),
            "path": dg.MetadataValue.path(str(links["validated"]))})
        yield dg.Output(None, output_name="quarantine", metadata={
            "dagster/row_count": split.quarantined, "rules": dg.MetadataValue.md(_rules_markdown(split.rules)),
            "path": dg.MetadataValue.path(str(links["quarantine"]))})
        yield dg.AssetCheckResult(check_name="rows_reconcile", asset_key=validated_key,
                                  passed=split.validated + split.quarantined == split.raw,
                                  metadata={"raw": split.raw, "validated": split.validated,
                                            "quarantined": split.quarantined})
        yield dg.AssetCheckResult(check_name="quality_score", asset_key=validated_key, passed=split.score >= threshold,
                                  metadata={"score": round(split.score, 4), "threshold": threshold,
                                            "rules": dg.MetadataValue.md(_rules_markdown(split.rules))})
        if split.rules:
            context.log.warning(f"{domain}: {split.quarantined} of {split.raw} rows quarantined: {split.rules}")

    return _validate_on_spark


validation_assets = [validation_asset(d) for d in DOMAINS]
