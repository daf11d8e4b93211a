"""How long the code locations take to load, against a bare `import dagster`, side by side.

Every `dagster` CLI call, every Airflow task's run worker and every reload of the UI pays the load
of the code location. Target: loading the main code location (import and build the Definitions)
costs at most 1.5x a bare `python -c "import dagster"`, and nothing heavy (Spark, MLflow, scipy,
scikit-learn, pandera, pandas, numpy, pyarrow, Feast) is imported on the way.

    python benchmarks/load_time.py --runs 7
    python benchmarks/load_time.py --imports-only     # exit 1 naming any heavy module loaded (a test runs it)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

HEAVY = ("pyspark", "mlflow", "scipy", "sklearn", "pandera", "dagster_mlflow", "dagster_pyspark", "dagster_pandera",
         "pandas", "numpy", "pyarrow", "feast", "redis", "duckdb")
COMMANDS = {
    "import dagster": "import dagster",
    "ct_assets (main location)": "import ct_assets.definitions as d; d.defs.get_repository_def()",
    "ct_feature_backfill": "import ct_assets.locations.backfill as d; d.defs.get_repository_def()",
    "ct_kafka": "import ct_assets.locations.kafka as d; d.defs.get_repository_def()",
    "ct_kfp": "import ct_kfp.location as d; d.defs.get_repository_def()",
}


def wall(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - started


def heavy_modules_loaded(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout.split()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/load_time.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each command, interleaved (after one warm-up)")
    parser.add_argument("--imports-only", action="store_true",
                        help="no timing: list the heavy modules each code location loads; exit 1 if there is one")
    args = parser.parse_args(argv)
    if args.imports_only:
        loaded = {name: heavy_modules_loaded(code) for name, code in COMMANDS.items() if name != "import dagster"}
        for name, modules in loaded.items():
            print(f"{name}: {' '.join(modules) or 'nothing heavy'}")
        return 1 if any(loaded.values()) else 0
    for code in COMMANDS.values():
        wall(code)  # warm the page cache
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.runs):  # interleaved, so a busy moment of the machine hits every command alike
        for name, code in COMMANDS.items():
            times[name].append(wall(code))
    base = statistics.median(times["import dagster"])
    print(f"{'command':<28} {'min':>6} {'median':>7} {'max':>6}  x import dagster   heavy modules loaded")
    for name, values in times.items():
        heavy = "" if name == "import dagster" else (" ".join(heavy_modules_loaded(COMMANDS[name])) or "none")
        print(f"{name:<28} {min(values):6.2f} {statistics.median(values):7.2f} {max(values):6.2f}  "
              f"{statistics.median(values) / base:16.2f}   {heavy}")
    ratio = statistics.median(times["ct_assets (main location)"]) / base
    print(f"\nmain location / import dagster = {ratio:.2f} (target <= 1.5)")
    return 0 if ratio <= 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
