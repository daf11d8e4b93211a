"""The visit table on one machine (DuckDB) and on a cluster (the Spark job): the same table, cell for cell after
sorting, on the pilot, on a study with partial dates and on a 2,000-subject synth study."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ct_assets.core.privacy import SUBJECT_KEY
from ct_assets.core.sdtm import read_domain
from ct_assets.engines import duck_visits
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
