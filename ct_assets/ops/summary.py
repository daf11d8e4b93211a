"""The platform's state in one screen, read from where it is kept: the Dagster instance (runs,
materializations), the Dagster webserver (schedules and sensors as the daemon sees them), the MLflow
registry (champion, challenger and their holdout metrics) and Airflow's metadata database."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ct_assets import settings
from ct_assets.ops import health

SCHEDULES_AND_SENSORS = """{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name }
  schedules { name cronSchedule scheduleState { status } } sensors { name sensorState { status } } } } } }"""


def _when(ts: float | None) -> str | None:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else None


def _value(md: dict, key: str) -> Any:
    entry = md.get(key)
    return getattr(entry, "value", entry)


def dagster_state() -> dict:
    import dagster as dg

    from ct_assets.core.sdtm import DOMAINS
    from ct_assets.defs import keys
    from ct_assets.defs.jobs import CRON
    from ct_assets.ops.stack import dagster_home

    out: dict[str, Any] = {"jobs": {}, "quarantined": {}, "quality_score": None, "drift": None}
    with dg.DagsterInstance.from_config(str(dagster_home())) as instance:
        for job in CRON:
            runs = instance.get_run_records(dg.RunsFilter(job_name=job), limit=1)
            if runs:
                r = runs[0]
                out["jobs"][job] = {"status": r.dagster_run.status.value, "run_id": r.dagster_run.run_id,
                                    "started": _when(r.start_time), "ended": _when(r.end_time)}
            else:
                out["jobs"][job] = {"status": "never run"}
        latest_run = instance.get_run_records(limit=1)
        out["latest_run"] = ({"job": latest_run[0].dagster_run.job_name, "status": latest_run[0].dagster_run.status.value,
                              "started": _when(latest_run[0].start_time)} if latest_run else None)

        def latest(key: dg.AssetKey) -> tuple[dict, float] | None:
            event = instance.get_latest_materialization_event(key)
            return (event.asset_materialization.metadata, event.timestamp) if event else None

        for domain in DOMAINS:
            found = latest(keys.quarantine(domain))
            if found:
                out["quarantined"][domain] = _value(found[0], "dagster/row_count")
        report = latest(keys.DATA_QUALITY_REPORT)
        if report:
            out["quality_score"] = _value(report[0], "score")
        monitoring = latest(keys.MONITORING_REPORT)
        if monitoring:
            md, ts = monitoring
            out["drift"] = {"breach": _value(md, "breach"), "reasons": _value(md, "reasons"), "at": _when(ts)}
    return out


def instigators(url: str) -> dict | None:
    """Schedules and sensors, on or off, from the webserver (None when it does not answer)."""
    data, _ = health.graphql(url, SCHEDULES_AND_SENSORS)
    if not data or "nodes" not in data["repositoriesOrError"]:
        return None
    out: dict[str, dict] = {"schedules": {}, "sensors": {}}
    for repo in data["repositoriesOrError"]["nodes"]:
        for s in repo["schedules"]:
            out["schedules"][s["name"]] = {"on": s["scheduleState"]["status"] == "RUNNING", "cron": s["cronSchedule"]}
        for s in repo["sensors"]:
            out["sensors"][s["name"]] = {"on": s["sensorState"]["status"] == "RUNNING"}
    return out


def models() -> dict:
    import mlflow

    from ct_assets.core.registry import CHALLENGER, CHAMPION

    client = mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri(), registry_uri=settings.mlflow_tracking_uri())
    out: dict[str, Any] = {"registry": settings.mlflow_tracking_uri()}
    for alias in (CHAMPION, CHALLENGER):
        try:
            version = client.get_model_version_by_alias(settings.MODEL_NAME, alias)
        except mlflow.exceptions.MlflowException:
            out[alias] = None
            continue
        metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
        out[alias] = {"version": str(version.version), "run_id": version.run_id,
                      "holdout": {k.removeprefix("holdout_"): round(v, 4) for k, v in sorted(metrics.items())
                                  if k.startswith("holdout_")}}
    return out


def summary(components_running: list[str]) -> dict:
    out: dict[str, Any] = {"profile": settings.profile()}
    try:
        out["dagster"] = dagster_state()
    except Exception as err:  # noqa: BLE001 - one screen: a section that cannot be read says why
        out["dagster"] = {"error": str(err)[:300]}
    out["instigators"] = instigators(health.url_of("dagster")) if "dagster" in components_running else None
    try:
        out["models"] = models()
    except Exception as err:  # noqa: BLE001
        out["models"] = {"error": str(err)[:300]}
    if "airflow" in components_running:
        try:
            out["airflow"] = {"dags": health.airflow_state()["dags"]}
        except Exception as err:  # noqa: BLE001
            out["airflow"] = {"error": str(err)[:300]}
    else:
        out["airflow"] = None
    return out


def render(s: dict) -> str:
    lines = [f"profile: {s['profile']}", "", "Jobs (last run)"]
    d = s["dagster"]
    if "error" in d:
        lines.append(f"  cannot read the Dagster instance: {d['error']}")
    else:
        for job, r in d["jobs"].items():
            lines.append(f"  {job:<26} {r['status']:<10} {r.get('started') or ''}"
                         + (f" -> {r['ended']}" if r.get("ended") else ""))
        last = d.get("latest_run")
        if last:
            lines.append(f"  latest run of any job: {last['job']} {last['status']} {last['started'] or ''}")
    lines += ["", "Schedules and sensors"]
    inst = s["instigators"]
    if inst is None:
        lines.append("  unknown: the Dagster webserver is not running (ct start --only dagster)")
    else:
        for kind in ("schedules", "sensors"):
            for name, st in inst[kind].items():
                lines.append(f"  {name:<34} {'on ' if st['on'] else 'off'}  {st.get('cron', 'sensor')}")
    lines += ["", "Models"]
    m = s["models"]
    if "error" in m:
        lines.append(f"  cannot read the registry: {m['error']}")
    else:
        for alias in ("champion", "challenger"):
            v = m.get(alias)
            metrics = ", ".join(f"{k}={val}" for k, val in v["holdout"].items()) if v else ""
            lines.append(f"  {alias:<11} " + (f"version {v['version']}: {metrics}" if v else "none"))
    if "error" not in d:
        drift = d["drift"]
        lines += ["", "Drift: " + ("no monitoring report yet" if drift is None else
                                   (f"BREACH ({drift['reasons']})" if drift["breach"] else "no breach") + f" at {drift['at']}")]
        q = d["quarantined"]
        lines += ["Data quality: score " + (str(d["quality_score"]) if d["quality_score"] is not None else "not computed yet")
                  + "; quarantined rows: " + (", ".join(f"{k} {v}" for k, v in q.items()) if q else "none recorded")]
    lines += ["", "Airflow DAGs"]
    af = s["airflow"]
    if af is None:
        lines.append("  unknown: Airflow is not running (ct start --only airflow)")
    elif "error" in af:
        lines.append(f"  {af['error']}")
    else:
        for dag in af["dags"]:
            lines.append(f"  {dag['dag_id']:<26} {'paused' if dag['is_paused'] else 'active'}")
    return "\n".join(lines)
