"""Background services the tests start: a process group each, stopped as a whole."""

import os
import signal
import subprocess


def stop_group(proc: subprocess.Popen, timeout: float = 60) -> None:
    """SIGTERM the process group of ``proc`` (started with start_new_session=True), SIGKILL if it lingers."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
