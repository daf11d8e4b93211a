"""Command line of airflow_compat; see ``python -m airflow_compat --help``."""

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m airflow_compat", description=(
        "The five legacy Airflow DAGs, generated from the Dagster definitions; they run on Airflow 2.11 "
        "(through dagster-airflow) and Airflow 3 (through dagster-graphql)."))
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("emit", help="write the DAG files (run with the platform's venv)")
    p.add_argument("--out", type=Path, required=True, help="the Airflow dags folder to write")
    p = sub.add_parser("dagbag", help="load DIR with Airflow's DagBag and print the DAGs as JSON (Airflow venv)")
    p.add_argument("folder", type=Path)
    p.add_argument("--out", type=Path, help="write the JSON here (Airflow logs to stdout)")
    p = sub.add_parser("start", help="start Airflow (2.11 or 3: the venv's) on the emitted DAGs with the legacy "
                       "configuration (Airflow venv)")
    p.add_argument("--dags", type=Path, required=True, help="the folder emit wrote")
    p.add_argument("--init-only", action="store_true", help="prepare the database, user, pools, connections and "
                   "variables, then exit")
    args = parser.parse_args(argv)
    if args.command == "emit":
        from airflow_compat.emit import emit

        for path in emit(args.out):
            print(path)
    elif args.command == "dagbag":
        from airflow_compat.dagbag import report

        text = report(args.folder)
        args.out.write_text(text) if args.out else print(text)
    else:
        from airflow_compat.start import start

        return start(args.dags, init_only=args.init_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
