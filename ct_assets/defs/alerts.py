"""Alerts: the webhook resource (``alerts``: Slack-compatible, $CT_ALERT_WEBHOOK) and the run-failure sensor that
posts to it."""

from __future__ import annotations

import json
import urllib.request

import dagster as dg
from pydantic import Field

from ct_assets import settings


class AlertWebhook(dg.ConfigurableResource):
    """Alerts to a Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat, Teams' Slack mode).

    The URL is a secret: it is read from the environment variable named by ``url_env`` (default
    ``CT_ALERT_WEBHOOK_URL``) when an alert is sent, never stored in configuration. Unset: nothing is
    sent, and the alert only goes to the Dagster log."""

    url_env: str = Field(default="CT_ALERT_WEBHOOK_URL", description="Environment variable holding the webhook URL.")
    timeout_seconds: float = 10.0

    def configured(self) -> bool:
        return settings.secret(self.url_env) is not None

    def send(self, text: str, log=None) -> bool:
        """Post ``text``; True when delivered. Delivery problems are logged, never raised: an alert
        must not fail the run that raises it."""
        url = settings.secret(self.url_env)
        if log is not None:
            log.warning(f"ALERT: {text}")
        if not url:
            return False
        body = json.dumps({"text": text}).encode()
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_seconds) as resp:
                return 200 <= resp.status < 300
        except OSError as err:
            if log is not None:
                log.error(f"alert not delivered: {err}")
            return False


@dg.run_failure_sensor(name="alert_on_run_failure", default_status=dg.DefaultSensorStatus.RUNNING,
                       description="Posts every failed run to the alert webhook.")
def alert_on_run_failure(context: dg.RunFailureSensorContext, alerts: AlertWebhook):
    run = context.dagster_run
    message = context.failure_event.message or "run failed"
    alerts.send(f":red_circle: Dagster run {run.run_id[:8]} of job `{run.job_name}` failed: {message[:500]}")
