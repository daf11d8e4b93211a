"""The data path's local engine (DuckDB) against its other statements, on the pilot, on a study with partial dates
and on a 2,000-subject synth study: the visit table equals the Spark job's cell for cell after sorting, and the
quality monitors (consistency, anomalies) equal the pandas definitions in ``core.report``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ct_assets.core import report
from ct_assets.core.privacy import SUBJECT_KEY
from ct_assets.core.sdtm import read_domain
from ct_assets.engines import duck_quality, duck_visits
from ct_assets.engines.pandas import validate_study
from spark import visits as job
from tests.conftest import private_home
from tests.integration.test_partial_dates import partial_twin
from tests.studies import build_other_study, pilot_dir

CUTOFF = "2026-11-30"


def _write(frames: dict[str, pd.DataFrame], folder: Path) -> dict[str, Path]:
    paths = {}
    for domain, df in frames.items():
        (folder / domain).mkdir(parents=True)
        df.to_parquet(folder / domain / "part-0.parquet", index=False)
        paths[domain] = folder / domain
    return paths


def _validated(study: Path, folder: Path) -> dict[str, Path]:
    raw = {d: read_domain(study, d) for d in ("DM", "VS", "LB")}
    return _write({d: r.validated for d, r in validate_study(raw, CUTOFF).items()}, folder)


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    from ct_assets.core.synth import grow_study

    root = tmp_path_factory.mktemp("engines")
    with private_home(root / "home"):
        synth = root / "synth"
        grow_study(pilot_dir(), synth, 2_000, seed=3)
        other = build_other_study(root / "other", n_subjects=120, seed=11)
        complete = {d.upper(): pd.read_csv(other / f"{d}.csv", dtype={"USUBJID": str}) for d in ("dm", "vs", "lb", "ae", "ds")}
        partial, _, _ = partial_twin(complete)
        partial = {d: partial[d].rename(columns={"USUBJID": SUBJECT_KEY}) for d in ("DM", "VS", "LB")}
        yield {"pilot": _validated(pilot_dir(), root / "pilot"), "synth 2,000": _validated(synth, root / "synth-v"),
               "partial dates": _write(partial, root / "partial")}


@pytest.mark.parametrize("study", ["pilot", "partial dates", "synth 2,000"])
def test_duckdb_and_spark_give_the_same_visit_table(spark, studies, study, tmp_path):
    paths = studies[study]
    findings = {d: paths[d] for d in ("VS", "LB")}
    units = duck_visits.test_units(findings)
    rows = duck_visits.process_visits(findings, paths["DM"], tmp_path / "duck", tests=list(units))

    frames = {d: spark.read.parquet(str(p)) for d, p in findings.items()}
    spark_units = job.test_units(frames)
    job.process_visits(frames, spark.read.parquet(str(paths["DM"])), tests=list(spark_units)) \
        .write.mode("overwrite").parquet(str(tmp_path / "spark"))

    keys = [SUBJECT_KEY, "VISITNUM"]
    duck = pd.read_parquet(tmp_path / "duck").sort_values(keys, ignore_index=True)
    on_spark = pd.read_parquet(tmp_path / "spark").sort_values(keys, ignore_index=True)
    assert rows == len(duck) > 0 and set(units) == set(spark_units)
    pd.testing.assert_frame_equal(duck, on_spark, check_exact=True)  # dtypes, order of columns, every cell
    if study == "partial dates":  # the partial dates are there: visits bounded, with no day of their own
        assert (duck["EARLIEST_DAY"] < duck["LATEST_DAY"]).any() and duck["STUDY_DAY"].isna().any()


@pytest.mark.parametrize("study", ["pilot", "partial dates", "synth 2,000"])
def test_quality_monitors_on_duckdb_equal_the_pandas_definitions(studies, study):
    paths = studies[study]
    dm = pd.read_parquet(paths["DM"])
    period = report.study_period(dm)
    for d in ("VS", "LB"):
        frame = pd.read_parquet(paths[d])
        assert duck_quality.dates_within_period(paths[d], d, period) == report.dates_within_period(frame, d, period), d
    vs = pd.read_parquet(paths["VS"])
    assert duck_quality.visit_order(paths["VS"], "VSDTC") == report.visit_order(vs, "VSDTC")
    expected = pd.concat([report.anomalies(pd.read_parquet(paths[d]), d) for d in ("VS", "LB")], ignore_index=True)
    key = ["test", "results", "anomalies", "share"]
    # One query per domain, then the tests a few at a time (as a million subjects' LB is queried, in bounded memory)
    for limit in (duck_quality.RESULTS_PER_QUERY, 3 * len(vs) // vs["VSTESTCD"].nunique()):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(duck_quality, "RESULTS_PER_QUERY", limit)
            got = duck_quality.anomalies({d: paths[d] for d in ("VS", "LB")})
        pd.testing.assert_frame_equal(got[key].sort_values("test", ignore_index=True),
                                      expected[key].sort_values("test", ignore_index=True), check_dtype=False)
    if study == "partial dates":  # partial dates are judged by their interval: some inside, some not assessable
        share = report.dates_within_period(vs, "VS", period)
        assert share is not None and 0 < share <= 1


def test_anomaly_queries_group_tests_under_the_results_limit():
    counts = [("A", 5), ("B", 5), ("C", 12), ("D", 1), ("E", 9)]
    assert duck_quality._groups(counts, 10) == [["A", "B"], ["C"], ["D", "E"]]
    assert duck_quality._groups(counts, 100) == [["A", "B", "C", "D", "E"]] and duck_quality._groups([], 10) == []


def test_subjects_in_dm_on_duckdb(tmp_path):
    """Raw findings whose subject DM does not know count against the share; a raw dataset without USUBJID has none
    known, one without rows is consistent, one missing from the lake fails."""
    raw_dm = pd.DataFrame({"USUBJID": ["01-001", "01-002", None]})
    raw = pd.DataFrame({"USUBJID": ["01-001", "01-002", "01-002", "99-999"], "VSTESTCD": ["SYSBP"] * 4})
    _write({"vs": raw, "lb": raw.drop(columns="USUBJID"), "ae": raw.head(0)}, tmp_path)
    assert duck_quality.subjects_in_dm(tmp_path / "vs", raw_dm["USUBJID"]) == report.subjects_in_dm(raw, raw_dm) == 0.75
    assert duck_quality.subjects_in_dm(tmp_path / "lb", raw_dm["USUBJID"]) == 0.0
    assert duck_quality.subjects_in_dm(tmp_path / "ae", raw_dm["USUBJID"]) == 1.0
    with pytest.raises(FileNotFoundError, match=r"^ex: missing from the lake"):  # lost, not absent: fails, says which
        duck_quality.subjects_in_dm(tmp_path / "ex", raw_dm["USUBJID"])
    with pytest.raises(FileNotFoundError, match=r"^sv: missing from the lake"):
        duck_quality.visit_order(tmp_path / "sv", "SVSTDTC")
