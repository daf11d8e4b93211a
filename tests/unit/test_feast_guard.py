"""The online layout the platform writes directly is Feast's private one: an unchecked Feast fails loudly."""

import importlib.metadata

import pytest

from ct_assets.adapters import feast_layout


def test_the_installed_feast_is_a_checked_one():
    feast_layout.require_known_feast()


def test_an_unchecked_feast_fails_before_anything_is_written(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.99.0" if name == "feast" else "1")
    with pytest.raises(feast_layout.UnknownFeast, match=r"Feast 0\.99\.0: .*KNOWN_FEAST"):
        feast_layout.require_known_feast()
    with pytest.raises(feast_layout.UnknownFeast):
        feast_layout.write_latest(store=None, s=None, view=None, latest=None)


def test_feast_loads_without_instrumentation_and_typeguard_is_restored():
    """``load_feast`` skips typeguard's import-time recompilation of Feast's classes (2.7 s a process), leaves
    ``typeguard.typechecked`` as it was, and the store's settings still build."""
    import subprocess
    import sys

    code = ("import time, typeguard; before = typeguard.typechecked; t = time.perf_counter()\n"
            "from ct_assets.adapters.feature_store import load_feast, repo_config, default_settings\n"
            "import tempfile, pathlib\n"
            "load_feast(); import feast.data_source as d\n"
            "assert typeguard.typechecked is before\n"
            "assert 'TypeCheckMemo' not in d.DataSource.__init__.__code__.co_names\n"  # not recompiled
            "repo_config(default_settings(tempfile.mkdtemp()))\n"
            "print('ok', time.perf_counter() - t)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), proc.stderr[-2000:]
