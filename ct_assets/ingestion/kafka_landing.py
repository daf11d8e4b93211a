"""Kafka records in the raw zone: at least once from the broker, exactly once in the lake.

Each record carries one SDTM row as a JSON object with its ``DOMAIN``. A consumed batch of one
partition is parsed into accepted rows and quarantined records (malformed JSON, missing or unknown
DOMAIN, a row failing the raw schema), and both are written together as one batch folder named by
its offset range, staged and renamed into place (atomic). Offsets are committed to Kafka only after
that rename. After a crash the consumer re-reads from the last committed offset; records at or
below the partition's landed high-water mark are skipped, so a replay writes nothing twice.

Layout: ``<root>/<topic>/p<partition>/b<first>-<last>/`` holding ``accepted-<DOMAIN>.parquet``
(one per domain present in the batch) and ``quarantined.parquet``. Every row
keeps its provenance (``_TOPIC``, ``_PARTITION``, ``_OFFSET``; ``_SOURCE_FILE``/``_SOURCE_ROW`` as
for a study folder), so downstream assets read the landing exactly like a study folder.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ct_assets.lib.sdtm import DOMAINS, SOURCE_COLS

PROVENANCE = ["_TOPIC", "_PARTITION", "_OFFSET"]
REASON = "_QUARANTINE_REASON"
REQUIRED = ("STUDYID", "DOMAIN", "USUBJID")
DOMAIN_SET = frozenset(DOMAINS)
BATCH = re.compile(r"^b(\d{20})-(\d{20})$")


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes | None


def parse(records: list[Record]) -> tuple[dict[str, pa.Table], pd.DataFrame]:
    """Accepted SDTM rows, one Arrow table per domain, and quarantined records (with the reason and
    the raw value)."""
    import orjson

    rows: dict[str, list[dict]] = {}
    bad = []
    for r in records:
        try:
            row = orjson.loads(r.value) if r.value is not None else None
        except orjson.JSONDecodeError as err:
            bad.append({"_TOPIC": r.topic, "_PARTITION": r.partition, "_OFFSET": r.offset,
                        REASON: f"malformed JSON: {err}", "_RAW": _text(r.value)})
            continue
        # Cheap screens on the raw bytes first; the field-by-field look only when they hit.
        reason = _row_problem(row, deep=r.value is None or b"[" in r.value or b'"_' in r.value
                              or r.value.count(b"{") > 1)
        if reason:
            bad.append({"_TOPIC": r.topic, "_PARTITION": r.partition, "_OFFSET": r.offset, REASON: reason,
                        "_RAW": _text(r.value)})
        else:
            row["_TOPIC"], row["_PARTITION"], row["_OFFSET"] = r.topic, r.partition, r.offset
            row["_SOURCE_FILE"], row["_SOURCE_ROW"] = f"kafka:{r.topic}/{r.partition}", r.offset
            rows.setdefault(row["DOMAIN"], []).append(row)
    accepted = {domain: _table(domain_rows) for domain, domain_rows in rows.items()}
    quarantined = pd.DataFrame(bad, columns=[*PROVENANCE, REASON, "_RAW"])
    return accepted, quarantined


def _table(rows: list[dict]) -> pa.Table:
    """Rows of one domain as an Arrow table: the union of their fields, types inferred per column
    (a column mixing numbers and text is kept as text rather than rejected)."""
    first = rows[0].keys()
    if all(row.keys() == first for row in rows):  # the usual case: one producer, one shape per domain
        try:
            return pa.Table.from_pylist(rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            pass
    names = list(dict.fromkeys(k for row in rows for k in row))
    columns = {}
    for name in names:
        values = [row.get(name) for row in rows]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            columns[name] = pa.array([None if v is None else str(v) for v in values], pa.string())
    return pa.table(columns)


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode("utf-8", errors="replace")[:10_000]


def _row_problem(row, deep: bool = True) -> str | None:
    if not isinstance(row, dict):
        return f"not a JSON object ({type(row).__name__})"
    domain = row.get("DOMAIN")
    if domain is None or domain == "":
        return "missing DOMAIN"
    if domain not in DOMAIN_SET:
        return f"unknown DOMAIN {str(domain)[:20]!r}"
    missing = [k for k in REQUIRED if row.get(k) in (None, "")]
    if missing:
        return f"missing required field(s) {', '.join(missing)}"
    if deep:
        nested = [k for k, v in row.items() if isinstance(v, dict | list)]
        if nested:
            return f"nested value in field(s) {', '.join(nested)}"
        if any(k.startswith("_") for k in row):
            return "field names starting with '_' are reserved"
    return None


class Landing:
    """The Kafka landing zone of the raw lake."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _partition_dir(self, topic: str, partition: int) -> Path:
        return self.root / topic / f"p{partition}"

    def batches(self, topic: str | None = None) -> list[Path]:
        pattern = f"{topic or '*'}/p*/b*"
        return sorted(p for p in self.root.glob(pattern) if BATCH.match(p.name))

    def high_water(self, topic: str, partition: int) -> int:
        """The last offset landed for the partition, -1 when none."""
        ends = [int(BATCH.match(p.name).group(2)) for p in self._partition_dir(topic, partition).glob("b*")
                if BATCH.match(p.name)]
        return max(ends, default=-1)

    def write_batch(self, topic: str, partition: int, accepted: dict[str, pa.Table], quarantined: pd.DataFrame,
                    first: int, last: int) -> Path:
        """Every part of a batch appears at once (rename of a staged folder), or none does."""
        final = self._partition_dir(topic, partition) / f"b{first:020d}-{last:020d}"
        stage = final.parent / f".stage-{uuid.uuid4().hex}"
        stage.mkdir(parents=True)
        try:
            parts = {f"accepted-{domain}.parquet": table for domain, table in accepted.items()}
            parts["quarantined.parquet"] = pa.Table.from_pandas(quarantined, preserve_index=False)
            for name, table in parts.items():
                pq.write_table(table, stage / name)
                with open(stage / name, "rb") as fh:
                    os.fsync(fh.fileno())
            os.rename(stage, final)
            dir_fd = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        return final

    @staticmethod
    def files(batch: Path, part: str = "accepted", domain: str | None = None) -> list[Path]:
        if part == "quarantined":
            return [batch / "quarantined.parquet"]
        return sorted(batch.glob(f"accepted-{domain or '*'}.parquet"))

    def read(self, part: str = "accepted", columns: list[str] | None = None, domain: str | None = None) -> pd.DataFrame:
        frames = [pd.read_parquet(f, columns=columns) for b in self.batches() for f in self.files(b, part, domain)]
        frames = [f.dropna(axis=1, how="all") if columns is None else f for f in frames if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns or [])

    def read_domain(self, domain: str) -> pd.DataFrame | None:
        """The landed rows of one SDTM domain, in (topic, partition, offset) order, as a study folder
        would give them (provenance kept in _SOURCE_FILE / _SOURCE_ROW)."""
        rows = self.read("accepted", domain=domain)
        if rows.empty:
            return None
        rows = rows.sort_values(PROVENANCE, kind="stable")
        out = rows[[c for c in rows.columns if c not in PROVENANCE]].reset_index(drop=True)
        return out[[c for c in out.columns if c not in SOURCE_COLS] + SOURCE_COLS]

    def batch_rows(self, batch: Path) -> int:
        return sum(pq.ParquetFile(f).metadata.num_rows
                   for f in self.files(batch, "accepted") + self.files(batch, "quarantined"))

    def counts(self) -> dict[str, int]:
        """Rows landed, from the Parquet footers (nothing is read but metadata)."""
        batches = self.batches()
        rows = {part: sum(pq.ParquetFile(f).metadata.num_rows for b in batches for f in self.files(b, part))
                for part in ("accepted", "quarantined")}
        return rows | {"batches": len(batches)}
