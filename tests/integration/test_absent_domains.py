"""A study may lack any optional SDTM domain, alone or with others: the whole graph still runs, on what is there.

And a run that fails upstream of anything serving people changes nothing that serves them: the champion alias,
the online store and the deployment stay where the last sound run left them.
"""

from collections import Counter

import dagster as dg
import mlflow
import pandas as pd
import pytest

from ct_assets import settings
from ct_assets.definitions import defs
from ct_assets.defs import keys
from tests.conftest import private_home
from tests.integration.test_messy_studies import PILOT_FILES, _failures, _metadata, assert_reconciles, small_pilot

# The gate's verdict on a 90-subject study is not what these tests are about: any model may be champion.
ANY_MODEL = {"ops": {"registered_model": {"config": {"min_auroc": 0.0}}}}


def _run_whole_graph(study, home, instance):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CT_STUDY_DIR", str(study))
        mp.setenv("CT_DATA_CUTOFF", "2026-11-30")
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, run_config=ANY_MODEL, raise_on_error=False)
    return result, _failures(instance, result.run_id)


def _champion(home) -> int:
    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    return int(client.get_model_version_by_alias(settings.MODEL_NAME, "champion").version)


@pytest.mark.parametrize("absent", [("vs",), ("lbch", "lbhe"), ("sv", "ex")], ids=["no VS", "no LB", "no SV and EX"])
def test_the_whole_graph_runs_without_optional_domains(tmp_path, spark, absent):
    study = small_pilot(tmp_path / "study", files=tuple(f for f in PILOT_FILES if f not in absent))
    (study / "relrec.csv").write_text("STUDYID,RDOMAIN\nCDISCPILOT01,AE\n")  # delivered, read by no domain
    ae = pd.read_parquet(study / "ae.parquet")
    ae.loc[ae.index[:3], "AESTDTC"] = ae.loc[ae.index[:3], "AESTDTC"].str.slice(0, 7)  # valid SDTM: counted, kept
    ae.to_parquet(study / "ae.parquet", index=False)
    partial = Counter()  # by domain: the pilot has partial AE dates of its own
    for f in study.glob("*.parquet"):
        df = pd.read_parquet(f)
        partial[f.stem[:2].upper()] += int(sum(df[c].dropna().str.len().lt(10).sum() for c in df if c.endswith("DTC")))
    with private_home(tmp_path / "ct") as home, dg.DagsterInstance.get() as instance:
        result, failures = _run_whole_graph(study, home, instance)
        assert result.success, failures
        landed = {e.asset_key for e in result.get_asset_materialization_events()}
        assert landed == set(defs.resolve_all_asset_keys())
        assert_reconciles(home)
        raw_dm = _metadata(result, keys.raw("DM"))
        assert raw_dm["ignored_files"] == "relrec.csv"
        missing = {"vs": "VS", "lbch": "LB", "sv": "SV", "ex": "EX"}
        for domain in (missing[f] for f in absent if f in missing):
            assert _metadata(result, keys.raw(domain))["present_in_study"] is False
        features = pd.read_parquet(home / "feature_store/subject_features.parquet")
        prefixes = {c.split("_")[0] for c in features.columns if "__" in c}
        assert prefixes == {"VS", "LB"} - {missing[f] for f in absent if f in missing}
        assert _champion(home) == 1
        assert _metadata(result, keys.validated("AE"))["partial_dates"] == partial["AE"] >= 3
        assert _metadata(result, keys.DATA_QUALITY_REPORT)["partial_dates"] == sum(partial.values())


def test_a_failed_run_leaves_the_champion_the_online_store_and_the_server_where_they_were(tmp_path, spark):
    study = small_pilot(tmp_path / "study")
    with private_home(tmp_path / "ct") as home, dg.DagsterInstance.get() as instance:
        first, failures = _run_whole_graph(study, home, instance)
        assert first.success, failures
        assert _champion(home) == 1

        data = (study / "sv.parquet").read_bytes()
        (study / "sv.parquet").write_bytes(data[: len(data) // 2])  # the next delivery's SV truncated in transfer
        second, failures = _run_whole_graph(study, home, instance)
        assert not second.success and set(failures) == {"raw_sv"}, failures
        landed = {e.asset_key for e in second.get_asset_materialization_events()}
        # Training went on and registered a challenger that passes the gate ...
        assert keys.REGISTERED_MODEL in landed
        [gate] = [c for c in second.get_asset_check_evaluations() if c.check_name == "champion_gate"]
        assert gate.passed
        # ... but the quality steps never ran, so nothing that serves people moved.
        assert not landed & {keys.DATA_QUALITY_REPORT, keys.CHAMPION_MODEL, keys.ONLINE_FEATURES, keys.MODEL_DEPLOYMENT}
        assert _champion(home) == 1
