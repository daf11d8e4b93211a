"""What Airflow makes of an emitted folder: every DAG, its schedule and tasks, parse times, as JSON.

Runs in either Airflow venv (2.11 or 3); the tests compare it with the Dagster definitions.
"""

import json
import os
import sys
from pathlib import Path


def report(folder: Path) -> str:
    # As in a deployment, the DAGs folder is on sys.path (the DAGs import the bridge from it).
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(folder.resolve())
    import airflow

    try:  # Airflow 3: the bag its DAG processor and task runner use (the bundle's folder on sys.path)
        from airflow.dag_processing.dagbag import BundleDagBag

        bag = BundleDagBag(dag_folder=str(folder), bundle_path=folder.resolve(), bundle_name="dags-folder",
                           safe_mode=True)
    except ImportError:  # Airflow 2.11
        from airflow.models import DagBag

        bag = DagBag(dag_folder=str(folder), include_examples=False, safe_mode=True)
    dags = {}
    for dag_id, dag in sorted(bag.dags.items()):
        tasks = {}
        for task in dag.topological_sort():
            tasks[task.task_id] = {
                "upstream": sorted(task.upstream_task_ids), "pool": task.pool, "retries": task.retries,
                "retry_delay_s": task.retry_delay.total_seconds(),
                "timeout_s": task.execution_timeout.total_seconds() if task.execution_timeout else None,
                "operator": type(task).__name__, "job_name": getattr(task, "job_name", None),
                "location": getattr(task, "repostitory_location_name", None),
                "asset_keys": getattr(task, "asset_keys", None), "check_keys": getattr(task, "check_keys", None),
            }
        schedule = dag.schedule if hasattr(dag, "schedule") else dag.schedule_interval  # 3 / 2.11
        dags[dag_id] = {"schedule": schedule, "order": list(tasks), "tasks": tasks,
                        "file": Path(dag.fileloc).name}
    # Parse time per file, as the scheduler's DAG processor measures it (`airflow dags report`).
    parse_s = {Path(s.file).name: round(s.duration.total_seconds(), 3) for s in bag.dagbag_stats}
    return json.dumps({"dags": dags, "import_errors": {Path(k).name: v for k, v in bag.import_errors.items()},
                       "parse_s": parse_s, "dagster_imported": "dagster" in sys.modules,
                       "airflow_version": airflow.__version__}, indent=1, default=str)
