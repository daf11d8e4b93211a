"""Outcome labels, the train/holdout split, the model and its evaluation: plain functions.

The default outcome is a *clinically significant adverse event after the feature window*: a
serious AE (AESER = "Y"), a severe AE (AESEV = "SEVERE") or a discontinuation for an adverse
event (DS.DSDECOD = "ADVERSE EVENT"), starting after study day ``after_day`` (the end of the
feature window). Subjects with such an event on or before that day are excluded (the landmark
design): predicting an event that already happened would leak the answer into the features.

An event with a partial start date (``2013-12``, ``2013``) is placed by the interval of days its
date allows (ct_assets.core.dates), never by a guessed day: wholly on or before ``after_day`` it is a
prior event (the subject is excluded), wholly after it an outcome; an interval that straddles the
landmark, or an event with no start date at all, is ambiguous, and its subject is left out of
training and counted (``ambiguous_event_dates``), since it could be either.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ct_assets.core.dates import day_bounds
from ct_assets.core.faults import StudyDataError
from ct_assets.core.features import CATEGORICAL
from ct_assets.core.privacy import SPLIT_BUCKET, SUBJECT_KEY

LABEL = "LABEL"
SPLIT = "SPLIT"
NON_FEATURES = {SUBJECT_KEY, LABEL, SPLIT, SPLIT_BUCKET}


@dataclass(frozen=True)
class Outcome:
    ae_serious: bool = True
    ae_severities: tuple[str, ...] = ("SEVERE",)
    ds_terms: tuple[str, ...] = ("ADVERSE EVENT",)
    after_day: int = 30


@dataclass(frozen=True)
class Exclusions:
    """Subjects left out of the training set, by reason."""

    prior_event: int = 0  # an outcome event on or before the landmark
    ambiguous_event_dates: int = 0  # an outcome event whose dates allow either side of the landmark


def _days(df: pd.DataFrame, day_col: str, dtc_col: str, dm: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Earliest and latest study day of each event: its --STDY when delivered, else bounds from its date."""
    day = (df[day_col] if day_col in df else pd.Series(np.nan, index=df.index)).astype("Float64")
    ref = df[SUBJECT_KEY].map(dm.set_index(SUBJECT_KEY)["RFSTDTC"]).astype("string")
    dtc = df[dtc_col].astype("string") if dtc_col in df else pd.Series(pd.NA, index=df.index, dtype="string")
    first, last = day_bounds(dtc, ref)
    return day.fillna(first), day.fillna(last)


def _events(sel: pd.DataFrame, prefix: str, dm: pd.DataFrame) -> pd.DataFrame:
    first, last = _days(sel, f"{prefix}STDY", f"{prefix}STDTC", dm)
    return pd.DataFrame({SUBJECT_KEY: sel[SUBJECT_KEY], "EARLIEST_DAY": first, "LATEST_DAY": last, "SOURCE": prefix})


def outcome_events(ae: pd.DataFrame | None, ds: pd.DataFrame | None, dm: pd.DataFrame, outcome: Outcome) -> pd.DataFrame:
    """Every event that meets the outcome definition, with the earliest and latest study day it can have
    (equal when the day is known; NA when the event has no date)."""
    frames = []
    if ae is not None and len(ae):
        hit = pd.Series(False, index=ae.index)
        if outcome.ae_serious and "AESER" in ae:
            hit |= ae["AESER"].eq("Y")
        if outcome.ae_severities and "AESEV" in ae:
            hit |= ae["AESEV"].isin(outcome.ae_severities)
        frames.append(_events(ae[hit], "AE", dm))
    if ds is not None and len(ds) and outcome.ds_terms:
        frames.append(_events(ds[ds["DSDECOD"].isin(outcome.ds_terms)], "DS", dm))
    if not frames:
        return pd.DataFrame({SUBJECT_KEY: pd.Series(dtype=str), "EARLIEST_DAY": pd.Series(dtype="Float64"),
                             "LATEST_DAY": pd.Series(dtype="Float64"), "SOURCE": pd.Series(dtype=str)})
    return pd.concat(frames, ignore_index=True)


def label_subjects(features: pd.DataFrame, events: pd.DataFrame, after_day: int) -> tuple[pd.DataFrame, Exclusions]:
    """Features with LABEL. Subjects with an event inside the window are excluded; so are subjects with an
    event whose dates allow either side of the landmark (both counted)."""
    first, last = events["EARLIEST_DAY"].astype(float), events["LATEST_DAY"].astype(float)
    prior = set(events.loc[last <= after_day, SUBJECT_KEY])
    later = set(events.loc[first > after_day, SUBJECT_KEY])
    ambiguous = set(events.loc[~(last <= after_day) & ~(first > after_day), SUBJECT_KEY]) - prior
    subjects = features[SUBJECT_KEY]
    kept = features[~subjects.isin(prior | ambiguous)].copy()
    kept[LABEL] = kept[SUBJECT_KEY].isin(later).astype(int)
    return kept.reset_index(drop=True), Exclusions(int(subjects.isin(prior).sum()), int(subjects.isin(ambiguous).sum()))


def assign_split(df: pd.DataFrame, holdout_fraction: float = 0.25, seed: int = 0) -> pd.Series:
    """Deterministic stratified holdout: within each label, subjects ordered by their split bucket
    (mixed with ``seed``), every k-th goes to the holdout. The same study gives the same split on
    every machine, whatever the pseudonym key."""
    every = max(2, round(1 / holdout_fraction))
    order = df.loc[key_independent_order(df, seed), [LABEL]]
    rank = order.groupby(LABEL).cumcount() + 1
    return pd.Series(np.where(rank % every == 0, "holdout", "train"), index=order.index).reindex(df.index)


def key_independent_order(df: pd.DataFrame, seed: int = 0) -> pd.Index:
    """The rows' index ordered by their split bucket (mixed with ``seed``), ties broken by the
    subject's data: never by the keyed pseudonym, which differs between machines. Whatever orders
    subjects (the holdout, the folds of cross-validation, the rows a model is fitted on) goes through
    this, so the same study gives the same models on every machine."""
    bucket = df[SPLIT_BUCKET].map(lambda b: hashlib.sha256(f"{seed}:{b}".encode()).hexdigest())
    data = df.drop(columns=[c for c in NON_FEATURES if c in df])
    content = pd.util.hash_pandas_object(data, index=False) if len(data.columns) else pd.Series(0, index=df.index)
    return pd.DataFrame({"b": bucket, "c": content}, index=df.index).sort_values(["b", "c"], kind="stable").index


def check_modellable(labelled: pd.DataFrame, ae: pd.DataFrame | None, ds: pd.DataFrame | None, outcome: Outcome) -> None:
    """Raise StudyDataError, in one line, when the study cannot train and evaluate a model: at least
    2 subjects with and 2 without the outcome in the train split, and 1 of each in the holdout."""
    counts = labelled.groupby([SPLIT, LABEL]).size() if len(labelled) else pd.Series(dtype=int)
    need = {("train", 0): 2, ("train", 1): 2, ("holdout", 0): 1, ("holdout", 1): 1}
    short = [f"{split} {'with' if label else 'without'} the outcome: {int(counts.get((split, label), 0))} (need {n})"
             for (split, label), n in need.items() if counts.get((split, label), 0) < n]
    if not short:
        return
    lacking = [f"no {name} rows" for name, df in (("AE", ae), ("DS", ds)) if df is None or df.empty]
    definition = (f"serious AE={outcome.ae_serious}, AESEV in {list(outcome.ae_severities)}, DSDECOD in "
                  f"{list(outcome.ds_terms)}, after day {outcome.after_day}")
    raise StudyDataError(f"cannot model this study: {int(labelled[LABEL].sum()) if len(labelled) else 0} of {len(labelled)} "
                         f"subjects have the outcome ({definition}){'; the study has ' + ', '.join(lacking) if lacking else ''}; "
                         + "; ".join(short))


def make_training_set(features: pd.DataFrame, dm: pd.DataFrame, ae: pd.DataFrame | None, ds: pd.DataFrame | None,
                      outcome: Outcome, holdout_fraction: float = 0.25, seed: int = 0) -> tuple[pd.DataFrame, Exclusions]:
    """Features with the outcome label and the fixed train / holdout split; also who was excluded and why.
    A study that cannot be modelled raises StudyDataError saying why."""
    labelled, excluded = label_subjects(features, outcome_events(ae, ds, dm, outcome), outcome.after_day)
    labelled[SPLIT_BUCKET] = labelled[SUBJECT_KEY].map(dm.set_index(SUBJECT_KEY)[SPLIT_BUCKET])
    labelled[SPLIT] = assign_split(labelled, holdout_fraction, seed)
    check_modellable(labelled, ae, ds, outcome)
    return labelled, excluded


def holdout_of(training_set: pd.DataFrame) -> pd.DataFrame:
    return training_set[training_set[SPLIT] == "holdout"].reset_index(drop=True)


def feature_columns(df: pd.DataFrame) -> tuple[list[str], list[str]]:
    cols = [c for c in df.columns if c not in NON_FEATURES]
    categorical = [c for c in cols if c in CATEGORICAL]
    return [c for c in cols if c not in categorical], categorical


@dataclass(frozen=True)
class ModelParams:
    model_type: str = "logistic_regression"  # or "hist_gradient_boosting"
    C: float = 0.01  # strong L2: ~200 features for ~200 subjects
    max_depth: int = 3
    learning_rate: float = 0.05
    max_iter: int = 200
    class_weight: str | None = None  # "balanced" ranks alike but inflates risks (O/E 0.75 on the pilot)
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "extra"}
        return d | self.extra


def build_model(params: ModelParams, numeric: list[str], categorical: list[str]):
    """The scikit-learn pipeline (imported here, not at module import: the code location loads faster)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    prep = ColumnTransformer(
        [
            ("num", Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                              ("scale", StandardScaler())]), numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical),
        ]
    )
    if params.model_type == "logistic_regression":
        clf = LogisticRegression(C=params.C, max_iter=5000, class_weight=params.class_weight, random_state=params.seed)
    elif params.model_type == "hist_gradient_boosting":
        clf = HistGradientBoostingClassifier(
            max_depth=params.max_depth, learning_rate=params.learning_rate, max_iter=params.max_iter,
            class_weight=params.class_weight, random_state=params.seed,
        )
    else:
        raise ValueError(f"unknown model_type {params.model_type!r}")
    return Pipeline([("prep", prep), ("clf", clf)])


def train_split(training_set: pd.DataFrame) -> pd.DataFrame:
    """The train rows in an order that does not depend on the pseudonym key (see key_independent_order)."""
    train = training_set[training_set[SPLIT] == "train"]
    return train.loc[key_independent_order(train)] if SPLIT_BUCKET in train else train


def fit(training_set: pd.DataFrame, params: ModelParams):
    train = train_split(training_set)
    if train[LABEL].nunique() < 2:
        raise StudyDataError("the training split holds one class only: the outcome definition selects too few subjects")
    numeric, categorical = feature_columns(training_set)
    model = build_model(params, numeric, categorical)
    model.fit(train[numeric + categorical], train[LABEL])
    return model, numeric + categorical


# From this many train rows the folds are fitted side by side in worker processes, one per core: at 55,000 rows (a
# 100,000-subject study) 17 s -> 8.7 s on 2 cores, at 11,000 rows 3.3 s -> 2.9 s; below, starting the workers
# costs more than it saves. (Threads gain little: the solver's Python loop holds the GIL.)
PARALLEL_CV_FROM_ROWS = 10_000
# ... as long as the workers together stay under this much memory. Each holds its own scikit-learn (about 150 MB) and
# the fold's copies of the train matrix (about 5 times its 8-byte values): 2 workers added 1.1 GiB at 55,000 rows x 200
# features; at a million subjects (588,000 rows) each would need some 5 GiB, and the folds stay in one process.
CV_WORKERS_MEMORY = 1.5 * 1024**3


def cv_workers(train_rows: int, folds: int, features: int) -> int:
    """The processes ``cross_validated_auroc`` fits its folds in: one per core up to the folds, from
    PARALLEL_CV_FROM_ROWS train rows, within CV_WORKERS_MEMORY."""
    import os

    if train_rows < PARALLEL_CV_FROM_ROWS:
        return 1
    each = 150 * 1024**2 + 5 * 8 * train_rows * features
    return max(1, min(folds, os.cpu_count() or 1, int(CV_WORKERS_MEMORY // each)))


def cross_validated_auroc(training_set: pd.DataFrame, params: ModelParams, folds: int = 5,
                          repeats: int = 1, workers: int | None = None) -> tuple[float, float]:
    """Mean and standard deviation of the stratified k-fold AUROC on the train split (``repeats``
    times with other shuffles); the holdout is never seen. ``workers``: processes for the folds (default
    ``cv_workers``); the scores do not depend on it."""
    from sklearn.model_selection import RepeatedStratifiedKFold, cross_val_score

    train = train_split(training_set)
    numeric, categorical = feature_columns(training_set)
    splits = RepeatedStratifiedKFold(n_splits=max(2, min(folds, int(train[LABEL].value_counts().min()))),
                                     n_repeats=repeats, random_state=params.seed)
    workers = workers or cv_workers(len(train), splits.get_n_splits(), len(numeric + categorical))
    cv = cross_val_score(build_model(params, numeric, categorical), train[numeric + categorical], train[LABEL],
                         cv=splits, scoring="roc_auc", n_jobs=workers if workers > 1 else None)
    return float(cv.mean()), float(cv.std())


def binary_metrics(y: pd.Series, p: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    y = np.asarray(y)
    out = {"n": float(len(y)), "prevalence": float(y.mean()) if len(y) else float("nan")}
    if len(np.unique(y)) == 2:
        out |= {"auroc": float(roc_auc_score(y, p)), "auprc": float(average_precision_score(y, p))}
    else:
        out |= {"auroc": float("nan"), "auprc": float("nan")}
    out["brier"] = float(brier_score_loss(y, p)) if len(y) else float("nan")
    return out


def bootstrap_auroc_ci(y: pd.Series, p: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the AUROC: how much a small holdout can be trusted.

    Each resample's AUROC is the Mann-Whitney statistic on its ranks (ties averaged: what ``roc_auc_score``
    computes), 100 resamples at a time in numpy; resamples with one class only are left out."""
    from scipy.stats import rankdata

    y, p, rng = np.asarray(y).astype(bool), np.asarray(p, dtype=float), np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(n_boot, len(y)))
    stats = []
    for rows in np.array_split(idx, max(1, n_boot // 100)):
        labels, ranks = y[rows], rankdata(p[rows], axis=1)
        positives = labels.sum(axis=1)
        negatives = labels.shape[1] - positives
        both = (positives > 0) & (negatives > 0)
        u = (ranks * labels).sum(axis=1) - positives * (positives + 1) / 2
        stats.append(u[both] / (positives[both] * negatives[both]))
    stats = np.concatenate(stats) if stats else np.array([])
    if not len(stats):
        return float("nan"), float("nan")
    return float(np.quantile(stats, 0.025)), float(np.quantile(stats, 0.975))


def age_band(age: pd.Series) -> pd.Series:
    return pd.cut(age, [-np.inf, 65, 80, np.inf], labels=["<65", "65-80", ">80"], right=False).astype(str)


def subgroup_metrics(holdout: pd.DataFrame, p: np.ndarray) -> pd.DataFrame:
    """Metrics per sex, age band and arm, for a fairness look at the model."""
    groups = {"SEX": holdout.get("SEX"), "AGE_BAND": age_band(holdout["AGE"]) if "AGE" in holdout else None,
              "ARMCD": holdout.get("ARMCD")}
    rows = []
    for name, values in groups.items():
        if values is None:
            continue
        for level in sorted(values.dropna().unique()):
            m = (values == level).to_numpy()
            rows.append({"group": name, "level": str(level)} | binary_metrics(holdout.loc[m, LABEL], p[m]))
    return pd.DataFrame(rows)


def calibration_plot(y: pd.Series, p: np.ndarray, path: Path, title: str) -> Path:
    from sklearn.calibration import calibration_curve

    from ct_assets.core.plots import pyplot, save_figure

    bins = max(2, min(10, len(y) // 10))
    frac_pos, mean_pred = calibration_curve(y, p, n_bins=bins, strategy="quantile")
    fig, ax = pyplot().subplots(figsize=(4.5, 4.5), dpi=100)
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    ax.plot(mean_pred, frac_pos, "o-", label="model")
    ax.set_xlabel("predicted risk")
    ax.set_ylabel("observed event rate")
    ax.set_title(title)
    ax.legend(loc="upper left")
    return save_figure(fig, path)
