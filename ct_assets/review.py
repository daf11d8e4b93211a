"""What a reviewer asks of the model lifecycle: is the audit trail intact, where did this version come
from, who approved it. (Also `ct audit ...` and `ct approve ...`.)

    python -m ct_assets.review verify                                   # recompute the audit log's hash chain
    python -m ct_assets.review trace adverse-event-predictor 3          # sources -> data -> model -> approval -> served
    python -m ct_assets.review approve adverse-event-predictor 3 --reason "reviewed the holdout report"
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

from ct_assets import settings
from ct_assets.lib import audit


def trace(client, name: str, version: str, out_dir: Path) -> str:
    """The chain from source files to the served version, as Markdown a reviewer can file (its plot is
    copied into ``out_dir``, next to the report)."""
    from ct_assets.lib.registry import CHALLENGER, CHAMPION, alias_version

    mv = client.get_model_version(name, version)
    tags = mv.tags
    run = client.get_run(mv.run_id) if mv.run_id else None
    metrics = {k: v for k, v in (run.data.metrics if run else {}).items() if k.startswith("holdout_")}
    served = [alias for alias in (CHAMPION, CHALLENGER, "previous_champion")
              if (v := alias_version(client, name, alias)) is not None and str(v.version) == str(version)]
    events = [e for e in audit.entries() if e["object"].startswith(f"{name}/{version}") or
              (e["action"] == "alias_set" and e["after"] == int(version) and e["object"].startswith(f"{name}@"))]
    lines = [f"# {name} version {version}: trace", "",
             f"- Registered: {dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, dt.UTC).isoformat()}",
             f"- MLflow run: {mv.run_id}", f"- Aliases now: {', '.join(served) or 'none'}",
             f"- Provenance digest: `{tags.get('ct.provenance', 'none')}`", "", "## Sources", "",
             "| file | SHA-256 |", "|---|---|"]
    lines += [f"| {f} | `{d}` |" for f, d in json.loads(tags.get("ct.sources", "{}")).items()]
    lines += ["", "## Data and rules", "",
              f"- Training set SHA-256: `{tags.get('ct.training_set_sha256', '?')}`",
              f"- Validation rule-set version: `{tags.get('ct.ruleset_version', '?')}`",
              f"- Quarantined rows: {tags.get('ct.quarantined', '?')}",
              f"- Split seed {tags.get('ct.split_seed', '?')}, holdout subjects SHA-256 `{tags.get('ct.holdout_sha256', '?')}`",
              "", "## Code", "", f"- Git commit: `{tags.get('ct.git_commit', tags.get('ct.package_version', '?'))}`"
              f" (uncommitted changes: {tags.get('ct.git_dirty', '?')})",
              f"- Stage code versions: {tags.get('ct.asset_code_versions', '?')}", f"- Libraries: {tags.get('ct.libraries', '?')}",
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ct_assets.review", description=__doc__,
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
    a.add_argument("--approver", help="who approves (default: the OS user)")
    args = parser.parse_args(argv)

    if args.command == "verify":
        problems = audit.verify()
        for problem in problems:
            print(problem)
        print(f"{audit.log_path()}: {len(audit.entries())} entries, " + ("chain intact" if not problems else "CHAIN BROKEN"))
        return 1 if problems else 0
    from ct_assets.lib.faults import probe_mlflow
    from ct_assets.resources import MlflowSettings

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # progress bars around the report are noise
    tracking = MlflowSettings()
    probe_mlflow(tracking.uri())  # a server that does not answer: say so in seconds, not after minutes of retries
    client = tracking.client()
    if args.command == "approve":
        from ct_assets.lib.registry import approve

        entry = approve(client, args.model, args.version, args.approver or audit.os_actor(), args.reason)
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
