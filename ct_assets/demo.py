"""Materialize the whole asset graph on the study and print a short summary.

    python -m ct_assets.demo                 # the bundled CDISC pilot study
    CT_STUDY_DIR=/path/to/sdtm python -m ct_assets.demo

State goes to $CT_HOME (default .ct/): the Dagster instance, the lake, the feature store and
MLflow. Open the lineage afterwards with `make dev`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from ct_assets import settings


def prepare_dagster_home() -> str:
    home = os.environ.setdefault("DAGSTER_HOME", str(settings.ct_home() / "dagster"))
    os.makedirs(home, exist_ok=True)
    config = os.path.join(home, "dagster.yaml")
    if not os.path.exists(config):
        with open(config, "w") as fh:
            fh.write("telemetry:\n  enabled: false\n")
    return home


def summary(result) -> list[str]:
    lines = []
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        md = mat.metadata
        rows = md.get("dagster/row_count")
        bits = [f"{rows.value} rows" if rows else None]
        for key in ("quality_score", "score", "holdout_auroc", "holdout_auprc", "holdout_brier", "version",
                    "champion_version", "drifted", "breach"):
            if key in md:
                bits.append(f"{key}={md[key].value}")
        lines.append(f"  {mat.asset_key.to_user_string():<22} " + ", ".join(b for b in bits if b))
    for check in result.get_asset_check_evaluations():
        if not check.passed:
            lines.append(f"  check FAILED: {check.asset_key.to_user_string()}:{check.check_name}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study-dir", help="SDTM study folder (default $CT_STUDY_DIR or the bundled pilot)")
    args = parser.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore", module="dagster.*")  # beta / superseded notices of the libraries
    warnings.filterwarnings("ignore", category=UserWarning, module="mlflow.*")
    if args.study_dir:
        os.environ["CT_STUDY_DIR"] = args.study_dir
    prepare_dagster_home()

    started = time.perf_counter()
    from dagster import DagsterInstance

    from ct_assets.definitions import defs

    from ct_assets.pools import ensure_pools

    job = defs.resolve_implicit_global_asset_job_def()  # every asset of the main code location
    with DagsterInstance.get() as instance:
        ensure_pools(instance)
        result = job.execute_in_process(instance=instance, raise_on_error=False)
    elapsed = time.perf_counter() - started

    print(f"\nRun {result.run_id} {'succeeded' if result.success else 'FAILED'} in {elapsed:.1f} s")
    print("\n".join(summary(result)))
    print(f"\nState in {settings.ct_home()} (MLflow: {settings.mlflow_tracking_uri()})")
    print("Lineage and run history: make dev   (Dagster UI on http://127.0.0.1:3000)")
    print("Serve the champion:      make serve (http://127.0.0.1:8000/predict)")
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
