"""The structure the layer contract (pyproject.toml, `lint-imports`) cannot state: no module reaches into
another's private names, files of one purpose stay short, and `ct -h` is help."""

import ast
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import ROOT

SOURCES = [p for folder in ("ct_assets", "spark", "kfp/ct_kfp", "airflow_compat")
           for p in sorted((ROOT / folder).rglob("*.py"))]
PROJECT = ("ct_assets", "spark", "ct_kfp", "airflow_compat")


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT / "kfp" if path.is_relative_to(ROOT / "kfp") else ROOT).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def test_the_sources_were_found():
    assert len(SOURCES) > 60 and any(p.name == "definitions.py" for p in SOURCES)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_another_modules_private_names(path):
    here = _module(path)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PROJECT) and node.module != here:
            found += [f"line {node.lineno}: {a.name} from {node.module}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_files_stay_under_400_lines(path):
    assert len(path.read_text().splitlines()) <= 400


def test_ct_h_prints_help_and_the_health_check_keeps_its_long_flag():
    from ct_assets.cli import main

    for flag in ("-h", "--help"):
        result = CliRunner().invoke(main, [flag])
        assert result.exit_code == 0, result.output
        assert result.output.startswith("Usage: ") and "--health-check" in result.output and "health-check " in result.output
