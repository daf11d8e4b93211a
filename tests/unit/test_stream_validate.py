"""Validation streamed through local worker processes gives what validation of the whole domain in pandas
gives: the same rows quarantined with the same rules and reasons, the same validated rows, whatever the
parts and batches the domain is cut into (a repeat of a key in another part is still a repeat)."""

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ct_assets.core.schemas import REPEATED_ROW_RULE
from ct_assets.engines.pandas import REASON, RULES, validate_domain
from ct_assets.engines.stream import validate_stream
from tests.integration.test_spark_validate import CUTOFF, messy_vitals


def delivered_in_parts(tmp_path, raw: pd.DataFrame, cut: int):
    folder = tmp_path / "raw_vs"
    folder.mkdir()
    for i, part in enumerate((raw.iloc[:cut], raw.iloc[cut:])):
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), folder / f"part-{i:05d}.parquet")
    return folder


def nulls_as_none(df: pd.DataFrame) -> pd.DataFrame:
    """Arrow-backed text holds <NA> where pandas' object text holds None: the same missing value."""
    return df.astype(object).where(df.notna(), None)


def messy_with_a_late_repeat() -> pd.DataFrame:
    raw = messy_vitals()
    late = raw.iloc[[3]].assign(VSSTRESN="37.1", _SOURCE_ROW=len(raw))  # a's VSSEQ 3 again, in the second part
    return pd.concat([raw, late], ignore_index=True)


@pytest.mark.parametrize("processes", [1, 2])
def test_streamed_validation_matches_the_whole_domain_in_pandas(tmp_path, ct_home, processes):
    raw = messy_with_a_late_repeat()
    folder = delivered_in_parts(tmp_path, raw, cut=6)
    result = validate_stream("VS", folder, {"a", "b"}, CUTOFF, tmp_path / "v", tmp_path / "q", rows=3,
                             processes=processes)
    expected = validate_domain("VS", raw, {"a", "b"}, CUTOFF)

    quarantined = pd.read_parquet(tmp_path / "q").set_index("_SOURCE_ROW")[[RULES, REASON]].sort_index()
    want = expected.quarantined.set_index("_SOURCE_ROW")[[RULES, REASON]].sort_index()
    assert len(want) == 8 and "VSSEQ: multiple_fields_uniqueness" in want[RULES][len(raw) - 1]
    assert want[RULES][11] == f"CT-VS-0007 {REPEATED_ROW_RULE}"  # row 3 again, in the other part: a repeat, not a second version
    pd.testing.assert_frame_equal(quarantined, want, check_dtype=False)

    validated = pd.read_parquet(tmp_path / "v").sort_values("_SOURCE_ROW", ignore_index=True)
    want_v = expected.validated.sort_values("_SOURCE_ROW", ignore_index=True)
    assert list(validated.columns) == list(want_v.columns) and "USUBJID" not in validated
    pd.testing.assert_frame_equal(nulls_as_none(validated), nulls_as_none(want_v), check_dtype=False)

    assert (result.raw, result.validated, result.quarantined) == (len(raw), len(want_v), len(want))
    assert result.rules == expected.rules and result.subjects == want_v["SUBJECT_KEY"].nunique()
    assert result.absent_columns == expected.absent_columns


def test_a_missing_required_column_quarantines_every_batch_with_the_reason(tmp_path, ct_home):
    raw = messy_vitals().drop(columns=["VSTESTCD"])
    folder = delivered_in_parts(tmp_path, raw, cut=4)
    result = validate_stream("VS", folder, {"a", "b"}, CUTOFF, tmp_path / "v", tmp_path / "q", rows=3, processes=1)
    quarantined = pd.read_parquet(tmp_path / "q")
    assert (result.validated, result.quarantined) == (0, len(raw))
    assert quarantined[REASON].str.contains("VSTESTCD").all() and quarantined[RULES].notna().all()


def test_the_scan_counts_units_and_hashes_keys_as_pandas_would(tmp_path):
    """The scan stays in Arrow; its facts are what pandas makes of the same columns: a result counts only
    with a test, a unit and a value (NaN, null and absent alike are none; text counts), units standardised,
    key hashes those of the ids and --SEQ as numbers (text that is no number as NaN)."""
    from ct_assets.engines.stream import _scan_part, _standard

    raw = pd.DataFrame({"USUBJID": ["a", "a", None, "b", "b", "b"], "LBSEQ": ["1", "1", "2", "x", None, "3"],
                        "LBTESTCD": ["ALT", "ALT", None, "AST", "AST", "AST"],
                        "LBSTRESU": ["g/dL", "U/L", "U/L", None, "mg/dL", "mg/L"]})
    for values in (pa.array([1.0, float("nan"), 3.0, None, 5.0, 6.0]), pa.array(["1", "", "abc", None, "5", "six"])):
        part = tmp_path / "part-00000.parquet"
        pq.write_table(pa.Table.from_pandas(raw, preserve_index=False).append_column("LBSTRESN", values), part)
        counts, hashes, rows = _scan_part("LB", part, ["LBTESTCD", "LBSTRESN", "LBSTRESU"], ["USUBJID", "LBSEQ"], 4)
        df = pq.read_table(part).to_pandas()
        has = df["LBSTRESN"].notna() & df["LBSTRESU"].notna() & df["LBTESTCD"].notna()
        expected = pd.DataFrame({"t": df.loc[has, "LBTESTCD"], "u": df.loc[has, "LBSTRESU"].map(_standard)}).value_counts()
        assert dict(counts) == expected.to_dict() and sum(counts.values()) == int(has.sum()) >= 3
        key = pd.DataFrame({"u": df["USUBJID"].astype(object), "s": pd.to_numeric(df["LBSEQ"], errors="coerce")})
        assert (hashes == pd.util.hash_pandas_object(key, index=False).to_numpy()).all() and rows == len(df)
        assert len(set(hashes.tolist())) == 4  # a + 1 twice; b + "x" and b + none both b + NaN


def test_repeated_key_hashes_are_found_in_two_arrays_memory():
    """The scan's duplicate finder over 195 M hashes at a million subjects: the values seen more than once, as
    ``np.unique``'s counts say, from parts gathered without holding them twice."""
    import numpy as np

    from ct_assets.engines.stream import _gathered, _repeated_values

    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 5000, n, dtype=np.uint64) for n in (3000, 0, 2500)]
    expected = np.concatenate(parts)
    every = _gathered(list(parts), len(expected))
    assert np.array_equal(every, expected)
    values, counts = np.unique(expected, return_counts=True)
    assert np.array_equal(_repeated_values(every), values[counts > 1])
    assert len(_repeated_values(np.arange(10, dtype=np.uint64))) == 0
