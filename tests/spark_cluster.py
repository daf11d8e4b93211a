"""A real Spark standalone cluster on 127.0.0.1 (one master, one worker) from the installed pyspark."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.procs import stop_group


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spark_class() -> str:
    import pyspark

    return str(Path(pyspark.__file__).parent / "bin" / "spark-class")


def _start(args: list[str], log: Path, env: dict) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen([_spark_class(), *args], stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


@contextlib.contextmanager
def standalone_cluster(work: Path, cores: int = 2, memory: str = "2g", timeout: float = 90):
    """Yields the master URL once the worker has registered; both daemons are stopped on exit."""
    work.mkdir(parents=True, exist_ok=True)
    port, ui, worker_ui = free_port(), free_port(), free_port()
    env = os.environ | {"SPARK_LOCAL_IP": "127.0.0.1", "SPARK_DAEMON_MEMORY": "256m", "SPARK_WORKER_DIR": str(work / "worker"),
                        "SPARK_LOG_DIR": str(work / "logs"), "SPARK_NO_DAEMONIZE": "1"}
    master_url = f"spark://127.0.0.1:{port}"
    master = _start(["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                     "--webui-port", str(ui)], work / "master.log", env)
    worker = None
    try:
        worker = _start(["org.apache.spark.deploy.worker.Worker", master_url, "--host", "127.0.0.1", "--cores", str(cores),
                         "--memory", memory, "--webui-port", str(worker_ui), "--work-dir", str(work / "worker")],
                        work / "worker.log", env)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=2) as resp:
                    state = json.load(resp)
                if any(w.get("state") == "ALIVE" for w in state.get("workers", [])):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or master.poll() is not None or worker.poll() is not None:
                logs = "\n".join(p.read_text()[-1500:] for p in (work / "master.log", work / "worker.log") if p.exists())
                raise RuntimeError(f"Spark standalone cluster did not come up:\n{logs}")
            time.sleep(0.5)
        yield master_url
    finally:
        if worker is not None and worker.poll() is None:
            stop_group(worker, 20)
        if master.poll() is None:
            stop_group(master, 20)
