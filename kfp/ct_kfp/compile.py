"""Compile every pipeline to KFP IR YAML (what a cluster user uploads), and check committed files are current."""

from __future__ import annotations

import difflib
import tempfile
from pathlib import Path


def compile_all(out: Path) -> list[Path]:
    from ct_kfp.pipelines import PIPELINES
    from kfp import compiler

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, pipeline in PIPELINES.items():
        path = out / f"{name}_pipeline.yaml"
        compiler.Compiler().compile(pipeline, str(path))
        paths.append(path)
    return paths


def _documents(path: Path) -> list:
    import yaml

    return list(yaml.safe_load_all(path.read_text()))


def check(committed: Path) -> list[str]:
    """Differences between ``committed`` and a fresh compile, one line per stale or missing file."""
    with tempfile.TemporaryDirectory() as tmp:
        problems = []
        for fresh in compile_all(Path(tmp)):
            old = committed / fresh.name
            if not old.exists():
                problems.append(f"{old}: missing (run `python -m ct_kfp compile`)")
                continue
            # Compared as data: the compiler writes protobuf maps (and its header comment) in hash order.
            if _documents(old) == _documents(fresh):
                continue
            diff = list(difflib.unified_diff(old.read_text().splitlines(), fresh.read_text().splitlines(), lineterm="", n=0))
            if diff:
                problems.append(f"{old}: stale (run `python -m ct_kfp compile`); first differences: "
                                + " | ".join(diff[2:6]))
        return problems
