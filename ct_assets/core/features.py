"""Subject features from demographics, exposure and the first days on study.

Study day 1 is the first day of treatment (DM.RFSTDTC). For every test column of the processed
visits we take the baseline (last value on or before day 1), the last value in the window
(day 2 to ``landmark_day``), the change from baseline and the slope over all values up to the end
of the window. A visit counts only when every result of it lies wholly on one side: its latest
possible day (LATEST_DAY, which a partial date widens) on or before day 1 for the baseline, its
whole interval inside days 2 to ``landmark_day`` for the window. A visit that may reach past the
landmark never becomes a feature. Nothing here knows a test code or visit number: the tests are
whatever columns processing produced.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd

from ct_assets.core.dates import study_day
from ct_assets.core.faults import StudyDataError
from ct_assets.core.privacy import SUBJECT_KEY

VISIT_META = [SUBJECT_KEY, "VISITNUM", "STUDY_DAY", "EARLIEST_DAY", "LATEST_DAY", "N_ABNORMAL", "N_RESULTS"]
CATEGORICAL = ["SEX", "RACE", "ARMCD"]
STATS = ("baseline", "last", "change", "slope")


def test_columns(visits: pd.DataFrame) -> list[str]:
    return [c for c in visits.columns if c not in VISIT_META]


def _slopes(rows: pd.DataFrame, tests: list[str]) -> pd.DataFrame:
    """Least-squares slope of each test against study day, per subject (NaN under two points)."""
    y = rows[tests].to_numpy(dtype=float)
    mask = ~np.isnan(y)
    x = rows["STUDY_DAY"].to_numpy(dtype=float)[:, None] * mask
    y0 = np.where(mask, y, 0.0)
    parts = {"n": mask.astype(float), "sx": x, "sy": y0, "sxx": x * x, "sxy": x * y0}
    key = rows[SUBJECT_KEY].to_numpy()
    sums = {k: pd.DataFrame(v, columns=tests).groupby(key).sum() for k, v in parts.items()}
    denom = sums["n"] * sums["sxx"] - sums["sx"] ** 2
    slope = (sums["n"] * sums["sxy"] - sums["sx"] * sums["sy"]) / denom.where(denom > 1e-12)
    return slope.where(sums["n"] >= 2)


def _suffix(df: pd.DataFrame, stat: str) -> pd.DataFrame:
    return df.add_suffix(f"__{stat}")


def findings_features(visits: pd.DataFrame, landmark_day: int) -> pd.DataFrame:
    tests = test_columns(visits)
    earliest, latest = visits["EARLIEST_DAY"], visits["LATEST_DAY"]
    pre_mask = latest.notna() & (latest <= 1)
    window_mask = earliest.notna() & (earliest >= 2) & latest.notna() & (latest <= landmark_day)
    v = visits[pre_mask | window_mask].sort_values([SUBJECT_KEY, "EARLIEST_DAY", "VISITNUM"])
    pre = v[v["LATEST_DAY"] <= 1]
    window = v[v["EARLIEST_DAY"] >= 2]
    # groupby().last() takes the last non-null value per column: the latest measurement.
    baseline = pre.groupby(SUBJECT_KEY)[tests].last()
    last = window.groupby(SUBJECT_KEY)[tests].last()
    change = last.sub(baseline, fill_value=np.nan)
    v = v[v["STUDY_DAY"].notna()]  # a slope needs the day itself
    slope = _slopes(v, tests) if len(v) else pd.DataFrame(columns=tests)
    counts = window.groupby(SUBJECT_KEY).agg(
        N_VISITS_WINDOW=("VISITNUM", "nunique"), N_ABNORMAL_WINDOW=("N_ABNORMAL", "sum")
    )
    return pd.concat(
        [_suffix(baseline, "baseline"), _suffix(last, "last"), _suffix(change, "change"), _suffix(slope, "slope"), counts],
        axis=1,
    )


def exposure_features(ex: pd.DataFrame | None, dm: pd.DataFrame, landmark_day: int) -> pd.DataFrame:
    """Days exposed and dose-days within the window, from EX intervals (open end = one day)."""
    cols = ["EXPOSURE_DAYS_WINDOW", "DOSE_DAYS_WINDOW"]
    if ex is None or ex.empty:
        return pd.DataFrame(columns=cols, index=pd.Index([], name=SUBJECT_KEY), dtype=float)
    ref = ex[SUBJECT_KEY].map(dm.set_index(SUBJECT_KEY)["RFSTDTC"])
    start = ex["EXSTDY"] if "EXSTDY" in ex else pd.Series(np.nan, index=ex.index)
    start = start.fillna(study_day(ex["EXSTDTC"], ref))
    end = ex["EXENDY"] if "EXENDY" in ex else pd.Series(np.nan, index=ex.index)
    if "EXENDTC" in ex:
        end = end.fillna(study_day(ex["EXENDTC"], ref))
    end = end.fillna(start)
    days = (np.minimum(end, landmark_day) - np.maximum(start, 1) + 1).clip(lower=0).fillna(0)
    dose = ex["EXDOSE"].fillna(0) if "EXDOSE" in ex else 0.0
    out = pd.DataFrame({SUBJECT_KEY: ex[SUBJECT_KEY], cols[0]: days, cols[1]: days * dose})
    return out.groupby(SUBJECT_KEY)[cols].sum().astype(float)


def whole_subjects(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Frames of whole subjects from batches sorted by SUBJECT_KEY (the visit table as Spark wrote it):
    the rows of each batch's last subject wait for the next batch. Unsorted input raises, since a subject
    split across two frames would get two feature rows."""
    carry, previous = None, None
    for batch in batches:
        if not len(batch):
            continue
        keys = batch[SUBJECT_KEY]
        if not keys.is_monotonic_increasing or (previous is not None and keys.iloc[0] < previous):
            raise StudyDataError(f"processed visits: rows are not sorted by {SUBJECT_KEY} (near {keys.iloc[0]!r}); "
                                 "the visit job sorts them, so the table was written by something else")
        previous = keys.iloc[-1]
        frame = batch if carry is None else pd.concat([carry, batch], ignore_index=True)
        last = frame[SUBJECT_KEY].to_numpy() == previous
        carry = frame[last]
        if not last.all():
            yield frame[~last]
    if carry is not None:
        yield carry


def subject_features(
    visits: pd.DataFrame | Iterable[pd.DataFrame] | None, dm: pd.DataFrame, ex: pd.DataFrame | None,
    landmark_day: int = 30,
) -> pd.DataFrame:
    """One row per subject who started treatment (RFSTDTC present; screen failures have none).
    ``visits``: the visit table, or its batches sorted by subject (features a few subjects at a time)."""
    on_study = dm[dm["RFSTDTC"].notna()].set_index(SUBJECT_KEY)
    if on_study.empty:
        raise StudyDataError(f"DM: none of {len(dm)} accepted subjects has RFSTDTC (reference start date, absent or empty): "
                             "study days, and so the feature window, cannot be placed")
    demo = pd.DataFrame(index=on_study.index)
    demo["AGE"] = on_study["AGE"].astype(float)
    for col in CATEGORICAL:
        demo[col] = on_study[col].fillna("UNKNOWN").astype(str) if col in on_study else "UNKNOWN"
    parts = [demo, exposure_features(ex, dm, landmark_day)]
    chunks = [visits] if isinstance(visits, pd.DataFrame) else whole_subjects(visits) if visits is not None else []
    if found := [findings_features(chunk, landmark_day) for chunk in chunks if len(chunk)]:
        parts.append(pd.concat(found))
    features = pd.concat(parts, axis=1, join="outer").loc[on_study.index]
    numeric = [c for c in features.columns if c not in CATEGORICAL]
    features[numeric] = features[numeric].astype(float)
    for col in ("EXPOSURE_DAYS_WINDOW", "DOSE_DAYS_WINDOW", "N_VISITS_WINDOW", "N_ABNORMAL_WINDOW"):
        if col in features:
            features[col] = features[col].fillna(0.0)
    return features.rename_axis(SUBJECT_KEY).reset_index().sort_values(SUBJECT_KEY, ignore_index=True)
