"""Seconds per phase of the ``online_features`` asset (ct_assets/adapters/feature_store.py) for N subjects:
register the view, copy the latest rows to the online store, prune, verify. Issue 16: at 20,000
subjects the asset took 116 s on SQLite.

The offline store is synthetic (the layout ``subject_features`` writes: the subject key, float features
with a share missing, a few text ones, the two timestamps), unless --home points at a $CT_HOME whose
``subject_features`` is already there. Each round runs the phases once more on the same store, as a
rerun of the asset would; before each round a few subjects the offline store does not have are
written online, so pruning has work. The online store is SQLite under a temporary $CT_HOME, or Redis
with --redis (a Feast project of its own, its keys removed at the end). Each phase prints wall seconds
and this process's CPU seconds (all its threads; not the Redis server's), the latter for a busy machine.

    .venv/bin/python benchmarks/online_features.py --subjects 20000 [--redis redis://127.0.0.1:6379/13]
                                                   [--rounds 2] [--profile /tmp/online.prof]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def synthetic_offline(n: int, floats: int = 196, seed: int = 0):
    """``n`` subjects' features as subject_features stores them (one row each, stamped at the landmark)."""
    import numpy as np
    import pandas as pd

    from ct_assets.adapters.feature_store import CREATED_TS, EVENT_TS
    from ct_assets.core.privacy import SUBJECT_KEY

    rng = np.random.default_rng(seed)
    values = rng.normal(0, 50, (n, floats)).round(3)
    values[rng.random((n, floats)) < 0.2] = np.nan
    frame = pd.DataFrame(values, columns=[f"F{i:03d}" for i in range(floats)])
    frame.insert(0, SUBJECT_KEY, [f"S-{i:020x}" for i in range(n)])
    for name, choices in (("SEX", ["F", "M"]), ("RACE", ["WHITE", "BLACK", None]), ("ARMCD", ["Pbo", "Xan_Hi"])):
        frame[name] = rng.choice(np.array(choices, dtype=object), n)
    frame[EVENT_TS] = pd.Timestamp("2013-01-05", tz="UTC") + pd.to_timedelta(rng.integers(0, 720, n), unit="D")
    frame[CREATED_TS] = pd.Timestamp.now(tz="UTC")
    return frame


def run(rounds: int, profile: str | None) -> None:
    import pandas as pd

    from ct_assets.adapters import feature_store as fs
    from ct_assets.defs.resources import FeatureStore

    resource = FeatureStore()
    s = resource.store_settings()
    store = resource.store()
    profiler = cProfile.Profile(time.process_time) if profile else None  # CPU time: the machine may be busy
    try:
        for r in range(rounds):
            fs.apply(store, s)
            offline = pd.read_parquet(s.offline_path)
            extra = offline.head(3).assign(**{fs.SUBJECT_KEY: [f"S-gone{i:015d}" for i in range(3)]})
            fs.write_online(store, extra)
            times, cpu = {}, {}

            def timed(name, fn, *args, times=times, cpu=cpu):
                t0, c0 = time.perf_counter(), time.process_time()
                if profiler:
                    profiler.enable()
                try:
                    return fn(*args)
                finally:
                    if profiler:
                        profiler.disable()
                    times[name], cpu[name] = time.perf_counter() - t0, time.process_time() - c0

            timed("apply", fs.apply, store, s)
            latest = timed("latest_rows", lambda: fs.latest_rows(pd.read_parquet(s.offline_path)))
            timed("materialize_latest", fs.materialize_latest, store, s, latest)
            pruned, verdict = timed("prune_and_verify", fs.prune_and_verify, store, s, latest)
            ok = (verdict["found"] == verdict["online_rows"] == len(latest) and not verdict["stale"]
                  and not verdict["differing_features"] and len(pruned) == 3)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v:.2f} s ({cpu[k]:.2f} s CPU)" for k, v in times.items())
                  + f", total {sum(times.values()):.2f} s ({sum(cpu.values()):.2f} s CPU); {len(latest):,} subjects, "
                  f"pruned {len(pruned)}, "
                  f"check {'passes' if ok else 'FAILS: ' + repr(verdict)}", flush=True)
            if not ok:
                raise SystemExit(1)
    finally:
        if profiler:
            profiler.dump_stats(profile)
            print(f"profile: {profile} (python -m pstats {profile})")
        if s.redis_url:
            store.teardown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=20000)
    parser.add_argument("--home", help="a $CT_HOME whose subject_features to use (default: a synthetic one)")
    parser.add_argument("--redis", help="online store on Redis at this URL (e.g. redis://127.0.0.1:6379/13)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", help="write a cProfile of the phases (CPU time) to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ct-online-") as tmp:
        source = None
        if args.home:  # its offline store, copied: the home's own registry and online store are left alone
            os.environ["CT_HOME"] = args.home
            from ct_assets.defs.resources import FeatureStore

            source = FeatureStore().store_settings().offline_path
            if not source.exists():
                raise SystemExit(f"no offline store at {source}: materialize subject_features first")
        os.environ["CT_HOME"] = tmp
        os.environ["CT_FEAST_PROJECT"] = f"ct_bench_{os.getpid()}"
        os.environ.pop("CT_FEAST_REGISTRY", None)
        if args.redis:
            os.environ["CT_REDIS_URL"] = args.redis
        else:
            os.environ.pop("CT_REDIS_URL", None)
        import pandas as pd

        from ct_assets.core.lake import write_parquet
        from ct_assets.defs.resources import FeatureStore

        offline = pd.read_parquet(source) if source else synthetic_offline(args.subjects)
        write_parquet(offline, FeatureStore().store_settings().offline_path)
        print(f"{len(offline):,} offline rows, {len(offline.columns) - 3} features "
              f"({'Redis ' + args.redis if args.redis else 'SQLite'})", flush=True)
        run(args.rounds, args.profile)


if __name__ == "__main__":
    main()
