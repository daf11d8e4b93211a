"""Compile, run and submit the KFP pipelines; write the Katib experiment; run one HPO trial.

    python -m ct_kfp compile [--out kfp/compiled] [--check]
    python -m ct_kfp run training [--arg min_auroc=0.55]          # locally, through kfp.local
    python -m ct_kfp submit hpo --host https://kfp.example.org    # to a KFP cluster, then wait
    python -m ct_kfp katib --training-set s3://bucket/training_set.parquet [--out experiment.yaml]
    python -m ct_kfp trial --training-set PATH --search-space JSON --point 2   # one Katib trial

Arguments are ``name=value`` with value parsed as JSON when it parses (numbers, lists, dicts),
else taken as a string.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "compiled"


def _arguments(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--arg expects name=value, got {pair!r}")
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ct_kfp", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compile", help="compile every pipeline to IR YAML")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--check", action="store_true", help="fail if a file in --out differs from a fresh compile")
    for name, text in (("run", "run a pipeline locally with kfp.local"), ("submit", "submit to a KFP host and wait")):
        p = sub.add_parser(name, help=text)
        p.add_argument("pipeline", choices=["training", "hpo", "deployment", "ab_test"])
        p.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE", help="a pipeline argument")
        if name == "submit":
            p.add_argument("--host", help="KFP API endpoint (default $KFP_HOST)")
            p.add_argument("--namespace", help="Kubeflow namespace (multi-user deployments)")
            p.add_argument("--experiment", default="clinical-trials")
            p.add_argument("--no-wait", action="store_true", help="return once the run is created")
    p = sub.add_parser("katib", help="write the Katib Experiment equivalent to hpo_pipeline")
    p.add_argument("--training-set", required=True, help="URI of the training set Parquet the trials read")
    p.add_argument("--namespace", default="kubeflow")
    p.add_argument("--out", type=Path, help="file to write (default: stdout)")
    p = sub.add_parser("trial", help="one HPO trial: print cv_auroc=<value> (Katib's metrics collector reads it)")
    p.add_argument("--training-set", required=True)
    p.add_argument("--search-space", required=True, help="the search space as JSON (a list of points)")
    p.add_argument("--point", type=int, required=True, help="index of the point to evaluate")
    args = parser.parse_args(argv)

    if args.command == "compile":
        from ct_kfp.compile import check, compile_all

        if args.check:
            stale = check(args.out)
            for line in stale:
                print(line, file=sys.stderr)
            return 1 if stale else 0
        for path in compile_all(args.out):
            print(path)
        return 0
    if args.command == "run":
        from ct_kfp.runner import run_local

        result = run_local(args.pipeline, _arguments(args.arg))
        print(json.dumps({"run_dir": result.run_dir, "output": result.output}, default=str, indent=1))
        return 0
    if args.command == "submit":
        from ct_kfp.runner import submit

        result = submit(args.pipeline, _arguments(args.arg), host=args.host, namespace=args.namespace,
                        experiment=args.experiment, wait=not args.no_wait)
        print(json.dumps({"run_id": result.run_id, "url": result.url, "state": result.state}, indent=1))
        return 0 if result.state in ("SUCCEEDED", "PENDING", "RUNNING") else 1
    if args.command == "katib":
        import yaml

        from ct_kfp.katib import experiment

        text = yaml.safe_dump(experiment(args.training_set, namespace=args.namespace), sort_keys=False)
        if args.out:
            args.out.write_text(text)
        else:
            sys.stdout.write(text)
        return 0
    from ct_kfp.steps import cv_score

    space = json.loads(args.search_space)
    mean, se = cv_score(args.training_set, space[args.point])
    print(f"cv_auroc={mean:.6f}\ncv_auroc_se={se:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
