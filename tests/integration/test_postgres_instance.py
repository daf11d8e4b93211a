"""The production instance setting: Dagster storage in the machine's real PostgreSQL."""

import shutil
import subprocess
import uuid

import dagster as dg
import pytest

from ct_assets.defs import keys
from ct_assets.defs.ingestion import raw_assets
from ct_assets.defs.pools import LEGACY_POOLS, ensure_pools
from ct_assets.defs.profiles import profile_resources
from ct_assets.defs.quality import validation_assets
from tests.conftest import ROOT


def _psql(sql: str) -> subprocess.CompletedProcess:
    return subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql],
                          capture_output=True, text=True)


@pytest.fixture
def pg_instance(ct_home, monkeypatch):
    if shutil.which("psql") is None or _psql("select 1").returncode != 0:
        pytest.skip("no PostgreSQL server on 127.0.0.1:5432")
    db = f"ct_test_{uuid.uuid4().hex[:8]}"
    assert _psql(f"create database {db}").returncode == 0
    # The machine's server trusts local connections; a deployment puts its credentials in this URL.
    monkeypatch.setenv("DAGSTER_PG_URL", f"postgresql+psycopg2://postgres@127.0.0.1:5432/{db}")
    (ct_home / "dagster" / "dagster.yaml").write_text((ROOT / "deploy" / "dagster.postgres.yaml").read_text())
    try:
        with dg.DagsterInstance.get() as instance:
            yield instance
    finally:
        _psql(f"drop database if exists {db} with (force)")


def test_runs_and_pools_in_postgres(pg_instance):
    from dagster_postgres import PostgresEventLogStorage

    assert isinstance(pg_instance.event_log_storage, PostgresEventLogStorage)
    ensure_pools(pg_instance)
    assert pg_instance.event_log_storage.get_concurrency_info("spark_jobs").slot_count == LEGACY_POOLS["spark_jobs"]
    selection = [a for a in raw_assets + validation_assets if set(a.keys) & {keys.raw("DM"), keys.validated("DM")}]
    result = dg.materialize(selection, resources=profile_resources(), instance=pg_instance)
    assert result.success
    event = pg_instance.get_latest_materialization_event(keys.validated("DM"))
    assert event.run_id == result.run_id and event.asset_materialization.metadata["dagster/row_count"].value == 306
