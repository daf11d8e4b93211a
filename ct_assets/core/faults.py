"""Which failures are worth a retry, and how each kind reaches the operator.

A data problem (a study without the outcome, a file that cannot be read) fails at once with one
line saying what is missing: retrying cannot fix it. An external system that does not answer
(connection refused, a timeout, an HTTP 5xx) may answer later: only that is retried, 3 times within
two minutes of waiting in all (``CT_RETRIES`` / ``CT_RETRY_BUDGET_SECONDS``), and every attempt fails
fast with the system and its address in the message.
"""

from __future__ import annotations

import socket
from urllib.parse import urlparse


class StudyDataError(ValueError):
    """The study cannot serve this step (no outcome, one class, no features...): never retried."""


class ServiceUnavailable(ConnectionError):
    """An external system (MLflow, a Spark master, a broker) did not answer at its address."""


_TRANSIENT_TEXT = ("connection refused", "max retries exceeded", "timed out", "temporarily unavailable",
                   "connection reset", "connection aborted", "failed to establish a new connection",
                   "all masters are unresponsive", "503 server error", "502 server error", "504 server error")


def is_transient(err: BaseException) -> bool:
    """True when ``err`` (or what caused it) is a connection failure, a timeout or an HTTP 5xx."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, StudyDataError):
            return False
        if isinstance(err, (ConnectionError, TimeoutError, socket.timeout)):
            return True
        if getattr(err, "retriable", False) or type(err).__name__ in ("NoBrokersAvailable", "Py4JNetworkError"):
            return True  # kafka-python marks its retriable errors; py4j loses the JVM's connection
        status = getattr(getattr(err, "response", None), "status_code", None)
        if isinstance(status, int) and 500 <= status < 600:
            return True
        if any(text in str(err).lower() for text in _TRANSIENT_TEXT):
            return True
        err = err.__cause__ or err.__context__
    return False


def one_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def probe_tcp(system: str, address: str, host_ports: list[tuple[str, int]], timeout: float = 5.0) -> None:
    """Raise ServiceUnavailable naming ``address`` unless one of ``host_ports`` accepts a connection."""
    errors = []
    for host, port in host_ports:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return
        except OSError as err:
            errors.append(f"{host}:{port} {one_line(err)}")
    raise ServiceUnavailable(f"{system} at {address} is unreachable ({'; '.join(errors)})")


def probe_mlflow(uri: str, timeout: float = 5.0) -> None:
    """A tracking server must answer its /health within ``timeout``; local stores need no probe.

    Without this, the MLflow client retries a dead server with back-off for minutes in silence."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            if response.status < 500:
                return
            raise ServiceUnavailable(f"MLflow tracking server at {uri} answered HTTP {response.status}")
    except urllib.error.HTTPError as err:
        if err.code < 500:
            return  # it answers: an auth proxy or an older server without /health
        raise ServiceUnavailable(f"MLflow tracking server at {uri} answered HTTP {err.code}") from None
    except (urllib.error.URLError, OSError) as err:
        raise ServiceUnavailable(f"MLflow tracking server at {uri} is unreachable: {one_line(err)}") from None


def probe_spark_master(master: str, timeout: float = 5.0) -> None:
    """A standalone master (spark://h1:7077,h2:7077) must accept a connection; Spark itself would wait
    a minute per attempt and then report only that "all masters are unresponsive"."""
    if not master.startswith("spark://"):
        return  # local[*], yarn, k8s://: their clients fail fast enough and name the address
    hosts = []
    for part in master[len("spark://"):].split(","):
        parsed = urlparse(f"spark://{part}")
        hosts.append((parsed.hostname or "127.0.0.1", parsed.port or 7077))
    probe_tcp("Spark master", master, hosts, timeout)
