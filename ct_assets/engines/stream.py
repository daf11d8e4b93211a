"""A findings domain validated on one machine in bounded memory: the raw dataset streamed batch by batch
through the rules of ``schemas.py`` by a few worker processes, without a JVM.

What Spark does with aggregations and joins is done here in two narrow passes before the rows are judged:
each test's standard unit (counts of test and unit over the domain) and the rows that repeat an earlier
USUBJID + --SEQ (64-bit hashes of the key for every row, then the exact keys of the few rows whose hash
repeats, so a hash collision cannot quarantine a row); the workers read the parts' narrow columns side
by side. Then each part of the raw dataset goes to a worker, which reads it in batches, applies the schema's row rules and DM's subjects (``findings_schema`` with
``whole_domain=False``, as Spark's partitions do), adds the repeats' uniqueness rule, pseudonymises the
accepted rows and writes both sides as Parquet parts. Rules, reasons and rows are those of the pandas and
Spark paths (the tests hold the three to each other); memory is a batch per worker and 8 bytes per row for
the hashes.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ct_assets.engines.pandas import REASON, RULES, arrow_strings

BATCH_ROWS = 100_000  # rows a worker holds at once (pandas, pandera): about 150 MB for a findings domain


def _parts(raw_path: Path) -> list[Path]:
    from ct_assets.core import lake

    return sorted(lake.parquet_files(raw_path))  # part names follow delivery order (sdtm.write_domain_dataset)


def _batches(part: Path, columns: list[str] | None = None, rows: int = BATCH_ROWS):
    import pyarrow.parquet as pq

    yield from pq.ParquetFile(part).iter_batches(batch_size=rows, columns=columns)


def _standard(unit):
    from ct_assets.core.units import UNIT_CONVERSIONS

    return UNIT_CONVERSIONS[unit][0] if unit in UNIT_CONVERSIONS else unit


def _key_hashes(batch, domain: str):
    """64-bit hashes of USUBJID + --SEQ (as numbers), row by row. The subject ids go to pandas as a
    categorical (Arrow's dictionary): hashed once per distinct id, the same hashes as the ids' own."""
    import pandas as pd
    import pyarrow.compute as pc

    key = pd.DataFrame({"u": pc.dictionary_encode(batch.column("USUBJID")).to_pandas(),
                        "s": pd.to_numeric(batch.column(f"{domain}SEQ").to_pandas(), errors="coerce")})
    return pd.util.hash_pandas_object(key, index=False).to_numpy()


@dataclass(frozen=True)
class Scan:
    units: dict[str, str]  # test -> standard unit, over the whole domain
    repeats: dict[int, list[int]]  # part number -> positions in the part of rows repeating an earlier key
    rows: list[int]  # rows per part
    copies: dict[int, list[int]] = field(default_factory=dict)  # of those, the rows identical to an earlier row


def _scan_part(domain: str, part: Path, unit_cols: list[str], key_cols: list[str], rows: int):
    """One part's share of the scan: counts of test and standard unit, the key hashes, the row count.
    In Arrow: text columns never become Python strings, units are counted before they are standardised."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    testcd, res, unit = f"{domain}TESTCD", f"{domain}STRESN", f"{domain}STRESU"
    counts: Counter = Counter()
    hashes, n = [], 0
    for batch in _batches(part, unit_cols + [c for c in key_cols if c not in unit_cols] or None, rows):
        n += batch.num_rows
        if unit_cols:
            has = pc.and_(pc.and_(pc.is_valid(batch.column(testcd)), pc.is_valid(batch.column(unit))),
                          pc.invert(pc.is_null(batch.column(res), nan_is_null=True)))
            pairs = pa.table({"t": batch.column(testcd), "u": batch.column(unit)}).filter(has)
            for row in pairs.group_by(["t", "u"]).aggregate([([], "count_all")]).to_pylist():
                counts[(row["t"], _standard(row["u"]))] += row["count_all"]
        if key_cols:
            hashes.append(_key_hashes(batch, domain))
    return counts, np.concatenate(hashes) if hashes else np.empty(0, dtype=np.uint64), n


def scan(domain: str, raw_path: Path, rows: int = BATCH_ROWS, pool=None) -> Scan:
    """The whole-domain facts the row rules need, from the narrow columns only; the parts are read
    in ``pool`` (an executor) if given."""
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    from ct_assets.core.schemas import modal_units

    testcd, res, unit, seq = f"{domain}TESTCD", f"{domain}STRESN", f"{domain}STRESU", f"{domain}SEQ"
    parts = _parts(raw_path)
    names = set(pq.read_schema(parts[0]).names) if parts else set()
    unit_cols = [testcd, res, unit] if {testcd, res, unit} <= names else []
    key_cols = ["USUBJID", seq] if {"USUBJID", seq} <= names else []
    n = len(parts)
    found = list((pool.map if pool else map)(_scan_part, [domain] * n, parts, [unit_cols] * n, [key_cols] * n, [rows] * n))
    counts: Counter = sum((c for c, _, _ in found), Counter())
    part_rows, hashes = [r for _, _, r in found], [h for _, h, _ in found]
    del found  # the hashes are held by ``hashes`` alone, which ``_gathered`` empties as it copies
    repeats: dict[int, list[int]] = {}
    copies: dict[int, list[int]] = {}
    if key_cols and sum(part_rows):
        every = _gathered(hashes, sum(part_rows))
        suspects = _repeated_values(every)
        if len(suspects):  # the exact keys of rows whose hash repeats: few, unless the delivery repeats itself
            starts = np.cumsum([0] + part_rows)
            rows_at = np.flatnonzero(np.isin(every, suspects))
            content = [c for c in names if not c.startswith("_")]  # a row's values, not its provenance
            keys = []
            for p, part in enumerate(parts):
                mine = rows_at[(rows_at >= starts[p]) & (rows_at < starts[p + 1])] - starts[p]
                if len(mine):
                    df = pq.read_table(part, columns=content).take(mine).to_pandas()
                    keys.append(df.assign(_p=p, _i=mine, _u=df["USUBJID"].astype(object).to_numpy(),
                                          _s=pd.to_numeric(df[seq], errors="coerce").to_numpy()))
            keys = pd.concat(keys, ignore_index=True)
            later = keys.duplicated(subset=["_u", "_s"], keep="first")  # delivery order: part, then row
            copy = later & keys.duplicated(subset=content, keep="first")
            repeats = {int(p): g["_i"].astype(int).tolist() for p, g in keys[later].groupby("_p")}
            copies = {int(p): g["_i"].astype(int).tolist() for p, g in keys[copy].groupby("_p")}
    return Scan(modal_units(counts), repeats, part_rows, copies)


def _gathered(arrays: list, total: int):
    """``np.concatenate(arrays)``, each array released as soon as it is copied (the parts' hashes are never held
    twice: 1.6 GB for LB's 195 M rows at a million subjects)."""
    import numpy as np

    every = np.empty(total, dtype=np.uint64)
    at = 0
    while arrays:
        part = arrays.pop(0)
        every[at:at + len(part)] = part
        at += len(part)
    return every


def _repeated_values(values):
    """The values that occur more than once, in two sorted arrays' memory (``np.unique`` with counts held five)."""
    import numpy as np

    ordered = np.sort(values)
    same = ordered[1:] == ordered[:-1]
    return np.unique(ordered[1:][same])


def _judge(domain: str, df, schema, repeated, copies=()):
    """One batch: (accepted rows as given, quarantined rows with their rules and reason). ``repeated``: positions
    of rows repeating an earlier key; ``copies``: those of them identical to an earlier row."""
    import numpy as np

    from ct_assets.core.rules import label
    from ct_assets.core.schemas import REPEATED_ROW, REPEATED_ROW_RULE, UNIQUENESS
    from ct_assets.engines.pandas import split_valid

    split = split_valid(df, schema, coerce_accepted=False)
    accepted, quarantined = split.accepted, split.quarantined
    if not len(repeated) or (len(quarantined) and not quarantined[REASON].iloc[0].startswith("failed: ")):
        return accepted, quarantined  # nothing repeats here, or a rule failed the whole frame
    unique = [label(domain, c, UNIQUENESS, f"{c}: {UNIQUENESS}") for c in ("USUBJID", f"{domain}SEQ")]
    repeat = label(domain, None, REPEATED_ROW, REPEATED_ROW_RULE)
    rules = quarantined[RULES].str.split("; ").to_dict()
    copies = set(copies)
    for i in repeated:
        rules[i] = sorted(set(rules.get(i, [])) | ({repeat} if i in copies else set(unique)))
    bad = np.zeros(len(df), dtype=bool)
    bad[list(rules)] = True
    joined = {i: "; ".join(r) for i, r in rules.items()}
    out = df[bad]
    out = out.assign(**{RULES: out.index.map(joined), REASON: out.index.map(lambda i: f"failed: {joined[i]}")})
    return df[~bad], out


def _typed(df, domain: str):
    """Accepted rows as the validated zone holds them: the schema's numeric columns as floats, the optional
    columns a delivery lacks as nulls, SUBJECT_KEY for USUBJID."""
    import pandas as pd

    from ct_assets.core.privacy import replace_subject_ids
    from ct_assets.core.schemas import conform, domain_schema

    schema = domain_schema(domain)
    numeric = [n for n, c in schema.columns.items() if n in df.columns and c.coerce
               and str(c.dtype).startswith(("float", "int"))]
    df = df.assign(**{n: pd.to_numeric(df[n], errors="coerce").astype("float64") for n in numeric})
    return replace_subject_ids(conform(df, domain)[0])


_KNOWN: set[str] = set()


def _init(known: set[str]) -> None:
    global _KNOWN
    _KNOWN = known


def validate_part(domain: str, part: Path, number: int, repeats: list[int], cutoff: str, units: dict[str, str],
                  validated_dir: Path, quarantine_dir: Path, rows: int = BATCH_ROWS, copies: list[int] = ()) -> dict:
    """One part of the raw dataset, batch by batch, into validated and quarantined parts; returns counts."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ct_assets.core.schemas import findings_schema

    schema = findings_schema(domain, _KNOWN, cutoff, units, whole_domain=False)
    repeats_at, copies_at = np.asarray(repeats, dtype=np.int64), np.asarray(copies, dtype=np.int64)
    out = {"validated": 0, "quarantined": 0, "rules": Counter(), "subjects": set()}
    start = 0
    batches = _batches(part, rows=rows)
    first = next(batches, None)
    if first is None:  # an empty part (a domain the study lacks): judged as one empty batch, so both folders
        first = pq.read_schema(part).empty_table()  # get a part with the domain's columns, readable downstream
    for b, batch in enumerate(itertools.chain([first], batches)):
        df = batch.to_pandas(types_mapper=arrow_strings)  # text stays in Arrow: vectorised rules, no copies
        here = repeats_at[(repeats_at >= start) & (repeats_at < start + len(df))] - start
        copied = copies_at[(copies_at >= start) & (copies_at < start + len(df))] - start
        start += len(df)
        accepted, quarantined = _judge(domain, df, schema, here.tolist(), copied.tolist())
        validated = _typed(accepted, domain)
        for frame, folder in ((validated, validated_dir), (quarantined, quarantine_dir)):
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / f"part-{number:05d}-{b:04d}.parquet")
        out["validated"] += len(validated)
        out["quarantined"] += len(quarantined)
        if len(quarantined):
            out["rules"].update(quarantined[RULES].str.split("; ").explode().value_counts().to_dict())
        if "SUBJECT_KEY" in validated:
            out["subjects"].update(validated["SUBJECT_KEY"].dropna().unique())
    return out


def workers() -> int:
    """The default worker count: one process per core (the quality resource's ``validation_workers`` sets another)."""
    import os

    return os.cpu_count() or 1


def validate_stream(domain: str, raw_path: Path, known: set[str], cutoff: str, validated_dir: Path,
                    quarantine_dir: Path, rows: int = BATCH_ROWS, processes: int | None = None):
    """The split of ``spark_validate.validate_findings`` on one machine: parts in parallel worker processes
    (one part in this process), validated and quarantined rows written as Parquet parts of the two folders
    (the caller publishes them); the counts come from what was written."""
    import contextlib
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import pyarrow.parquet as pq

    from ct_assets.core import lake
    from ct_assets.core.schemas import domain_schema
    from ct_assets.core.sdtm import unify_parts
    from ct_assets.engines.spark import SparkSplit

    parts = _parts(raw_path)
    validated_dir.mkdir(parents=True, exist_ok=True)
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    processes = max(1, min(processes or workers(), len(parts)))
    with contextlib.ExitStack() as stack:
        pool = None
        if processes > 1:  # spawn: the step's process has threads a fork would copy mid-flight
            pool = stack.enter_context(ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                                                           initializer=_init, initargs=(known,)))
        facts = scan(domain, raw_path, rows, pool)  # the parts scanned side by side
        jobs = [(domain, part, p, facts.repeats.get(p, []), cutoff, facts.units, validated_dir, quarantine_dir, rows,
                 facts.copies.get(p, [])) for p, part in enumerate(parts)]
        if pool is not None:
            results = list(pool.map(validate_part, *zip(*jobs)))
        else:
            _init(known)
            results = [validate_part(*job) for job in jobs]
    for folder in (validated_dir, quarantine_dir):  # one schema per dataset, whatever each batch held
        unify_parts([(p, pq.read_schema(p)) for p in sorted(folder.glob("*.parquet"))])
    rules: Counter = Counter()
    subjects: set = set()
    for r in results:
        rules.update(r["rules"])
        subjects |= r["subjects"]
    raw_columns = pq.read_schema(parts[0]).names if parts else []
    absent = [c for c in domain_schema(domain).columns if c not in raw_columns and c != "USUBJID"]
    ordered = dict(sorted(rules.items(), key=lambda kv: (-kv[1], kv[0])))
    return SparkSplit(raw=lake.parquet_rows(raw_path), validated=lake.parquet_rows(validated_dir),
                      quarantined=lake.parquet_rows(quarantine_dir), subjects=len(subjects), rules=ordered,
                      absent_columns=absent, processes=processes)
