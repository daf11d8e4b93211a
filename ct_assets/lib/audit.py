"""The audit trail: an append-only, tamper-evident log of the model lifecycle (21 CFR 11.10(e)).

One JSON object per line in ``$CT_HOME/audit/audit.jsonl``: when (UTC), who (``actor``), what
(``action`` on ``object``), why (``reason``), and the state ``before`` and ``after``. Each entry
carries the SHA-256 of the previous line (``prev``) and its own hash (``hash``, over everything else
in it), so editing, inserting or deleting any line breaks the chain at that line, and ``verify``
names it. Writers append under an exclusive lock and fsync; nothing ever rewrites the file.

Actors: a Dagster step passes ``dagster:<run id>`` with the run's launcher (a schedule, a sensor, an
Airflow task, a user) from its tags; a KFP step ``kfp:<pipeline>``; the command line the OS user.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import getpass
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ct_assets import settings

GENESIS = "0" * 64


def log_path() -> Path:
    return settings.ct_home() / "audit" / "audit.jsonl"


def _digest(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


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
    """Append one entry, chained to the last one; returns it."""
    path = path or log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            fh.seek(0)
            last = None
            for line in fh:
                if line.strip():
                    last = line
            prev = json.loads(last)["hash"] if last else GENESIS
            entry = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"), "actor": actor or os_actor(),
                     "action": action, "object": obj, "reason": reason, "before": before, "after": after,
                     "details": details, "prev": prev}
            entry["hash"] = _digest(entry)
            fh.seek(0, os.SEEK_END)
            fh.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    return entry


def entries(path: Path | None = None) -> list[dict[str, Any]]:
    path = path or log_path()
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def verify(path: Path | None = None) -> list[str]:
    """Every break of the chain, as 'line N: what is wrong'; empty when the log is intact."""
    path = path or log_path()
    if not path.exists():
        return []
    problems, prev = [], GENESIS
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            entry = json.loads(line)
        except ValueError:
            problems.append(f"line {number}: not a JSON entry")
            prev = None
            continue
        if prev is not None and entry.get("prev") != prev:
            problems.append(f"line {number}: does not follow line {number - 1} (a line was deleted, inserted or edited)")
        if entry.get("hash") != _digest(entry):
            problems.append(f"line {number}: its content does not match its hash (the entry was edited)")
        prev = entry.get("hash")
    return problems


def find(action: str | None = None, obj: str | None = None, path: Path | None = None) -> list[dict[str, Any]]:
    return [e for e in entries(path) if (action is None or e["action"] == action) and (obj is None or e["object"] == obj)]
