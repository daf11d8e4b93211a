"""What the server accepts as a feature value, per model: finite, among the categories the model was trained
on, and within bounds that every subject of the training data meets.

Numeric bounds come from the raw training values (before imputation and scaling, recorded with the model as
``input_domain.json``: each feature's minimum and maximum over the training set), widened on each side by
``MARGIN`` times their range, then intersected with the physiological limits of the data-quality rules
(``ct_assets.core.schemas.PLAUSIBLE_RANGES``, in any of the test's units) where a feature measures a
test. A value far outside the training data is not scored: a logistic model extrapolates it linearly into
a risk of 0 or 1 that means nothing (``1e30`` gave 1.0). Every value the model was trained on lies inside
its bounds by construction. (Models registered before the domain was recorded fall back to the scaler's
mean plus or minus ``TRAINING_SPREAD`` standard deviations.)

Categorical values must be among the categories the training data held (``UNKNOWN`` is one where a
training subject lacked the value): anything else is refused, never silently one-hot encoded as nothing.

Required: the demographics ``REQUIRED`` names. Every enrolled subject has them in DM (SDTM requires
SEX and ARMCD and expects AGE); the model would impute a median age or no treatment arm, and score
a subject who does not exist. Vitals and labs stay optional: they are sparse by nature (a test not
done, a visit missed), the model was trained with them missing and imputes them as it did then.
"""

from __future__ import annotations

import math
import re

REQUIRED = ("AGE", "SEX", "ARMCD")
TRAINING_SPREAD = 20.0  # standard deviations around the training mean (models without a recorded domain)
MARGIN = 1.0  # the training range is widened by its own width on each side
MAX_TEXT = 64  # a categorical value longer than this is refused before anything else is looked at
DOMAIN_FILE = "input_domain.json"  # logged with the model's MLflow run
ABSURD = 1e6  # the bound when neither the model nor the rules give one
DEMOGRAPHIC_RANGES = {"AGE": (0.0, 120.0)}  # as the DM rule of core/schemas.py
FINDING = re.compile(r"^[A-Z]{2}_([A-Z][A-Z0-9_]{0,7})__(baseline|last|change|slope)$")


def training_envelope(model) -> dict[str, tuple[float, float]]:
    """Per numeric feature, mean +- TRAINING_SPREAD sd as seen by the fitted scaler, when the model
    is a pipeline with one (the default model); {} otherwise."""
    try:
        prep = model.named_steps["prep"]
        fitted = {name: (trans, cols) for name, trans, cols in prep.transformers_}
        scaler, cols = fitted["num"][0].named_steps["scale"], fitted["num"][1]
        mean, scale = scaler.mean_, scaler.scale_
    except (AttributeError, KeyError, TypeError):
        return {}
    return {c: (float(m - TRAINING_SPREAD * s), float(m + TRAINING_SPREAD * s))
            for c, m, s in zip(cols, mean, scale) if math.isfinite(m) and math.isfinite(s)}


def plausible(feature: str) -> tuple[float, float] | None:
    """The physiological range a feature can take, from the data-quality rules; None if unknown."""
    if feature in DEMOGRAPHIC_RANGES:
        return DEMOGRAPHIC_RANGES[feature]
    match = FINDING.match(feature)
    if not match:
        return None
    from ct_assets.core.schemas import PLAUSIBLE_RANGES

    ranges = [r for (test, _unit), r in PLAUSIBLE_RANGES.items() if test == match.group(1)]
    if not ranges:
        return None
    lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)  # any unit the test is reported in
    if match.group(2) in ("baseline", "last"):
        return float(lo), float(hi)
    return -float(hi - lo), float(hi - lo)  # a change, or a slope per day (days are whole numbers)


def input_domain(frame, numeric: list[str], categorical: list[str]) -> dict:
    """What the model was trained on, for the server's checks: each numeric feature's raw minimum and maximum
    (None when every value was missing), each categorical feature's categories."""
    import numpy as np

    out: dict = {"numeric": {}, "categorical": {}}
    for name in numeric:
        values = frame[name].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        out["numeric"][name] = [float(values.min()), float(values.max())] if len(values) else None
    for name in categorical:
        out["categorical"][name] = sorted(str(v) for v in frame[name].dropna().unique())
    return out


def _widened(lo: float, hi: float) -> tuple[float, float]:
    width = hi - lo if hi > lo else max(abs(hi), 1.0)
    return lo - MARGIN * width, hi + MARGIN * width


def feature_bounds(model, numeric: list[str], domain: dict | None = None) -> dict[str, tuple[float, float, str]]:
    """Per numeric feature: (low, high, where the bound comes from)."""
    envelope = {} if domain else training_envelope(model)
    seen = (domain or {}).get("numeric", {})
    out = {}
    for name in numeric:
        lo, hi, why = -ABSURD, ABSURD, "absurd"
        if seen.get(name):
            lo, hi = _widened(*seen[name])
            why = f"training values widened by {MARGIN:g} of their range"
        elif name in envelope:
            lo, hi, why = *envelope[name], "training range"
        rule = plausible(name)
        if rule is not None:
            if lo <= rule[1] and rule[0] <= hi:
                lo, hi = max(lo, rule[0]), min(hi, rule[1])
                why += " and plausibility bounds" if why != "absurd" else ""
            else:
                lo, hi = rule
            why = why if why != "absurd" else "plausibility bounds"
        out[name] = (lo, hi, why)
    return out
