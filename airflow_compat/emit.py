"""Generate the five legacy Airflow DAGs from the Dagster definitions.

The truth is ``ct_assets.defs.jobs``: each legacy DAG is a Dagster job, each legacy task a part of that
job's assets (``LEGACY_TASKS``). From it and the asset graph this module derives, per DAG, the
tasks, their Dagster selections, the dependencies between tasks (task B follows task A when one of
B's assets or checks needs one of A's), and the legacy pool, retries and timeout; then it writes
one DAG file per DAG, plus the bridge operator they import. One folder serves Airflow 2.11 and 3.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from ct_assets.defs.jobs import CRON, DESCRIPTIONS, LEGACY_TASKS
from ct_assets.defs.pools import LEGACY_POOLS

REPOSITORY = "__repository__"  # the repository name of a module's Definitions
LOCATIONS = {"ct_assets": "ct_assets.definitions", "ct_feature_backfill": "ct_assets.locations.backfill"}  # as in workspace.yaml
LOCATION_OF = {"feature_backfill": "ct_feature_backfill"}
# Pools for tasks whose assets declare none, by asset group (the legacy pools of such tasks).
GROUP_POOLS = {"ingestion": "kafka_operations", "quality": "data_validation", "processing": "spark_jobs",
               "features": "feature_engineering", "training": "mlflow_operations", "monitoring": "monitoring_tasks"}
LEGACY_DEFAULTS = {"retries": 3, "retry_delay_minutes": 5, "execution_timeout_hours": 2}
# Airflow Variables (config/variables.yaml) that set Dagster resources for the tasks whose assets use
# them: variable -> (Jinja default, resource, field). The study design's landmark day falls back to
# the legacy Variable feature_window_days.
VARIABLE_CONFIG = {
    "data_quality_threshold": ("0.95", "quality", "min_quality_score"),
    "landmark_day": ("var.value.get('feature_window_days', 30)", "study_design", "landmark_day"),
}
BRIDGE = Path(__file__).with_name("bridge.py")


@dataclass
class Task:
    task_id: str
    asset_keys: list[str]
    check_keys: list[tuple[str, str]]
    pool: str
    upstream: list[str] = field(default_factory=list)
    run_config: dict = field(default_factory=dict)


@dataclass
class DagSpec:
    dag_id: str
    schedule: str | None
    description: str
    location: str
    partitioned: bool
    tasks: list[Task]


def definitions_for(location: str) -> dg.Definitions:
    import importlib

    return importlib.import_module(LOCATIONS[location]).defs


def _pool(graph, asset_keys: list[dg.AssetKey], check_keys: list[dg.AssetCheckKey]) -> str:
    pools = [p for k in asset_keys for p in graph.get(k).pools or []]
    if pools:
        return min(pools, key=lambda p: LEGACY_POOLS.get(p, 1_000))
    first = asset_keys[0] if asset_keys else check_keys[0].asset_key
    return GROUP_POOLS.get(graph.get(first).group_name, "default_pool")


def _run_config(graph, asset_keys: list[dg.AssetKey]) -> dict:
    used = {r for k in asset_keys for r in graph.get(k).assets_def.required_resource_keys}
    resources = {}
    for variable, (default, resource, field_name) in VARIABLE_CONFIG.items():
        if resource in used:
            resources.setdefault(resource, {"config": {}})["config"][field_name] = (
                f"{{{{ var.value.get('{variable}', {default}) }}}}")
    return {"resources": resources} if resources else {}


def _transitive_reduction(upstream: dict[str, set[str]]) -> dict[str, set[str]]:
    def reach(node: str, seen: set[str]) -> set[str]:
        for u in upstream[node]:
            if u not in seen:
                seen.add(u)
                reach(u, seen)
        return seen

    return {t: {u for u in ups if not any(u in reach(v, set()) for v in ups - {u})} for t, ups in upstream.items()}


def dag_spec(dag_id: str) -> DagSpec:
    location = LOCATION_OF.get(dag_id, "ct_assets")
    defs = definitions_for(location)
    graph = defs.resolve_asset_graph()
    job = defs.resolve_job_def(dag_id)
    owner: dict = {}  # asset key or check key -> task id
    selections = {}
    for task_id, selection in LEGACY_TASKS[dag_id]:
        assets = sorted(selection.resolve(graph), key=lambda k: k.to_user_string())
        checks = sorted(selection.resolve_checks(graph), key=lambda k: (k.asset_key.to_user_string(), k.name))
        selections[task_id] = (assets, checks)
        for node in [*assets, *checks]:
            if node in owner and not (isinstance(node, dg.AssetCheckKey) and node.asset_key in assets):
                raise ValueError(f"{dag_id}: {node} is run by both {owner[node]} and {task_id}")
            owner.setdefault(node, task_id)
    # Checks that run in their asset's step belong to that asset's task.
    separate_checks = {c for c in owner if isinstance(c, dg.AssetCheckKey) and c.asset_key not in selections[owner[c]][0]}
    upstream: dict[str, set[str]] = {t: set() for t in selections}
    for task_id, (assets, checks) in selections.items():
        needs = [p for k in assets for p in graph.get(k).parent_keys]
        needs += [c for k in assets for c in separate_checks if c.asset_key in graph.get(k).parent_keys]
        needs += [c.asset_key for c in checks if c in separate_checks]
        upstream[task_id] |= {owner[n] for n in needs if n in owner and owner[n] != task_id}
    upstream = _transitive_reduction(upstream)
    partitioned = job.partitions_def is not None
    tasks = []
    for task_id, (assets, checks) in selections.items():
        tasks.append(Task(task_id=task_id, asset_keys=[k.to_user_string() for k in assets],
                          check_keys=[(c.asset_key.to_user_string(), c.name) for c in checks],
                          pool=_pool(graph, assets, checks), upstream=sorted(upstream[task_id]),
                          run_config=_run_config(graph, assets)))
    return DagSpec(dag_id=dag_id, schedule=CRON[dag_id], description=DESCRIPTIONS[dag_id], location=location,
                   partitioned=partitioned, tasks=tasks)


TEMPLATE = '''"""{description}

Generated by `python -m airflow_compat emit` from the Dagster definitions: do not edit, re-emit.
Each task runs its assets in Dagster job `{dag_id}` (code location `{location}`) through the
Dagster webserver (Airflow connection `dagster_default`) and fails when the Dagster run fails.
The same file loads on Airflow 2.11 and Airflow 3.
"""

from datetime import datetime, timedelta

try:  # Airflow 3: the task SDK
    from airflow.sdk import DAG, Param
except ImportError:  # Airflow 2.11
    from airflow import DAG
    from airflow.models.param import Param
from ct_dagster_bridge import DagsterAssetsOperator

with DAG(
    dag_id={dag_id!r},
    description={description!r},
    schedule={schedule!r},
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,  # run config from Variables keeps its numbers numeric
    params={params},
    default_args={{
        "owner": "clinical-mlops",
        "retries": {retries},
        "retry_delay": timedelta(minutes={retry_delay_minutes}),
        "execution_timeout": timedelta(hours={execution_timeout_hours}),
    }},
    tags=["clinical-trials", "dagster"],
) as dag:
{tasks}

{edges}
'''

TASK = '''    {task_id} = DagsterAssetsOperator(
        task_id={task_id!r},
        job_name={dag_id!r},
        repository_name={repository!r},
        repostitory_location_name={location!r},  # sic: dagster-airflow's spelling
        asset_keys={asset_keys!r},
        check_keys={check_keys!r},
        partitioned={partitioned!r},
        pool={pool!r},
        run_config={run_config!r},
    )'''


def render(spec: DagSpec) -> str:
    params = ('{"partition_range": Param("all", type="string", description="Cohorts to backfill: all, 2013-07, or '
              '2013-07...2013-09")}') if spec.partitioned else "{}"
    tasks = "\n".join(TASK.format(dag_id=spec.dag_id, repository=REPOSITORY, location=spec.location,
                                  partitioned=spec.partitioned, **vars(t)) for t in spec.tasks)
    edges = "\n".join(f"{u} >> {t.task_id}" for t in spec.tasks for u in t.upstream)
    edges = "\n".join("    " + line for line in edges.splitlines())
    return TEMPLATE.format(dag_id=spec.dag_id, description=spec.description, schedule=spec.schedule,
                           location=spec.location, params=params, tasks=tasks, edges=edges, **LEGACY_DEFAULTS)


def _compact(asset_keys: list[str]) -> list[str]:
    """raw_ae, raw_dm, ... -> raw_* (one per domain)."""
    families = {"raw_": [], "validated_": [], "quarantine_": []}
    rest = []
    for k in asset_keys:
        prefix = next((p for p in families if k.startswith(p)), None)
        (families[prefix] if prefix else rest).append(k)
    return [f"{p}* ({len(ks)} domain{'' if len(ks) == 1 else 's'})" for p, ks in families.items() if ks] + rest


def task_table() -> str:
    """The legacy tasks and what runs them, as the markdown table of docs/airflow.md."""
    lines = ["| DAG | task | after | Dagster assets (checks) | pool |", "|---|---|---|---|---|"]
    for dag_id in LEGACY_TASKS:
        for t in dag_spec(dag_id).tasks:
            own = [f"{k}:{n}" for k, n in t.check_keys if k not in t.asset_keys]
            what = ", ".join(f"`{k}`" for k in _compact(t.asset_keys) + own)
            lines.append(f"| `{dag_id}` | `{t.task_id}` | {', '.join(t.upstream) or '-'} | {what} | {t.pool} |")
    return "\n".join(lines)


def emit(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for dag_id in LEGACY_TASKS:
        path = out / f"{dag_id}.py"
        tmp = path.with_suffix(".py.tmp")
        tmp.write_text(render(dag_spec(dag_id)))
        tmp.replace(path)
        written.append(path)
    shutil.copyfile(BRIDGE, out / "ct_dagster_bridge.py")
    # Read as a regexp by Airflow 2.11, as a glob by Airflow 3 (its default): this line means the file to both.
    (out / ".airflowignore").write_text("ct_dagster_bridge.py\n")
    return written
