"""Data steps: validate the study, process visits on Spark, engineer features and the training set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ct_assets import settings
from ct_assets.core import lake, sdtm
from ct_assets.core import training as training_logic
from ct_assets.core.privacy import SUBJECT_KEY


def validate_study(study_dir: str, validated_dir: str, quarantine_dir: str) -> dict[str, Any]:
    """Validate every domain of the study; validated rows (pseudonymised) and quarantined rows
    (with the failed rule) go to one Parquet file per domain. Returns counts per domain."""
    from ct_assets.engines.pandas import validate_study as validate_domains

    source = sdtm.study_path(study_dir or None)
    raw = {d: sdtm.read_domain(source, d) for d in sdtm.DOMAINS}
    if raw["DM"] is None:
        raise FileNotFoundError(f"the study at {source} has no DM domain: subjects cannot be known")
    counts: dict[str, Any] = {}
    for domain, result in validate_domains(raw).items():
        lake.write_parquet(result.validated, Path(validated_dir) / f"{domain}.parquet")
        lake.write_parquet(result.quarantined, Path(quarantine_dir) / f"{domain}.parquet")
        counts[domain] = {"raw": len(raw[domain]), "validated": len(result.validated),
                          "quarantined": len(result.quarantined), "score": result.score, "rules": result.rules}
    total_raw = sum(c["raw"] for c in counts.values())
    total_ok = sum(c["validated"] for c in counts.values())
    return {"domains": counts, "rows": total_raw, "validated": total_ok, "quarantined": total_raw - total_ok,
            "quality_score": total_ok / total_raw if total_raw else 1.0}


def _domain(validated_dir: str, domain: str) -> pd.DataFrame | None:
    path = Path(validated_dir) / f"{domain}.parquet"
    return pd.read_parquet(path) if path.exists() else None


def process_visits(validated_dir: str) -> pd.DataFrame:
    """The PySpark visits job of the Dagster ``processed_visits`` asset, on a session of its own
    (``local[*]`` unless ``CT_SPARK_MASTER`` says otherwise)."""
    from pyspark.sql import SparkSession

    from spark import visits as job

    present = {d: Path(validated_dir) / f"{d}.parquet" for d in sdtm.FINDINGS_DOMAINS}
    present = {d: p for d, p in present.items() if p.exists() and len(pd.read_parquet(p, columns=[SUBJECT_KEY]))}
    if not present:
        return pd.DataFrame()
    builder = SparkSession.builder
    for key, value in settings.spark_config().items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    try:
        findings = {d: spark.read.parquet(str(p)) for d, p in present.items()}
        dm = spark.read.parquet(str(Path(validated_dir) / "DM.parquet"))
        return job.process_visits(findings, dm).toPandas()
    finally:
        spark.stop()


def engineer_features(validated_dir: str, features_path: str, training_set_path: str, landmark_day: int = 30,
                      outcome: dict | None = None, holdout_fraction: float = 0.25) -> dict[str, Any]:
    """Processed visits -> subject features up to the landmark day -> training set labelled by events
    after it, with the fixed holdout split (one landmark for both, as in the Dagster assets)."""
    from ct_assets.core.features import subject_features

    dm = _domain(validated_dir, "DM")
    visits = process_visits(validated_dir)
    features = subject_features(visits, dm, _domain(validated_dir, "EX"), landmark_day)
    outcome_def = training_logic.Outcome(**{k: tuple(v) if isinstance(v, list) else v for k, v in (outcome or {}).items()
                               if k != "after_day"}, after_day=landmark_day)
    labelled, excluded = training_logic.make_training_set(features, dm, _domain(validated_dir, "AE"), _domain(validated_dir, "DS"),
                                             outcome_def, holdout_fraction)
    lake.write_parquet(features, Path(features_path))
    lake.write_parquet(labelled, Path(training_set_path))
    return {"subjects": len(features), "features": len(features.columns) - 1, "labelled": len(labelled),
            "positives": int(labelled[training_logic.LABEL].sum()), "excluded_prior_event": excluded.prior_event,
            "ambiguous_event_dates": excluded.ambiguous_event_dates,
            "holdout": int((labelled[training_logic.SPLIT] == "holdout").sum())}
