"""`ct`: operate the platform like a service.

    ct start [--only dagster,airflow,mlflow,serving]    background services, pid files and logs in $CT_HOME/run
    ct health-check [--json]                            each component's real health; exit 1 when one fails
    ct summary [--json]                                 runs, schedules, models, drift, quality, Airflow DAGs
    ct open | ct visualize | ct stop | ct restart

The legacy manager's flags still work and combine: `ct -s --health-check -o` (start, health-check, open;
`-h` prints this help),
`--summary`, `--visualize`. $CT_PROFILE=production switches to PostgreSQL and separate Dagster
processes (see ct_assets/ops/stack.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ct_assets import settings
from ct_assets.ops import config as ops_config
from ct_assets.ops import health

ALL = list(health.COMPONENTS)


def _components(only: str | None) -> list[str]:
    if not only:
        return ALL
    chosen = [c.strip() for c in only.split(",") if c.strip()]
    unknown = sorted(set(chosen) - set(ALL))
    if unknown:
        raise click.BadParameter(f"unknown component(s) {', '.join(unknown)}; choose from {', '.join(ALL)}",
                                 param_hint="--only")
    return [c for c in ALL if c in chosen]


def _running_components() -> list[str]:
    from ct_assets.ops import procs

    return sorted({s.component for s in procs.running()}, key=ALL.index)


ONLY = click.option("--only", default=None, metavar="LIST", help=f"comma-separated subset of: {','.join(ALL)}")


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-s", "--start", "do_start", is_flag=True, help="legacy flag: ct start")
@click.option("--health-check", "do_health", is_flag=True, help="legacy flag: ct health-check")
@click.option("--summary", "do_summary", is_flag=True, help="legacy flag: ct summary")
@click.option("-o", "--open", "do_open", is_flag=True, help="legacy flag: ct open")
@click.option("--visualize", "do_visualize", is_flag=True, help="legacy flag: ct visualize")
@click.option("--level", default=None, hidden=True, help="accepted and ignored (the legacy --level 5)")
@click.option("--only", "root_only", default=None, metavar="LIST", help="with the legacy flags: the components to "
              "start and check")
@click.pass_context
def main(ctx: click.Context, do_start, do_health, do_summary, do_open, do_visualize, level, root_only) -> None:
    """Operate the clinical-trials platform: start, check, summarise, open and draw its services."""
    from ct_assets.ops.stack import apply_env

    if ctx.invoked_subcommand == "validate":  # a study folder only: no home, no services
        return
    settings.ct_home()
    apply_env()
    if ctx.invoked_subcommand:
        return
    steps = [(do_start, start), (do_health, health_check), (do_summary, summary), (do_open, open_),
             (do_visualize, visualize)]
    if not any(flag for flag, _ in steps):
        click.echo(ctx.get_help())
        return
    code = 0
    for flag, command in steps:
        if flag:
            try:
                ctx.invoke(command, only=root_only) if command in (start, health_check) else ctx.invoke(command)
            except SystemExit as exit_:
                code = code or (exit_.code or 0)
    ctx.exit(code)


@main.command()
@ONLY
@click.option("--timeout", default=300.0, show_default=True, help="seconds to wait for each component to be healthy")
def start(only: str | None = None, timeout: float = 300.0) -> None:
    """Start the local stack in the background and wait until each component is healthy; print the URLs.

    Idempotent: what already runs is reported, not started twice."""
    from ct_assets.ops.stack import Starter, already_running

    components = _components(only)
    running = already_running(components)
    for component, names in running.items():
        click.echo(f"{component}: already running ({', '.join(names)})")
    missing = [c for c in components if c not in running]
    click.echo(f"profile {settings.profile()}; " + (f"starting {', '.join(missing)} (logs in {ops_config.run_dir()})"
                                                    if missing else "everything asked for already runs"))
    starter = Starter(components, timeout, say=click.echo)
    ok = starter.run()
    for component in components:
        if component in starter.results:
            click.echo(f"  {component:<8} up    {starter.results[component]}")
        else:
            click.echo(f"  {component:<8} FAILED {starter.failures.get(component, '')}")
    sys.exit(0 if ok else 1)


@main.command()
@ONLY
def stop(only: str | None = None) -> None:
    """Stop what `ct start` started (by pid, whole process groups)."""
    from ct_assets.ops.stack import stop as stop_stack

    stopped = stop_stack(_components(only) if only else None)
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@main.command()
@ONLY
@click.option("--timeout", default=300.0, show_default=True)
@click.pass_context
def restart(ctx: click.Context, only: str | None = None, timeout: float = 300.0) -> None:
    """Stop, then start again."""
    ctx.invoke(stop, only=only)
    ctx.invoke(start, only=only, timeout=timeout)


@main.command("health-check")
@ONLY
@click.option("--json", "as_json", is_flag=True, help="one JSON document: the checks and the verdict")
def health_check(only: str | None = None, as_json: bool = False) -> None:
    """Each component's real health as a table; exit 0 when all pass, 1 when one fails.

    Checks the components `ct start` started (or those of --only; all when nothing was started) and
    names the ones it did not check, so that "healthy" never hides a component that is not running."""
    components = _components(only) if only else (_components_started() or ALL)
    unchecked = [c for c in ALL if c not in components]
    checks = health.check(components)
    ok = all(c.ok for c in checks)
    if as_json:
        click.echo(json.dumps({"healthy": ok, "checked": components, "not_checked": unchecked,
                               "checks": [c.as_dict() for c in checks]}, indent=1))
    else:
        click.echo(health.table(checks))
        why = "not asked for (--only)" if only else "not started by ct start"
        for component in unchecked:
            click.echo(f"--    {component}: {why}, not checked")
        failing = sorted({c.component for c in checks if not c.ok})
        verdict = f"healthy: {', '.join(components)}" if ok else f"UNHEALTHY: {', '.join(failing)}"
        click.echo(verdict + (f" (not checked: {', '.join(unchecked)})" if unchecked else ""))
    sys.exit(0 if ok else 1)


def _components_started() -> list[str]:
    from ct_assets.ops import procs

    return sorted({s.component for s in procs.recorded()}, key=ALL.index)


@main.command()
@click.option("--json", "as_json", is_flag=True)
def summary(as_json: bool = False) -> None:
    """The platform's state in one screen: jobs, schedules and sensors, models, drift, quality, Airflow DAGs."""
    from ct_assets.ops.summary import render
    from ct_assets.ops.summary import summary as read

    state = read(_running_components())
    click.echo(json.dumps(state, indent=1, default=str) if as_json else render(state))


@main.command("open")
@click.option("--no-browser", is_flag=True, help="print the URLs only")
def open_(no_browser: bool = False) -> None:
    """The URLs of every running UI (opened in a browser where one exists)."""
    import webbrowser

    from ct_assets.ops import procs

    urls = [(s.component, s.url) for s in procs.running() if s.url]
    if not urls:
        click.echo("nothing is running: ct start")
        return
    try:
        browser = None if no_browser else webbrowser.get()
    except webbrowser.Error:
        browser = None
    for component, url in urls:
        click.echo(f"{component:<8} {url}")
        if browser:
            browser.open(url)


@main.command()
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="SVG to write (default $CT_HOME/reports/platform.svg); the Mermaid text goes next to it (.mmd)")
def visualize(out: str | None = None) -> None:
    """The asset graph and the running services as a picture (SVG, and Mermaid text)."""
    from pathlib import Path

    from ct_assets.ops import procs
    from ct_assets.ops.visualize import write

    services = {}
    for s in procs.recorded():
        services[s.name] = procs.alive(s.pid, s.start_ticks)
    path, mmd = write(Path(out) if out else settings.reports_dir() / "platform.svg", services)
    click.echo(f"{path}\n{mmd}")



def _checked(check, value):
    """An option's value through ``check``: a ValueError is a usage error (exit 2), not a data problem."""
    try:
        return value if value is None else check(value, "the value")
    except (ValueError, LookupError) as err:
        raise click.BadParameter(str(err)) from None


def _encoding(name: str, _source: str) -> str:
    import codecs

    codecs.lookup(name)  # LookupError: unknown encoding
    return name


@main.command()
@click.argument("study_dir", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--domains", default=None, metavar="LIST", help="comma-separated domains to report (default: all); "
              "DM is always read, since the other domains' subjects must pass it")
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write JUnit XML: one test case per domain and rule")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write the full report as JSON")
@click.option("--fail-on", type=click.Choice(["quarantined", "error", "never"]), default="quarantined", show_default=True,
              help="exit 1 when any row would be quarantined (or a domain cannot be judged); 'error': only when a "
              "domain cannot be read or judged row by row; 'never': report only")
@click.option("--cutoff", default=None, metavar="YYYY-MM-DD", callback=lambda _c, _p, v: _checked(settings.checked_cutoff, v),
              help="data cut-off: later dates fail (default $CT_DATA_CUTOFF, else today)")
@click.option("--encoding", default=None, callback=lambda _c, _p, v: _checked(_encoding, v),
              help="text encoding of CSV and XPT files (default: UTF-8, then cp1252, then latin-1)")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="processes for the findings domains "
              "(default: one per core)")
@click.option("--examples", type=click.IntRange(min=0), default=3, show_default=True,
              help="quarantined rows shown per rule (source file and row; never a subject id or a value)")
def validate(study_dir: Path | None, domains: str | None, junit: Path | None, json_path: Path | None, fail_on: str,
             cutoff: str | None, encoding: str | None, workers: int | None, examples: int) -> None:
    """Check the SDTM study in STUDY_DIR (default: $CT_STUDY_DIR, else the bundled CDISC pilot) by the rules of
    the validated assets, without Dagster or services: per domain the rows, the accepted, and the quarantined by
    rule id (docs/rules.md) with their source file and row. Exit 1 by the --fail-on policy."""
    from ct_assets.core.sdtm import DOMAINS, study_path
    from ct_assets.engines.study import validate_folder
    from ct_assets.ops import validate as out

    chosen = None
    if domains:
        chosen = [d.strip().upper() for d in domains.split(",") if d.strip()]
        unknown = sorted(set(chosen) - set(DOMAINS))
        if unknown:
            raise click.BadParameter(f"unknown domain(s) {', '.join(unknown)}; choose from {', '.join(DOMAINS)}",
                                     param_hint="--domains")
    report = validate_folder(study_path(str(study_dir) if study_dir else None), chosen, cutoff, encoding, workers, examples,
                             progress=lambda line: click.echo(f"reading {line}", err=True))
    for line in out.text(report):
        click.echo(line)
    if junit:
        out.write_junit(report, junit)
        click.echo(f"JUnit report: {junit}")
    if json_path:
        out.write_json(report, json_path)
        click.echo(f"JSON report: {json_path}")
    sys.exit(out.exit_code(report, fail_on))


@main.group()
def audit() -> None:
    """The audit trail: verify its hash chain, trace a model version from sources to serving."""


@audit.command("verify")
def audit_verify() -> None:
    """Recompute the keyed hash chain of $CT_HOME/audit/audit.jsonl, compare it with its checkpoint and the registry's
    aliases; exit 1 naming every broken line, removed entry and unexplained alias."""
    from ct_assets.ops import review

    raise SystemExit(review.main(["verify"]))


@audit.command("trace")
@click.argument("model")
@click.argument("version")
@click.option("--out", default=None, help="report path (default $CT_HOME/reports/trace-<model>-<version>.md)")
def audit_trace(model: str, version: str, out: str | None = None) -> None:
    """A version's chain from the source files to serving, written as a Markdown report."""
    from ct_assets.ops import review

    raise SystemExit(review.main(["trace", model, version] + (["--out", out] if out else [])))


@main.command()
@click.argument("model")
@click.argument("version")
@click.option("--reason", required=True, help="why it is approved (recorded)")
@click.option("--comment", default="", help="free text recorded with the approval")
def approve(model: str, version: str, reason: str, comment: str = "") -> None:
    """Approve MODEL VERSION for deployment: a signed, time-stamped record bound to the version's provenance
    (required before promotion in the production profile). The approver is the authenticated operator: the OS
    user, or in the production profile the registry's identity ($MLFLOW_TRACKING_USERNAME)."""
    from ct_assets.ops import review

    raise SystemExit(review.main(["approve", model, version, "--reason", reason, "--comment", comment]))


if __name__ == "__main__":
    main()
