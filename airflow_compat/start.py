"""Start Airflow 2.11 on the emitted DAGs with the legacy configuration, bound to 127.0.0.1.

Defaults: SQLite metadata database and SequentialExecutor under ``$CT_HOME/airflow``. With
``CT_AIRFLOW_DB_URL`` (e.g. ``postgresql+psycopg2://airflow@127.0.0.1/airflow``, password through
``PGPASSWORD`` or ``~/.pgpass``) it uses that database and the LocalExecutor, as the legacy
deployment did. The admin password is ``CT_AIRFLOW_ADMIN_PASSWORD``, or generated and printed once.

Runs Airflow's own CLI as subprocesses; it imports nothing of Airflow itself.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

CONFIG = Path(__file__).with_name("config")


def airflow_env(dags: Path) -> dict[str, str]:
    ct_home = Path(os.environ.get("CT_HOME", Path(__file__).resolve().parents[1] / ".ct"))
    home = Path(os.environ.get("AIRFLOW_HOME", ct_home / "airflow")).resolve()
    db_url = os.environ.get("CT_AIRFLOW_DB_URL", f"sqlite:///{home / 'airflow.db'}")
    env = dict(os.environ)
    env |= {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags.resolve()),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
        "AIRFLOW__CORE__EXECUTOR": "SequentialExecutor" if db_url.startswith("sqlite") else "LocalExecutor",
        "AIRFLOW__WEBSERVER__WEB_SERVER_HOST": os.environ.get("CT_AIRFLOW_HOST", "127.0.0.1"),
        "AIRFLOW__WEBSERVER__WEB_SERVER_PORT": os.environ.get("CT_AIRFLOW_PORT", "8085"),
        "AIRFLOW__WEBSERVER__EXPOSE_CONFIG": "False",
    }
    if url := os.environ.get("CT_DAGSTER_URL"):  # overrides connections.yaml without touching it
        env["AIRFLOW_CONN_DAGSTER_DEFAULT"] = json.dumps({"conn_type": "dagster", "login": url})
    home.mkdir(parents=True, exist_ok=True)
    return env


def _airflow(env: dict[str, str], *args: str, capture: bool = False) -> str:
    exe = Path(sys.executable).with_name("airflow")
    proc = subprocess.run([str(exe), *args], env=env, text=True, capture_output=capture, check=False)
    if proc.returncode:
        raise SystemExit(f"airflow {' '.join(args[:2])} failed ({proc.returncode}): {(proc.stderr or '')[-2000:]}")
    return proc.stdout or ""


def ensure_admin(env: dict[str, str]) -> None:
    users = json.loads(_airflow(env, "users", "list", "--output", "json", capture=True) or "[]")
    if any(u.get("username") == "admin" for u in users):
        return
    password = os.environ.get("CT_AIRFLOW_ADMIN_PASSWORD") or secrets.token_urlsafe(16)
    _airflow(env, "users", "create", "--username", "admin", "--role", "Admin", "--firstname", "Clinical",
             "--lastname", "Ops", "--email", "admin@localhost", "--password", password, capture=True)
    if "CT_AIRFLOW_ADMIN_PASSWORD" not in os.environ:
        print(f"Airflow user 'admin' created with password: {password}\n"
              "(shown once; reset with: airflow users reset-password --username admin)", flush=True)


def start(dags: Path, init_only: bool = False) -> int:
    if not any(dags.glob("*.py")):
        raise SystemExit(f"no DAG files in {dags}: run `python -m airflow_compat emit --out {dags}` first")
    env = airflow_env(dags)
    _airflow(env, "db", "migrate", capture=True)
    ensure_admin(env)
    _airflow(env, "connections", "import", str(CONFIG / "connections.yaml"), "--overwrite", capture=True)
    _airflow(env, "pools", "import", str(CONFIG / "pools.yaml"), capture=True)
    _airflow(env, "variables", "import", str(CONFIG / "variables.yaml"), capture=True)
    host, port = env["AIRFLOW__WEBSERVER__WEB_SERVER_HOST"], env["AIRFLOW__WEBSERVER__WEB_SERVER_PORT"]
    print(f"Airflow home {env['AIRFLOW_HOME']} ({env['AIRFLOW__CORE__EXECUTOR']}); DAGs from {dags}", flush=True)
    if init_only:
        return 0
    exe = str(Path(sys.executable).with_name("airflow"))
    procs = [subprocess.Popen([exe, "scheduler"], env=env), subprocess.Popen([exe, "webserver"], env=env)]
    print(f"Airflow UI: http://{host}:{port}  (Ctrl-C stops it)", flush=True)
    try:
        return max(p.wait() for p in procs)
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
        return 0
