"""Subject features: the offline feature store the models train on."""


import dagster as dg
import pandas as pd
from dagster_pandera import pandera_schema_to_dagster_type
from pydantic import Field

from ct_assets import keys
from ct_assets.features.logic import subject_features as build_features
from ct_assets.lib.faults import fails_fast
from ct_assets.quality.schemas import FEATURES_SCHEMA


class FeatureConfig(dg.Config):
    window_days: int = Field(default=30, description="Feature window: study days 1..N after first dose (legacy: 30).")


@dg.asset(
    key=keys.SUBJECT_FEATURES,
    group_name="features",
    kinds={"pandas", "parquet"},
    pool="feature_engineering",
    ins={
        "visits": dg.AssetIn(keys.PROCESSED_VISITS),
        "dm": dg.AssetIn(keys.validated("DM")),
        "ex": dg.AssetIn(keys.validated("EX")),
    },
    dagster_type=pandera_schema_to_dagster_type(FEATURES_SCHEMA),
    description="Per subject: demographics, exposure and baseline / last / change / slope of every test in the "
    "first days on study, plus abnormal-result counts. Keyed by pseudonym.",
)
def subject_features(context: dg.AssetExecutionContext, config: FeatureConfig, visits: pd.DataFrame, dm: pd.DataFrame,
                     ex: pd.DataFrame) -> dg.Output[pd.DataFrame]:
    with fails_fast():
        features = build_features(visits, dm, ex, config.window_days)
    # Enrollment cohorts become partitions of the feature store, for backfills.
    cohorts = sorted(dm.loc[dm["RFSTDTC"].notna(), "RFSTDTC"].astype(str).str.slice(0, 7).unique())
    known = set(context.instance.get_dynamic_partitions("enrollment_cohorts"))
    if new := [c for c in cohorts if c not in known]:
        context.instance.add_dynamic_partitions("enrollment_cohorts", new)
    numeric = features.select_dtypes("number")
    missing = numeric.isna().mean().sort_values(ascending=False)
    return dg.Output(
        features,
        metadata={
            "dagster/row_count": len(features),
            "features": len(features.columns) - 1,
            "window_days": config.window_days,
            "cohorts": len(cohorts),
            "mean_missing_share": round(float(missing.mean()), 4) if len(missing) else 0.0,
            "most_missing": dg.MetadataValue.md(
                "| feature | missing |\n|---|---|\n" + "\n".join(f"| {k} | {v:.0%} |" for k, v in missing.head(8).items())
            ),
        },
    )
