"""The local DuckDB steps' connection: bounded memory, and a spill folder of its own that goes with it. A shared one
is unsafe: DuckDB deletes every spill file of its folder when one of its users closes (duckdb/duckdb#24758)."""

from pathlib import Path

from ct_assets.engines.duck import MEMORY_LIMIT, connect


def spill_folder(con) -> Path:
    return Path(con.execute("SELECT current_setting('temp_directory')").fetchone()[0])


def test_each_connection_spills_into_its_own_folder_removed_on_close():
    first, second = connect(), connect()
    assert spill_folder(first) != spill_folder(second) and not spill_folder(first).exists()  # made at the first spill
    limit = first.execute("SELECT current_setting('memory_limit')").fetchone()[0]  # DuckDB says "3.0 GiB"
    assert float(limit.split()[0]) == float(MEMORY_LIMIT.removesuffix("GiB")) and limit.endswith("GiB")
    first.execute("SET memory_limit = '64MB'")
    folder = spill_folder(first)
    rows = first.execute("SELECT count(*) FROM (SELECT * FROM range(5000000) t(x) ORDER BY random())").fetchone()[0]
    assert rows == 5_000_000 and folder.exists()  # it spilled, into its own folder
    second.execute("SELECT 1")
    second.close()  # another connection closing leaves the first's spill alone
    assert folder.exists()
    first.close()
    assert not folder.exists()
