"""Wall time of materializing the whole asset graph on the bundled study, in a fresh $CT_HOME.

Each run is a new process (`python -m ct_assets.demo`), so the figure includes imports, the Spark
session start and the MLflow store creation, as a user's `make demo` does. Target: < 120 s on a
2-core machine.

    python benchmarks/materialize_graph.py --runs 3
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--study-dir", help="another SDTM study (default: the bundled pilot)")
    args = parser.parse_args()
    times = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as home:
            env = os.environ | {"CT_HOME": home, "DAGSTER_HOME": os.path.join(home, "dagster")}
            if args.study_dir:
                env["CT_STUDY_DIR"] = args.study_dir
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "ct_assets.demo"], env=env, capture_output=True, text=True)
            elapsed = time.perf_counter() - started
            if proc.returncode != 0:
                print(proc.stdout[-2000:], proc.stderr[-2000:], sep="\n")
                return 1
            times.append(elapsed)
            print(f"run {i + 1}: {elapsed:.1f} s", flush=True)
    print(f"whole graph, {args.runs} runs: min {min(times):.1f} s, median {statistics.median(times):.1f} s, "
          f"max {max(times):.1f} s (target < 120 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
