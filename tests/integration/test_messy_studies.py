"""Real deliveries are messy: batch files, text where numbers belong, Windows encodings, optional SDTM
variables absent, a corrupt file, impossible values, a study that cannot be modelled.

Each study is a small variant of the CDISC pilot in a temp dir, run through the user's path (raw ->
validated -> quality monitors -> Spark visits -> features -> training set) with a real Dagster
instance and Spark session. Nothing may crash on content, every domain reconciles (raw = validated +
quarantined), every quarantined row has a reason, and a study that cannot be modelled fails at once
with one line saying why (never retried).
"""

import shutil

import dagster as dg
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ct_assets.core.sdtm import DOMAINS
from ct_assets.definitions import defs
from ct_assets.defs import keys
from ct_assets.defs.profiles import TEST_DATA_CUTOFF
from tests.conftest import private_home
from tests.studies import pilot_dir

PILOT_FILES = ("dm", "vs", "lbch", "lbhe", "ae", "ds", "ex", "sv")
# Up to the training set, plus the study-wide quality report and its monitors.
USER_PATH = dg.AssetSelection.assets(keys.TRAINING_SET, keys.DATA_QUALITY_REPORT, keys.QUARANTINE_RECHECK).upstream()


def small_pilot(folder, subjects: int = 90, files=PILOT_FILES):
    """The first ``subjects`` subjects of the pilot (screen failures included), as Parquet."""
    folder.mkdir(parents=True, exist_ok=True)
    dm = pd.read_parquet(pilot_dir() / "dm.parquet").head(subjects)
    for name in files:
        df = pd.read_parquet(pilot_dir() / f"{name}.parquet")
        df[df["USUBJID"].isin(dm["USUBJID"])].to_parquet(folder / f"{name}.parquet", index=False)
    return folder


# The test profile's settings (ct_assets/defs/profiles.py) as a run's launchpad config: findings validated on
# Spark however small the study, and a fixed data cut-off.
TEST_PROFILE = {"resources": {"pyspark": {"config": {"min_rows": 0}},
                              "quality": {"config": {"data_cutoff": TEST_DATA_CUTOFF}}}}


@pytest.fixture(scope="module")
def run_study(tmp_path_factory, spark):
    """Run the user's path on a study folder in a fresh $CT_HOME and Dagster instance."""

    def run(study, selection=USER_PATH):
        home = tmp_path_factory.mktemp("home") / "ct"
        with pytest.MonkeyPatch.context() as mp, private_home(home):
            mp.setenv("CT_STUDY_DIR", str(study))
            with dg.DagsterInstance.get() as instance:
                job = defs.resolve_implicit_global_asset_job_def()
                keys_ = selection.required_multi_asset_neighbors().resolve(defs.resolve_asset_graph())
                result = job.execute_in_process(instance=instance, asset_selection=list(keys_), run_config=TEST_PROFILE,
                                                raise_on_error=False)
                return home, result, _failures(instance, result.run_id), _retries(instance, result.run_id)

    return run


def _failures(instance, run_id) -> dict[str, str]:
    events = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    return {e.step_key: e.dagster_event.step_failure_data.user_failure_data.description
            if e.dagster_event.step_failure_data.user_failure_data else str(e.dagster_event.step_failure_data.error)
            for e in events}


def _retries(instance, run_id) -> int:
    return len(instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY))


def assert_reconciles(home):
    """Every raw domain lands whole in validated + quarantined; every quarantined row says why."""
    for domain in DOMAINS:
        d = domain.lower()
        raw_path = home / f"lake/raw/raw_{d}.parquet"
        if not raw_path.exists():
            continue
        raw = pd.read_parquet(raw_path)
        validated = pd.read_parquet(home / f"lake/validated/validated_{d}.parquet")
        quarantined = pd.read_parquet(home / f"lake/quarantine/quarantine_{d}.parquet")
        assert len(raw) == len(validated) + len(quarantined), domain
        assert quarantined["_QUARANTINE_REASON"].str.len().gt(0).all(), domain


def _metadata(result, key):
    [md] = [e.materialization.metadata for e in result.get_asset_materialization_events() if e.asset_key == key]
    return {k: v.value for k, v in md.items()}


def test_batch_files_with_text_where_numbers_belong(tmp_path, run_study):
    """The batch workflow of docs/study-data.md, and a lab delivery whose results came as text."""
    study = small_pilot(tmp_path / "study")
    dm = pd.read_parquet(study / "dm.parquet")
    vs_all = pd.read_parquet(pilot_dir() / "vs.parquet")
    later = pd.read_parquet(pilot_dir() / "dm.parquet").iloc[90:110]
    pd.concat([dm, later]).to_parquet(study / "dm.parquet", index=False)  # DM re-delivered with new subjects
    vs_all[vs_all["USUBJID"].isin(later["USUBJID"])].to_csv(study / "vs_batch2.csv", index=False)
    lb = pd.read_parquet(pilot_dir() / "lbch.parquet")
    text = lb[lb["USUBJID"].isin(later["USUBJID"])].head(40).astype({"LBSTRESN": str, "LBSEQ": str}).reset_index(drop=True)
    text.loc[0, "LBSTRESN"], text.loc[1, "LBSTRESN"] = "<0.5", "NaN"
    text.to_parquet(study / "lb_text.parquet", index=False)

    home, result, failures, retries = run_study(study)
    assert result.success, failures
    assert_reconciles(home)
    raw_vs = pd.read_parquet(home / "lake/raw/raw_vs.parquet")
    assert set(raw_vs["_SOURCE_FILE"]) == {"vs.parquet", "vs_batch2.csv"}
    q_lb = pd.read_parquet(home / "lake/quarantine/quarantine_lb.parquet").set_index("_SOURCE_FILE")
    rules = q_lb.loc["lb_text.parquet"].set_index("_SOURCE_ROW")["_QUARANTINE_RULES"]
    assert "LBSTRESN: coerce_dtype" in rules[0] and "LBSTRESN: not_numeric" in rules[1]
    validated_vs = pd.read_parquet(home / "lake/validated/validated_vs.parquet")
    assert validated_vs["SUBJECT_KEY"].nunique() > 90  # the batch's subjects were accepted


def test_windows_encoded_csv_is_read_and_the_encoding_recorded(tmp_path, run_study):
    study = small_pilot(tmp_path / "study", files=("dm", "vs", "ds"))
    ae = pd.read_parquet(pilot_dir() / "ae.parquet")
    ae = ae[ae["USUBJID"].isin(pd.read_parquet(study / "dm.parquet")["USUBJID"])].reset_index(drop=True)
    ae.loc[0, "AETERM"] = "ÉRYTHÈME – SITE D'APPLICATION"
    ae.to_csv(study / "ae.csv", index=False, encoding="cp1252")

    home, result, failures, _ = run_study(study, dg.AssetSelection.assets(keys.validated("AE")).upstream())
    assert result.success, failures
    assert "ae.csv: cp1252" in _metadata(result, keys.raw("AE"))["encodings"]
    raw_ae = pd.read_parquet(home / "lake/raw/raw_ae.parquet")
    assert raw_ae.loc[raw_ae["_SOURCE_ROW"] == 0, "AETERM"].iat[0] == "ÉRYTHÈME – SITE D'APPLICATION"
    assert_reconciles(home)


def test_a_corrupt_file_fails_its_domain_in_one_line_and_the_others_land(tmp_path, run_study):
    study = small_pilot(tmp_path / "study")
    data = (study / "ae.parquet").read_bytes()
    (study / "ae.parquet").write_bytes(data[: len(data) // 2])  # truncated in transfer

    home, result, failures, retries = run_study(study, dg.AssetSelection.groups("ingestion", "quality"))
    assert not result.success and retries == 0
    reason = failures["raw_ae"]
    assert "\n" not in reason and reason.startswith("AE: cannot read ae.parquet") and "Parquet" in reason
    landed = {e.asset_key for e in result.get_asset_materialization_events()}
    assert {keys.raw(d) for d in DOMAINS if d != "AE"} <= landed
    assert keys.validated("VS") in landed and keys.validated("LB") in landed
    assert_reconciles(home)


def test_impossible_values_are_quarantined_and_a_quarantined_subject_is_unknown(tmp_path, run_study):
    study = small_pilot(tmp_path / "study")
    dm = pd.read_parquet(study / "dm.parquet")
    conflicting = dm.iloc[[5]].assign(AGE=dm["AGE"].iat[5] + 10)  # the same subject delivered twice, differently
    pd.concat([dm, conflicting]).to_parquet(study / "dm.parquet", index=False)
    vs = pd.read_parquet(study / "vs.parquet").reset_index(drop=True)
    vs["VSSTRESN"] = vs["VSSTRESN"].map(lambda v: None if pd.isna(v) else repr(v))  # delivered as text
    vs.loc[0, "VSDTC"], vs.loc[1, "VSDTC"], vs.loc[2, "VSDTC"] = "2013-01-01T25:00", "3000-01-01", "2027-06-01"
    vs.loc[3, "VSSTRESN"] = "NaN"
    vs.to_parquet(study / "vs.parquet", index=False)

    home, result, failures, _ = run_study(study, dg.AssetSelection.assets(keys.QUARANTINE_RECHECK).upstream())
    assert result.success, failures
    assert_reconciles(home)
    q_dm = pd.read_parquet(home / "lake/quarantine/quarantine_dm.parquet")
    assert q_dm["USUBJID"].tolist() == [dm["USUBJID"].iat[5]] * 2  # every copy
    q_vs = pd.read_parquet(home / "lake/quarantine/quarantine_vs.parquet").set_index("_SOURCE_ROW")["_QUARANTINE_RULES"]
    assert "ISO 8601" in q_vs[0] and "out of range" in q_vs[1] and "out of range" in q_vs[2]
    assert "ISO" not in q_vs[1] and "VSSTRESN: not_numeric" in q_vs[3]
    unknown = vs.index[vs["USUBJID"] == dm["USUBJID"].iat[5]]
    assert all("subject not in DM" in q_vs[i] for i in unknown)  # their DM rows were quarantined
    recheck = _metadata(result, keys.QUARANTINE_RECHECK)
    assert recheck["now_valid"] == 0  # the conflicting DM copies do not pass on a second look


def test_a_dm_only_study_fails_fast_naming_what_it_lacks(tmp_path, run_study):
    study = small_pilot(tmp_path / "study", files=("dm",))
    home, result, failures, retries = run_study(study)
    assert not result.success and retries == 0
    assert set(failures) == {"training_set"}, failures
    reason = failures["training_set"]
    assert "\n" not in reason and reason.startswith("cannot model this study: 0 of")
    assert "no AE rows, no DS rows" in reason
    assert_reconciles(home)


# SDTMIG Expected and Permissible variables of the pilot, by domain: any may be absent from a delivery.
OPTIONAL = {
    "dm": ["RFSTDTC", "RFENDTC", "RFXSTDTC", "RFXENDTC", "RFICDTC", "RFPENDTC", "DTHDTC", "DTHFL", "AGE", "AGEU",
           "RACE", "ETHNIC", "ARMCD", "ARM", "ACTARMCD", "ACTARM", "DMDTC", "DMDY"],
    "vs": ["VSPOS", "VSORRES", "VSORRESU", "VSSTRESC", "VSSTRESN", "VSSTRESU", "VSSTAT", "VSLOC", "VSBLFL",
           "VISITNUM", "VISIT", "VISITDY", "VSDTC", "VSDY", "VSTPT", "VSTPTNUM"],
    "lbch": ["LBCAT", "LBORRES", "LBORRESU", "LBSTRESC", "LBSTRESN", "LBSTRESU", "LBNRIND", "LBBLFL", "VISITNUM",
             "LBDTC", "LBDY"],
    "ae": ["AETERM", "AESER", "AESEV", "AEREL", "AEOUT", "AESTDTC", "AEENDTC", "AESTDY", "AEENDY"],
    "ds": ["DSTERM", "DSCAT", "DSSTDTC", "DSSTDY", "VISITNUM"],
    "ex": ["EXDOSE", "EXDOSU", "EXSTDTC", "EXENDTC", "EXSTDY", "EXENDY", "VISITNUM"],
    "sv": ["SVSTDTC", "SVENDTC", "SVSTDY", "SVENDY", "VISIT"],
}


@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.fixed_dictionaries({name: st.sets(st.sampled_from(cols), max_size=len(cols)) for name, cols in OPTIONAL.items()}))
def test_optional_columns_absent_never_crash(tmp_path_factory, run_study, dropped):
    """Optional SDTM variables dropped at random: the run succeeds, or it stops at once at the step
    that cannot go on, in one line (no retries), with every domain reconciled."""
    study = small_pilot(tmp_path_factory.mktemp("study"), files=PILOT_FILES)
    for name, cols in dropped.items():
        path = study / f"{name}.parquet"
        pd.read_parquet(path).drop(columns=[c for c in cols if c != "USUBJID"]).to_parquet(path, index=False)
    home, result, failures, retries = run_study(study)
    assert retries == 0
    assert_reconciles(home)
    assert all("\n" not in reason for reason in failures.values()), failures
    # Only modelling may be impossible: a study without the reference start has no study days.
    assert set(failures) <= {"subject_features", "training_set"}, failures
    if "subject_features" in failures:
        assert "RFSTDTC" in failures["subject_features"]
    assert 0 < _metadata(result, keys.DATA_QUALITY_REPORT)["score"] <= 1


def test_a_study_of_csv_batches_and_xpt_runs_end_to_end(tmp_path, run_study):
    """Deliveries in three formats at once, one domain split across two of them."""
    import pyreadstat

    study = small_pilot(tmp_path / "study")
    vs = pd.read_parquet(study / "vs.parquet")
    (study / "vs.parquet").unlink()
    half = len(vs) // 2
    vs.iloc[:half].to_csv(study / "vs.csv", index=False)
    pyreadstat.write_xport(vs.iloc[half:], str(study / "vs_late.xpt"), table_name="VS", file_format_version=5)
    shutil.move(study / "ds.parquet", study / "ds_keep.parquet")
    pd.read_parquet(study / "ds_keep.parquet").to_csv(study / "ds.csv", index=False, encoding="cp1252")
    (study / "ds_keep.parquet").unlink()
    home, result, failures, _ = run_study(study)
    assert result.success, failures
    assert_reconciles(home)
    assert len(pd.read_parquet(home / "lake/raw/raw_vs.parquet")) == len(vs)
