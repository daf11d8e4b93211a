"""Drift and degradation statistics: plain functions on data frames.

- Feature drift: population stability index (PSI, reference deciles) and the two-sample
  Kolmogorov-Smirnov test per numeric feature; PSI on category shares for categorical ones.
- Prediction drift: the same on the champion's risk scores.
- Performance: the champion on subjects labelled since it was trained, against its holdout AUROC.
- Concept drift: observed against expected events on those subjects (calibration in the large);
  the same inputs giving other outcomes means the relation between features and outcome moved.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

EPS = 1e-4


def psi_numeric(reference: pd.Series, current: pd.Series, bins: int = 10) -> float:
    """PSI over the reference's quantile bins (missing values are a bin of their own)."""
    return _psi_numeric(_floats(reference), _floats(current), bins)


def _floats(values: pd.Series) -> np.ndarray:
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def _psi_numeric(ref: np.ndarray, cur: np.ndarray, bins: int = 10) -> float:
    """``psi_numeric`` on arrays: bins counted with ``bincount``, missing values the bin before the first (-1)."""
    known = ref[~np.isnan(ref)]
    edges = np.unique(np.nanquantile(known, np.linspace(0, 1, bins + 1))) if len(known) else []
    inner = edges[1:-1] if len(edges) >= 2 else None  # None: no spread, one bin of values beside the missing one

    def binned(x: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(x), 0, 1 if inner is None else np.searchsorted(inner, x, side="right") + 1)

    p, q = (np.bincount(binned(x), minlength=2 if inner is None else len(inner) + 2) / len(x) for x in (ref, cur))
    return _psi(p, q)


def _psi(p: np.ndarray, q: np.ndarray) -> float:
    """PSI of two share vectors over the same levels, in level order; levels neither side has are left out."""
    present = (p > 0) | (q > 0)
    p, q = p[present] + EPS, q[present] + EPS
    return float(np.sum((q - p) * np.log(q / p)))


def psi_categorical(reference: pd.Series, current: pd.Series) -> float:
    levels = sorted(set(reference.dropna().astype(str)) | set(current.dropna().astype(str)))
    p = reference.astype(str).value_counts(normalize=True).reindex(levels, fill_value=0).to_numpy()
    q = current.astype(str).value_counts(normalize=True).reindex(levels, fill_value=0).to_numpy()
    return _psi(p, q)


def ks_test(reference: pd.Series, current: pd.Series) -> tuple[float, float]:
    return _ks_test(_floats(reference), _floats(current))


def _ks_test(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
    from scipy import stats  # imported on use: keeps the code location quick to load

    a, b = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    if len(a) < 2 or len(b) < 2:
        return float("nan"), float("nan")
    res = stats.ks_2samp(a, b)
    return float(res.statistic), float(res.pvalue)


def out_of_range_share(reference: pd.Series, current: pd.Series) -> float:
    """Share of current values outside the reference's 0.5-99.5 % range (feature distribution check)."""
    return _out_of_range_share(_floats(reference), _floats(current))


def _out_of_range_share(ref: np.ndarray, cur: np.ndarray) -> float:
    ref, cur = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    if len(ref) < 10 or not len(cur):
        return 0.0
    lo, hi = np.quantile(ref, [0.005, 0.995])
    return float(((cur < lo) | (cur > hi)).mean())


def feature_drift(reference: pd.DataFrame, current: pd.DataFrame, categorical: list[str]) -> pd.DataFrame:
    """One row per feature present in both: PSI, KS statistic and p-value, out-of-range share."""
    rows = []
    for col in [c for c in reference.columns if c in current.columns]:
        if col in categorical:
            rows.append({"feature": col, "psi": psi_categorical(reference[col], current[col]),
                         "ks_stat": np.nan, "ks_pvalue": np.nan, "out_of_range": 0.0})
        else:
            ref, cur = _floats(reference[col]), _floats(current[col])
            ks, pv = _ks_test(ref, cur)
            rows.append({"feature": col, "psi": _psi_numeric(ref, cur), "ks_stat": ks, "ks_pvalue": pv,
                         "out_of_range": _out_of_range_share(ref, cur)})
    return pd.DataFrame(rows, columns=["feature", "psi", "ks_stat", "ks_pvalue", "out_of_range"])


def flag_drift(table: pd.DataFrame, psi_threshold: float, ks_alpha: float) -> pd.Series:
    """A feature drifts when its PSI passes the threshold and the KS test agrees (Bonferroni over
    features); categorical features by PSI alone."""
    alpha = ks_alpha / max(1, len(table))
    ks_ok = table["ks_pvalue"].isna() | (table["ks_pvalue"] < alpha)
    return (table["psi"] > psi_threshold) & ks_ok


def observed_vs_expected(y: pd.Series, p: np.ndarray, baseline_ratio: float = 1.0) -> dict[str, float]:
    """Calibration in the large: events seen against the sum of predicted risks, with a z test.

    ``baseline_ratio`` is the model's own observed/expected ratio on its holdout: drift is a change
    from how the model was calibrated when it was promoted, not a departure from perfection."""
    from scipy import stats

    y = np.asarray(y, dtype=float)
    q = np.clip(np.asarray(p, dtype=float) * baseline_ratio, 0.0, 1.0)
    observed, expected = float(y.sum()), float(np.sum(q))
    var = float(np.sum(q * (1 - q)))
    z = (observed - expected) / np.sqrt(var) if var > 0 else 0.0
    return {"n": float(len(y)), "observed": observed, "expected": expected, "baseline_ratio": baseline_ratio,
            "o_e_ratio": observed / expected if expected else float("nan"), "z": float(z),
            "pvalue": float(2 * stats.norm.sf(abs(z)))}


@dataclass(frozen=True)
class Breach:
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"
