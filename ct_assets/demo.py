"""Materialize the whole asset graph on the study, one line per asset as it finishes.

    python -m ct_assets.demo                 # the bundled CDISC pilot study
    CT_STUDY_DIR=/path/to/sdtm python -m ct_assets.demo

State goes to $CT_HOME (default .ct/): the Dagster instance, the lake, the feature store and
MLflow. Dagster's own events and Spark's output go to $CT_HOME/logs/demo-<run id>.log; the
console shows progress, a summary and, when a step fails, its reason in one line. Open the lineage
afterwards with `make dev`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
import uuid
from pathlib import Path

from ct_assets import settings

SHOWN = ("dagster/row_count", "quality_score", "absent_columns", "engine", "score", "holdout_auroc", "holdout_auprc", "holdout_brier", "version",
         "champion_version", "drifted", "breach", "decision", "online_store")


def prepare_dagster_home() -> str:
    home = os.environ.setdefault("DAGSTER_HOME", str(settings.ct_home() / "dagster"))
    return str(settings.prepared_dagster_home(Path(home)))


def _value(v) -> str | None:
    """A metadata value for one line: numbers rounded, short text as is, tables and plots left out."""
    raw = getattr(v, "value", v)
    if isinstance(raw, bool):
        return str(raw)
    if isinstance(raw, float):
        return f"{raw:.4g}" if abs(raw) < 1e4 else f"{raw:,.0f}"
    if isinstance(raw, int):
        return f"{raw:,}"
    if isinstance(raw, str) and len(raw) <= 40 and "\n" not in raw:
        return raw
    return None


def describe(metadata) -> str:
    """The asset's headline figures, rounded: rows first, then the figures the demo is about (or,
    for an asset that has none of them, its first few figures)."""
    bits = []
    for key in SHOWN:
        if key in metadata and (text := _value(metadata[key])) is not None:
            bits.append(f"{text} rows" if key == "dagster/row_count" else f"{key}={text}")
    for key, value in metadata.items():  # an asset without headline figures: its first few
        if len(bits) >= 4:
            break
        if key not in SHOWN and not key.startswith("dagster/") and (text := _value(value)) is not None:
            bits.append(f"{key}={text}")
    return ", ".join(bits)


def _failure_reason(event) -> str:
    data = event.dagster_event.step_failure_data
    if data.user_failure_data and data.user_failure_data.description:
        text = data.user_failure_data.description
    else:
        err = data.error
        while err.cause is not None and err.cls_name in ("DagsterExecutionStepExecutionError", "RetryRequestedFromPolicy"):
            err = err.cause
        message = err.message.split(f"{err.cls_name}: ", 1)[-1]  # some messages repeat their class path
        text = f"{err.cls_name}: {message}"
    return " ".join(text.split())[:300]


class Progress:
    """Prints each materialization and failure of a run as it lands in the instance's event log."""

    def __init__(self, instance, run_id: str, out):
        self.instance, self.run_id, self.out = instance, run_id, out
        self.started, self.seen, self.done = time.perf_counter(), set(), threading.Event()
        self.failures: dict[str, str] = {}

    def poll(self) -> None:
        import dagster as dg

        kinds = {dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.STEP_FAILURE,
                 dg.DagsterEventType.STEP_UP_FOR_RETRY}
        for record in self.instance.all_logs(self.run_id, of_type=kinds):
            key = (record.dagster_event.event_type_value, record.step_key, record.timestamp)
            if key in self.seen:
                continue
            self.seen.add(key)
            clock = f"{time.perf_counter() - self.started:6.1f}s"
            event = record.dagster_event
            if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
                mat = event.event_specific_data.materialization
                print(f"{clock}  {mat.asset_key.to_user_string():<26} {describe(mat.metadata)}", file=self.out, flush=True)
            elif event.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY:
                print(f"{clock}  {record.step_key:<26} will retry: {_failure_reason_retry(event)}", file=self.out, flush=True)
            else:
                self.failures[record.step_key] = _failure_reason(record)
                print(f"{clock}  {record.step_key:<26} FAILED: {self.failures[record.step_key]}", file=self.out, flush=True)

    def run(self) -> None:
        while not self.done.wait(1.0):
            with contextlib.suppress(Exception):  # the instance is busy: next second
                self.poll()


def _failure_reason_retry(event) -> str:
    err = event.event_specific_data.error
    while err is not None and err.cause is not None:
        err = err.cause
    return " ".join(f"{err.cls_name}: {err.message}".split())[:300] if err else "transient failure"


@contextlib.contextmanager
def quiet_into(log_path):
    """Send this process's stderr (Dagster's debug events, Spark's JVM output, warnings) to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with open(log_path, "ab") as fh:
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ct_assets.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study-dir", help="SDTM study folder (default $CT_STUDY_DIR or the bundled pilot)")
    args = parser.parse_args(argv)
    if args.study_dir:
        os.environ["CT_STUDY_DIR"] = args.study_dir
    from ct_assets.core.lake import free_space_problem

    if problem := free_space_problem(settings.ct_home(), settings.min_free_mib()):
        print(f"python -m ct_assets.demo: {problem}", file=sys.stderr)
        return 1
    prepare_dagster_home()
    run_id = str(uuid.uuid4())
    log_path = settings.ct_home() / "logs" / f"demo-{run_id}.log"
    out = sys.stdout
    print(f"Materializing every asset on {settings.study_dir() or 'the bundled CDISC pilot study'} "
          f"(full log: {log_path})", flush=True)

    started = time.perf_counter()
    with quiet_into(log_path):
        import warnings

        warnings.filterwarnings("ignore", module="dagster.*")  # beta / superseded notices of the libraries
        warnings.filterwarnings("ignore", category=UserWarning, module="mlflow.*")
        from dagster import DagsterInstance

        from ct_assets.definitions import defs
        from ct_assets.defs.pools import ensure_pools

        job = defs.resolve_implicit_global_asset_job_def()  # every asset of the main code location
        with DagsterInstance.get() as instance:
            ensure_pools(instance)
            progress = Progress(instance, run_id, out)
            watcher = threading.Thread(target=progress.run, daemon=True)
            watcher.start()
            try:
                result = job.execute_in_process(instance=instance, raise_on_error=False, run_id=run_id)
            finally:
                progress.done.set()
                watcher.join()
                progress.poll()  # whatever landed in the last second
            checks = result.get_asset_check_evaluations()
    elapsed = time.perf_counter() - started

    failed_checks = [c for c in checks if not c.passed]
    print(f"\nRun {run_id} {'succeeded' if result.success else 'FAILED'} in {elapsed:.1f} s: "
          f"{len(result.get_asset_materialization_events())} assets materialized, "
          f"{len(checks) - len(failed_checks)} of {len(checks)} checks passed")
    for check in failed_checks:
        verdict = check.metadata.get("verdict")
        print(f"  check failed: {check.asset_key.to_user_string()}:{check.check_name}"
              + (f": {verdict.value}" if verdict is not None else ""))
    for step, reason in progress.failures.items():
        print(f"  step failed: {step}: {reason}")
    if not result.success:
        print(f"Full log of the run: {log_path}")
        return 1
    print(f"State in {settings.ct_home()} (MLflow: {settings.mlflow_tracking_uri()}); full log: {log_path}")
    ui, serving = (f"http://127.0.0.1:{settings.service_port(c)}" for c in ("dagster", "serving"))
    print(f"See everything:          .venv/bin/ct start  (Dagster UI on {ui}, Airflow, MLflow, model server on {serving})")
    print("                         or one at a time in the foreground: make dev, make serve")
    if key := sample_subject():
        print(f"Score a subject by key:  curl -s {serving}/predict -H 'Content-Type: application/json' "
              f"-d '{{\"subject_key\": \"{key}\"}}'")
        print("                         (features from the online store; any subject_key of the study)")
    return 0


def sample_subject() -> str | None:
    """A subject key of the feature store, for the example request (None when there is no store)."""
    import pyarrow.parquet as pq

    from ct_assets.core.privacy import SUBJECT_KEY
    from ct_assets.defs.resources import FeatureStore

    path = FeatureStore().store_settings().offline_path
    if not path.exists():
        return None
    keys = pq.read_table(path, columns=[SUBJECT_KEY]).column(0)
    return str(keys[0]) if len(keys) else None


if __name__ == "__main__":
    sys.exit(main())
