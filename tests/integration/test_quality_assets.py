"""Validation assets through materialize(): quarantine with reasons, counts reconcile, score checked."""

import shutil

import dagster as dg
import pandas as pd
import pytest

from ct_assets.defs import keys
from ct_assets.defs.ingestion import raw_assets
from ct_assets.defs.profiles import TEST_DATA_CUTOFF, profile_resources
from ct_assets.defs.quality import validation_assets
from ct_assets.defs.resources import StudySource
from tests.studies import pilot_dir


def _study_with_bad_vitals(folder, n_bad):
    folder.mkdir()
    shutil.copy(pilot_dir() / "dm.parquet", folder / "dm.parquet")
    vs = pd.read_parquet(pilot_dir() / "vs.parquet").head(100)
    vs["VSSTRESN"] = vs["VSSTRESN"].astype(object)
    vs.loc[: n_bad - 1, "VSSTRESN"] = "not a number"
    vs.to_csv(folder / "vs.csv", index=False)  # CSV on purpose: the reader coerces per schema
    return folder


@pytest.fixture
def instance():
    # Results read the instance lazily: it must live as long as the test.
    with dg.instance_for_test() as inst:
        yield inst


def _materialize(instance, study, run_config=None):
    selection = [a for a in raw_assets + validation_assets
                 if set(a.keys) & {keys.raw("DM"), keys.raw("VS"), keys.validated("DM"), keys.validated("VS")}]
    resources = profile_resources("test")  # the Spark path, however small the study
    resources["study"] = StudySource(study_dir=str(study))
    return dg.materialize(selection, resources=resources, run_config=run_config, instance=instance)


def test_bad_rows_are_quarantined_and_counts_reconcile(ct_home, tmp_path, instance):
    result = _materialize(instance, _study_with_bad_vitals(tmp_path / "study", n_bad=3))
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


def test_quality_score_check_fails_below_threshold(ct_home, tmp_path, instance):
    result = _materialize(instance, _study_with_bad_vitals(tmp_path / "study", n_bad=10))
    checks = {(c.asset_key, c.check_name): c for c in result.get_asset_check_evaluations()}
    score = checks[(keys.validated("VS"), "quality_score")]
    assert not score.passed and score.metadata["score"].value == 0.9
    assert checks[(keys.validated("VS"), "rows_reconcile")].passed
    strict = {"ops": {"validate_vs": {"config": {"min_quality_score": 0.8}}}}
    checks = {(c.asset_key, c.check_name): c for c in _materialize(instance, tmp_path / "study", strict).get_asset_check_evaluations()}
    assert checks[(keys.validated("VS"), "quality_score")].passed


@pytest.mark.parametrize("profile", ["test", "local"])  # the findings re-checked on Spark, and streamed + DuckDB
def test_data_fix_releases_quarantined_rows_through_the_cleaning_sensor(ct_home, tmp_path, profile):
    from ct_assets.defs.quality_monitoring import quarantine_recheck
    from ct_assets.defs.sensors import data_cleaning_sensor

    study = tmp_path / "study"
    study.mkdir()
    dm = pd.read_parquet(pilot_dir() / "dm.parquet")
    vs = pd.read_parquet(pilot_dir() / "vs.parquet")
    missing = dm["USUBJID"].iat[0]
    dm.iloc[1:].to_parquet(study / "dm.parquet")  # DM lost a subject: their vitals are quarantined
    vs[vs["USUBJID"].isin(dm["USUBJID"].head(3))].to_parquet(study / "vs.parquet")
    resources = profile_resources(profile) | {"study": StudySource(study_dir=str(study))}
    selection = [a for a in raw_assets + validation_assets if set(a.keys) & {keys.raw("DM"), keys.raw("VS"),
                                                                                  keys.validated("DM"), keys.validated("VS")}]
    with dg.instance_for_test() as instance:
        assert dg.materialize(selection, resources=resources, instance=instance).success
        quarantined = pd.read_parquet(ct_home / "lake/quarantine/quarantine_vs.parquet")
        assert len(quarantined) == (vs["USUBJID"] == missing).sum() > 0
        assert quarantined["_QUARANTINE_RULES"].str.contains("subject not in DM").all()

        dm.to_parquet(study / "dm.parquet")  # the data fix: DM is complete again
        assert dg.materialize([a for a in raw_assets if keys.raw("DM") in a.keys] + [quarantine_recheck],
                              resources=resources, instance=instance, selection=[keys.raw("DM"), keys.QUARANTINE_RECHECK]).success
        requests = data_cleaning_sensor(dg.build_sensor_context(instance=instance))
        revalidate = {keys.validated("DM"), keys.quarantine("DM"), keys.validated("VS"), keys.quarantine("VS")}
        assert len(requests) == 1 and set(requests[0].asset_selection) == revalidate
        assert dg.materialize(selection, resources=resources, instance=instance, selection=list(revalidate)).success
        assert pd.read_parquet(ct_home / "lake/quarantine/quarantine_vs.parquet").empty


def test_report_measures_on_small_frames():
    from ct_assets.core import report as quality_report

    visits = pd.DataFrame({"SUBJECT_KEY": ["a"] * 4 + ["b"] * 2, "VISITNUM": [1, 2, 2.1, 3, 1, 2],
                           "SVSTDTC": ["2020-01-01", "2020-01-10", "2020-01-05", "2020-01-20", "2020-02-01", "2020-01-01"]})
    assert quality_report.visit_order(visits, "SVSTDTC") == pytest.approx(2 / 3)  # b goes back in time; unscheduled 2.1 ignored
    dm = pd.DataFrame({"SUBJECT_KEY": ["a"], "RFSTDTC": ["2020-01-10"], "RFPENDTC": ["2020-03-01"]})
    vs = pd.DataFrame({"SUBJECT_KEY": ["a"] * 3, "VSDTC": ["2020-01-05", "2020-03-10", "2021-06-01"]})
    assert quality_report.dates_within_period(vs, "VS", quality_report.study_period(dm, margin_days=30)) == pytest.approx(2 / 3)
    lb = pd.DataFrame({"LBTESTCD": ["ALT"] * 20, "LBSTRESN": [20.0 + i % 5 for i in range(19)] + [900.0]})
    out = quality_report.anomalies(lb, "LB", z_limit=6)
    assert out.loc[0, "test"] == "LB_ALT" and out.loc[0, "anomalies"] == 1


def test_ct_validate_reports_what_the_validated_assets_hold(ct_home, tmp_path, instance):
    """The same study through the Dagster assets (local profile: the streamed engine, as `make demo` runs) and through
    `ct validate`: the same rows accepted and quarantined per domain, the same failures counted."""
    from collections import Counter

    from ct_assets.engines.study import validate_folder
    from tests.studies import study_with_bad_rows

    study = tmp_path / "study"
    study_with_bad_rows(study)
    resources = profile_resources("local") | {"study": StudySource(study_dir=str(study))}
    cutoff = {"resources": {"quality": {"config": {"data_cutoff": TEST_DATA_CUTOFF}}}}
    result = dg.materialize(raw_assets + validation_assets, resources=resources, instance=instance, run_config=cutoff)
    assert result.success
    checks = {c.asset_key: c.metadata for c in result.get_asset_check_evaluations() if c.check_name == "rows_reconcile"}
    report = validate_folder(study, cutoff=TEST_DATA_CUTOFF)
    present = [d for d in report.domains if d.present]
    assert [d.domain for d in present] == ["DM", "VS", "AE"] and report.quarantined == 4
    for d in present:
        counts = checks[keys.validated(d.domain)]
        assert (d.rows, d.accepted, d.quarantined) == tuple(counts[k].value for k in ("raw", "validated", "quarantined"))
        lake_rules = pd.read_parquet(ct_home / f"lake/quarantine/quarantine_{d.domain.lower()}.parquet")["_QUARANTINE_RULES"]
        assert d.failures() == dict(Counter(lake_rules.str.split("; ").explode().dropna())), d.domain
