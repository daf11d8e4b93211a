"""Grow an SDTM study by resampling its subjects with new pseudonymous ids and jittered values.

For scale tests and drift drills: seeded, vectorized (merges, no loops over subjects), from a few
subjects to millions. Each new subject copies every row of a randomly chosen source subject across
all domains, with a new USUBJID, dates moved by a random offset (study days unchanged), numeric
findings jittered by a few percent, and optional shifts per test (e.g. VS SYSBP +40) to simulate
drift.

    python -m ct_assets.lib.synth --out /tmp/big --subjects 5000 --seed 1
    python -m ct_assets.lib.synth --out /tmp/study --copy-source --subjects 0     # a copy of the pilot to add batches to
    python -m ct_assets.lib.synth --out /tmp/study --subjects 150 --shift VS.SYSBP=40 --suffix batch2

The source is the bundled CDISC pilot unless --source names another study (never $CT_STUDY_DIR, which
is usually the folder being grown).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from ct_assets.lib.sdtm import DOMAINS, FINDINGS_DOMAINS, READERS, domain_files, read_domain, study_path

DATE_SUFFIXES = ("DTC",)


def _shift_dates(col: pd.Series, days: pd.Series) -> pd.Series:
    text = col.astype("string")
    full = text.str.len() >= 10
    dates = pd.to_datetime(text.where(full).str.slice(0, 10), format="%Y-%m-%d", errors="coerce")
    moved = (dates + pd.to_timedelta(days, unit="D")).dt.strftime("%Y-%m-%d")
    return text.where(~full | dates.isna(), moved + text.str.slice(10))


def grow_study(source: Path, out: Path, n_subjects: int, seed: int = 0, shift: dict[tuple[str, str], float] | None = None,
               suffix: str = "", id_prefix: str = "G", jitter: float = 0.02) -> dict[str, int]:
    """Write ``n_subjects`` resampled subjects as Parquet SDTM domains under ``out``; returns rows per domain."""
    rng = np.random.default_rng(seed)
    dm = read_domain(source, "DM")
    src = dm["USUBJID"].to_numpy()
    mapping = pd.DataFrame({
        "USUBJID": rng.choice(src, n_subjects, replace=True),
        "_NEW": [f"{id_prefix}{seed:03d}-{i:07d}" for i in range(n_subjects)],
        "_DAYS": rng.integers(-365, 365, n_subjects),
    })
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for domain in DOMAINS:
        df = read_domain(source, domain)
        if df is None:
            continue
        df = df.drop(columns=["_SOURCE_FILE", "_SOURCE_ROW"]).merge(mapping, on="USUBJID", how="inner")
        df["USUBJID"] = df.pop("_NEW")
        if "SUBJID" in df:
            df["SUBJID"] = df["USUBJID"].str.split("-").str[-1]
        days = df.pop("_DAYS")
        for col in [c for c in df.columns if c.endswith(DATE_SUFFIXES)]:
            df[col] = _shift_dates(df[col], days)
        if domain in FINDINGS_DOMAINS:
            res, testcd = f"{domain}STRESN", f"{domain}TESTCD"
            factor = 1 + rng.normal(0, jitter, len(df))
            df[res] = df[res] * factor
            for (d, test), delta in (shift or {}).items():
                if d == domain:
                    df.loc[df[testcd] == test, res] += delta
            if f"{domain}STRESC" in df:
                num = df[res].notna()
                df.loc[num, f"{domain}STRESC"] = df.loc[num, res].round(3).astype(str)
        name = f"{domain.lower()}{('_' + suffix) if suffix else ''}.parquet"
        df.to_parquet(out / name, index=False)
        counts[domain] = len(df)
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
    parser = argparse.ArgumentParser(prog="python -m ct_assets.lib.synth", description=__doc__,
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
