import os
import stat

import pandas as pd
import pytest

from ct_assets.core import lake, privacy


def test_pseudonyms_are_keyed_stable_and_shaped(ct_home):
    ids = pd.Series(["01-701-1015", "01-701-1023", None, "01-701-1015"])
    first = privacy.pseudonymise(ids)
    assert first.iloc[0] == first.iloc[3] and pd.isna(first.iloc[2])
    assert first.iloc[0].startswith("S-") and len(first.iloc[0]) == 22
    assert (privacy.pseudonymise(ids).dropna() == first.dropna()).all()  # same dev key
    other = privacy.pseudonymise(ids, key=b"another key")
    assert other.iloc[0] != first.iloc[0]
    key_file = ct_home / "secrets" / "pseudonym.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_key_from_environment_wins(ct_home, monkeypatch):
    monkeypatch.setenv("CT_PSEUDONYM_KEY", "k1" * 16)
    a = privacy.pseudonymise(pd.Series(["x"]))
    monkeypatch.setenv("CT_PSEUDONYM_KEY", "k2" * 16)
    assert privacy.pseudonymise(pd.Series(["x"])).iat[0] != a.iat[0]
    assert not (ct_home / "secrets").exists()


def test_replace_subject_ids_drops_direct_identifiers(ct_home):
    df = pd.DataFrame({"USUBJID": ["01-1"], "SUBJID": ["1"], "AGE": [50]})
    out = privacy.replace_subject_ids(df)
    assert list(out.columns) == ["SUBJECT_KEY", "AGE"]


def test_parquet_write_is_atomic_on_failure(tmp_path):
    path = tmp_path / "zone" / "x.parquet"
    lake.write_parquet(pd.DataFrame({"a": [1]}), path)

    class Boom(pd.DataFrame):
        def to_parquet(self, *a, **k):
            raise OSError("disk full")

    with pytest.raises(OSError):
        lake.write_parquet(Boom({"a": [2]}), path)
    assert pd.read_parquet(path)["a"].tolist() == [1]  # the old version is intact
    assert os.listdir(path.parent) == ["x.parquet"]  # and no temp file is left


def test_publish_dir_swaps_versions(tmp_path):
    link = tmp_path / "out.parquet"
    for value in (1, 2):
        version = lake.new_version_dir(link)
        version.mkdir()
        pd.DataFrame({"v": [value]}).to_parquet(version / "part-0.parquet")
        lake.publish_dir(version, link)
        assert pd.read_parquet(link)["v"].tolist() == [value]
    assert len(list(tmp_path.iterdir())) == 2  # the link and the current version only


def test_ct_home_is_made_owner_only(tmp_path, monkeypatch):
    from ct_assets import settings

    home = tmp_path / "loose"
    (home / "dagster").mkdir(parents=True)  # as a tool with umask 022 left it
    (home / "dagster" / "runs.db").write_bytes(b"")
    os.chmod(home, 0o755), os.chmod(home / "dagster", 0o755), os.chmod(home / "dagster" / "runs.db", 0o644)
    monkeypatch.setenv("CT_HOME", str(home))
    assert settings.ct_home() == home and stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "dagster").stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "dagster" / "runs.db").stat().st_mode) == 0o600
    written = lake.write_parquet(pd.DataFrame({"USUBJID": ["01-701-1015"]}), home / "lake" / "raw" / "raw_dm.parquet")
    assert stat.S_IMODE(written.stat().st_mode) == 0o600 and stat.S_IMODE(written.parent.stat().st_mode) == 0o700
