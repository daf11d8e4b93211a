"""Data quality measures beyond row rules: completeness, validity, cross-domain consistency,
freshness and anomalies. Plain functions; the assets are in defs/quality_monitoring.py."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from ct_assets.core.privacy import SUBJECT_KEY


def _dates(s: pd.Series) -> pd.Series:
    return pd.to_datetime(s.astype("string").str.slice(0, 10), format="%Y-%m-%d", errors="coerce")


def completeness(validated: pd.DataFrame, domain: str) -> float:
    """Share of non-null values in the SDTM columns the domain carries."""
    from ct_assets.core.schemas import all_columns

    cols = [c for c in all_columns(domain) if c in validated.columns and c != "USUBJID"]
    if validated.empty or not cols:
        return 1.0
    return float(validated[cols].notna().to_numpy().mean())


def dataset_completeness(path: Path, domain: str) -> tuple[int, float]:
    """(rows, completeness) of a domain's Parquet dataset, from the footers' null counts: the same measure
    as ``completeness``, nothing read."""
    from ct_assets.core import lake
    from ct_assets.core.schemas import all_columns

    rows, present = lake.parquet_rows(path), lake.parquet_columns(path)
    cols = [c for c in all_columns(domain) if c in present and c != "USUBJID"]
    if not rows or not cols:
        return rows, 1.0
    nulls = lake.parquet_null_counts(path, cols)
    return rows, 1.0 - sum(nulls.values()) / (rows * len(cols))


def partial_dates(path: Path) -> int:
    """Partial dates (``2013-12``, ``2013``: valid SDTM, never quarantined for it) in every --DTC column of a
    validated dataset, in Arrow batch by batch. Validated dates are ISO 8601, so a partial one is one shorter
    than a whole date (``lib.dates.is_partial`` is the same test for values not yet validated)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from ct_assets.core import lake

    files = lake.parquet_files(path)
    if not files:
        return 0
    dataset = ds.dataset([str(p) for p in files], format="parquet")
    columns = [c for c in dataset.schema.names if c.endswith("DTC")]
    total = 0
    for batch in dataset.to_batches(columns=columns, batch_size=1_000_000):
        for column in batch.columns:
            text = column.cast("string")
            total += pc.sum(pc.fill_null(pc.less(pc.utf8_length(text), 10), False)).as_py() or 0
    return total


def _within_counts(findings: pd.DataFrame, dtc: str, period: pd.DataFrame) -> tuple[int, int]:
    """(inside, assessable): a partial date is inside when its whole interval is, outside when none of it is,
    and not assessable otherwise."""
    from ct_assets.core.dates import date_bounds

    df = findings[[SUBJECT_KEY, dtc]].merge(period, on=SUBJECT_KEY, how="left")
    lo, hi = date_bounds(df[dtc])
    inside = (lo >= df["start"]) & (hi <= df["end"])
    outside = (hi < df["start"]) | (lo > df["end"])
    known = lo.notna() & df["start"].notna() & df["end"].notna() & (inside | outside)
    return int(inside[known].sum()), int(known.sum())


def subjects_in_dm(raw: pd.DataFrame, raw_dm: pd.DataFrame) -> float:
    if raw.empty:
        return 1.0
    return float(raw["USUBJID"].isin(set(raw_dm["USUBJID"])).mean())


PERIOD_STARTS, PERIOD_ENDS = ("RFICDTC", "DMDTC", "RFSTDTC"), ("RFPENDTC", "RFENDTC")  # all Expected or Permissible


def _earliest_or_latest(dm: pd.DataFrame, cols: tuple[str, ...], latest: bool) -> pd.Series:
    from ct_assets.core.dates import date_bounds

    dates = [date_bounds(dm[c])[1 if latest else 0] for c in cols if c in dm]  # the widest period the dates allow
    if not dates:
        return pd.Series(pd.NaT, index=dm.index, dtype="datetime64[ns]")
    both = pd.concat(dates, axis=1)
    return both.max(axis=1) if latest else both.min(axis=1)


def study_period(dm: pd.DataFrame, margin_days: int = 60) -> pd.DataFrame:
    """Each subject's window: earliest of consent/DM/first dose, to end of participation, with a margin
    (NaT where the study does not carry the dates)."""
    starts = _earliest_or_latest(dm, PERIOD_STARTS, latest=False)
    ends = _earliest_or_latest(dm, PERIOD_ENDS, latest=True)
    margin = pd.Timedelta(days=margin_days)
    return pd.DataFrame({SUBJECT_KEY: dm[SUBJECT_KEY], "start": starts - margin, "end": ends + margin})


def dates_within_period(findings: pd.DataFrame, domain: str, period: pd.DataFrame) -> float | None:
    """Share of dated results inside their subject's study period; None when nothing can be assessed
    (no dates, or no subject with a known period)."""
    dtc = f"{domain}DTC"
    if findings.empty:
        return 1.0
    if dtc not in findings:
        return None
    inside, known = _within_counts(findings, dtc, period)
    return inside / known if known else None


def visit_order(visits: pd.DataFrame, date_col: str) -> float | None:
    """Share of consecutive scheduled visits (integer VISITNUM) whose dates do not go backwards
    (None when visits or their dates are not in the study)."""
    if visits.empty:
        return 1.0
    if "VISITNUM" not in visits or date_col not in visits or visits[["VISITNUM", date_col]].isna().all().any():
        return None
    v = visits[[SUBJECT_KEY, "VISITNUM", date_col]].assign(D=_dates(visits[date_col]))
    v = v[(v["VISITNUM"] % 1 == 0) & v["D"].notna()].groupby([SUBJECT_KEY, "VISITNUM"])["D"].min().reset_index()
    v = v.sort_values([SUBJECT_KEY, "VISITNUM"])
    step = v.groupby(SUBJECT_KEY)["D"].diff().dropna()
    return float((step >= pd.Timedelta(0)).mean()) if len(step) else 1.0


def freshness_days(files: list[Path]) -> float:
    """Age of the newest source file, in days."""
    if not files:
        return float("inf")
    return (time.time() - max(p.stat().st_mtime for p in files)) / 86400


def anomalies(findings: pd.DataFrame, domain: str, z_limit: float = 6.0) -> pd.DataFrame:
    """Per test: results whose robust z-score (median / MAD) exceeds ``z_limit``."""
    res, test = f"{domain}STRESN", f"{domain}TESTCD"
    if findings.empty or res not in findings or test not in findings:
        return pd.DataFrame(columns=["test", "results", "anomalies", "share"])
    x = findings[[test, res]].dropna()
    med = x.groupby(test)[res].transform("median")
    mad = (x[res] - med).abs().groupby(x[test]).transform("median") * 1.4826
    z = (x[res] - med).abs() / mad.where(mad > 0)
    out = pd.DataFrame({"test": domain + "_" + x[test], "anomalous": z > z_limit}).groupby("test")["anomalous"].agg(["size", "sum"])
    out = out.rename(columns={"size": "results", "sum": "anomalies"}).reset_index()
    out["share"] = out["anomalies"] / out["results"]
    return out.sort_values("share", ascending=False, ignore_index=True)


def robust_outliers(x: np.ndarray, z_limit: float) -> int:
    """How many of one test's results lie more than ``z_limit`` robust z-scores (|x - median| / (1.4826 MAD))
    from the median; none when the MAD is 0."""
    dev = np.abs(x - np.median(x))
    mad = np.median(dev) * 1.4826
    return int((dev / mad > z_limit).sum()) if mad > 0 else 0


def anomaly_table(rows: list[dict]) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=["test", "results", "anomalies"])
    out["share"] = out["anomalies"] / out["results"]
    return out.sort_values(["share", "test"], ascending=[False, True], ignore_index=True)


def quality_score(components: dict[str, float | None]) -> float:
    """Mean of the components that could be assessed (None: not assessable for this study)."""
    values = [v for v in components.values() if v is not None]
    return float(np.mean(values)) if values else 1.0
