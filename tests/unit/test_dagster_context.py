"""The test harness's guard against a dead Dagster instance left in Dagster's context (tests/conftest.py): without it
the next ``Definitions`` fails, with it the run goes on as with no instance entered."""

import subprocess
import sys

import dagster as dg

from tests.conftest import ROOT

LEAVE_A_DEAD_INSTANCE = """
import gc, tempfile
import dagster as dg
from dagster._core.storage.defs_state.base import _current_storage
instance = dg.DagsterInstance.from_config(tempfile.mkdtemp())
_current_storage.set(instance.defs_state_storage)  # as a finalized context restores an earlier instance's storage
del instance
gc.collect()
"""


def _materialize() -> bool:
    @dg.asset
    def one():
        return 1

    return dg.materialize([one]).success


def test_without_the_guard_dagster_fails_on_a_dead_instance_in_context():
    code = LEAVE_A_DEAD_INSTANCE + "@dg.asset\ndef one():\n    return 1\ndg.materialize([one])\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode != 0 and "undefined DagsterInstance weakref" in proc.stderr, proc.stderr[-1500:]


def test_with_the_guard_a_dead_instance_in_context_reads_as_none():
    from dagster._core.storage.defs_state.base import _current_storage

    token = _current_storage.set(None)
    try:
        exec(LEAVE_A_DEAD_INSTANCE, {})
        assert _materialize()
    finally:
        _current_storage.reset(token)
