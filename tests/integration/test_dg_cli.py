"""Dagster's project CLI as docs/operations.md shows it: from the project root, in the activated venv,
`dg launch --assets ...` materializes from the main code location that `dg` finds in pyproject.toml."""

import os
import subprocess

import dagster as dg

from tests.conftest import ROOT


def test_dg_launch_materializes_from_the_project_root(tmp_path):
    home = tmp_path / "ct"
    script = (f"source .venv/bin/activate && export DAGSTER_HOME={home}/dagster CT_HOME={home} && "
              "mkdir -p $DAGSTER_HOME && dg launch --assets raw_dm && dg list defs --json > $CT_HOME/defs.json")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", str(tmp_path)), "LANG": "C.UTF-8"}
    proc = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("raw_dm"))
    assert event is not None and event.asset_materialization.metadata["dagster/row_count"].value > 0
    listed = (home / "defs.json").read_text()
    assert '"raw_dm"' in listed and '"champion_model"' in listed
