"""Background processes under $CT_HOME/run: one process group each, a pid file, a state file, a log.

A process is ours while its pid is alive with the start time recorded when it was launched (a pid
reused by another program is not ours). It is stopped by its process group, and any descendant that
left the group (Airflow puts each task process in a group of its own) is stopped after it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ct_assets import settings
from ct_assets.ops import config as ops_config


@dataclass
class Started:
    name: str
    component: str
    pid: int
    start_ticks: int
    argv: list[str]
    log: str
    url: str | None = None
    extra: dict = field(default_factory=dict)


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_ticks(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[19]) if fields else -1  # field 22 of /proc/PID/stat: start time in clock ticks


def alive(pid: int, start_ticks: int | None = None) -> bool:
    fields = _stat(pid)
    if not fields or fields[0] in ("Z", "X"):
        return False
    return start_ticks is None or int(fields[19]) == start_ticks


def _members(groups: set[int]) -> list[int]:
    """Live processes whose process group is one of ``groups``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat(int(stat.parent.name))
        if fields and fields[0] not in ("Z", "X") and int(fields[2]) in groups:
            found.append(int(stat.parent.name))
    return found


def descendants(pid: int) -> set[int]:
    """``pid``'s descendants (from /proc)."""
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            pass
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        for child, ppid in parent.items():
            if ppid == current and child not in found:
                found.add(child)
                todo.append(child)
    return found


def _state_path(name: str) -> Path:
    return ops_config.run_dir() / f"{name}.json"


def load(name: str) -> Started | None:
    try:
        return Started(**json.loads(_state_path(name).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def running() -> list[Started]:
    """What `ct start` started and still runs (stale state files of dead processes are removed)."""
    found = []
    folder = ops_config.run_dir()
    for path in sorted(folder.glob("*.json")) if folder.exists() else []:
        started = load(path.stem)
        if started and alive(started.pid, started.start_ticks):
            found.append(started)
        else:
            forget(path.stem)
    return found


def recorded() -> list[Started]:
    """Every state file, alive or not (health-check reports a dead one)."""
    folder = ops_config.run_dir()
    return [s for p in sorted(folder.glob("*.json")) if folder.exists() and (s := load(p.stem))]


def forget(name: str) -> None:
    for suffix in (".json", ".pid"):
        (ops_config.run_dir() / f"{name}{suffix}").unlink(missing_ok=True)


def launch(name: str, component: str, argv: list[str], env: dict[str, str], url: str | None = None,
           cwd: Path | None = None, **extra) -> Started:
    """Start ``argv`` in a new process group, output to $CT_HOME/run/NAME.log; record its pid and state."""
    folder = ops_config.run_dir()
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"{name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, env=env, cwd=cwd or settings.PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    started = Started(name, component, proc.pid, _start_ticks(proc.pid), argv, str(log), url, extra)
    (folder / f"{name}.pid").write_text(f"{proc.pid}\n")
    _state_path(name).write_text(json.dumps(asdict(started), indent=1))
    return started


def stop(processes: list[Started], timeout: float = 60) -> list[str]:
    """SIGTERM the groups of ``processes`` together, SIGKILL what lingers after ``timeout``, then stop
    descendants that left the group. Returns the names stopped."""
    leftovers: set[int] = set()
    for p in processes:
        if alive(p.pid, p.start_ticks):
            leftovers |= descendants(p.pid)
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    groups = {p.pid for p in processes}
    deadline = time.monotonic() + timeout
    while _members(groups) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in _members(groups):  # what lingers in our groups after the grace period
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in leftovers:
        if alive(pid):
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    # SIGKILL is delivered asynchronously: return once what was killed is gone, not while it still runs.
    deadline = time.monotonic() + 10
    while (_members(groups) or [pid for pid in leftovers if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    for p in processes:
        forget(p.name)
    return [p.name for p in processes]


def tail(path: str, chars: int = 1500) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return text[-chars:]
