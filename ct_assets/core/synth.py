"""Grow an SDTM study by resampling its subjects with new pseudonymous ids and jittered values.

For scale tests and drift drills: seeded, vectorized (merges, no loops over subjects), from a few
subjects to millions. Each new subject copies every row of a randomly chosen source subject across
all domains, with a new USUBJID, dates moved by a random offset (study days unchanged), numeric
findings jittered by a few percent, and optional shifts per test (e.g. VS SYSBP +40) to simulate
drift. Each domain is written a chunk of subjects at a time (one file per 5,000 subjects beyond
the first 5,000: ``vs_part0001.parquet``, ...), so memory stays flat however many subjects.

    python -m ct_assets.core.synth --out /tmp/big --subjects 5000 --seed 1
    python -m ct_assets.core.synth --out /tmp/study --copy-source --subjects 0     # a copy of the pilot to add batches to
    python -m ct_assets.core.synth --out /tmp/study --subjects 150 --shift VS.SYSBP=40 --suffix batch2

The source is the bundled CDISC pilot unless --source names another study (never $CT_STUDY_DIR, which
is usually the folder being grown).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from ct_assets.core.sdtm import DOMAINS, FINDINGS_DOMAINS, READERS, domain_files, read_domain, study_path

DATE_SUFFIXES = ("DTC",)


def _date_parts(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Per source row: the day of a full date (NaT if partial or not a date), and the text after it (a time)."""
    text = col.astype("string")
    full = text.str.len() >= 10
    day = pd.to_datetime(text.where(full).str.slice(0, 10), format="%Y-%m-%d", errors="coerce").to_numpy("datetime64[D]")
    return day, text.str.slice(10).fillna("").to_numpy(dtype=str)


# Subjects per Parquet file: each domain is written a chunk of subjects at a time, so memory stays flat
# however many subjects (about 0.6 GiB per 5,000 subjects at the pilot's rows per subject).
CHUNK_SUBJECTS = 5000


def _grow_domain(src: pd.DataFrame, dates: dict[str, tuple[np.ndarray, np.ndarray]], domain: str,
                 mapping: pd.DataFrame, rng: np.random.Generator, shift: dict[tuple[str, str], float],
                 jitter: float) -> pd.DataFrame:
    """The rows of ``mapping``'s new subjects in one domain, copied from their source subjects' rows."""
    # Which source row each new row copies: a merge of the keys alone, then one take of the whole table.
    rows = pd.DataFrame({"USUBJID": src["USUBJID"], "_ROW": np.arange(len(src))}).merge(mapping, on="USUBJID")
    pos = rows["_ROW"].to_numpy()
    df = src.take(pos).reset_index(drop=True)
    df["USUBJID"] = rows["_NEW"]
    if "SUBJID" in df:
        df["SUBJID"] = rows["_SUBJID"]
    days = rows["_DAYS"].to_numpy().astype("timedelta64[D]")
    for col, (day, tail) in dates.items():
        moved = day[pos] + days
        ok = ~np.isnat(moved)
        text = df[col].astype("string").to_numpy(dtype=object)
        text[ok] = np.char.add(np.datetime_as_string(moved[ok]), tail[pos][ok])
        df[col] = pd.array(text, dtype="string")
    if domain in FINDINGS_DOMAINS:
        res, testcd = f"{domain}STRESN", f"{domain}TESTCD"
        factor = 1 + rng.normal(0, jitter, len(df))
        df[res] = df[res] * factor
        for (d, test), delta in shift.items():
            if d == domain:
                df.loc[df[testcd] == test, res] += delta
        if f"{domain}STRESC" in df:
            num = df[res].notna()
            df.loc[num, f"{domain}STRESC"] = df.loc[num, res].round(3).astype(str)
    return df


def grow_study(source: Path, out: Path, n_subjects: int, seed: int = 0, shift: dict[tuple[str, str], float] | None = None,
               suffix: str = "", id_prefix: str = "G", jitter: float = 0.02,
               chunk_subjects: int = CHUNK_SUBJECTS) -> dict[str, int]:
    """Write ``n_subjects`` resampled subjects as Parquet SDTM domains under ``out``; returns rows per domain.

    Up to ``chunk_subjects`` subjects a domain is one file (``vs.parquet``, ``vs_<suffix>.parquet``); beyond,
    one file per chunk of subjects (``vs_part0001.parquet``, ``vs_<suffix>_part0001.parquet``, ...), which
    the study reader takes as one domain. Files of an earlier run under the same names are replaced."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    dm = read_domain(source, "DM")
    src = dm["USUBJID"].to_numpy()
    mapping = pd.DataFrame({
        "USUBJID": rng.choice(src, n_subjects, replace=True),
        "_NEW": [f"{id_prefix}{seed:03d}-{i:07d}" for i in range(n_subjects)],
        "_DAYS": rng.integers(-365, 365, n_subjects),
    })
    mapping["_SUBJID"] = mapping["_NEW"].str.split("-").str[-1]
    chunks = range(0, max(n_subjects, 1), chunk_subjects)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for domain in DOMAINS:
        df = read_domain(source, domain)
        if df is None:
            continue
        df = df.drop(columns=["_SOURCE_FILE", "_SOURCE_ROW"])
        dates = {c: _date_parts(df[c]) for c in df.columns if c.endswith(DATE_SUFFIXES)}
        base = f"{domain.lower()}{('_' + suffix) if suffix else ''}"
        for stale in [out / f"{base}.parquet", *out.glob(f"{base}_part[0-9][0-9][0-9][0-9].parquet")]:
            stale.unlink(missing_ok=True)
        counts[domain], schema = 0, None
        for part, start in enumerate(chunks, 1):
            grown = _grow_domain(df, dates, domain, mapping.iloc[start:start + chunk_subjects], rng, shift or {}, jitter)
            table = pa.Table.from_pandas(grown, preserve_index=False)
            del grown
            # One schema for all parts: a column empty in a small last chunk keeps the first part's type.
            schema = schema or table.schema
            name = f"{base}.parquet" if len(chunks) == 1 else f"{base}_part{part:04d}.parquet"
            pq.write_table(table if table.schema.equals(schema) else table.cast(schema), out / name)
            counts[domain] += table.num_rows
    return counts


def copy_study(source: Path, out: Path) -> int:
    """Copy the domain files of ``source`` into ``out``; returns how many."""
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    files = [p for d in DOMAINS for p in domain_files(source, d) if p.suffix.lower() in READERS]
    for path in files:
        shutil.copy2(path, out / path.name)
    return len(files)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ct_assets.core.synth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", help="SDTM study to resample (default: the bundled CDISC pilot)")
    parser.add_argument("--copy-source", action="store_true",
                        help="first copy the source study's domain files into --out (your own study to add batches to)")
    parser.add_argument("--out", required=True, help="output folder (Parquet per domain)")
    parser.add_argument("--subjects", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shift", action="append", default=[], metavar="DOMAIN.TESTCD=DELTA",
                        help="add DELTA to a test's standard result, e.g. VS.SYSBP=40 (repeatable)")
    parser.add_argument("--suffix", default="", help="file name suffix, e.g. batch2 -> vs_batch2.parquet")
    args = parser.parse_args(argv)
    source = Path(args.source) if args.source else study_path(bundled=True)
    out = Path(args.out)
    if args.copy_source:
        copied = copy_study(source, out)
        print(f"copied {copied} files of {source} to {out}")
    if args.subjects <= 0:
        return
    shift = {}
    for item in args.shift:
        key, delta = item.split("=")
        domain, test = key.split(".")
        shift[(domain.upper(), test.upper())] = float(delta)
    counts = grow_study(source, out, args.subjects, args.seed, shift, args.suffix)
    print(", ".join(f"{d} {n} rows" for d, n in counts.items()))


if __name__ == "__main__":
    main()
