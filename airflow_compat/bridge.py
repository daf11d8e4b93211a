"""The Airflow side of the bridge: dagster-airflow's ``DagsterOperator``, told which assets to run.

``DagsterOperator`` launches a whole Dagster job by name. A legacy task stands for a few assets (or
asset checks) of its DAG's job, so this subclass launches the same job with an asset and check
selection, tags the Dagster run with the Airflow DAG, task and run ids, and for partitioned jobs
passes the partition range from the DAG run's ``partition_range`` param. Everything else is the
library's: the ``dagster_default`` connection (login = the webserver's GraphQL URL), waiting for the
run, failing the task when the run fails, terminating the run when the task is killed.

The emitter copies this file next to the DAGs as ``ct_dagster_bridge.py``: it needs only Airflow
and dagster-airflow, never the platform's code.
"""

from __future__ import annotations

import json
import warnings

import requests
from airflow.exceptions import AirflowException
from dagster import SupersessionWarning
from dagster_airflow.hooks.dagster_hook import DagsterHook
from dagster_airflow.operators.dagster_operator import DagsterOperator

# dagster-airflow marks its operator as superseded by dagster-airlift; it is the bridge we chose.
warnings.filterwarnings("ignore", category=SupersessionWarning)

LAUNCH = """
mutation Launch($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { id } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}"""

PARTITION_KEYS = """
query Keys($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) { __typename ... on AssetNode { partitionKeys } }
}"""


def _asset_key(key: str) -> dict:
    return {"path": key.split("/")}


class DagsterAssetsHook(DagsterHook):
    def _post(self, query: str, variables: dict) -> dict:
        headers = {"Dagster-Cloud-Api-Token": self.user_token or ""}
        response = requests.post(self.url, json={"query": query, "variables": variables}, headers=headers, timeout=60)
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise AirflowException(f"Dagster GraphQL error: {body['errors']}")
        return body["data"]

    def partition_keys(self, asset_key: str) -> list[str]:
        node = self._post(PARTITION_KEYS, {"assetKey": _asset_key(asset_key)})["assetNodeOrError"]
        if node["__typename"] != "AssetNode":
            raise AirflowException(f"asset {asset_key} not found in Dagster")
        return node["partitionKeys"]

    def launch_assets(self, *, repository_name: str, location_name: str, job_name: str, asset_keys: list[str],
                      check_keys: list[tuple[str, str]], tags: dict[str, str], run_config: dict) -> str:
        selector = {
            "repositoryName": repository_name, "repositoryLocationName": location_name, "jobName": job_name,
            "assetSelection": [_asset_key(k) for k in asset_keys],
            "assetCheckSelection": [{"assetKey": _asset_key(k), "name": n} for k, n in check_keys],
        }
        params = {"selector": selector, "runConfigData": json.dumps(run_config or {}),
                  "executionMetadata": {"tags": [{"key": k, "value": str(v)} for k, v in tags.items()]}}
        result = self._post(LAUNCH, {"executionParams": params})["launchRun"]
        if result["__typename"] == "LaunchRunSuccess":
            return result["run"]["id"]
        reason = "; ".join(e["message"] for e in result.get("errors", [])) or result.get("message", result["__typename"])
        raise AirflowException(f"Dagster refused to launch {job_name} {asset_keys}: {reason}")


class DagsterAssetsOperator(DagsterOperator):
    """Run ``asset_keys`` (and ``check_keys``) of Dagster job ``job_name``; fail when the run fails."""

    template_fields = ["run_config"]

    def __init__(self, *, asset_keys: list[str], check_keys: list[tuple[str, str]] = (), partitioned: bool = False,
                 **kwargs) -> None:
        # OSS Dagster has no API token; the library insists on a non-None one.
        kwargs.setdefault("user_token", "")
        super().__init__(**kwargs)
        self.asset_keys = list(asset_keys)
        self.check_keys = [tuple(c) for c in check_keys]
        self.partitioned = partitioned
        self.hook = DagsterAssetsHook(dagster_conn_id=self.dagster_conn_id, user_token=self.user_token)

    def _partition_tags(self, context) -> dict[str, str]:
        wanted = (context["params"].get("partition_range") or "all").strip()
        if wanted == "all":
            keys = self.hook.partition_keys((self.asset_keys or [c[0] for c in self.check_keys])[0])
            if not keys:
                raise AirflowException("no partitions to backfill: materialize subject_features first")
            first, last = keys[0], keys[-1]
        else:
            first, _, last = wanted.partition("...")
            last = last or first
        return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}

    def _execute(self, context):
        ti = context["task_instance"]
        tags = {"airflow/dag_id": ti.dag_id, "airflow/task_id": ti.task_id, "airflow/run_id": context["run_id"],
                "airflow/try_number": ti.try_number}
        if self.partitioned:
            tags |= self._partition_tags(context)
        self.run_id = self.hook.launch_assets(
            repository_name=self.repository_name, location_name=self.repostitory_location_name, job_name=self.job_name,
            asset_keys=self.asset_keys, check_keys=self.check_keys, tags=tags, run_config=self.run_config)
        ti.xcom_push(key="run_id", value=self.run_id)
        self.log.info("Dagster run %s: %s", self.run_id, self.hook.url.removesuffix("graphql") + f"runs/{self.run_id}")
        self.hook.wait_for_run(run_id=self.run_id)
        return self.run_id
