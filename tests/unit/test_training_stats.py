"""The bootstrap interval of the AUROC, vectorised: the same interval as scikit-learn's roc_auc_score per resample."""

import numpy as np
import pytest

from ct_assets.core.training import bootstrap_auroc_ci


def _per_resample(y, p, n_boot=1000, seed=0):
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(n_boot, len(y)))
    stats = [roc_auc_score(y[i], p[i]) for i in idx if 0 < y[i].sum() < len(i)]
    return float(np.quantile(stats, 0.025)), float(np.quantile(stats, 0.975))


@pytest.mark.parametrize("n", [6, 56, 400])
def test_the_interval_is_scikit_learns_on_every_resample(n):
    rng = np.random.default_rng(n)
    y = rng.integers(0, 2, n)
    p = np.round(rng.random(n), 1) + 0.2 * y  # many ties: they count a half, as in roc_auc_score
    assert bootstrap_auroc_ci(y, p) == pytest.approx(_per_resample(y, p), abs=1e-12)


def test_one_class_gives_no_interval():
    low, high = bootstrap_auroc_ci(np.zeros(20, dtype=int), np.linspace(0, 1, 20))
    assert np.isnan(low) and np.isnan(high)
