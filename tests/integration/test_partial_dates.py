"""Partial SDTM dates (``2013-12``, ``2013``) are bounded, never imputed, and every engine reads them alike.

The leakage these guard against: Spark's ``to_date('2013-12')`` is 1 December, so a visit after the landmark
with a partial date moved into the feature window, and a partial AE date before the landmark became an
outcome. The study here is made by the test: the same study with complete dates and with partial ones.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from ct_assets.core import training as training_logic
from ct_assets.core.dates import day_bounds, study_day
from ct_assets.core.features import subject_features
from ct_assets.core.privacy import SPLIT_BUCKET, SUBJECT_KEY
from ct_assets.engines.spark_dates import spark_day_bounds
from spark import visits as job
from tests.studies import build_other_study

LANDMARK = 30
DATES = ["2013-12-20T10:30", "2013-12-20T10:30:15", "2013-12-20", "2013-12", "2013", None, "2012-02", "2014-01-01T00:00",
         "2013-02-29", "2012-02-29", "2013-12-05", "2013-11-30", "garbage", "2013-13", "2014-12", "2000"]
REFS = ["2013-12-10", "2013-12", "2013", None]


def test_pandas_and_spark_read_every_date_alike(spark):
    rows = pd.DataFrame([(d, r) for d in DATES for r in REFS], columns=["DTC", "REF"])
    lo, hi = day_bounds(rows["DTC"], rows["REF"])
    frame = spark.createDataFrame(rows.astype(object).where(rows.notna(), None), "DTC string, REF string")
    s_lo, s_hi = spark_day_bounds(frame["DTC"], frame["REF"])
    got = frame.select(s_lo.alias("lo"), s_hi.alias("hi")).toPandas()
    assert lo.astype(float).equals(got["lo"]) and hi.astype(float).equals(got["hi"])
    known = rows.assign(lo=lo, hi=hi, dy=study_day(rows["DTC"], rows["REF"])).set_index(["DTC", "REF"])
    assert (known.loc[("2013-12", "2013-12-10"), ["lo", "hi"]] == [-9, 22]).all()  # 1 to 31 December, no day 0
    assert (known.loc[("2013", "2013-12-10"), ["lo", "hi"]] == [-343, 22]).all()
    assert (known.loc[("2013-12-20", "2013-12"), ["lo", "hi"]] == [-11, 20]).all()  # a partial reference bounds it too
    assert known.loc[("2013-12-20T10:30:15", "2013-12-10"), "dy"] == 11  # a time never moves the day
    assert known.loc[("2013-12", "2013-12-10"), "dy"] is pd.NA  # --DY only from complete dates (SDTMIG)
    assert known.loc[("2013-02-29", "2013-12-10"), ["lo", "hi"]].isna().all()  # not a calendar day: unknown
    assert known.loc[("2013-13", "2013-12-10"), ["lo", "hi"]].isna().all()


def _month_days(dtc: str, ref: str) -> tuple[int, int]:
    """Study days of the first and last day of ``dtc``'s month, computed without the date module."""
    year, month = map(int, dtc[:7].split("-"))
    first = dt.date(year, month, 1)
    last = dt.date(year + month // 12, month % 12 + 1, 1) - dt.timedelta(days=1)
    start = dt.date.fromisoformat(ref)

    def day(d: dt.date) -> int:
        delta = (d - start).days
        return delta + 1 if delta >= 0 else delta

    return day(first), day(last)


def partial_twin(complete: dict[str, pd.DataFrame]) -> tuple[dict[str, pd.DataFrame], set[str], set[str]]:
    """The study with partial dates: findings after the landmark dated by year only (Spark's old reading put
    them on 1 January, many inside the window), outcome AEs by month. Also the subjects with an AE month wholly
    before the landmark (prior) and, of the rest, those with a month across it (truly ambiguous), worked out
    by calendar arithmetic."""
    twin = {name: df.copy() for name, df in complete.items()}
    for d in ("VS", "LB"):
        df = twin[d]
        late = df[f"{d}DY"] > LANDMARK
        df.loc[late, f"{d}DTC"] = df.loc[late, f"{d}DTC"].str.slice(0, 4)
        df[f"{d}DY"] = df[f"{d}DY"].where(~late)
        df.loc[late, f"{d}STRESN"] = 9999.0  # any of these reaching a feature shows at once
    ae, ref = twin["AE"], twin["DM"].set_index("USUBJID")["RFSTDTC"]
    severe = ae["AESEV"].eq("SEVERE")
    prior, ambiguous = set(), set()
    for i in ae.index[severe]:
        first, last = _month_days(ae.at[i, "AESTDTC"], ref[ae.at[i, "USUBJID"]])
        if last <= LANDMARK:
            prior.add(ae.at[i, "USUBJID"])
        elif first <= LANDMARK:
            ambiguous.add(ae.at[i, "USUBJID"])
    ae.loc[severe, "AESTDTC"] = ae.loc[severe, "AESTDTC"].str.slice(0, 7)
    ae.loc[severe, "AESTDY"] = np.nan
    return twin, prior, ambiguous - prior


def _training_set(spark, study: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame, training_logic.Exclusions]:
    """Visits on Spark, then features and labels, as the assets compute them (ids as keys, no pseudonyms needed)."""
    frames = {d: df.rename(columns={"USUBJID": SUBJECT_KEY}) for d, df in study.items()}
    findings = {d: spark.createDataFrame(frames[d].astype({f"{d}DY": float})) for d in ("VS", "LB")}
    visits = job.process_visits(findings, spark.createDataFrame(frames["DM"][[SUBJECT_KEY, "RFSTDTC"]])).toPandas()
    dm = frames["DM"].assign(**{SPLIT_BUCKET: range(len(frames["DM"]))})
    features = subject_features(visits, dm, None, landmark_day=LANDMARK)
    labelled, excluded = training_logic.make_training_set(features, dm, frames["AE"], frames["DS"],
                                                          training_logic.Outcome(after_day=LANDMARK))
    return visits, labelled, excluded


@pytest.fixture(scope="module")
def complete_study(tmp_path_factory) -> dict[str, pd.DataFrame]:
    folder = build_other_study(tmp_path_factory.mktemp("other"), n_subjects=120, seed=11)
    study = {d.upper(): pd.read_csv(folder / f"{d}.csv", dtype={"USUBJID": str}) for d in ("dm", "vs", "lb", "ae", "ds")}
    # Severe events early in the window too, so that month-dated ones fall before, across and after the landmark.
    ae, ref = study["AE"], study["DM"].set_index("USUBJID")["RFSTDTC"]
    early = ae[ae["AEDECOD"].eq("HEADACHE")].iloc[::4].assign(AEDECOD="SYNCOPE", AESEV="SEVERE", AESER="Y")
    early["AESTDY"] = [float(6 + 2 * (i % 12)) for i in range(len(early))]
    early["AESTDTC"] = [(pd.Timestamp(ref[u]) + pd.Timedelta(days=int(d) - 1)).strftime("%Y-%m-%d")
                        for u, d in zip(early["USUBJID"], early["AESTDY"])]
    study["AE"] = pd.concat([ae, early], ignore_index=True)
    return study


def test_partial_dates_give_the_complete_studys_training_set_but_for_ambiguous_subjects(spark, complete_study):
    partial, prior, ambiguous = partial_twin(complete_study)
    assert prior and ambiguous, "the study must have AE months before and across the landmark"
    visits_c, set_c, excluded_c = _training_set(spark, complete_study)
    visits_p, set_p, excluded_p = _training_set(spark, partial)

    ae = complete_study["AE"]
    prior_c = set(ae.loc[ae["AESEV"].eq("SEVERE") & (ae["AESTDY"] <= LANDMARK), "USUBJID"])
    assert excluded_c == training_logic.Exclusions(prior_event=len(prior_c))
    assert excluded_p == training_logic.Exclusions(prior_event=len(prior), ambiguous_event_dates=len(ambiguous))
    expected = set_c[~set_c[SUBJECT_KEY].isin(ambiguous)].drop(columns=[training_logic.SPLIT])
    got = set_p.drop(columns=[training_logic.SPLIT])
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected.reset_index(drop=True))
    assert not (got.select_dtypes("number") == 9999.0).any().any()  # no value from after the landmark

    # The visits after the landmark (day 85) are still there, bounded by their year, with no day of their own;
    # for many the year began inside the window, where reading the year as 1 January put them.
    late = visits_p[visits_p["VISITNUM"] == 90]
    assert late["STUDY_DAY"].isna().all() and (late["EARLIEST_DAY"] <= 85).all() and (late["LATEST_DAY"] >= 85).all()
    assert (late["EARLIEST_DAY"] <= LANDMARK).sum() >= 10


def test_spark_visit_days_equal_the_pandas_reading(spark, complete_study):
    partial, _, _ = partial_twin(complete_study)
    visits, _, _ = _training_set(spark, partial)
    ref = partial["DM"].set_index("USUBJID")["RFSTDTC"]
    rows = []
    for d in ("VS", "LB"):
        df = partial[d]
        lo, hi = day_bounds(df[f"{d}DTC"], df["USUBJID"].map(ref))
        day = df[f"{d}DY"].astype("Float64")
        rows.append(pd.DataFrame({SUBJECT_KEY: df["USUBJID"], "VISITNUM": df["VISITNUM"].astype(float),
                                  "STUDY_DAY": day.fillna(lo.where(lo == hi)), "EARLIEST_DAY": day.fillna(lo),
                                  "LATEST_DAY": day.fillna(hi)}))
    expected = (pd.concat(rows).groupby([SUBJECT_KEY, "VISITNUM"])
                .agg(STUDY_DAY=("STUDY_DAY", "min"), EARLIEST_DAY=("EARLIEST_DAY", "min"), LATEST_DAY=("LATEST_DAY", "max"))
                .astype(float))
    got = visits.set_index([SUBJECT_KEY, "VISITNUM"])[["STUDY_DAY", "EARLIEST_DAY", "LATEST_DAY"]].sort_index()
    pd.testing.assert_frame_equal(got, expected.sort_index())


def test_partial_ae_dates_are_placed_by_their_interval():
    """The issue's case: AESTDTC 2013-12 with RFSTDTC 2013-12-20 is at most day 12, a prior event."""
    keys = ["S-prior", "S-after", "S-across", "S-none", "S-year", "S-neg"]
    dm = pd.DataFrame({SUBJECT_KEY: keys, "RFSTDTC": ["2013-12-20", "2013-10-01", "2013-12-01", "2013-12-01", "2013-11-17",
                                                      "2013-12-01"]})
    ae = pd.DataFrame({SUBJECT_KEY: keys, "AESER": "Y", "AESEV": "SEVERE",
                       "AESTDTC": ["2013-12", "2013-12", "2013-12", None, "1977", "2014-02"], "AESTDY": np.nan})
    features = pd.DataFrame({SUBJECT_KEY: keys + ["S-clean"], "AGE": 1.0})
    events = training_logic.outcome_events(ae, None, dm, training_logic.Outcome())
    labelled, excluded = training_logic.label_subjects(features, events, after_day=30)
    # S-prior: days -19..12; S-year: arthritis since 1977, before the study; S-across: days 1..31; S-none: no date.
    assert excluded == training_logic.Exclusions(prior_event=2, ambiguous_event_dates=2)
    assert dict(zip(labelled[SUBJECT_KEY], labelled[training_logic.LABEL])) == {"S-after": 1, "S-neg": 1, "S-clean": 0}
