"""What a reviewer asks of the model lifecycle: is the audit trail intact, where did this version come
from, who approved it. (Also `ct audit ...` and `ct approve ...`.)

    python -m ct_assets.ops.review verify                                   # recompute the audit log's hash chain
    python -m ct_assets.ops.review trace adverse-event-predictor 3          # sources -> data -> model -> approval -> served
    python -m ct_assets.ops.review approve adverse-event-predictor 3 --reason "reviewed the holdout report"
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

from ct_assets import settings
from ct_assets.core import audit


def logged_tags(name: str, version: str) -> dict[str, str]:
    """The ct.* tags the audit log recorded when the version was registered (none for versions registered before
    the log kept them)."""
    recorded = audit.find("model_registered", f"{name}/{version}")
    return dict((recorded[-1].get("after") or {}).get("tags") or {}) if recorded else {}


def alias_problems(client) -> list[str]:
    """Every alias of every registered model that the audit log's last alias_set for it does not explain: an alias
    moved, added or removed behind the platform's back."""
    last: dict[str, int] = {}
    for e in audit.find("alias_set"):
        last[e["object"]] = e["after"]
    problems, seen = [], set()
    for model in client.search_registered_models():
        for alias, version in (model.aliases or {}).items():
            obj = f"{model.name}@{alias}"
            seen.add(obj)
            if obj not in last:
                problems.append(f"{obj} is version {version}, but the audit log never set it (set outside the platform)")
            elif str(last[obj]) != str(version):
                problems.append(f"{obj} is version {version}, but the audit log's last alias_set made it {last[obj]} "
                                "(moved outside the platform)")
    names = {m.name for m in client.search_registered_models()}
    for obj, version in last.items():
        if obj not in seen and obj.split("@")[0] in names and version is not None:
            problems.append(f"{obj} is not set, but the audit log's last alias_set made it {version} (removed outside the platform)")
    return problems


def operator() -> str:
    """Who is acting: in the production profile the identity the registry authenticates ($MLFLOW_TRACKING_USERNAME),
    else the OS user. Never free text."""
    from ct_assets.ops.stack import MLFLOW_SERVICE_ACCOUNT

    user = os.environ.get("MLFLOW_TRACKING_USERNAME") if settings.profile() == "production" else None
    # The platform's own account signs nothing: without an operator's account, the OS user approves.
    return f"mlflow:{user}" if user and user != MLFLOW_SERVICE_ACCOUNT else audit.os_actor()


def _sources(client, run_id: str, tags: dict[str, str], out_dir: Path) -> dict[str, str] | None:
    """Each source file's SHA-256: from the ``ct.sources`` tag, or from the run's listing artifact when the tag gave
    way to it (many files), checked against ``ct.sources_sha256``; None when that listing is missing or altered."""
    import hashlib

    from mlflow.exceptions import MlflowException

    if "ct.sources" in tags or "ct.sources_artifact" not in tags:
        return json.loads(tags.get("ct.sources", "{}"))
    try:
        listing = json.loads(Path(client.download_artifacts(run_id, tags["ct.sources_artifact"], str(out_dir))).read_text())
    except (MlflowException, OSError, ValueError):  # not there, unreadable or not JSON: reported as missing
        return None
    digest = hashlib.sha256(json.dumps(listing, sort_keys=True).encode()).hexdigest()
    return listing if digest == tags.get("ct.sources_sha256") else None


def trace(client, name: str, version: str, out_dir: Path) -> str:
    """The chain from source files to the served version, as Markdown a reviewer can file (its plot is
    copied into ``out_dir``, next to the report)."""
    from ct_assets.core.registry import CHALLENGER, CHAMPION, alias_version

    mv = client.get_model_version(name, version)
    tags = mv.tags
    run = client.get_run(mv.run_id) if mv.run_id else None
    metrics = {k: v for k, v in (run.data.metrics if run else {}).items() if k.startswith("holdout_")}
    served = [alias for alias in (CHAMPION, CHALLENGER, "previous_champion")
              if (v := alias_version(client, name, alias)) is not None and str(v.version) == str(version)]
    events = [e for e in audit.entries() if e["object"] == f"{name}/{version}" or
              (e["action"] == "alias_set" and e["after"] == int(version) and e["object"].startswith(f"{name}@"))]
    logged = logged_tags(name, version)

    def tag(key: str, default: str = "?") -> str:
        """A provenance tag as the registry has it, marked where it differs from what the audit log recorded."""
        value = tags.get(key, default)
        if key in logged and logged[key] != value:
            return f"`{value}` **(differs from the audit log, which recorded `{logged[key]}` at registration)**"
        return f"`{value}`"

    lines = [f"# {name} version {version}: trace", "",
             f"- Registered: {dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, dt.UTC).isoformat()}",
             f"- MLflow run: {mv.run_id}", f"- Aliases now: {', '.join(served) or 'none'}",
             f"- Provenance digest: {tag('ct.provenance', 'none')}", "", "## Sources", ""]
    for key in ("ct.sources", "ct.sources_sha256"):
        if key in logged and logged[key] != tags.get(key):
            lines += ["**The registry's sources differ from those the audit log recorded at registration.**", ""]
            break
    sources = _sources(client, mv.run_id, tags, out_dir)
    if sources is None:
        lines += [f"**The listing of the {tags.get('ct.sources_files', '?')} source files "
                  f"(`{tags.get('ct.sources_artifact')}` of MLflow run {mv.run_id}) is missing or does not match its "
                  f"digest {tag('ct.sources_sha256')}.**", ""]
    lines += ["| file | SHA-256 |", "|---|---|"]
    lines += [f"| {f} | `{d}` |" for f, d in (sources or {}).items()]
    lines += ["", "## Data and rules", "",
              f"- Training set SHA-256: {tag('ct.training_set_sha256')}",
              f"- Validation rule-set version: {tag('ct.ruleset_version')}",
              f"- Quarantined rows: {tag('ct.quarantined')}",
              f"- Split seed {tag('ct.split_seed')}, holdout subjects SHA-256 {tag('ct.holdout_sha256')}",
              "", "## Code", "", f"- Git commit: {tag('ct.git_commit') if 'ct.git_commit' in tags else tag('ct.package_version')}"
              f" (uncommitted changes: {tag('ct.git_dirty')})",
              f"- Stage code versions: {tag('ct.asset_code_versions')}", f"- Libraries: {tag('ct.libraries')}",
              "", "## Holdout evaluation", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items())]
    artifacts = [a.path for a in client.list_artifacts(mv.run_id, "evaluation")] if run else []
    for path in artifacts:
        if path.endswith(".png"):  # the calibration plot, next to the report
            local = Path(client.download_artifacts(mv.run_id, path, str(out_dir)))
            lines += ["", f"![calibration]({local.relative_to(out_dir)})", f"(`{path}`, MLflow run {mv.run_id})"]
        elif path.endswith("subgroups.json"):
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                table = json.loads(Path(client.download_artifacts(mv.run_id, path, tmp)).read_text())
            rows = [dict(zip(table["columns"], r)) for r in table["data"]]
            if rows:
                cols = list(rows[0])
                lines += ["", "### Subgroups", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                lines += ["| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |"
                          for r in rows]
    lines += ["", "## Lifecycle (audit log)", "", "| time (UTC) | actor | action | object | reason |", "|---|---|---|---|---|"]
    lines += [f"| {e['time']} | {e['actor']} | {e['action']} | {e['object']} | {e['reason']} |" for e in events]
    return "\n".join(lines) + "\n"


def _client(required: bool = True):
    """The registry's client; None when ``required`` is False and the embedded store was never created."""
    from ct_assets.core.faults import probe_mlflow
    from ct_assets.defs.resources import MlflowSettings

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # progress bars around the report are noise
    tracking = MlflowSettings()
    uri = tracking.uri()
    if not required and uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return None
    probe_mlflow(uri)  # a server that does not answer: say so in seconds, not after minutes of retries
    return tracking.client()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ct_assets.ops.review", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("verify", help="recompute the audit log's hash chain; exit 1 naming each broken line")
    t = sub.add_parser("trace", help="a version's chain from source files to serving, as a Markdown report")
    t.add_argument("model")
    t.add_argument("version")
    t.add_argument("--out", help="report path (default $CT_HOME/reports/trace-<model>-<version>.md)")
    a = sub.add_parser("approve", help="sign an approval for deployment, bound to the version's provenance")
    a.add_argument("model")
    a.add_argument("version")
    a.add_argument("--reason", required=True)
    a.add_argument("--comment", default="", help="free text recorded with the approval (the approver is always the "
                                                 "authenticated operator)")
    args = parser.parse_args(argv)

    if args.command == "verify":
        from ct_assets.core.faults import ServiceUnavailable

        problems, unchecked = audit.verify(), []
        try:
            client = _client(required=False)
            if client is not None:
                problems += alias_problems(client)
        except ServiceUnavailable as err:  # the chain is judged; the aliases could not be: not verified
            unchecked.append(f"the registry's aliases were not checked: {err}")
        for problem in problems + unchecked:
            print(problem)
        verdict = "CHAIN BROKEN" if problems else "NOT VERIFIED" if unchecked else "chain intact"
        print(f"{audit.log_path()}: {len(audit.entries())} entries, {verdict}")
        return 1 if problems or unchecked else 0
    client = _client()
    if args.command == "approve":
        from ct_assets.core.registry import approve

        entry = approve(client, args.model, args.version, operator(), args.reason, args.comment)
        print(f"approved {args.model} version {args.version} ({entry['after']['meaning']}) by {entry['actor']} "
              f"at {entry['time']}, provenance {entry['after']['provenance'][:12]}")
        return 0
    out = Path(args.out) if args.out else settings.reports_dir() / f"trace-{args.model}-{args.version}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = trace(client, args.model, args.version, out.parent)
    out.write_text(report)
    print(report)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
