"""The platform's services, started in the background for one profile and waited for until healthy.

``local`` (default): `dagster dev` (webserver + daemon, SQLite instance under $CT_HOME/dagster), Airflow
as `make airflow` starts it (SQLite, SequentialExecutor), an MLflow server over the SQLite store the
assets write, and the model server.

``production`` ($CT_PROFILE=production): the machine's PostgreSQL ($CT_POSTGRES_URL) holds three
databases, created when missing: Dagster's instance (runs, events, schedules), MLflow's backend store
and Airflow's metadata (LocalExecutor). Each Dagster code location is served by `dagster code-server
start` (gRPC), and the webserver and the daemon are separate processes loading a workspace of those
servers, as in a real deployment. MLflow runs as `mlflow server` with an artifact destination (a
local folder, or an S3-compatible URL); runs, the model server and Airflow's tasks use it over HTTP.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from ct_assets import settings
from ct_assets.ops import config as ops_config
from ct_assets.ops import health, procs

ROOT = settings.PROJECT_ROOT
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg(database: str, driver: str = "postgresql+psycopg2") -> str:
    server = ops_config.postgres_url()
    return f"{driver}://{server.split('://', 1)[1].rstrip('/')}/{database}"


def dagster_home() -> Path:
    home = settings.ct_home()  # the stack's own choice: the services it starts get it as $DAGSTER_HOME
    return home / ("dagster-production" if settings.profile() == "production" else "dagster")


MLFLOW_SERVICE_ACCOUNT = "ct-service"


def mlflow_service_account() -> tuple[str, str]:
    """The platform's own account on the production MLflow server (its admin): every write the platform makes to
    the registry goes through it; anyone else needs an account of their own. The password is $CT_MLFLOW_PASSWORD,
    else generated once under $CT_HOME/secrets."""
    from ct_assets.core.privacy import local_secret

    return MLFLOW_SERVICE_ACCOUNT, local_secret("CT_MLFLOW_PASSWORD", "mlflow.password")


def stack_env() -> dict[str, str]:
    """What every service of the profile (and this process's own clients) must see."""
    env = {"CT_HOME": str(settings.ct_home()), "CT_PROFILE": settings.profile(), "DAGSTER_HOME": str(dagster_home())}
    if settings.profile() == "production":
        user, password = mlflow_service_account()
        env |= {"DAGSTER_PG_URL": _pg(ops_config.postgres_database("dagster")),
                "MLFLOW_TRACKING_URI": health.url_of("mlflow"),
                # MLflow's clients read these: the registry cannot be changed anonymously (basic-auth app).
                "MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password,
                "CT_AIRFLOW_DB_URL": _pg(ops_config.postgres_database("airflow")),
                # The production resource set requires it (ct_assets/defs/profiles.py), the model server reads it.
                "CT_FEAST_REGISTRY": os.environ.get("CT_FEAST_REGISTRY") or _pg(ops_config.postgres_database("feast"),
                                                                                 "postgresql+psycopg")}
    return env


def apply_env() -> dict[str, str]:
    """Point this process at the profile's stores (the summary reads the Dagster instance and MLflow);
    a store the environment names already (MLFLOW_TRACKING_URI, say) is kept."""
    env = stack_env()
    for key, value in env.items():
        os.environ.setdefault(key, value)
    return env


def ensure_databases() -> list[str]:
    """Create the production profile's databases that do not exist yet; returns those created."""
    import psycopg2

    created = []
    conn = psycopg2.connect(f"{ops_config.postgres_url().rstrip('/')}/postgres", connect_timeout=10)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for component in ops_config.PRODUCTION_DATABASES:
                name = ops_config.postgres_database(component)
                cur.execute("select 1 from pg_database where datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'create database "{name}"')
                    created.append(name)
    finally:
        conn.close()
    return created


def prepare_dagster_home() -> Path:
    """The instance: SQLite by default; PostgreSQL (deploy/dagster.postgres.yaml) in production."""
    home = dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    if settings.profile() == "production":
        (home / "dagster.yaml").write_text((ROOT / "deploy" / "dagster.postgres.yaml").read_text())
    return home


def mlflow_auth_config() -> Path:
    """MLflow's basic-auth configuration (owner-only: its database URL may carry a password); the admin's name and
    password come through the environment, never this file."""
    from ct_assets.core.privacy import write_secret_file

    path = settings.ct_home() / "secrets" / "mlflow-auth.ini"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_secret_file(path, "[mlflow]\ndefault_permission = READ\n"
                      f"database_uri = {_pg(ops_config.postgres_database('mlflow_auth'))}\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    return path


def _locations() -> list[tuple[str, str]]:
    """(module, location name) of every code location in workspace.yaml."""
    entries = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"]
    return [(e["python_module"]["module_name"], e["python_module"]["location_name"]) for e in entries]


class Starter:
    """Starts the selected components, each in a thread of its own, and waits for them."""

    def __init__(self, components: list[str], timeout: float, say=print):
        self.components, self.timeout, self.say = components, timeout, say
        self.env = dict(os.environ) | stack_env()
        self.results: dict[str, str] = {}
        self.failures: dict[str, str] = {}
        self.lock = threading.Lock()
        # The model server reads the registry: on a fresh home it would create and migrate MLflow's SQLite
        # store at the same moment as the tracking server (alembic fails one of them), so it starts after it.
        self.mlflow_settled = threading.Event()
        if "mlflow" not in components:
            self.mlflow_settled.set()

    def _launch(self, name: str, component: str, argv: list[str], env: dict | None = None, url: str | None = None,
                **extra) -> procs.Started:
        existing = procs.load(name)
        if existing and procs.alive(existing.pid, existing.start_ticks):
            return existing
        procs.forget(name)
        return procs.launch(name, component, argv, env or self.env, url=url, **extra)

    def _wait(self, component: str, url: str, names: list[str]) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            for name in names:
                started = procs.load(name)
                if not started or not procs.alive(started.pid, started.start_ticks):
                    raise RuntimeError(f"{name} exited during start; log {started.log if started else '?'}:\n"
                                       + (procs.tail(started.log) if started else ""))
            checks = health.CHECKERS[component](url)
            if all(c.ok for c in checks if c.required_to_start):
                notes = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
                self.results[component] = url + (f"  ({'; '.join(notes)})" if notes else "")
                return
            errors = [c for c in checks if c.name.startswith("code location") and not c.ok and c.detail != "loading"]
            if errors and time.monotonic() > deadline - self.timeout / 2:
                raise RuntimeError("; ".join(f"{c.name}: {c.detail}" for c in errors))
            if time.monotonic() > deadline:
                raise RuntimeError(f"not healthy after {self.timeout:.0f} s: "
                                   + "; ".join(f"{c.name}: {c.detail}" for c in checks if not c.ok))
            time.sleep(1)

    # --- the components ---------------------------------------------------------------------------------------
    def dagster(self) -> None:
        url = health.url_of("dagster")
        port = str(settings.service_port("dagster"))
        prepare_dagster_home()
        subprocess.run([sys.executable, "-m", "ct_assets.defs.pools"], env=self.env, cwd=ROOT, check=True,
                       capture_output=True, timeout=300)
        if settings.profile() != "production":
            self._launch("dagster", "dagster", [str(BIN / "dagster"), "dev", "-w", str(ROOT / "workspace.yaml"),
                                                "-h", "127.0.0.1", "-p", port], url=url)
            return self._wait("dagster", url, ["dagster"])
        workspace = ops_config.run_dir() / "workspace.yaml"
        entries, names = [], []
        for module, location in _locations():
            name = f"dagster-code-{location}"
            existing = procs.load(name)
            code_port = existing.extra["port"] if existing and procs.alive(existing.pid, existing.start_ticks) else free_port()
            self._launch(name, "dagster", [str(BIN / "dagster"), "code-server", "start", "-m", module, "-h", "127.0.0.1",
                                           "-p", str(code_port), "--location-name", location], port=code_port)
            entries.append({"grpc_server": {"host": "127.0.0.1", "port": code_port, "location_name": location}})
            names.append(name)
        workspace.write_text(yaml.safe_dump({"load_from": entries}))
        self._wait_code_servers(entries)
        self._launch("dagster-webserver", "dagster", [str(BIN / "dagster-webserver"), "-w", str(workspace),
                                                      "-h", "127.0.0.1", "-p", port], url=url)
        self._launch("dagster-daemon", "dagster", [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)])
        self._wait("dagster", url, [*names, "dagster-webserver", "dagster-daemon"])

    def _wait_code_servers(self, entries: list[dict]) -> None:
        from dagster._grpc.client import DagsterGrpcClient

        deadline = time.monotonic() + self.timeout
        for entry in entries:
            client = DagsterGrpcClient(port=entry["grpc_server"]["port"], host="127.0.0.1")
            while True:
                try:
                    client.ping("ct")
                    client.list_repositories()
                    break
                except Exception as err:  # noqa: BLE001 - not listening yet, or still loading
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"code server {entry['grpc_server']['location_name']}: {err}") from err
                    time.sleep(1)

    def mlflow(self) -> None:
        url = health.url_of("mlflow")
        argv = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(settings.service_port("mlflow")),
                "--workers", "1"]
        env = dict(self.env)
        if settings.profile() == "production":
            # The store's URL through the environment: a password in it never shows in `ps`.
            env["MLFLOW_BACKEND_STORE_URI"] = _pg(ops_config.postgres_database("mlflow"))
            argv += ["--serve-artifacts", "--artifacts-destination", ops_config.mlflow_artifacts_destination()]
            # MLflow's basic-auth app: no request without an account. The platform's own is its admin.
            argv += ["--app-name", "basic-auth"]
            from ct_assets.core.privacy import local_secret

            env |= {"MLFLOW_AUTH_CONFIG_PATH": str(mlflow_auth_config()),
                    "MLFLOW_AUTH_ADMIN_USERNAME": env["MLFLOW_TRACKING_USERNAME"],
                    "MLFLOW_AUTH_ADMIN_PASSWORD": env["MLFLOW_TRACKING_PASSWORD"],
                    # The CSRF protection of the app's login forms signs with it.
                    "MLFLOW_FLASK_SERVER_SECRET_KEY": local_secret("CT_MLFLOW_FLASK_SECRET_KEY", "mlflow-flask.key")}
        else:
            env.pop("MLFLOW_TRACKING_URI", None)
            argv += ["--backend-store-uri", settings.mlflow_tracking_uri(),
                     "--default-artifact-root", settings.mlflow_artifact_root()]
        try:
            self._launch("mlflow", "mlflow", argv, env=env, url=url)
            self._wait("mlflow", url, ["mlflow"])
        finally:
            self.mlflow_settled.set()  # up or failed: the model server's start says which

    def serving(self) -> None:
        url = health.url_of("serving")
        self.mlflow_settled.wait(self.timeout)
        self._launch("serving", "serving", [sys.executable, "-m", "ct_assets.serving", "--port",
                                            str(settings.service_port("serving"))], url=url)
        self._wait("serving", url, ["serving"])

    def airflow(self) -> None:
        url = health.url_of("airflow")
        existing = procs.load("airflow")
        if not (existing and procs.alive(existing.pid, existing.start_ticks)):
            if not ops_config.airflow_python().exists():
                raise RuntimeError(f"the Airflow venv is not installed ({ops_config.airflow_python()}): run "
                                   "`make airflow-install` once (make demo does not install Airflow)")
            dags = settings.ct_home() / "airflow" / "dags"
            subprocess.run([sys.executable, "-m", "airflow_compat", "emit", "--out", str(dags)], env=self.env, cwd=ROOT,
                           check=True, capture_output=True, timeout=300)
            env = {k: v for k, v in self.env.items() if not k.startswith("AIRFLOW")} | {
                "CT_AIRFLOW_PORT": str(settings.service_port("airflow")),
                "CT_DAGSTER_URL": f"{health.url_of('dagster')}/graphql"}
            argv = [str(ops_config.airflow_python()), "-m", "airflow_compat", "start", "--dags", str(dags)]
            if "CT_AIRFLOW_ADMIN_PASSWORD" not in env:  # a given password is never printed: nothing to relay
                # Database, admin user, pools, connections, variables: in the foreground, so that a generated
                # admin password is printed here once and never lands in a log file.
                init = subprocess.run([*argv, "--init-only"], env=env, cwd=ROOT, capture_output=True, text=True,
                                      timeout=600)
                if init.returncode:
                    raise RuntimeError(f"airflow init failed: {(init.stderr or init.stdout)[-1500:]}")
                lines = init.stdout.splitlines()
                for i, line in enumerate(lines):
                    if line.startswith("Airflow user 'admin' created"):
                        self.say("\n".join(lines[i:i + 2]))
            self._launch("airflow", "airflow", argv, env=env, url=url)
        self._wait("airflow", url, ["airflow"])

    def run(self) -> bool:
        if settings.profile() == "production":
            created = ensure_databases()
            if created:
                self.say(f"created PostgreSQL databases: {', '.join(created)}")

        def guarded(component: str) -> None:
            try:
                getattr(self, component)()
            except Exception as err:  # noqa: BLE001 - reported per component
                with self.lock:
                    self.failures[component] = str(err)

        threads = [threading.Thread(target=guarded, args=(c,), name=f"start-{c}") for c in self.components]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return not self.failures


def already_running(components: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for started in procs.running():
        if started.component in components:
            found.setdefault(started.component, []).append(started.name)
    return found


def stop(components: list[str] | None = None) -> list[str]:
    chosen = [s for s in procs.running() if components is None or s.component in components]
    return procs.stop(chosen)
