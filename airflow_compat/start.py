"""Start Airflow (2.11 or 3, whichever the running venv has) on the emitted DAGs with the legacy
configuration, bound to 127.0.0.1.

Defaults: SQLite metadata database under ``$CT_HOME/airflow`` (``$CT_HOME/airflow3`` for Airflow 3),
with the SequentialExecutor on 2.11 and the LocalExecutor on 3 (3 has no SequentialExecutor; its
task processes reach the database only through the API server). With ``CT_AIRFLOW_DB_URL`` (e.g.
``postgresql+psycopg2://airflow@127.0.0.1/airflow``, password through ``PGPASSWORD`` or
``~/.pgpass``) it uses that database and the LocalExecutor, as the legacy deployment did. The admin
password is ``CT_AIRFLOW_ADMIN_PASSWORD``, or generated and printed once.

Airflow 2.11: scheduler and webserver (FAB users, ``/api/v1`` with basic auth). Airflow 3: scheduler,
DAG processor and API server (UI, ``/api/v2`` with a JWT from ``POST /auth/token``, and the Execution
API the task processes call) as separate processes, with the simple auth manager: user ``admin``,
its password in ``$AIRFLOW_HOME/simple_auth_manager_passwords.json`` (mode 600).

The settings are written to ``$AIRFLOW_HOME/airflow.cfg`` as well as passed to the processes, so
that any ``airflow`` command run with only ``AIRFLOW_HOME`` set sees the same deployment (same
database and DAGs folder, no example DAGs). Runs Airflow's own CLI as subprocesses; it imports
nothing of Airflow itself.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

# The Airflow venvs do not install the project (Airflow 2 pins SQLAlchemy 1.4); its settings module
# is standard library only, so it is read from the checkout: one reader of the environment for all.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ct_assets import settings as ct_settings  # noqa: E402

CONFIG = Path(__file__).with_name("config")
# The REST API (/api/v1) answers to basic auth for Airflow users, as legacy ops scripts expect, and
# to the UI's session. (airflow.api.auth.backend.basic_auth is the deprecated alias of the first.)
AUTH_BACKENDS = "airflow.providers.fab.auth_manager.api.auth.backend.basic_auth,airflow.api.auth.backend.session"


def _airflow_home(major: int) -> Path:
    """The Airflow deployment's home: $AIRFLOW_HOME, else $CT_HOME/airflow (airflow3 for Airflow 3)."""
    return Path(os.environ.get("AIRFLOW_HOME") or ct_settings.ct_home() / ("airflow3" if major >= 3 else "airflow")).resolve()


def _airflow_db_url(home: Path) -> str:
    """Airflow's metadata database: $CT_AIRFLOW_DB_URL (PostgreSQL: the LocalExecutor), else SQLite in its home."""
    return os.environ.get("CT_AIRFLOW_DB_URL") or f"sqlite:///{home / 'airflow.db'}"


def _airflow_host() -> str:
    """Interface the Airflow UI/API binds to ($CT_AIRFLOW_HOST, default 127.0.0.1)."""
    return os.environ.get("CT_AIRFLOW_HOST") or "127.0.0.1"


def _dagster_graphql_url() -> str | None:
    """The Dagster webserver's GraphQL URL the Airflow tasks launch runs through ($CT_DAGSTER_URL), when
    it differs from the one in airflow_compat/config/connections.yaml."""
    return os.environ.get("CT_DAGSTER_URL") or None


def _bin() -> Path:
    """The Airflow venv's bin/: the scheduler launches each task as the command ``airflow``, by name."""
    return Path(sys.executable).parent


def airflow_major() -> int:
    """The major version of the Airflow installed in this venv (without importing Airflow)."""
    return int(importlib.metadata.version("apache-airflow").split(".")[0])


def settings(dags: Path, home: Path) -> dict[tuple[str, str], str]:
    """Airflow settings of this deployment, as (section, key) -> value."""
    db_url = _airflow_db_url(home)
    if airflow_major() >= 3:
        return settings_3(dags, home, db_url)
    return {
        ("core", "dags_folder"): str(dags.resolve()),
        ("core", "load_examples"): "False",
        ("core", "executor"): "SequentialExecutor" if db_url.startswith("sqlite") else "LocalExecutor",
        # Airflow's default, kept: a fresh start runs nothing until an operator switches a DAG on
        # (the legacy had them on: AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False make airflow).
        ("core", "dags_are_paused_at_creation"): "True",
        ("database", "sql_alchemy_conn"): db_url,
        ("webserver", "web_server_host"): _airflow_host(),
        ("webserver", "web_server_port"): str(ct_settings.service_port("airflow")),
        ("webserver", "expose_config"): "False",
        ("webserver", "workers"): "2",  # each gunicorn worker loads the whole UI; Airflow's default of 4 is for big teams
        ("api", "auth_backends"): AUTH_BACKENDS,
    }


def settings_3(dags: Path, home: Path, db_url: str) -> dict[tuple[str, str], str]:
    host, port = _airflow_host(), str(ct_settings.service_port("airflow"))
    return {
        ("core", "dags_folder"): str(dags.resolve()),
        ("core", "load_examples"): "False",
        ("core", "executor"): "LocalExecutor",
        ("core", "parallelism"): "8",  # the LocalExecutor forks this many idle workers at start (default 32)
        ("core", "dags_are_paused_at_creation"): "True",
        # The task processes report to the API server's Execution API (Airflow's default is localhost:8080).
        ("core", "execution_api_server_url"): f"http://{host}:{port}/execution/",
        # Simple auth manager (Airflow 3's default, no FAB provider): one admin, its password in a file
        # that start writes (CT_AIRFLOW_ADMIN_PASSWORD or generated), as 2.11's FAB user.
        ("core", "auth_manager"): "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        ("core", "simple_auth_manager_users"): "admin:admin",
        ("core", "simple_auth_manager_passwords_file"): str(home / "simple_auth_manager_passwords.json"),
        ("database", "sql_alchemy_conn"): db_url,
        ("api", "host"): host,
        ("api", "port"): port,
        ("api", "base_url"): f"http://{host}:{port}",
        ("api", "expose_config"): "False",
        ("api", "workers"): "1",  # each worker loads the whole API; one serves a legacy team's UI and tasks
    }


def _home() -> Path:
    return _airflow_home(airflow_major())


def _var(section: str, key: str) -> str:
    return f"AIRFLOW__{section.upper()}__{key.upper()}"


def airflow_env(dags: Path) -> dict[str, str]:
    """The processes' environment: this deployment's settings, where the caller's AIRFLOW__* do not
    set them (the DAGs folder, database, executor and examples always follow this start command)."""
    home = _home()
    env = dict(os.environ)
    env["AIRFLOW_HOME"] = str(home)
    env["PATH"] = os.pathsep.join([str(_bin()), env.get("PATH", os.defpath)])
    forced = {("core", "dags_folder"), ("core", "load_examples"), ("core", "executor"), ("database", "sql_alchemy_conn"),
              ("core", "auth_manager"), ("core", "simple_auth_manager_passwords_file")}
    for (section, key), value in settings(dags, home).items():
        if (section, key) in forced:
            env[_var(section, key)] = value
        else:
            env.setdefault(_var(section, key), value)
    home.mkdir(parents=True, exist_ok=True)
    return env


def write_config(env: dict[str, str], dags: Path) -> Path:
    """Put the settings in force into airflow.cfg, keeping what Airflow generated there (its keys)."""
    home = Path(env["AIRFLOW_HOME"])
    path = home / "airflow.cfg"
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(path)
    for section, key in settings(dags, home):
        if not cfg.has_section(section):
            cfg.add_section(section)
        cfg.set(section, key, env[_var(section, key)])
    tmp = path.with_suffix(".cfg.tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        cfg.write(f)
    tmp.replace(path)
    return path


def connections_file(env: dict[str, str]) -> Path:
    """config/connections.yaml, with ``CT_DAGSTER_URL`` as the Dagster URL when set (the file stays as it is)."""
    url = _dagster_graphql_url()
    if not url:
        return CONFIG / "connections.yaml"
    import yaml  # Airflow's own dependency

    connections = yaml.safe_load((CONFIG / "connections.yaml").read_text())
    connections["dagster_default"]["login"] = url
    path = Path(env["AIRFLOW_HOME"]) / "connections.yaml"
    path.write_text(yaml.safe_dump(connections))
    return path


def _airflow(env: dict[str, str], *args: str, capture: bool = False) -> str:
    proc = subprocess.run([str(_bin() / "airflow"), *args], env=env, text=True, capture_output=capture, check=False)
    if proc.returncode:
        raise SystemExit(f"airflow {' '.join(args[:2])} failed ({proc.returncode}): {(proc.stderr or '')[-2000:]}")
    return proc.stdout or ""


def ensure_admin(env: dict[str, str]) -> None:
    if airflow_major() >= 3:
        return ensure_admin_3(env)
    users = json.loads(_airflow(env, "users", "list", "--output", "json", capture=True) or "[]")
    if any(u.get("username") == "admin" for u in users):
        return
    given = ct_settings.secret("CT_AIRFLOW_ADMIN_PASSWORD")
    password = given or secrets.token_urlsafe(16)
    _airflow(env, "users", "create", "--username", "admin", "--role", "Admin", "--firstname", "Clinical",
             "--lastname", "Ops", "--email", "admin@localhost", "--password", password, capture=True)
    if not given:
        print(f"Airflow user 'admin' created with password: {password}\n"
              f"(shown once; reset with: AIRFLOW_HOME={env['AIRFLOW_HOME']} {_bin() / 'airflow'} users reset-password "
              "--username admin)", flush=True)


def ensure_admin_3(env: dict[str, str]) -> None:
    """The simple auth manager reads passwords from its file and generates (and logs) any missing:
    write admin's first, so that its password is given or printed once, as on 2.11."""
    path = Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    passwords = json.loads(path.read_text()) if path.exists() else {}
    if "admin" in passwords:
        return
    given = ct_settings.secret("CT_AIRFLOW_ADMIN_PASSWORD")
    password = given or secrets.token_urlsafe(16)
    tmp = path.with_suffix(".tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump(passwords | {"admin": password}, f)
    tmp.replace(path)
    if not given:
        print(f"Airflow user 'admin' created with password: {password}\n"
              f"(shown once; kept in {path}: edit it and restart the API server to change it)", flush=True)


def _owner_only(home: Path, watch_seconds: float = 0) -> None:
    """Files under ``home`` open to group or others made owner-only; for ``watch_seconds``, again every second."""
    deadline = time.monotonic() + watch_seconds
    while True:
        for path in home.rglob("*") if home.exists() else ():
            try:
                if not path.is_symlink() and path.stat().st_mode & 0o077:
                    path.chmod(path.stat().st_mode & 0o700)
            except FileNotFoundError:  # gone meanwhile (a temporary file)
                pass
        if time.monotonic() >= deadline:
            return
        time.sleep(1)


def start(dags: Path, init_only: bool = False) -> int:
    if not any(dags.glob("*.py")):
        raise SystemExit(f"no DAG files in {dags}: run `python -m airflow_compat emit --out {dags}` first")
    env = airflow_env(dags)
    # Owner-only, whatever Airflow writes (webserver_config.py with its secret key, pid files, logs, the SQLite
    # metadata database): its processes inherit this umask. A home from an older version is tightened too.
    os.umask(0o077)
    home = Path(env["AIRFLOW_HOME"])
    _owner_only(home)
    _airflow(env, "db", "migrate", capture=True)  # also creates airflow.cfg (with its own keys) on first use
    write_config(env, dags)
    ensure_admin(env)
    _airflow(env, "connections", "import", str(connections_file(env)), "--overwrite", capture=True)
    _airflow(env, "pools", "import", str(CONFIG / "pools.yaml"), capture=True)
    _airflow(env, "variables", "import", str(CONFIG / "variables.yaml"), capture=True)
    v3 = airflow_major() >= 3
    host, port = ((env["AIRFLOW__API__HOST"], env["AIRFLOW__API__PORT"]) if v3 else
                  (env["AIRFLOW__WEBSERVER__WEB_SERVER_HOST"], env["AIRFLOW__WEBSERVER__WEB_SERVER_PORT"]))
    paused = env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"].lower() == "true"
    print(f"Airflow home {env['AIRFLOW_HOME']} ({env['AIRFLOW__CORE__EXECUTOR']}); DAGs from {dags}\n"
          + ("New DAGs are paused: switch one on in the UI, or `airflow dags unpause <dag_id>` (a scheduled DAG then "
             "runs its latest interval at once); a paused DAG's triggered runs wait, queued.\n" if paused else
             "New DAGs are active (legacy behaviour): the scheduled ones run their latest interval at once.\n")
          + f"CLI: export AIRFLOW_HOME={env['AIRFLOW_HOME']}; {_bin() / 'airflow'} dags list", flush=True)
    if init_only:
        return 0
    # The scheduler and webserver share this machine's disk, so the webserver reads task logs from
    # files: no log server (Airflow 2.11 binds it to every interface, port 8793, with no setting).
    commands = ([["scheduler", "--skip-serve-logs"], ["dag-processor"], ["api-server"]] if v3 else
                [["scheduler", "--skip-serve-logs"], ["webserver"]])
    procs = [subprocess.Popen([str(_bin() / "airflow"), *c], env=env) for c in commands]
    # Two files escape the umask: Airflow copies webserver_config.py with its template's 0644, and gunicorn sets
    # its pid file to 0644. Both are made within the webserver's first minute: tightened as they appear.
    threading.Thread(target=_owner_only, args=(home, 120), daemon=True).start()
    print(f"Airflow {'3' if v3 else '2'} UI: http://{host}:{port}  REST API: http://{host}:{port}/api/"
          f"{'v2 (token: POST /auth/token)' if v3 else 'v1 (basic auth)'}  (Ctrl-C stops it)", flush=True)
    try:
        return max(p.wait() for p in procs)
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
        return 0
