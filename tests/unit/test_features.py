"""Feature, label and split logic on tiny frames with hand-computed answers."""

import os

import numpy as np
import pandas as pd
import pytest

from ct_assets.core import training as training_logic
from ct_assets.core.faults import StudyDataError
from ct_assets.core.features import subject_features
from ct_assets.core.privacy import SPLIT_BUCKET, SUBJECT_KEY

DM = pd.DataFrame({
    SUBJECT_KEY: ["S-a", "S-b", "S-c"], "RFSTDTC": ["2020-01-10", "2020-02-01", None],
    "AGE": [70.0, 55.0, 60.0], "SEX": ["F", "M", "F"], "RACE": ["WHITE", None, "ASIAN"], "ARMCD": ["A", "B", "SCRNFAIL"],
})
VISITS = pd.DataFrame({
    SUBJECT_KEY: ["S-a"] * 4 + ["S-b"] * 2,
    "VISITNUM": [1, 2, 3, 4, 1, 2],
    "STUDY_DAY": [-5, 1, 15, 45, 1, 29],
    "N_ABNORMAL": [1, 0, 2, 5, 0, 1],
    "N_RESULTS": [2] * 6,
    "VS_SYSBP": [130.0, 120.0, 140.0, 200.0, 110.0, np.nan],
    "LB_ALT": [np.nan, 20.0, 30.0, 99.0, 25.0, 35.0],
})
VISITS.insert(3, "EARLIEST_DAY", VISITS["STUDY_DAY"].astype(float))
VISITS.insert(4, "LATEST_DAY", VISITS["STUDY_DAY"].astype(float))


def test_baseline_last_change_slope_and_window():
    f = subject_features(VISITS, DM, None, landmark_day=30).set_index(SUBJECT_KEY)
    assert list(f.index) == ["S-a", "S-b"]  # S-c never started treatment (screen failure)
    a = f.loc["S-a"]
    assert a["VS_SYSBP__baseline"] == 120.0  # last value on or before day 1
    assert a["VS_SYSBP__last"] == 140.0  # day 45 is outside the 30-day window
    assert a["VS_SYSBP__change"] == 20.0
    days, values = np.array([-5, 1, 15]), np.array([130.0, 120.0, 140.0])
    assert a["VS_SYSBP__slope"] == pytest.approx(np.polyfit(days, values, 1)[0])
    assert a["N_ABNORMAL_WINDOW"] == 2 and a["N_VISITS_WINDOW"] == 1
    b = f.loc["S-b"]
    assert np.isnan(b["VS_SYSBP__last"]) and b["LB_ALT__change"] == 10.0
    assert b["RACE"] == "UNKNOWN"


def test_exposure_days_are_clipped_to_the_window():
    ex = pd.DataFrame({SUBJECT_KEY: ["S-a", "S-a", "S-b"], "EXSTDY": [1.0, 20.0, np.nan], "EXENDY": [10.0, 60.0, np.nan],
                       "EXSTDTC": ["2020-01-10", "2020-01-29", "2020-02-03"], "EXENDTC": [None, None, "2020-02-05"],
                       "EXDOSE": [50.0, 100.0, 10.0]})
    f = subject_features(None, DM, ex, landmark_day=30).set_index(SUBJECT_KEY)
    assert f.loc["S-a", "EXPOSURE_DAYS_WINDOW"] == 10 + 11  # days 1-10 and 20-30
    assert f.loc["S-a", "DOSE_DAYS_WINDOW"] == 10 * 50 + 11 * 100
    assert f.loc["S-b", "EXPOSURE_DAYS_WINDOW"] == 3  # days 3-5, derived from the dates


def test_landmark_labels_exclude_events_inside_the_window():
    features = pd.DataFrame({SUBJECT_KEY: ["S-a", "S-b", "S-c", "S-d"], "AGE": [1.0] * 4})
    ae = pd.DataFrame({SUBJECT_KEY: ["S-a", "S-b", "S-c", "S-d"], "AESER": ["N", "Y", "N", "N"],
                       "AESEV": ["SEVERE", "MILD", "MILD", "SEVERE"], "AESTDY": [45.0, 10.0, 50.0, np.nan],
                       "AESTDTC": [None, None, None, "2020-03"]})
    dm = pd.DataFrame({SUBJECT_KEY: ["S-a", "S-b", "S-c", "S-d"], "RFSTDTC": ["2020-01-01"] * 4})
    events = training_logic.outcome_events(ae, None, dm, training_logic.Outcome())
    labelled, excluded = training_logic.label_subjects(features, events, after_day=30)
    assert excluded == training_logic.Exclusions(prior_event=1)  # S-b: serious AE on day 10, inside the window
    assert dict(zip(labelled[SUBJECT_KEY], labelled[training_logic.LABEL])) == {"S-a": 1, "S-c": 0, "S-d": 1}


def test_split_is_deterministic_stratified_and_independent_of_key_names():
    n = 200
    df = pd.DataFrame({SUBJECT_KEY: [f"S-{i:03d}" for i in range(n)], training_logic.LABEL: [i % 4 == 0 for i in range(n)],
                       SPLIT_BUCKET: np.arange(n) * 7 % 1000})
    split = training_logic.assign_split(df, 0.25)
    assert (split == training_logic.assign_split(df.sample(frac=1, random_state=1), 0.25).reindex(df.index)).all()
    hold = df[split == "holdout"]
    assert hold[training_logic.LABEL].sum() == 50 // 4 and (~hold[training_logic.LABEL]).sum() == 150 // 4  # a quarter of each class
    renamed = df.assign(**{SUBJECT_KEY: [f"S-z{i}" for i in range(n)]})
    assert (training_logic.assign_split(renamed, 0.25) == split).all()  # pseudonyms (key) do not move subjects
    # Colliding buckets are broken by the subject's data, still independent of the pseudonym.
    clash = df.assign(**{SPLIT_BUCKET: np.arange(n) // 2, "AGE": np.arange(n, dtype=float)})
    clash_renamed = clash.assign(**{SUBJECT_KEY: clash[SUBJECT_KEY].iloc[::-1].to_numpy()})
    assert (training_logic.assign_split(clash, 0.25) == training_logic.assign_split(clash_renamed, 0.25)).all()


def test_cross_validation_and_fit_do_not_depend_on_the_pseudonym_key():
    """Features are stored sorted by SUBJECT_KEY, a keyed hash that differs between machines. The
    folds of cross-validation and the fitted model must not follow it, or the HPO selection moves
    with the key (a CI run chose another point than this machine on the same study)."""
    rng = np.random.default_rng(3)
    n = 240
    df = pd.DataFrame({SUBJECT_KEY: [f"S-{i:03d}" for i in range(n)], SPLIT_BUCKET: rng.permutation(n),
                       "AGE": rng.normal(70, 8, n), "ALT": rng.lognormal(3, 0.5, n)})
    df[training_logic.LABEL] = (rng.random(n) < 1 / (1 + np.exp(-(df["AGE"] - 70) / 8))).astype(int)
    df[training_logic.SPLIT] = training_logic.assign_split(df, 0.25)
    # Another key: other pseudonyms, so another stored order.
    other = df.assign(**{SUBJECT_KEY: [f"S-{k:03d}" for k in rng.permutation(n)]}).sort_values(SUBJECT_KEY, ignore_index=True)
    for params in (training_logic.ModelParams(), training_logic.ModelParams(model_type="hist_gradient_boosting", max_depth=2)):
        assert training_logic.cross_validated_auroc(df, params, 5, 2) == training_logic.cross_validated_auroc(other, params, 5, 2)
        model, cols = training_logic.fit(df, params)
        model_other, _ = training_logic.fit(other, params)
        np.testing.assert_array_equal(model.predict_proba(df[cols])[:, 1], model_other.predict_proba(df[cols])[:, 1])
    shuffled = df.sample(frac=1, random_state=2)
    assert (training_logic.cross_validated_auroc(shuffled, training_logic.ModelParams(), 5, 1)
            == training_logic.cross_validated_auroc(df, training_logic.ModelParams(), 5, 1))
    # Folds fitted in two worker processes (as from PARALLEL_CV_FROM_ROWS train rows) score exactly as in one.
    assert (training_logic.cross_validated_auroc(df, training_logic.ModelParams(), 5, 1, workers=2)
            == training_logic.cross_validated_auroc(df, training_logic.ModelParams(), 5, 1, workers=1))
    assert training_logic.cv_workers(training_logic.PARALLEL_CV_FROM_ROWS - 1, 5, 200) == 1
    assert training_logic.cv_workers(55_000, 5, 200) == min(5, os.cpu_count())  # a 100,000-subject study
    assert training_logic.cv_workers(588_000, 5, 200) == 1  # a million subjects: one process, or 5 GiB a worker


def test_fit_refuses_a_single_class():
    df = pd.DataFrame({SUBJECT_KEY: ["a", "b"], "AGE": [1.0, 2.0], training_logic.LABEL: [0, 0], training_logic.SPLIT: ["train", "train"]})
    with pytest.raises(ValueError, match="one class"):
        training_logic.fit(df, training_logic.ModelParams())


def test_observed_vs_expected_is_relative_to_the_models_own_calibration():
    from ct_assets.core.drift import observed_vs_expected

    rng = np.random.default_rng(0)
    p = rng.uniform(0.1, 0.5, 2000)
    y = rng.random(2000) < p
    assert observed_vs_expected(y, p)["pvalue"] > 0.01  # calibrated, no drift
    inflated = np.clip(p / 0.75, 0, 1)  # a model that over-predicts as it always did
    assert observed_vs_expected(y, inflated)["pvalue"] < 0.01
    assert observed_vs_expected(y, inflated, baseline_ratio=0.75)["pvalue"] > 0.01
    assert observed_vs_expected(y & (rng.random(2000) < 0.5), p)["pvalue"] < 0.01  # half the events: drift


def _study(seed: int):
    """Twelve subjects with visits from day -10 to 120, exposure intervals across every day range, and
    adverse events at random days."""
    rng = np.random.default_rng(seed)
    subjects = [f"S-{i:02d}" for i in range(12)]
    dm = pd.DataFrame({SUBJECT_KEY: subjects, "RFSTDTC": "2020-01-10", "AGE": rng.normal(70, 5, 12), "SEX": "F",
                       "ARMCD": "A", SPLIT_BUCKET: range(12)})
    days = np.arange(-10, 121, 7)
    visits = pd.DataFrame([(s, i + 1, float(d), 0, 2) for s in subjects for i, d in enumerate(days)],
                          columns=[SUBJECT_KEY, "VISITNUM", "STUDY_DAY", "N_ABNORMAL", "N_RESULTS"])
    visits["EARLIEST_DAY"] = visits["LATEST_DAY"] = visits["STUDY_DAY"]
    visits["VS_SYSBP"] = rng.normal(130, 10, len(visits))
    visits["LB_ALT"] = rng.normal(25, 5, len(visits))
    ex = pd.DataFrame({SUBJECT_KEY: subjects, "EXSTDY": 1.0, "EXENDY": rng.integers(5, 100, 12).astype(float),
                       "EXDOSE": 50.0, "EXSTDTC": None, "EXENDTC": None})
    ae = pd.DataFrame({SUBJECT_KEY: subjects, "AESER": "Y", "AESEV": "SEVERE", "AESTDY": rng.integers(2, 110, 12).astype(float),
                       "AESTDTC": None})
    return dm, visits, ex, ae


@pytest.mark.parametrize("landmark", [7, 14, 30, 45, 60, 90])
def test_no_feature_uses_data_after_the_landmark(landmark):
    """Leakage guard: rewrite everything after the landmark (values, extra visits, longer exposure)
    and the features must not move; the label must only count events after the landmark."""
    dm, visits, ex, ae = _study(landmark)
    features = subject_features(visits, dm, ex, landmark_day=landmark)
    later = visits["STUDY_DAY"] > landmark
    tampered = visits.copy()
    tampered.loc[later, ["VS_SYSBP", "LB_ALT"]] = 9999.0
    tampered.loc[later, "N_ABNORMAL"] = 50
    extra = tampered[later].assign(STUDY_DAY=lambda d: d["STUDY_DAY"] + 1, EARLIEST_DAY=lambda d: d["STUDY_DAY"],
                                   LATEST_DAY=lambda d: d["STUDY_DAY"], VISITNUM=lambda d: d["VISITNUM"] + 0.5)
    longer = ex.assign(EXENDY=ex["EXENDY"].where(ex["EXENDY"] <= landmark, 400.0), EXDOSE=ex["EXDOSE"])
    again = subject_features(pd.concat([tampered, extra], ignore_index=True), dm, longer, landmark_day=landmark)
    pd.testing.assert_frame_equal(features, again)

    events = training_logic.outcome_events(ae, None, dm, training_logic.Outcome(after_day=landmark))
    labelled, excluded = training_logic.label_subjects(features, events, after_day=landmark)
    day = ae.set_index(SUBJECT_KEY)["AESTDY"]
    assert excluded == training_logic.Exclusions(prior_event=int((day <= landmark).sum()))
    assert set(labelled[SUBJECT_KEY]) == set(day[day > landmark].index)  # every kept subject had a later event
    assert labelled[training_logic.LABEL].eq(1).all()


@pytest.mark.parametrize("batch_rows", [1, 5, 19, 1000])
def test_features_from_sorted_batches_equal_the_whole_table(batch_rows, tmp_path):
    """subject_features reads the visit table a batch at a time (Spark wrote it sorted by subject):
    a subject cut across batches or files still gets one row, equal to the whole table's."""
    from ct_assets.core.lake import parquet_batches, write_parquet

    dm, visits, ex, _ = _study(4)
    visits = visits.sort_values([SUBJECT_KEY, "VISITNUM"], ignore_index=True)
    whole = subject_features(visits, dm, ex, landmark_day=30)
    folder = tmp_path / "visits"
    for i, edges in enumerate([(0, 30), (30, 101), (101, len(visits))]):  # three files, subjects cut at their edges
        write_parquet(visits.iloc[slice(*edges)], folder / f"part-{i:05d}.parquet")
    got = subject_features(parquet_batches(folder, batch_rows), dm, ex, landmark_day=30)
    pd.testing.assert_frame_equal(got, whole)
    with pytest.raises(StudyDataError, match="not sorted by SUBJECT_KEY"):
        subject_features(iter([visits.iloc[::-1]]), dm, ex, landmark_day=30)
    with pytest.raises(StudyDataError, match="not sorted by SUBJECT_KEY"):
        subject_features(iter([visits.iloc[20:], visits.iloc[:20]]), dm, ex, landmark_day=30)
