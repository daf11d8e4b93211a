"""`ct validate` on synth studies of growing size: wall time, rows per second and the peak resident memory of
the whole process tree (the command and its worker processes), sampled every 0.2 s.

    python benchmarks/validate.py                               # 20,000 and 100,000 subjects (about 8 min on 2 cores)
    python benchmarks/validate.py --subjects 1000 --study DIR   # one size; DIR reused when it holds the study

The synth study (``python -m ct_assets.core.synth``) is not timed. Target: memory bounded as the study grows
(the findings domains streamed a batch per worker): at 100,000 subjects (about 29 M findings rows) the peak
stays under 3 GiB, and grows by less than a fifth of the rows' growth from 20,000 subjects.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import GIB, PeakSampler  # noqa: E402  (the same process-tree sampler as the scale benchmark)

PEAK_AT_100K_GIB = 3.0
PEAK_GROWTH_SHARE = 0.2  # of the rows' growth between two sizes


def _study(subjects: int, folder: Path) -> Path:
    if not any(folder.glob("dm*.parquet")):
        subprocess.run([sys.executable, "-m", "ct_assets.core.synth", "--out", str(folder), "--subjects", str(subjects)],
                       check=True)
    return folder


def measure(study: Path) -> dict:
    ct = Path(sys.executable).with_name("ct")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        start = time.perf_counter()
        proc = subprocess.Popen([str(ct), "validate", str(study), "--json", str(out), "--fail-on", "never"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sampler = PeakSampler(proc.pid)
        sampler.start()
        code = proc.wait()
        wall = time.perf_counter() - start
        sampler.done.set()
        sampler.join()
        if code:
            raise SystemExit(f"ct validate exited {code} on {study}")
        report = json.loads(out.read_text())
    rows = sum(d["rows"] for d in report["domains"])
    return {"rows": rows, "wall_s": round(wall, 1), "rows_per_s": round(rows / wall), "peak_gib": round(sampler.peak / GIB, 2),
            "quarantined": report["quarantined"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--study", type=Path, default=None, help="study folder (one size); made when absent")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.subjects:
            folder = args.study if args.study and len(args.subjects) == 1 else Path(tmp) / f"synth-{n}"
            results[n] = res = measure(_study(n, folder))
            print(f"{n:>9,} subjects: {res['rows']:>12,} rows in {res['wall_s']:>7.1f} s ({res['rows_per_s']:,} rows/s), "
                  f"peak {res['peak_gib']:.2f} GiB, {res['quarantined']:,} quarantined", flush=True)
    met = []
    if 100_000 in results:
        met.append(f"peak at 100,000 subjects under {PEAK_AT_100K_GIB} GiB: "
                   f"{'met' if results[100_000]['peak_gib'] < PEAK_AT_100K_GIB else 'NOT met'}")
    if len(results) > 1:
        small, big = results[min(results)], results[max(results)]
        growth = (big["peak_gib"] / small["peak_gib"] - 1) / (big["rows"] / small["rows"] - 1)
        met.append(f"peak grows {growth:.0%} of the rows' growth (target < {PEAK_GROWTH_SHARE:.0%}): "
                   f"{'met' if growth < PEAK_GROWTH_SHARE else 'NOT met'}")
    print("targets: " + "; ".join(met) if met else "targets: none apply to these sizes")
    return 0 if all(m.endswith(": met") for m in met) else 1


if __name__ == "__main__":
    raise SystemExit(main())
