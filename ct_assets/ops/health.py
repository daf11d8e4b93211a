"""Each component's real health, asked of the component itself.

- Dagster: the webserver's GraphQL answers; every code location loaded without error; every required
  daemon (scheduler, sensors, run queue...) heartbeating.
- Airflow: the webserver's /health (metadata database, scheduler heartbeat) and the DAG import errors
  recorded in the metadata database.
- MLflow: the tracking server's /health and its store (an experiments search).
- Model server: /ready (a champion loaded) and /models (the served versions, with the bearer token).
- PostgreSQL and Kafka when configured; and every process `ct start` recorded is still alive.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from ct_assets import settings
from ct_assets.ops import config as ops_config

COMPONENTS = ("dagster", "airflow", "mlflow", "serving")
AIRFLOW_STATE = Path(__file__).with_name("airflow_state.py")


@dataclass
class Check:
    component: str
    name: str
    ok: bool
    detail: str = ""
    # Not needed for `ct start` to call the component up (a server without a champion still listens).
    required_to_start: bool = True

    def as_dict(self) -> dict:
        return asdict(self)


def url_of(component: str) -> str:
    return f"http://127.0.0.1:{settings.service_port(component)}"


def http(url: str, data: dict | None = None, token: str | None = None, timeout: float = 10,
         basic: tuple[str, str] | None = None) -> tuple[int, object]:
    """(status, parsed body) of a GET, or a POST of JSON ``data``; (0, reason) when nothing answers."""
    import base64

    headers = {"Content-Type": "application/json"} if data is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if basic:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(basic).encode()).decode()
    req = urllib.request.Request(url, data=None if data is None else json.dumps(data).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read()
    except (OSError, ValueError) as err:
        return 0, f"no answer: {getattr(err, 'reason', err)}"
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace").strip()


DAGSTER_HEALTH = """{
  workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
      locationOrLoadError { __typename ... on PythonError { message } } } } ... on PythonError { message } }
  instance { daemonHealth { allDaemonStatuses { daemonType required healthy lastHeartbeatTime } } }
}"""


def graphql(url: str, query: str, timeout: float = 20) -> tuple[dict | None, str]:
    status, body = http(f"{url}/graphql", {"query": query}, timeout=timeout)
    if status != 200 or not isinstance(body, dict) or "data" not in body:
        return None, f"GraphQL: {status or ''} {str(body)[:300]}".strip()
    return body["data"], ""


def dagster(url: str) -> list[Check]:
    data, why = graphql(url, DAGSTER_HEALTH)
    if data is None:
        return [Check("dagster", "webserver", False, f"{url}: {why}")]
    checks = [Check("dagster", "webserver", True, url)]
    workspace = data["workspaceOrError"]
    if workspace["__typename"] != "Workspace":
        return checks + [Check("dagster", "code locations", False, workspace.get("message", "")[:300])]
    for entry in workspace["locationEntries"]:
        loaded = entry["locationOrLoadError"] or {}
        error = loaded.get("message") if loaded.get("__typename") == "PythonError" else None
        ok = entry["loadStatus"] == "LOADED" and not error and bool(loaded)
        detail = "loaded" if ok else (error or entry["loadStatus"].lower()).strip().splitlines()[-1][:300]
        checks.append(Check("dagster", f"code location {entry['name']}", ok, detail))
    statuses = [d for d in data["instance"]["daemonHealth"]["allDaemonStatuses"] if d["required"]]
    bad = [d["daemonType"] for d in statuses if not d["healthy"]]
    beats = [d["lastHeartbeatTime"] for d in statuses if d["lastHeartbeatTime"]]
    age = f", last heartbeat {time.time() - max(beats):.0f} s ago" if beats else ""
    checks.append(Check("dagster", "daemon", bool(statuses) and not bad,
                        (f"no heartbeat from {', '.join(bad)}" if bad else f"{len(statuses)} daemons heartbeating") + age))
    return checks


def airflow_state(timeout: float = 120) -> dict:
    """DAGs (paused or not) and import errors from the Airflow metadata database, read by the Airflow venv."""
    env = {"AIRFLOW_HOME": str(settings.ct_home() / "airflow"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([str(ops_config.airflow_python()), str(AIRFLOW_STATE)], env=env, capture_output=True,
                          text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"airflow metadata not readable: {(proc.stderr or proc.stdout)[-300:]}")
    return json.loads(lines[-1])


def airflow(url: str) -> list[Check]:
    status, body = http(f"{url}/health")
    if status != 200 or not isinstance(body, dict):
        return [Check("airflow", "webserver", False, f"{url}/health: {status or ''} {str(body)[:200]}".strip())]
    checks = [Check("airflow", "webserver", True, url)]
    db = body.get("metadatabase", {}).get("status")
    checks.append(Check("airflow", "metadata database", db == "healthy", db or "unknown"))
    sched = body.get("scheduler", {})
    checks.append(Check("airflow", "scheduler", sched.get("status") == "healthy",
                        f"{sched.get('status')}, last heartbeat {sched.get('latest_scheduler_heartbeat')}"))
    try:
        state = airflow_state()
        errors = state["import_errors"]
        detail = ("; ".join(f"{Path(e['filename']).name}: {e['error']}" for e in errors)[:400] if errors
                  else f"{len(state['dags'])} DAGs, no import error")
        checks.append(Check("airflow", "DAG import errors", not errors, detail, required_to_start=False))
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as err:
        checks.append(Check("airflow", "DAG import errors", False, str(err)[:300], required_to_start=False))
    return checks


def mlflow(url: str) -> list[Check]:
    status, body = http(f"{url}/health")
    if status != 200:
        return [Check("mlflow", "tracking server", False, f"{url}/health: {status or ''} {str(body)[:200]}".strip())]
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    status, body = http(f"{url}/api/2.0/mlflow/experiments/search", {"max_results": 1},
                        basic=(user, password) if user and password else None)  # the service account, in production
    ok = status == 200
    return [Check("mlflow", "tracking server", True, url),
            Check("mlflow", "store", ok, "experiments readable" if ok else f"{status}: {str(body)[:200]}")]


def serving(url: str) -> list[Check]:
    status, body = http(f"{url}/health")
    if status != 200:
        return [Check("serving", "model server", False, f"{url}: {status or ''} {str(body)[:200]}".strip())]
    checks = [Check("serving", "model server", True, url)]
    status, body = http(f"{url}/ready")
    ready = status == 200 and isinstance(body, dict) and body.get("ready") is True
    reason = f"champion version {body.get('champion_version')}" if ready else (
        body.get("reason", str(body)) if isinstance(body, dict) else str(body))
    checks.append(Check("serving", "ready", ready, reason, required_to_start=False))
    from ct_assets.core.tokens import serving_token

    status, body = http(f"{url}/models", token=serving_token())
    served = body if status == 200 else None
    checks.append(Check("serving", "served versions", served is not None,
                        json.dumps(served)[:300] if served is not None else f"/models: {status} {str(body)[:200]}",
                        required_to_start=False))
    return checks


def postgres() -> list[Check]:
    server = ops_config.postgres_url()
    if not server:
        return []
    import psycopg2

    try:
        conn = psycopg2.connect(f"{server.rstrip('/')}/postgres", connect_timeout=5)
    except psycopg2.Error as err:
        return [Check("postgres", "server", False, f"{_redact(server)}: {str(err).strip()[:300]}")]
    try:
        with conn.cursor() as cur:
            cur.execute("select datname from pg_database")
            names = {row[0] for row in cur.fetchall()}
            cur.execute("show server_version")
            version = cur.fetchone()[0]
    finally:
        conn.close()
    checks = [Check("postgres", "server", True, f"PostgreSQL {version} at {_redact(server)}")]
    if settings.profile() == "production":
        wanted = [ops_config.postgres_database(c) for c in ops_config.PRODUCTION_DATABASES]
        missing = [d for d in wanted if d not in names]
        checks.append(Check("postgres", "databases", not missing,
                            f"missing {', '.join(missing)}" if missing else ", ".join(wanted)))
    return checks


def _redact(url: str) -> str:
    """A URL without its password."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return url.replace(f":{parts.password}@", ":***@") if parts.password else url


def kafka() -> list[Check]:
    servers = settings.kafka_bootstrap()
    if not servers:
        return []
    try:
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=servers.split(","), request_timeout_ms=5000,
                                 api_version_auto_timeout_ms=5000)
        topics = admin.list_topics()
        admin.close()
    except Exception as err:  # noqa: BLE001 - any failure to reach the broker is the answer
        return [Check("kafka", "broker", False, f"{servers}: {err}"[:300])]
    return [Check("kafka", "broker", True, f"{servers}, {len(topics)} topics")]


CHECKERS = {"dagster": dagster, "airflow": airflow, "mlflow": mlflow, "serving": serving}


def check(components: list[str], urls: dict[str, str] | None = None) -> list[Check]:
    """Health of ``components`` (at their recorded URLs), of the processes `ct start` recorded for
    them, and of PostgreSQL and Kafka when configured."""
    from ct_assets.ops import procs

    urls = urls or {}
    checks: list[Check] = []
    for started in procs.recorded():
        if started.component in components and not procs.alive(started.pid, started.start_ticks):
            checks.append(Check(started.component, f"process {started.name}", False,
                                f"pid {started.pid} exited; log {started.log}"))
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(components) + 2) as pool:
        futures = [pool.submit(CHECKERS[c], urls.get(c) or url_of(c)) for c in components]
        futures += [pool.submit(postgres), pool.submit(kafka)]
        for future in futures:
            checks += future.result()
    return checks


def table(checks: list[Check]) -> str:
    width = max([len(f"{c.component} {c.name}") for c in checks] + [10])
    return "\n".join(f"{'ok  ' if c.ok else 'FAIL'}  {(c.component + ' ' + c.name):<{width}}  {c.detail}" for c in checks)
