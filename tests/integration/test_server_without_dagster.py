"""The model server installs and runs without Dagster: a fresh virtual environment holding the package alone
(``--no-deps``) and the ``serve`` extra of pyproject.toml, in which neither Dagster nor Spark can be imported,
serves the champion of a real MLflow registry (/health and /ready answer, a prediction succeeds). What
deploy/serving.Dockerfile builds, without a container engine. uv installs from its cache: seconds."""

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ct_assets.core.registry import CHAMPION
from tests.conftest import ROOT
from tests.integration.test_serving import _instance, key, trained_registry
from tests.kafka_broker import free_port
from tests.procs import stop_group

SERVE = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["serve"]


def _uv() -> str:
    beside = Path(sys.executable).with_name("uv")
    found = str(beside) if beside.exists() else shutil.which("uv")
    if not found:
        pytest.skip("uv is not installed (the test extra's environment has it)")
    return found


def _run(*cmd, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def serve_venv(tmp_path_factory) -> Path:
    """The venv's python. The package is built from a copy of its sources (a build writes into the tree)."""
    root = tmp_path_factory.mktemp("serve-venv")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "ct_assets", src / "ct_assets", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    uv, env = _uv(), dict(os.environ, UV_NATIVE_TLS="1")
    venv = root / "venv"
    python = venv / "bin" / "python"
    for cmd in ([uv, "venv", "--quiet", "--python", sys.executable, venv],
                [uv, "pip", "install", "--quiet", "--python", python, *SERVE],
                [uv, "pip", "install", "--quiet", "--python", python, "--no-deps", src]):
        proc = _run(*cmd, env=env, cwd=root)
        assert proc.returncode == 0, f"{cmd}: {proc.stdout}{proc.stderr}"
    return python


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """A registry (MLflow on SQLite under a private $CT_HOME) whose champion is version 1, trained here."""
    with trained_registry(tmp_path_factory.mktemp("serve-alone") / "ct", (1.0,)) as (home, uri, _, ts):
        yield home, uri, ts


def test_neither_dagster_nor_spark_is_installed(serve_venv):
    for module in ("dagster", "pyspark", "dagster_pyspark"):
        proc = _run(serve_venv, "-c", f"import {module}", cwd=serve_venv.parent)
        assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr, (module, proc.stderr[-500:])
    where = _run(serve_venv, "-c", "import ct_assets.serving.server as s; print(s.__file__)", cwd=serve_venv.parent)
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(serve_venv.parent.parent)), where.stdout  # the installed copy


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_the_server_starts_and_predicts_from_a_venv_without_dagster(serve_venv, champion, tmp_path):
    home, uri, ts = champion
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DAGSTER_HOME", "CT_SERVING_TOKEN")}
    env |= {"CT_HOME": str(home), "MLFLOW_TRACKING_URI": uri}
    out = tmp_path / "server.log"
    with open(out, "w") as log:  # run from outside the checkout: the venv's copy of ct_assets, nothing else
        proc = subprocess.Popen([str(serve_venv), "-m", "ct_assets.serving", "--port", str(port)], cwd=tmp_path,
                                env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, f"not ready in 90 s: {out.read_text()}"
            try:
                status, body = _get(url + "/ready")
            except (OSError, ValueError):
                status, body = None, {}
            if status == 200:
                break
            time.sleep(0.3)
        assert body == {"ready": True, "champion_version": 1}
        assert _get(url + "/health") == (200, {"status": "ok"})
        request = urllib.request.Request(url + "/predict", json.dumps(_instance(ts.iloc[0], key(7))).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as resp:
            assert resp.status == 200
            answer = json.loads(resp.read())
        assert answer["alias"] == CHAMPION and answer["version"] == 1 and 0.0 < answer["risk"] < 1.0, answer
        assert answer["subject_key"] == key(7)
    finally:
        stop_group(proc)
