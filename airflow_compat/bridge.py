"""The Airflow side of the bridge: an operator that runs some assets of a Dagster job through the
Dagster webserver's GraphQL API, on Airflow 2.11 and on Airflow 3.

A legacy task stands for a few assets (or asset checks) of its DAG's job, so this operator launches
that job with an asset and check selection, tags the Dagster run with the Airflow DAG, task and run
ids, and for partitioned jobs passes the partition range from the DAG run's ``partition_range``
param. It logs the run's URL and each status change, fails when the run fails, and terminates the
run when the task is killed. The Dagster URL is the login of the ``dagster_default`` connection.

- Airflow 2.11: the GraphQL calls go through dagster-airflow's ``DagsterHook`` (the documented
  legacy deployment). dagster-airflow's ``DagsterOperator`` launches a whole job, and builds its
  hook, reading the connection from the database, in its constructor: hence not a subclass of it.
- Airflow 3: dagster-airflow does not import there (it imports ``apply_defaults``, removed in 3), so
  the calls go through Dagster's own GraphQL client (``dagster_graphql.DagsterGraphQLClient``), the
  operator is an ``airflow.sdk.BaseOperator`` and the connection comes through the task SDK.

Parsing a DAG file costs only Airflow: the Dagster libraries (seconds of imports) and the
connection are loaded when a task runs, never when a DAG processor parses the file, so parsing
needs no metadata database, no connection, and takes milliseconds.

The emitter copies this file next to the DAGs as ``ct_dagster_bridge.py``: it needs only Airflow
and dagster-airflow (2.11) or dagster-graphql (3), never the platform's code.
"""

from __future__ import annotations

import json
import time
import warnings
from functools import cached_property

try:  # Airflow 3: the task SDK
    from airflow.sdk import BaseHook, BaseOperator
    from airflow.sdk.exceptions import AirflowException

    AIRFLOW_3 = True
except ImportError:  # Airflow 2.11
    from airflow.exceptions import AirflowException
    from airflow.models import BaseOperator

    AIRFLOW_3 = False

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


RUN_STATUS = """
query Status($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { status } ... on Error { message } }
}"""
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def _asset_key(key: str) -> dict:
    return {"path": key.split("/")}


class HookClient:
    """GraphQL through dagster-airflow's ``DagsterHook`` (Airflow 2.11)."""

    def __init__(self, hook):
        self.hook, self.url = hook, hook.url

    def execute(self, query: str, variables: dict) -> dict:
        import requests

        headers = {"Dagster-Cloud-Api-Token": self.hook.user_token or ""}
        response = requests.post(self.url, json={"query": query, "variables": variables}, headers=headers, timeout=60)
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise AirflowException(f"Dagster GraphQL error: {body['errors']}")
        return body["data"]

    def terminate(self, run_id: str) -> None:
        self.hook.terminate_run(run_id=run_id)


class GraphQLClient:
    """GraphQL through Dagster's ``DagsterGraphQLClient`` (Airflow 3), on the webserver's GraphQL URL."""

    def __init__(self, url: str):
        from urllib.parse import urlsplit

        from dagster_graphql import DagsterGraphQLClient

        parts = urlsplit(url)
        self.url = url
        self.client = DagsterGraphQLClient(parts.hostname, port_number=parts.port, use_https=parts.scheme == "https",
                                           path_prefix=parts.path.removesuffix("/").removesuffix("graphql").rstrip("/"))

    def execute(self, query: str, variables: dict) -> dict:
        from dagster_graphql import DagsterGraphQLClientError

        try:
            # The client's launch helper has no asset check selection: its transport, with our query.
            return self.client._execute(query, variables)
        except DagsterGraphQLClientError as e:
            raise AirflowException(f"Dagster GraphQL error: {e}") from e

    def terminate(self, run_id: str) -> None:
        self.client.terminate_run(run_id)


def partition_keys(client, asset_key: str) -> list[str]:
    node = client.execute(PARTITION_KEYS, {"assetKey": _asset_key(asset_key)})["assetNodeOrError"]
    if node["__typename"] != "AssetNode":
        raise AirflowException(f"asset {asset_key} not found in Dagster")
    return node["partitionKeys"]


def launch_assets(client, *, repository_name: str, location_name: str, job_name: str, asset_keys: list[str],
                  check_keys: list[tuple[str, str]], tags: dict[str, str], run_config: dict) -> str:
    selector = {
        "repositoryName": repository_name, "repositoryLocationName": location_name, "jobName": job_name,
        "assetSelection": [_asset_key(k) for k in asset_keys],
        "assetCheckSelection": [{"assetKey": _asset_key(k), "name": n} for k, n in check_keys],
    }
    params = {"selector": selector, "runConfigData": json.dumps(run_config or {}),
              "executionMetadata": {"tags": [{"key": k, "value": str(v)} for k, v in tags.items()]}}
    result = client.execute(LAUNCH, {"executionParams": params})["launchRun"]
    if result["__typename"] == "LaunchRunSuccess":
        return result["run"]["id"]
    reason = "; ".join(e["message"] for e in result.get("errors", [])) or result.get("message", result["__typename"])
    raise AirflowException(f"Dagster refused to launch {job_name} {asset_keys}: {reason}")


def wait_for_run(client, run_id: str, poll_s: float = 1.0, log=None) -> None:
    """Return when the run succeeds, raise when it fails or is canceled; ``log`` each status change.
    (dagster-airflow's ``DagsterHook.wait_for_run`` polls every 5 s and sleeps 5 s more after the run
    finished: 5-10 s per task, over a minute per legacy DAG run.)"""
    seen = None
    while True:
        run = client.execute(RUN_STATUS, {"runId": run_id})["runOrError"]
        if run["__typename"] != "Run":
            raise AirflowException(f"Dagster run {run_id}: {run.get('message', run['__typename'])}")
        if log and run["status"] != seen:
            log.info("Dagster run %s: %s", run_id, run["status"])
        seen = run["status"]
        if run["status"] in FINISHED:
            break
        time.sleep(poll_s)
    if run["status"] != "SUCCESS":
        raise AirflowException(f"Dagster run {run_id} {'failed' if run['status'] == 'FAILURE' else 'was canceled'}")


class DagsterAssetsOperator(BaseOperator):
    """Run ``asset_keys`` (and ``check_keys``) of Dagster job ``job_name``; fail when the run fails."""

    template_fields = ["run_config"]
    ui_color = "#663399"  # dagster-airflow's colours
    ui_fgcolor = "#e0e3fc"

    def __init__(self, *, job_name: str, asset_keys: list[str], check_keys: list[tuple[str, str]] = (),
                 partitioned: bool = False, repository_name: str = "__repository__",
                 repostitory_location_name: str = "", run_config: dict | None = None,
                 dagster_conn_id: str = "dagster_default", **kwargs) -> None:
        super().__init__(**kwargs)
        self.job_name = job_name
        self.repository_name = repository_name
        self.repostitory_location_name = repostitory_location_name  # sic: dagster-airflow's spelling
        self.run_config = run_config or {}
        self.dagster_conn_id = dagster_conn_id
        self.asset_keys = list(asset_keys)
        self.check_keys = [tuple(c) for c in check_keys]
        self.partitioned = partitioned
        self.run_id = None

    @cached_property
    def client(self):
        """The GraphQL client on the ``dagster_default`` connection, built when the task runs."""
        if AIRFLOW_3:
            return GraphQLClient(BaseHook.get_connection(self.dagster_conn_id).login)
        from dagster import SupersessionWarning

        # dagster-airflow is marked as superseded by dagster-airlift; it is the bridge we chose.
        warnings.filterwarnings("ignore", category=SupersessionWarning)
        from dagster_airflow.hooks.dagster_hook import DagsterHook

        return HookClient(DagsterHook(dagster_conn_id=self.dagster_conn_id, user_token=""))  # OSS Dagster: no token

    def _partition_tags(self, context) -> dict[str, str]:
        wanted = (context["params"].get("partition_range") or "all").strip()
        if wanted == "all":
            keys = partition_keys(self.client, (self.asset_keys or [c[0] for c in self.check_keys])[0])
            if not keys:
                raise AirflowException("no partitions to backfill: materialize subject_features first")
            first, last = keys[0], keys[-1]
        else:
            first, _, last = wanted.partition("...")
            last = last or first
        return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}

    def execute(self, context):
        ti = context["task_instance"]
        tags = {"airflow/dag_id": ti.dag_id, "airflow/task_id": ti.task_id, "airflow/run_id": context["run_id"],
                "airflow/try_number": ti.try_number}
        if self.partitioned:
            tags |= self._partition_tags(context)
        self.run_id = launch_assets(
            self.client, repository_name=self.repository_name, location_name=self.repostitory_location_name,
            job_name=self.job_name, asset_keys=self.asset_keys, check_keys=self.check_keys, tags=tags,
            run_config=self.run_config)
        ti.xcom_push(key="run_id", value=self.run_id)
        self.log.info("Dagster run %s: %s", self.run_id, self.client.url.removesuffix("graphql") + f"runs/{self.run_id}")
        wait_for_run(self.client, self.run_id, log=self.log)
        self.log.info("Dagster run %s succeeded", self.run_id)
        return self.run_id

    def on_kill(self):
        if self.run_id:
            self.log.info("Terminating Dagster run %s", self.run_id)
            self.client.terminate(self.run_id)
