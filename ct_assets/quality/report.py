"""Data quality measures beyond row rules: completeness, validity, cross-domain consistency,
freshness and anomalies. Plain functions; the assets are in quality/monitor_assets.py."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from ct_assets.lib.privacy import SUBJECT_KEY
from ct_assets.quality.schemas import all_columns


def _dates(s: pd.Series) -> pd.Series:
    return pd.to_datetime(s.astype("string").str.slice(0, 10), format="%Y-%m-%d", errors="coerce")


def completeness(validated: pd.DataFrame, domain: str) -> float:
    """Share of non-null values in the SDTM columns the domain carries."""
    cols = [c for c in all_columns(domain) if c in validated.columns and c != "USUBJID"]
    if validated.empty or not cols:
        return 1.0
    return float(validated[cols].notna().to_numpy().mean())


def subjects_in_dm(raw: pd.DataFrame, raw_dm: pd.DataFrame) -> float:
    if raw.empty:
        return 1.0
    return float(raw["USUBJID"].isin(set(raw_dm["USUBJID"])).mean())


def study_period(dm: pd.DataFrame, margin_days: int = 60) -> pd.DataFrame:
    """Each subject's window: earliest of consent/DM/first dose, to end of participation, with a margin."""
    starts = pd.concat([_dates(dm[c]) for c in ("RFICDTC", "DMDTC", "RFSTDTC") if c in dm], axis=1).min(axis=1)
    ends = pd.concat([_dates(dm[c]) for c in ("RFPENDTC", "RFENDTC") if c in dm], axis=1).max(axis=1)
    margin = pd.Timedelta(days=margin_days)
    return pd.DataFrame({SUBJECT_KEY: dm[SUBJECT_KEY], "start": starts - margin, "end": ends + margin})


def dates_within_period(findings: pd.DataFrame, domain: str, period: pd.DataFrame) -> float:
    dtc = f"{domain}DTC"
    if findings.empty or dtc not in findings:
        return 1.0
    df = findings[[SUBJECT_KEY, dtc]].merge(period, on=SUBJECT_KEY, how="left")
    d = _dates(df[dtc])
    known = d.notna() & df["start"].notna() & df["end"].notna()
    if not known.any():
        return 1.0
    return float(((d >= df["start"]) & (d <= df["end"]))[known].mean())


def visit_order(visits: pd.DataFrame, date_col: str) -> float:
    """Share of consecutive scheduled visits (integer VISITNUM) whose dates do not go backwards."""
    if visits.empty:
        return 1.0
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
    if findings.empty:
        return pd.DataFrame(columns=["test", "results", "anomalies", "share"])
    x = findings[[test, res]].dropna()
    med = x.groupby(test)[res].transform("median")
    mad = (x[res] - med).abs().groupby(x[test]).transform("median") * 1.4826
    z = (x[res] - med).abs() / mad.where(mad > 0)
    out = pd.DataFrame({"test": domain + "_" + x[test], "anomalous": z > z_limit}).groupby("test")["anomalous"].agg(["size", "sum"])
    out = out.rename(columns={"size": "results", "sum": "anomalies"}).reset_index()
    out["share"] = out["anomalies"] / out["results"]
    return out.sort_values("share", ascending=False, ignore_index=True)


def quality_score(components: dict[str, float]) -> float:
    return float(np.mean(list(components.values()))) if components else 1.0
