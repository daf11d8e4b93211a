"""Validated domains and their quarantine: every raw row ends in exactly one of the two.

Validated rows are pseudonymised here (USUBJID -> SUBJECT_KEY): nothing downstream sees a raw
subject id. Quarantined rows keep the raw id, since they must be traced back to the site to be
fixed; they stay in the restricted quarantine zone of the lake and their ids are never logged.
"""


from collections.abc import Iterator

import dagster as dg
import pandas as pd
from pydantic import Field

from ct_assets import keys
from ct_assets.lib.provenance import STAGE_LOGIC, module_code_version
from ct_assets.lib.sdtm import DOMAINS
from ct_assets.quality.validate import accepted_subjects, reconciles, validate_domain
from ct_assets.resources import QualityPolicy

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


def validation_asset(domain: str) -> dg.AssetsDefinition:
    validated_key, quarantine_key = keys.validated(domain), keys.quarantine(domain)
    ins = {"raw": dg.AssetIn(keys.raw(domain))}
    if domain != "DM":  # a row's subject must have passed DM validation, not merely be in raw DM
        ins |= {"raw_dm": dg.AssetIn(keys.raw("DM")), "validated_dm": dg.AssetIn(keys.validated("DM"))}

    def validate(context: dg.AssetExecutionContext, config: QualityConfig, quality: QualityPolicy, raw: pd.DataFrame,
                 known: set[str] | None) -> Iterator:
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
        pool="data_validation",
        ins=ins,
        outs={
            "validated": dg.AssetOut(
                key=validated_key, group_name="quality", kinds={"pandera", "parquet"}, code_version=CODE_VERSION,
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

    if domain == "DM":
        @multi_asset
        def _validate_dm(context: dg.AssetExecutionContext, config: QualityConfig, quality: QualityPolicy,
                         raw: pd.DataFrame) -> Iterator:
            yield from validate(context, config, quality, raw, None)

        return _validate_dm

    @multi_asset
    def _validate(context: dg.AssetExecutionContext, config: QualityConfig, quality: QualityPolicy, raw: pd.DataFrame,
                  raw_dm: pd.DataFrame, validated_dm: pd.DataFrame) -> Iterator:
        yield from validate(context, config, quality, raw, accepted_subjects(raw_dm, validated_dm))

    return _validate


validation_assets = [validation_asset(d) for d in DOMAINS]
