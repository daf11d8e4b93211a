"""A full disk is reported as what it is, with the path, before SQLite's "disk I/O error" minutes into a run.

On a real 2 MiB tmpfs (the tests run as root, as CI does; skipped where mounting is not allowed)."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from ct_assets.core.lake import write_parquet
from tests.conftest import ROOT


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_the_demo_refuses_to_start_on_a_full_disk_naming_it(small_disk):
    home = small_disk / "ct"
    env = os.environ | {"CT_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    proc = subprocess.run([sys.executable, "-m", "ct_assets.demo"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert f"no space left on device: {home} has" in line and "MiB free" in line and "CT_MIN_FREE_MIB" in line


def test_a_write_that_fills_the_disk_names_the_path_and_leaves_nothing(small_disk):
    big = pd.DataFrame({"x": np.random.default_rng(0).random(1_000_000)})  # 8 MB of doubles that do not compress
    target = small_disk / "lake" / "big.parquet"
    with pytest.raises(OSError, match=f"no space left on device: writing {target}"):
        write_parquet(big, target)
    assert list((small_disk / "lake").iterdir()) == []  # no partial file, no temporary file


def test_a_run_fails_at_its_first_step_that_writes_saying_the_disk_is_full(ct_home, monkeypatch):
    import dagster as dg

    from ct_assets.defs.resources import Lake

    @dg.asset
    def anything(lake: Lake) -> None:
        lake.path_for("anything")

    monkeypatch.setenv("CT_MIN_FREE_MIB", str(2**40))  # more than any disk has: as good as full
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([anything], resources={"lake": Lake()}, instance=instance, raise_on_error=False)
        [failure] = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RESOURCE_INIT_FAILURE)
    text = str(failure.dagster_event.event_specific_data.error)
    assert not result.success and "no space left on device" in text and str(ct_home) in text
