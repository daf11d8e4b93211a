"""The audit trail: an append-only, tamper-evident log of the model lifecycle (21 CFR 11.10(e)).

One JSON object per line in ``$CT_HOME/audit/audit.jsonl``: when (UTC), who (``actor``), what
(``action`` on ``object``), why (``reason``), and the state ``before`` and ``after``. Each entry
carries the hash of the previous entry (``prev``) and its own (``hash``): an HMAC-SHA256 over
everything else in it, keyed by a secret of its own (``$CT_AUDIT_KEY``, else
``$CT_HOME/secrets/audit.key``), so editing, inserting or deleting any line breaks the chain at that
line, and a chain rewritten without the key does not verify. After every write a signed checkpoint
(entry count and head hash) is kept outside the log, in the Dagster instance's storage (SQLite
locally, Postgres in production): removing entries from the end, deleting the file or rewriting the
whole chain is found by comparing the two. Writers append under an exclusive lock and fsync; nothing
ever rewrites the file. A torn last line (a crash mid-write) is reported by ``verify`` and the next
write starts a new segment after it, chained to the last whole entry.

Actors: a Dagster step passes ``dagster:<run id>`` with the run's launcher (a schedule, a sensor, an
Airflow task, a user) from its tags; a KFP step ``kfp:<pipeline>``; the command line the OS user.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import getpass
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

from ct_assets import settings

GENESIS = "0" * 64
ALG = "hmac-sha256"
KEY_ENV, KEY_FILE = "CT_AUDIT_KEY", "audit.key"


def log_path() -> Path:
    return settings.ct_home() / "audit" / "audit.jsonl"


def _key() -> bytes:
    from ct_assets.core.privacy import local_secret

    return local_secret(KEY_ENV, KEY_FILE).encode()


def _digest(entry: dict[str, Any], key: bytes | None = None) -> str:
    """The entry's hash: HMAC-SHA256 under the audit key (plain SHA-256 for entries written before the chain
    was keyed, which carry no ``alg``)."""
    body = json.dumps({k: v for k, v in entry.items() if k != "hash"}, sort_keys=True, separators=(",", ":"),
                      default=str).encode()
    if entry.get("alg") == ALG:
        return hmac.new(key or _key(), body, hashlib.sha256).hexdigest()
    return hashlib.sha256(body).hexdigest()


def _lines(text: str) -> list[tuple[int, dict[str, Any] | None]]:
    """(line number, entry) for every non-blank line; None where the line is not a whole JSON entry."""
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        out.append((number, entry if isinstance(entry, dict) else None))
    return out


# --- The checkpoint: (entry count, head hash), signed, in the Dagster instance's storage ----------------------------

def _instance():
    import dagster as dg

    return dg.DagsterInstance.from_config(str(settings.prepared_dagster_home(settings.dagster_home())))


def _checkpoint_name(path: Path) -> str:
    return f"ct.audit.checkpoint:{path.resolve()}"


def _signature(count: int, head: str, key: bytes) -> str:
    return hmac.new(key, f"{count}:{head}".encode(), hashlib.sha256).hexdigest()


def _save_checkpoint(path: Path, count: int, head: str, key: bytes) -> None:
    with _instance() as instance:
        instance.run_storage.set_cursor_values({_checkpoint_name(path): json.dumps(
            {"count": count, "head": head, "signature": _signature(count, head, key)})})


def checkpoint(path: Path | None = None) -> dict[str, Any] | None:
    """The last checkpoint of the log at ``path``, or None when none was ever written."""
    path = path or log_path()
    with _instance() as instance:
        value = instance.run_storage.get_cursor_values({_checkpoint_name(path)}).get(_checkpoint_name(path))
    return json.loads(value) if value else None


def os_actor() -> str:
    try:
        return f"user:{getpass.getuser()}"
    except Exception:  # no passwd entry (a container's arbitrary uid)
        return f"uid:{os.getuid()}"


def dagster_actor(context) -> str:
    """``dagster:<run id>`` and who launched the run (schedule, sensor, Airflow task, backfill, user)."""
    run = getattr(context, "run", None)  # asset and op contexts; others have only a run id
    tags, run_id = (run.tags, run.run_id) if run is not None else ({}, context.run_id)
    launcher = (tags.get("airflow/dag_id") and f"airflow:{tags['airflow/dag_id']}.{tags.get('airflow/task_id', '')}"
                or tags.get("dagster/schedule_name") and f"schedule:{tags['dagster/schedule_name']}"
                or tags.get("dagster/sensor_name") and f"sensor:{tags['dagster/sensor_name']}"
                or tags.get("user") and f"user:{tags['user']}" or os_actor())
    return f"dagster:{run_id} ({launcher})"


def record(action: str, obj: str, actor: str | None = None, reason: str = "", before: Any = None, after: Any = None,
           path: Path | None = None, **details: Any) -> dict[str, Any]:
    """Append one entry, chained to the last whole one, and move the checkpoint; returns the entry."""
    path = path or log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = _key()
    with open(path, "a+", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            fh.seek(0)
            text = fh.read()
            lines = _lines(text)
            whole = [e for _, e in lines if e is not None]
            if lines and lines[-1][1] is None:  # torn by a crash mid-write: a new segment starts after it
                details = details | {"segment_after_torn_line": lines[-1][0]}
            entry = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"), "actor": actor or os_actor(),
                     "action": action, "object": obj, "reason": reason, "before": before, "after": after,
                     "details": details, "prev": whole[-1].get("hash", GENESIS) if whole else GENESIS, "alg": ALG}
            entry["hash"] = _digest(entry, key)
            fh.seek(0, os.SEEK_END)
            fh.write(("\n" if text and not text.endswith("\n") else "") + json.dumps(entry, sort_keys=True, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            _save_checkpoint(path, len(whole) + 1, entry["hash"], key)
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    return entry


def entries(path: Path | None = None) -> list[dict[str, Any]]:
    """The whole entries of the log (a torn line is left out: ``verify`` reports it)."""
    path = path or log_path()
    if not path.exists():
        return []
    return [e for _, e in _lines(path.read_text(encoding="utf-8")) if e is not None]


def verify(path: Path | None = None) -> list[str]:
    """Everything wrong with the log, as 'line N: what is wrong' or a sentence about the whole log; empty when
    the chain is intact and matches its checkpoint."""
    path = path or log_path()
    saved = checkpoint(path)
    if not path.exists():
        return [] if saved is None else [f"{path} is missing, but the checkpoint records {saved['count']} entries: "
                                         "the log was deleted"]
    key, problems, prev = _key(), [], GENESIS
    whole: list[tuple[int, dict[str, Any]]] = []
    for number, entry in _lines(path.read_text(encoding="utf-8", errors="replace")):
        if entry is None:
            problems.append(f"line {number}: torn or not a JSON entry (a write cut short, or an edit)")
            continue
        if entry.get("prev") != prev:
            problems.append(f"line {number}: does not follow the entry before it (a line was deleted, inserted or edited)")
        if entry.get("hash") != _digest(entry, key):
            problems.append(f"line {number}: its content does not match its hash (edited, or written without the audit key)")
        prev = entry.get("hash")
        whole.append((number, entry))
    if saved is None:
        if whole:
            problems.append(f"no checkpoint for the {len(whole)} entries of {path}: it was removed from the Dagster "
                            "instance, or the log was written elsewhere")
        return problems
    count, head = saved.get("count"), saved.get("head")
    if not isinstance(count, int) or saved.get("signature") != _signature(count, str(head), key):
        return problems + ["the checkpoint's signature does not match it: the checkpoint was edited"]
    if len(whole) < count:
        problems.append(f"the log holds {len(whole)} entries but the checkpoint records {count}: "
                        f"{count - len(whole)} were removed")
    elif whole[count - 1][1].get("hash") != head:
        problems.append(f"line {whole[count - 1][0]}: not the entry the checkpoint records as entry {count} "
                        "(the chain was rewritten)")
    elif len(whole) > count:
        problems.append(f"line {whole[count][0]} onwards: {len(whole) - count} entries after the checkpoint "
                        "(written without moving it)")
    return problems


def find(action: str | None = None, obj: str | None = None, path: Path | None = None) -> list[dict[str, Any]]:
    return [e for e in entries(path) if (action is None or e["action"] == action) and (obj is None or e["object"] == obj)]
