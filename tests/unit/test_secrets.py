"""Secrets are never empty: generated once under a lock, written atomically, refused at start when short.

An empty ``serving.token`` let ``Authorization: Bearer`` with nothing after it through; an empty ``pseudonym.key``
made every pseudonym HMAC("", USUBJID), recomputable by anyone.
"""

import multiprocessing
import os
import stat
import subprocess
import sys

import pandas as pd
import pytest

from ct_assets.core import privacy
from ct_assets.core.privacy import SecretError, local_secret
from tests.conftest import ROOT


def _first_start(home: str, barrier) -> str:
    os.environ["CT_HOME"] = home
    os.environ.pop("CT_SERVING_TOKEN", None)
    barrier.wait()  # every process reaches for the secret at once, on a home that has none
    return local_secret("CT_SERVING_TOKEN", "serving.token")


def test_processes_starting_together_share_one_secret(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(6) as pool:
        for round_ in range(5):
            home = tmp_path / f"home{round_}"
            barrier = manager.Barrier(6)
            got = pool.starmap(_first_start, [(str(home), barrier)] * 6)
            assert len(set(got)) == 1 and len(got[0]) == 64, got
            folder = home / "secrets"
            assert sorted(p.name for p in folder.iterdir()) == [".lock", "serving.token"]  # no temporary file left
            assert stat.S_IMODE((folder / "serving.token").stat().st_mode) == 0o600
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700


@pytest.mark.parametrize("content", ["", "\n", "abc123"])
def test_an_empty_or_short_secret_file_is_an_error_naming_the_file(ct_home, content):
    folder = ct_home / "secrets"
    folder.mkdir(mode=0o700)
    (folder / "pseudonym.key").write_text(content)
    with pytest.raises(SecretError) as err:
        privacy.pseudonymise(pd.Series(["01-701-1015"]))
    assert str(folder / "pseudonym.key") in str(err.value)
    assert content.strip() == "" or content not in str(err.value)  # never the secret itself


def test_a_short_secret_in_the_environment_is_an_error_naming_the_variable(ct_home, monkeypatch):
    monkeypatch.setenv("CT_PSEUDONYM_KEY", "tooshort")
    with pytest.raises(SecretError, match=r"\$CT_PSEUDONYM_KEY holds 8 characters") as err:
        privacy.pseudonym_key()
    assert "tooshort" not in str(err.value)


def test_a_failed_write_leaves_no_secret_file_behind(ct_home, monkeypatch):
    """A full disk while the secret is written: no empty file for the next start to trust."""
    real_fsync = os.fsync

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        local_secret("CT_SERVING_TOKEN", "serving.token")
    assert [p.name for p in (ct_home / "secrets").iterdir()] == [".lock"]
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert len(local_secret("CT_SERVING_TOKEN", "serving.token")) == 64


def test_the_model_server_refuses_to_start_on_an_empty_token_file(ct_home):
    folder = ct_home / "secrets"
    folder.mkdir(mode=0o700)
    (folder / "serving.token").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "CT_SERVING_TOKEN"} | {"CT_HOME": str(ct_home)}
    proc = subprocess.run([sys.executable, "-m", "ct_assets.serving", "--port", "0"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert str(folder / "serving.token") in proc.stderr and "is empty" in proc.stderr
    assert "Traceback" not in proc.stderr
