"""``ct validate``'s outputs: the text a person reads in a CI log, JUnit XML for CI systems, JSON for tools,
and the exit code a policy gives the report."""

from __future__ import annotations

from pathlib import Path

from ct_assets.engines.study import StudyReport

FAIL_ON = ("quarantined", "error", "never")


def exit_code(report: StudyReport, fail_on: str) -> int:
    """1 when the policy fails the study: ``quarantined`` any row would be quarantined or a domain could not
    be judged; ``error`` only a domain that could not be read or judged row by row; ``never`` report only."""
    if fail_on == "never":
        return 0
    if report.errors:
        return 1
    return int(fail_on == "quarantined" and report.quarantined > 0)


def text(report: StudyReport) -> list[str]:
    """Per domain: rows, accepted, quarantined by rule with the first rows' file and row; warnings after."""
    lines = [f"study {report.study} (data cut-off {report.cutoff})"]
    for d in report.domains:
        if not d.present and not d.error:
            lines.append(f"{d.domain}: absent from the study")
            continue
        files = ", ".join(f"{f}: {d.encodings[f]}" if d.encodings.get(f, "parquet") != "parquet" else f
                          for f in d.files) or "no file"
        if d.error:
            lines += [f"{d.domain}: {d.rows:,} rows read, not judged ({files})", f"  ERROR {d.error}"]
            if not d.engine:
                continue
        else:
            lines.append(f"{d.domain}: {d.rows:,} rows, {d.accepted:,} accepted, {d.quarantined:,} quarantined "
                         f"({files}; {d.engine})")
        for o in d.rules:
            if not o.rows:
                continue
            core = f" [{o.core}]" if o.core else ""
            if o.severity == "warning":
                noted = f" ({', '.join(t.split(':')[0] for t in o.failures)})" if o.failures else ""
                lines.append(f"  warning {o.id}{core} ({o.rows:,}): {o.statement}{noted}")
                continue
            lines.append(f"  {o.id}{core}: {o.rows:,} row(s): {o.statement}")
            lines += [f"    {e['file']} row {e['row']}: {'; '.join(e['failed'])}" for e in o.examples]
    rows = sum(d.rows for d in report.domains)
    verdict = f"{report.quarantined:,} of {rows:,} rows would be quarantined"
    lines.append(verdict + (f"; {len(report.errors)} domain(s) could not be judged" if report.errors else ""))
    return lines


def write_json(report: StudyReport, path: Path) -> None:
    from ct_assets.core.lake import write_json as atomic_json

    atomic_json(report.as_dict(), Path(path))


def write_junit(report: StudyReport, path: Path) -> None:
    """One test case per domain and rule (class ``ct.validate.<domain>``, name the rule id and statement): failed
    with the rows' count and the first rows when a row broke it; a domain that could not be judged is an error
    case, an absent domain a skipped one. Warnings pass and say what they noted in system-out."""
    from junitparser import Error, Failure, JUnitXml, Skipped, TestCase, TestSuite

    xml = JUnitXml("ct validate")
    for d in report.domains:
        suite = TestSuite(f"{d.domain} ({Path(report.study).name})")
        classname = f"ct.validate.{d.domain}"
        if d.error:
            case = TestCase(f"{d.domain} judged row by row", classname)
            case.result = [Error(d.error, "StudyError")]
            suite.add_testcase(case)
        elif not d.present:
            case = TestCase(f"{d.domain} delivered", classname)
            case.result = [Skipped(f"{d.domain} is absent from the study")]
            suite.add_testcase(case)
        for o in d.rules:
            case = TestCase(f"{o.id} {o.statement}", classname)
            if o.rows and o.severity == "quarantine":
                failure = Failure(f"{o.rows} row(s) quarantined" + (f" ({o.core})" if o.core else ""), o.id)
                failure.text = "\n".join(f"{e['file']} row {e['row']}: {'; '.join(e['failed'])}" for e in o.examples)
                case.result = [failure]
            elif o.rows:
                case.system_out = f"warning: {o.rows} noted"
            suite.add_testcase(case)
        suite.update_statistics()
        xml.add_testsuite(suite)
    xml.update_statistics()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    xml.write(str(tmp), pretty=True)
    tmp.replace(path)
