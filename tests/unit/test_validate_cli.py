"""`ct validate` as a data manager runs it: the installed command on a study folder, no Dagster, no services."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from junitparser import JUnitXml

from tests.studies import study_with_bad_rows

CT = Path(sys.executable).with_name("ct")


def _ct(*args, cwd=None, **extra):
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8", **extra}
    return subprocess.run([str(CT), "validate", *map(str, args)], capture_output=True, text=True, timeout=300,
                          env=env, cwd=cwd)


@pytest.fixture(scope="module")
def bad_study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("delivery") / "study"
    return folder, study_with_bad_rows(folder)


def test_a_study_with_bad_rows_fails_naming_rule_file_and_row(bad_study, tmp_path):
    folder, expected = bad_study
    run = _ct(folder, "--junit", tmp_path / "out.xml", "--json", tmp_path / "out.json", "--cutoff", "2026-11-30")
    assert run.returncode == 1, run.stderr
    for domain, rows in expected.items():
        for file, row, rule in rows:
            assert any(line.strip().startswith(f"{file} row {row}: {rule} ") for line in run.stdout.splitlines()), \
                (domain, file, row, rule, run.stdout)
    assert "4 of " in run.stdout.splitlines()[-3]  # the verdict line, before the reports' paths

    report = json.loads((tmp_path / "out.json").read_text())
    by_domain = {d["domain"]: d for d in report["domains"]}
    assert report["quarantined"] == 4 and report["errors"] == []
    for domain, rows in expected.items():
        d = by_domain[domain]
        assert d["quarantined"] == len(rows) and d["rows"] == d["accepted"] + d["quarantined"]
        broken = {o["id"]: o for o in d["rules"] if o["rows"] and o["severity"] == "quarantine"}
        assert set(broken) == {rule for _, _, rule in rows}
    assert by_domain["VS"]["engine"].startswith("streamed") and not by_domain["LB"]["present"]

    xml = JUnitXml.fromfile(str(tmp_path / "out.xml"))
    cases = [(suite.name, case.name, case.classname, case.result) for suite in xml for case in suite]
    failed = {name.split(" ")[0] for _, name, _, result in cases if result and type(result[0]).__name__ == "Failure"}
    assert failed == {"CT-DM-0031", "CT-VS-0012", "CT-VS-0010", "CT-AE-0042"}
    assert xml.failures == 4 and xml.errors == 0 and xml.skipped == 4  # LB, DS, EX and SV are absent
    assert any(classname == "ct.validate.LB" and result and type(result[0]).__name__ == "Skipped"
               for _, _, classname, result in cases)
    assert "DM-" not in run.stdout.replace("CT-DM-", "")  # no subject id in the log (pilot ids look like 01-701-1015)


def test_policy_and_domain_selection(bad_study, tmp_path):
    folder, _ = bad_study
    never = _ct(folder, "--fail-on", "never", "--domains", "vs,ae")
    assert never.returncode == 0 and "VS:" in never.stdout and "\nDM:" not in never.stdout
    assert _ct(folder, "--fail-on", "error").returncode == 0  # rows quarantined, but every domain judged
    wrong = _ct(folder, "--domains", "XX")
    assert wrong.returncode == 2 and "unknown domain(s) XX" in wrong.stderr
    for option, value, said in (("--cutoff", "2014-02-30", "YYYY-MM-DD"), ("--encoding", "nope", "unknown encoding")):
        usage = _ct(folder, option, value)  # a value that would silently change the rules is a usage error
        assert usage.returncode == 2 and said in usage.stderr, usage.stderr


def test_it_needs_no_platform_home(bad_study, tmp_path):
    """A CI runner installs the package where it cannot write: ct validate touches no $CT_HOME and no key."""
    folder, _ = bad_study
    home = tmp_path / "home"
    run = _ct(folder, "--fail-on", "never", "--domains", "DM", CT_HOME=str(home))
    assert run.returncode == 0, run.stderr
    assert not home.exists()


def test_a_domain_that_cannot_be_judged_is_an_error(tmp_path):
    import pandas as pd

    from tests.studies import pilot_dir

    folder = tmp_path / "study"
    folder.mkdir()
    pd.read_parquet(pilot_dir() / "dm.parquet").to_parquet(folder / "dm.parquet")
    pd.read_parquet(pilot_dir() / "vs.parquet").head(30).drop(columns=["VSTESTCD"]).to_parquet(folder / "vs.parquet")
    (folder / "ae.xpt").write_bytes(b"HEADER RECORD*******LIBRARY but cut short")
    run = _ct(folder, "--fail-on", "error", "--junit", tmp_path / "out.xml")
    assert run.returncode == 1
    assert "ERROR not judged row by row: CT-VS-0013 column_in_dataframe (VSTESTCD)" in run.stdout
    assert "ERROR AE: cannot read ae.xpt" in run.stdout
    assert JUnitXml.fromfile(str(tmp_path / "out.xml")).errors == 2


DOCS = Path(__file__).resolve().parents[2] / "docs"
VENV_PATH = f"{CT.parent}:/usr/local/bin:/usr/bin:/bin"


def _delivery_repo(root: Path, study: Path) -> Path:
    """A repository that receives deliveries, the study at studies/ABC-123 as the documented files expect."""
    import shutil

    shutil.copytree(study, root / "studies" / "ABC-123")
    return root


@pytest.mark.parametrize("good", [True, False])
def test_the_documented_github_workflow_runs_its_validation_step_as_written(bad_study, tmp_path, good):
    import yaml

    from tests.studies import pilot_dir

    workflow = DOCS / "ci" / "validate-study.yml"
    schema = subprocess.run([str(CT.with_name("check-jsonschema")), "--builtin-schema", "vendor.github-workflows",
                             str(workflow)], capture_output=True, text=True)
    assert schema.returncode == 0, schema.stdout + schema.stderr
    job = yaml.safe_load(workflow.read_text())["jobs"]["validate"]
    step = next(s for s in job["steps"] if s.get("name") == "Validate the delivery")
    repo = _delivery_repo(tmp_path, pilot_dir() if good else bad_study[0])
    env = {"PATH": VENV_PATH, "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8", **job["env"]}
    run = subprocess.run(["bash", "-eo", "pipefail", "-c", step["run"]], cwd=repo, env=env, capture_output=True,
                         text=True, timeout=300)  # the step as GitHub runs it (`ct` installed by the step before)
    assert run.returncode == (0 if good else 1), run.stdout + run.stderr
    xml = JUnitXml.fromfile(str(repo / job["steps"][-2]["with"]["report_paths"]))
    assert xml.failures == (0 if good else 4) and xml.tests > 100 * good
    assert json.loads((repo / "reports/validation.json").read_text())["quarantined"] == (0 if good else 4)


def test_the_documented_pre_commit_hook_stops_a_commit_of_a_bad_delivery(bad_study, tmp_path):
    import shutil

    from tests.studies import pilot_dir

    env = {"PATH": VENV_PATH, "HOME": str(tmp_path), "LANG": "C.UTF-8", "PRE_COMMIT_HOME": str(tmp_path / "cache"),
           "GIT_AUTHOR_NAME": "dm", "GIT_AUTHOR_EMAIL": "dm@example.org", "GIT_COMMITTER_NAME": "dm",
           "GIT_COMMITTER_EMAIL": "dm@example.org"}

    def git(*args, cwd):
        return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)

    outcomes = {}
    for name, study in (("good", pilot_dir()), ("bad", bad_study[0])):
        repo = _delivery_repo(tmp_path / name, study)
        shutil.copy(DOCS / "ci" / "pre-commit-config.yaml", repo / ".pre-commit-config.yaml")
        git("init", "-q", cwd=repo)
        git("add", "-A", cwd=repo)
        hook = subprocess.run([str(CT.with_name("pre-commit")), "run", "--all-files"], cwd=repo, env=env,
                              capture_output=True, text=True, timeout=300)
        outcomes[name] = hook
    assert outcomes["good"].returncode == 0, outcomes["good"].stdout
    assert outcomes["bad"].returncode == 1 and "CT-VS-0012" in outcomes["bad"].stdout
    assert "SDTM rules (ct validate)" in outcomes["bad"].stdout and "Failed" in outcomes["bad"].stdout


def test_the_readme_line_runs_as_written(tmp_path):
    """The quick start's `ct validate` line, from the project root in a plain shell."""
    import re

    root = DOCS.parent
    line = next(m.group(1) for m in re.finditer(r"^(\.venv/bin/ct validate[^#\n]*?)\s*#", (root / "README.md").read_text(), re.M))
    out = root / line.split("--junit ")[1].split()[0]
    try:
        run = subprocess.run(["bash", "-c", line], cwd=root, capture_output=True, text=True, timeout=300,
                             env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"),
                                  "LANG": "C.UTF-8"})
        assert run.returncode == 0, run.stdout + run.stderr
        assert "cdiscpilotsdtm" in run.stdout and "0 of 95,236 rows would be quarantined" in run.stdout
        assert JUnitXml.fromfile(str(out)).failures == 0
    finally:
        out.unlink(missing_ok=True)


def test_a_study_without_dm_cannot_be_judged(tmp_path):
    import pandas as pd

    from tests.studies import pilot_dir

    folder = tmp_path / "study"
    folder.mkdir()
    pd.read_parquet(pilot_dir() / "vs.parquet").head(30).to_parquet(folder / "vs.parquet")
    run = _ct(folder, "--fail-on", "error", "--json", tmp_path / "out.json")
    assert run.returncode == 1
    assert "has no DM domain: subjects cannot be known" in run.stdout
    assert "VS: 30 rows read, not judged (vs.parquet)" in run.stdout
    errors = json.loads((tmp_path / "out.json").read_text())["errors"]
    assert [e.split(":")[0] for e in errors] == ["DM", "VS"]
