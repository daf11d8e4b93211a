"""Validation assets through materialize(): quarantine with reasons, counts reconcile, score checked."""

import shutil

import dagster as dg
import pandas as pd

from ct_assets import keys
from ct_assets.ingestion.assets import raw_assets
from ct_assets.quality.assets import validation_assets
from ct_assets.resources import StudySource, build_resources
from tests.studies import pilot_dir


def _study_with_bad_vitals(folder, n_bad):
    folder.mkdir()
    shutil.copy(pilot_dir() / "dm.parquet", folder / "dm.parquet")
    vs = pd.read_parquet(pilot_dir() / "vs.parquet").head(100)
    vs["VSSTRESN"] = vs["VSSTRESN"].astype(object)
    vs.loc[: n_bad - 1, "VSSTRESN"] = "not a number"
    vs.to_csv(folder / "vs.csv", index=False)  # CSV on purpose: the reader coerces per schema
    return folder


def _materialize(study, run_config=None):
    selection = [a for a in raw_assets + validation_assets
                 if set(a.keys) & {keys.raw("DM"), keys.raw("VS"), keys.validated("DM"), keys.validated("VS")}]
    resources = build_resources()
    resources["study"] = StudySource(study_dir=str(study))
    return dg.materialize(selection, resources=resources, run_config=run_config,
                          instance=dg.DagsterInstance.ephemeral())


def test_bad_rows_are_quarantined_and_counts_reconcile(ct_home, tmp_path):
    result = _materialize(_study_with_bad_vitals(tmp_path / "study", n_bad=3))
    assert result.success
    validated = pd.read_parquet(ct_home / "lake/validated/validated_vs.parquet")
    quarantined = pd.read_parquet(ct_home / "lake/quarantine/quarantine_vs.parquet")
    assert (len(validated), len(quarantined)) == (97, 3)
    assert quarantined["_QUARANTINE_RULES"].str.contains("VSSTRESN: coerce_dtype").all()
    assert quarantined["_SOURCE_FILE"].eq("vs.csv").all() and quarantined["_SOURCE_ROW"].tolist() == [0, 1, 2]
    assert "USUBJID" not in validated.columns and validated["SUBJECT_KEY"].str.startswith("S-").all()
    checks = {(c.asset_key, c.check_name): c for c in result.get_asset_check_evaluations()}
    assert checks[(keys.validated("VS"), "rows_reconcile")].passed
    assert checks[(keys.validated("VS"), "quality_score")].passed  # 0.97 >= 0.95
    # Study lacks LB, AE ...: they are not selected here, and DM alone is complete.
    assert checks[(keys.validated("DM"), "quality_score")].passed


def test_quality_score_check_fails_below_threshold(ct_home, tmp_path):
    result = _materialize(_study_with_bad_vitals(tmp_path / "study", n_bad=10))
    checks = {(c.asset_key, c.check_name): c for c in result.get_asset_check_evaluations()}
    score = checks[(keys.validated("VS"), "quality_score")]
    assert not score.passed and score.metadata["score"].value == 0.9
    assert checks[(keys.validated("VS"), "rows_reconcile")].passed
    strict = {"ops": {"validate_vs": {"config": {"min_quality_score": 0.8}}}}
    checks = {(c.asset_key, c.check_name): c for c in _materialize(tmp_path / "study", strict).get_asset_check_evaluations()}
    assert checks[(keys.validated("VS"), "quality_score")].passed
