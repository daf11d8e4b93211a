"""What the server accepts as a feature value, per model: finite, within the platform's plausibility
bounds where a feature measures something they cover, and within the range the model was trained on.

A value far outside the training data is not scored: a logistic model extrapolates it linearly into
a risk of 0 or 1 that means nothing (``1e30`` gave 1.0). The training range is the scaler's mean
plus or minus ``TRAINING_SPREAD`` standard deviations (generous: a real patient far out in a tail
still passes; a typo or an overflow does not). Features measuring a test (``VS_SYSBP__baseline``,
``LB_ALT__slope``, ...) are also held to the physiological bounds of the data-quality rules
(``ct_assets.quality.schemas.PLAUSIBLE_RANGES``), in any of the test's units.

Required: the demographics ``REQUIRED`` names. Every enrolled subject has them in DM (SDTM requires
SEX and ARMCD and expects AGE); the model would impute a median age or no treatment arm, and score
a subject who does not exist. Vitals and labs stay optional: they are sparse by nature (a test not
done, a visit missed), the model was trained with them missing and imputes them as it did then.
"""

from __future__ import annotations

import math
import re

REQUIRED = ("AGE", "SEX", "ARMCD")
TRAINING_SPREAD = 20.0  # standard deviations around the training mean
ABSURD = 1e6  # the bound when neither the model nor the rules give one
DEMOGRAPHIC_RANGES = {"AGE": (0.0, 120.0)}  # as the DM rule of quality/schemas.py
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
    from ct_assets.quality.schemas import PLAUSIBLE_RANGES

    ranges = [r for (test, _unit), r in PLAUSIBLE_RANGES.items() if test == match.group(1)]
    if not ranges:
        return None
    lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)  # any unit the test is reported in
    if match.group(2) in ("baseline", "last"):
        return float(lo), float(hi)
    return -float(hi - lo), float(hi - lo)  # a change, or a slope per day (days are whole numbers)


def feature_bounds(model, numeric: list[str]) -> dict[str, tuple[float, float, str]]:
    """Per numeric feature: (low, high, where the bound comes from)."""
    envelope = training_envelope(model)
    out = {}
    for name in numeric:
        lo, hi, why = -ABSURD, ABSURD, "absurd"
        if name in envelope:
            lo, hi, why = *envelope[name], "training range"
        rule = plausible(name)
        if rule is not None:
            lo, hi = (max(lo, rule[0]), min(hi, rule[1])) if lo <= rule[1] and rule[0] <= hi else rule
            why = "plausibility bounds and training range" if name in envelope else "plausibility bounds"
        out[name] = (lo, hi, why)
    return out
