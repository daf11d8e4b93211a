"""Monitoring acts: a breach in the monitoring report launches retraining, once per breach."""

import json

import dagster as dg

from ct_assets.core import audit
from ct_assets.core.sdtm import DOMAINS
from ct_assets.defs import keys


def _new_reports(context: dg.SensorEvaluationContext, key: dg.AssetKey, after: int):
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, after_storage_id=after), limit=100, ascending=True
    ).records
    for record in records:
        yield record.storage_id, record.asset_materialization.metadata


@dg.sensor(job_name="scheduled_retraining", minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Launches scheduled_retraining when a monitoring report breaches a threshold, once per breach.")
def drift_retraining_sensor(context: dg.SensorEvaluationContext):
    # Cursor: the last report seen, and the breaches already acted on (a persisting breach with the
    # same champion and data must not retrain again and again).
    cursor = json.loads(context.cursor) if context.cursor else {"after": 0, "acted": []}
    requests = []
    for storage_id, md in _new_reports(context, keys.MONITORING_REPORT, cursor["after"]):
        cursor["after"] = storage_id
        breach_id = md["breach_id"].value if "breach_id" in md else ""
        if not (md.get("breach") and md["breach"].value) or breach_id in cursor["acted"]:
            continue
        cursor["acted"] = (cursor["acted"] + [breach_id])[-50:]
        reasons = md["reasons"].value
        audit.record("retraining_requested", "scheduled_retraining", "sensor:drift_retraining_sensor", reasons[:1000],
                     after={"breach_id": breach_id, "run_key": f"breach-{breach_id}"})
        requests.append(dg.RunRequest(run_key=f"breach-{breach_id}",
                                      tags={"ct/trigger": "drift_retraining_sensor", "ct/breach_id": breach_id,
                                            "ct/retrain_reason": reasons[:1000]}))
    context.update_cursor(json.dumps(cursor))
    return requests or dg.SkipReason("no new breach")


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           target=dg.AssetSelection.assets(*[k for d in DOMAINS for k in (keys.validated(d), keys.quarantine(d))]),
           description="trigger_data_cleaning: re-validates the domains whose quarantined rows now pass.")
def data_cleaning_sensor(context: dg.SensorEvaluationContext):
    after = int(context.cursor or 0)
    requests = []
    for storage_id, md in _new_reports(context, keys.QUARANTINE_RECHECK, after):
        after = storage_id
        domains = [d for d in md["domains_to_revalidate"].value.split(", ") if d and d != "none"]
        if domains:
            # DM is validated again first: a row's subject must pass DM as it is delivered now.
            domains = ["DM"] + [d for d in domains if d != "DM"]
            requests.append(dg.RunRequest(
                run_key=f"recheck-{storage_id}",
                asset_selection=[k for d in domains for k in (keys.validated(d), keys.quarantine(d))],
                tags={"ct/trigger": "data_cleaning_sensor", "ct/domains": ",".join(domains)},
            ))
    context.update_cursor(str(after))
    return requests or dg.SkipReason("no quarantined row passes today's rules")
