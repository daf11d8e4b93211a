"""The run-failure alert; the webhook it posts to is the ``alerts`` resource (``ct_assets.defs.resources``)."""

import dagster as dg

from ct_assets.defs.resources import AlertWebhook


@dg.run_failure_sensor(name="alert_on_run_failure", default_status=dg.DefaultSensorStatus.RUNNING,
                       description="Posts every failed run to the alert webhook.")
def alert_on_run_failure(context: dg.RunFailureSensorContext, alerts: AlertWebhook):
    run = context.dagster_run
    message = context.failure_event.message or "run failed"
    alerts.send(f":red_circle: Dagster run {run.run_id[:8]} of job `{run.job_name}` failed: {message[:500]}")
