"""Permutation tests of an AUROC difference between two models, the two designs the platform uses.

- ``paired_auroc_test``: both models scored the *same* subjects (the KFP holdout comparison of
  champion and challenger): the models' scores are swapped within subjects.
- ``independent_auroc_test``: each model scored *different* subjects (the arms of a live deployment,
  read from the server's prediction log): subjects are reassigned between the arms.
"""

from __future__ import annotations

import numpy as np


def auroc_of(y: np.ndarray, p: np.ndarray, axis: int = -1) -> np.ndarray:
    """AUROC in its Mann-Whitney form (ties count half), vectorised over a leading resample axis."""
    from scipy.stats import rankdata

    ranks = rankdata(p, axis=axis)
    pos = y == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return ((ranks * pos).sum(axis=axis) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def paired_auroc_test(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, n_resamples: int,
                      seed: int = 0) -> tuple[float, float]:
    """AUROC(a) - AUROC(b) on the same subjects, and its two-sided p-value."""
    from scipy.stats import permutation_test

    y = np.asarray(y)
    test = permutation_test((p_a, p_b), lambda a, b, axis=-1: auroc_of(y, a, axis) - auroc_of(y, b, axis),
                            permutation_type="samples", vectorized=True, n_resamples=n_resamples,
                            alternative="two-sided", random_state=seed)
    return float(test.statistic), float(test.pvalue)


def independent_auroc_test(y_a: np.ndarray, p_a: np.ndarray, y_b: np.ndarray, p_b: np.ndarray, n_resamples: int,
                           seed: int = 0) -> tuple[float, float]:
    """AUROC(a) - AUROC(b) where a and b scored different subjects, and its two-sided p-value
    (a resample whose arm lacks one outcome counts as no difference)."""
    from scipy.stats import permutation_test

    y, p = np.concatenate([y_a, y_b]), np.concatenate([p_a, p_b])
    idx_a, idx_b = np.arange(len(y_a)), np.arange(len(y_a), len(y))

    def diff(a, b, axis=-1):
        a, b = a.astype(int), b.astype(int)
        if len(np.unique(y[a])) < 2 or len(np.unique(y[b])) < 2:
            return 0.0
        return float(auroc_of(y[a], p[a]) - auroc_of(y[b], p[b]))

    test = permutation_test((idx_a, idx_b), diff, permutation_type="independent", vectorized=False,
                            n_resamples=n_resamples, alternative="two-sided", random_state=seed)
    return float(test.statistic), float(test.pvalue)
