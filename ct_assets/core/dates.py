"""SDTM dates as the interval of days they allow: one reading for every engine (pandas here, Spark below).

SDTM dates are ISO 8601 and may be partial: ``2013-12-20T10:30``, ``2013-12-20``, ``2013-12``, ``2013``. A date is
read as its earliest and latest possible calendar day (``2013-12`` is 1 to 31 December 2013); nothing is
filled in. A study day (``--DY``) exists only when both the date and the reference start (DM.RFSTDTC) are
complete, as the SDTMIG derives it; otherwise the day is bounded: ``day_bounds`` gives the earliest and latest
study day the value can have. Study days count from 1 on the reference date; there is no day 0.

Spark's ``to_date('2013-12')`` answers 2013-12-01 and pandas' strict parser answers NaT: neither is used on a
raw DTC. ``spark_day_bounds`` states the same arithmetic as Spark column expressions, and the tests hold the
two to the same answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

# Year, then month, then day; anything after the day is a time, which never moves the day. Java and Python
# read this pattern alike (Spark's regexp_extract is Java's regex).
DATE_PATTERN = r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?(?:T.*)?$"


def date_bounds(dtc: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Earliest and latest calendar day of each SDTM date (datetime64[s]; NaT when empty or not a date)."""
    import numpy as np
    import pandas as pd

    text = dtc.astype("string")
    unique = text.dropna().unique()
    parts = pd.Series(unique, dtype="string").str.extract(DATE_PATTERN)
    year = pd.to_numeric(parts[0], errors="coerce").to_numpy(dtype=float)
    month = pd.to_numeric(parts[1], errors="coerce").to_numpy(dtype=float)
    day = pd.to_numeric(parts[2], errors="coerce").to_numpy(dtype=float)
    ok = ~np.isnan(year) & (np.isnan(month) | ((month >= 1) & (month <= 12)))
    y = np.where(ok, year, 1970).astype("int64") - 1970
    m = np.where(np.isnan(month), 1, np.where(ok, month, 1)).astype("int64") - 1
    first_of_month = (y * 12 + m).astype("datetime64[M]").astype("datetime64[D]")
    next_month = (y * 12 + m + 1).astype("datetime64[M]").astype("datetime64[D]")
    next_year = (y + 1).astype("datetime64[Y]").astype("datetime64[D]")
    has_day = ~np.isnan(day)
    exact = first_of_month + np.where(has_day, day - 1, 0).astype("int64")
    ok &= ~has_day | ((day >= 1) & (exact < next_month))  # a real calendar day (validation quarantines the rest)
    earliest = np.where(has_day, exact, first_of_month)
    latest = np.where(has_day, exact, np.where(np.isnan(month), next_year, next_month) - np.timedelta64(1, "D"))
    nat = np.datetime64("NaT", "D")
    lookup_lo = pd.Series(np.where(ok, earliest, nat).astype("datetime64[s]"), index=unique)
    lookup_hi = pd.Series(np.where(ok, latest, nat).astype("datetime64[s]"), index=unique)
    return text.map(lookup_lo).astype("datetime64[s]"), text.map(lookup_hi).astype("datetime64[s]")


def _study_day(delta: pd.Series) -> pd.Series:
    return delta.where(delta < 0, delta + 1)


def day_bounds(dtc: pd.Series, reference_dtc: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Earliest and latest study day of each date against its subject's reference start (Float64; NA when
    either date is empty or not a date). Equal bounds: the day is known."""
    lo, hi = date_bounds(dtc)
    ref_lo, ref_hi = date_bounds(reference_dtc)
    first = _study_day((lo - ref_hi).dt.days)
    last = _study_day((hi - ref_lo).dt.days)
    return first.astype("Float64"), last.astype("Float64")


def study_day(dtc: pd.Series, reference_dtc: pd.Series) -> pd.Series:
    """SDTM study day (``--DY``): only from a complete date and a complete reference start, else NA."""
    first, last = day_bounds(dtc, reference_dtc)
    return first.where(first == last)


def is_partial(dtc: pd.Series):
    """True where a date is present but not a complete calendar date (``2013-12``, ``2013``)."""
    lo, hi = date_bounds(dtc)
    return (lo.notna() & (lo != hi)).to_numpy()
