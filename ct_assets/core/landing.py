"""Kafka records in the raw zone: at least once from the broker, exactly once in the lake.

Each record carries one SDTM row as a JSON object with its ``DOMAIN``. A consumed batch of one
partition is parsed into accepted rows and quarantined records (malformed JSON, missing or unknown
DOMAIN, a row failing the raw schema), and both are written together as one batch folder named by
its offset range, staged and renamed into place (atomic). Offsets are committed to Kafka only after
that rename. After a crash the consumer re-reads from the last committed offset; records at or
below the partition's landed high-water mark are skipped, so a replay writes nothing twice.

A skipped record must be the one landed: each batch keeps a fingerprint (timestamp, key and value
hashed) of every record. A topic deleted and recreated, or a broker that lost its log, starts its
offsets again at 0: its records differ from the landed ones at the same offsets (or the broker
reports another topic id). That is a new generation of the topic, landed under its own epoch
(``epochs.json`` per topic says when and why each began), from its first offset.

Layout: ``<root>/<topic>/p<partition>/b<first>-<last>/`` for epoch 0 (``p<partition>-e<epoch>``
for later ones) holding ``accepted-<DOMAIN>.parquet`` (one per domain present in the batch),
``quarantined.parquet`` and ``fingerprints.parquet``. Every row keeps its provenance (``_TOPIC``,
``_EPOCH``, ``_PARTITION``, ``_OFFSET``; ``_SOURCE_FILE``/``_SOURCE_ROW`` as for a study folder),
so downstream assets read the landing exactly like a study folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ct_assets.core.sdtm import DOMAINS, SOURCE_COLS

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

PROVENANCE = ["_TOPIC", "_EPOCH", "_PARTITION", "_OFFSET"]
REASON = "_QUARANTINE_REASON"
REQUIRED = ("STUDYID", "DOMAIN", "USUBJID")
DOMAIN_SET = frozenset(DOMAINS)
BATCH = re.compile(r"^b(\d{20})-(\d{20})$")
PARTITION_DIR = re.compile(r"^p(\d+)(?:-e(\d+))?$")
STAGE = re.compile(r"^\.stage-(?:(\d+)@([^-]+)-)?[0-9a-f]{32}$")
ORPHAN_AGE = 3600  # seconds after which a stage of another host is abandoned


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp: int = -1
    epoch: int = 0

    def fingerprint(self) -> int:
        h = hashlib.blake2b(digest_size=8)
        for part in (str(self.timestamp).encode(), self.key or b"", self.value or b""):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
        return int.from_bytes(h.digest(), "little", signed=True)


def parse(records: list[Record]) -> tuple[dict[str, pa.Table], pd.DataFrame]:
    """Accepted SDTM rows, one Arrow table per domain, and quarantined records (with the reason and
    the raw value)."""
    import orjson
    import pandas as pd

    rows: dict[str, list[dict]] = {}
    bad = []
    for r in records:
        try:
            row = orjson.loads(r.value) if r.value is not None else None
        except orjson.JSONDecodeError as err:
            bad.append({"_TOPIC": r.topic, "_EPOCH": r.epoch, "_PARTITION": r.partition, "_OFFSET": r.offset,
                        REASON: f"malformed JSON: {err}", "_RAW": _text(r.value)})
            continue
        # Cheap screens on the raw bytes first; the field-by-field look only when they hit.
        reason = _row_problem(row, deep=r.value is None or b"[" in r.value or b'"_' in r.value
                              or r.value.count(b"{") > 1)
        if reason:
            bad.append({"_TOPIC": r.topic, "_EPOCH": r.epoch, "_PARTITION": r.partition, "_OFFSET": r.offset,
                        REASON: reason, "_RAW": _text(r.value)})
        else:
            row["_TOPIC"], row["_EPOCH"], row["_PARTITION"], row["_OFFSET"] = r.topic, r.epoch, r.partition, r.offset
            where = f"{r.topic}/{r.partition}" + (f"@e{r.epoch}" if r.epoch else "")
            row["_SOURCE_FILE"], row["_SOURCE_ROW"] = f"kafka:{where}", r.offset
            rows.setdefault(row["DOMAIN"], []).append(row)
    accepted = {domain: _table(domain_rows) for domain, domain_rows in rows.items()}
    quarantined = pd.DataFrame(bad, columns=[*PROVENANCE, REASON, "_RAW"])
    return accepted, quarantined


def _table(rows: list[dict]) -> pa.Table:
    """Rows of one domain as an Arrow table: the union of their fields, types inferred per column
    (a column mixing numbers and text is kept as text rather than rejected)."""
    import pyarrow as pa

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

    def _partition_dir(self, topic: str, partition: int, epoch: int = 0) -> Path:
        return self.root / topic / (f"p{partition}" if epoch == 0 else f"p{partition}-e{epoch}")

    def batches(self, topic: str | None = None) -> list[Path]:
        pattern = f"{topic or '*'}/p*/b*"
        return sorted(p for p in self.root.glob(pattern) if BATCH.match(p.name) and PARTITION_DIR.match(p.parent.name))

    def _batches_of(self, topic: str, partition: int, epoch: int) -> list[tuple[int, int, Path]]:
        return sorted((int(m.group(1)), int(m.group(2)), p) for p in self._partition_dir(topic, partition, epoch).glob("b*")
                      if (m := BATCH.match(p.name)))

    def high_water(self, topic: str, partition: int, epoch: int = 0) -> int:
        """The last offset landed for the partition in this epoch of the topic, -1 when none."""
        return max((last for _, last, _ in self._batches_of(topic, partition, epoch)), default=-1)

    # --- generations of a topic -----------------------------------------------------------------

    def _epochs_file(self, topic: str) -> Path:
        return self.root / topic / "epochs.json"

    def epochs(self, topic: str) -> list[dict]:
        path = self._epochs_file(topic)
        return json.loads(path.read_text()) if path.exists() else [{"epoch": 0, "topic_id": None, "reason": "first"}]

    def epoch(self, topic: str) -> dict:
        """The current generation of the topic: {"epoch", "topic_id", "since", "reason"}."""
        return self.epochs(topic)[-1]

    def _save_epochs(self, topic: str, epochs: list[dict]) -> None:
        from ct_assets.core.lake import write_json

        write_json(epochs, self._epochs_file(topic))

    def note_topic_id(self, topic: str, topic_id: str) -> None:
        """Remember the broker's id of the current generation, the first time it is seen."""
        epochs = self.epochs(topic)
        if epochs[-1].get("topic_id") is None:
            epochs[-1]["topic_id"] = topic_id
            self._save_epochs(topic, epochs)

    def new_epoch(self, topic: str, topic_id: str | None, reason: str) -> int:
        """Start a new generation of the topic (its offsets began again): later records land apart."""
        epochs = self.epochs(topic)
        epochs.append({"epoch": epochs[-1]["epoch"] + 1, "topic_id": topic_id, "reason": reason,
                       "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        self._save_epochs(topic, epochs)
        return epochs[-1]["epoch"]

    def same_records(self, records: list[Record]) -> bool:
        """Are these records (one partition, at or below its high-water mark) the ones landed at
        their offsets? False on any difference, or an offset no batch of the epoch holds."""
        import pyarrow.parquet as pq

        r0 = records[0]
        wanted = {r.offset for r in records}
        lo, hi = min(wanted), max(wanted)
        landed: dict[int, int] = {}
        for first, last, batch in self._batches_of(r0.topic, r0.partition, r0.epoch):
            if last < lo or first > hi:
                continue
            path = batch / "fingerprints.parquet"
            if not path.exists():  # a batch landed before fingerprints were kept: trust it
                landed.update((o, None) for o in range(first, last + 1))
                continue
            table = pq.read_table(path).to_pydict()
            landed.update(zip(table["offset"], table["fingerprint"]))
        return all(r.offset in landed and landed[r.offset] in (None, r.fingerprint()) for r in records)

    def clean_stages(self) -> int:
        """Remove staging folders left by a writer that died (this host, its pid gone; or older
        than ORPHAN_AGE). Returns how many."""
        host, removed = socket.gethostname(), 0
        for stage in self.root.glob("*/p*/.stage-*"):
            m = STAGE.match(stage.name)
            if not m:
                continue
            pid, where = m.group(1), m.group(2)
            if pid is not None and where == _host_tag(host) and _alive(int(pid)):
                continue
            if pid is not None and where != _host_tag(host) and time.time() - stage.stat().st_mtime < ORPHAN_AGE:
                continue  # another machine's writer may still be at work
            shutil.rmtree(stage, ignore_errors=True)
            removed += 1
        return removed

    def write_batch(self, topic: str, partition: int, accepted: dict[str, pa.Table], quarantined: pd.DataFrame,
                    first: int, last: int, epoch: int = 0, records: list[Record] | None = None) -> Path:
        """Every part of a batch appears at once (rename of a staged folder), or none does."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        final = self._partition_dir(topic, partition, epoch) / f"b{first:020d}-{last:020d}"
        stage = final.parent / f".stage-{os.getpid()}@{_host_tag(socket.gethostname())}-{uuid.uuid4().hex}"
        stage.mkdir(parents=True)
        try:
            parts = {f"accepted-{domain}.parquet": table for domain, table in accepted.items()}
            parts["quarantined.parquet"] = pa.Table.from_pandas(quarantined, preserve_index=False)
            if records is not None:
                parts["fingerprints.parquet"] = pa.table({"offset": pa.array([r.offset for r in records], pa.int64()),
                                                          "fingerprint": pa.array([r.fingerprint() for r in records],
                                                                                  pa.int64())})
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
        import pandas as pd

        frames = [_with_epoch(f, b, columns) for b in self.batches() for f in self.files(b, part, domain)]
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
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(f).metadata.num_rows
                   for f in self.files(batch, "accepted") + self.files(batch, "quarantined"))

    def counts(self) -> dict[str, int]:
        """Rows landed, from the Parquet footers (nothing is read but metadata)."""
        import pyarrow.parquet as pq

        batches = self.batches()
        rows = {part: sum(pq.ParquetFile(f).metadata.num_rows for b in batches for f in self.files(b, part))
                for part in ("accepted", "quarantined")}
        return rows | {"batches": len(batches)}


def _host_tag(host: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", host)[:40]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _with_epoch(path: Path, batch: Path, columns: list[str] | None) -> pd.DataFrame:
    """A landed file; batches written before epochs existed get theirs from the folder name."""
    import pandas as pd
    import pyarrow.parquet as pq

    epoch = int(PARTITION_DIR.match(batch.parent.name).group(2) or 0)
    names = pq.ParquetFile(path).schema_arrow.names
    if "_EPOCH" in names or (columns is not None and "_EPOCH" not in columns):
        return pd.read_parquet(path, columns=columns)
    frame = pd.read_parquet(path, columns=[c for c in columns if c != "_EPOCH"] if columns else None)
    frame.insert(1 if "_TOPIC" in frame.columns else 0, "_EPOCH", epoch)
    return frame[columns] if columns else frame
