"""Memory benchmark: Sun-Abraham and linear extended TWFE from count tables (the default)
against the dense rows x cells design they replaced, on one synthetic staggered panel.

    .venv/bin/python benchmarks/saturated_memory.py                                # 2,000 and 10,000 x 96
    .venv/bin/python benchmarks/saturated_memory.py --townships 2000 10000 40000 --dense-max 10000

The panel is ``saturated_scale.make_panel`` (three cohorts starting in months 30, 45, 70,
70% never treated): Sun-Abraham has 285 cells, extended TWFE 146. Each size, path and
estimator runs in a fresh process: first one call under ``tracemalloc`` for the peak memory
allocated during the call (numpy arrays and Python objects; the panel itself was allocated
before) and the growth of the process's peak resident set (``resource``) over it, then
``--repeats`` timed calls (wall clock, no tracing). "dense" swaps in
``saturated._dense_cell_ols`` (``fe_ols`` on the rows x cells dummy matrix); it is skipped
above ``--dense-max`` townships (at 40,000 x 96 it needs about 21 GB). The overall ATT and
its standard error of both paths are checked to agree to 1e-10 (the script stops otherwise).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from saturated_scale import make_panel  # noqa: E402

GIB = 2**30


def one_run(townships: int, months: int, path: str, estimator: str, repeats: int) -> dict:
    """Times ``repeats`` calls of one estimator on one path in this process, then traces one."""
    from evaluation.estimators import saturated

    if path == "dense":
        saturated._cell_ols = saturated._dense_cell_ols
    fn = {"sun_abraham": saturated.sun_abraham, "extended_twfe": saturated.extended_twfe}[estimator]
    d = make_panel(townships, months)
    keys = dict(outcome="y", unit="unit", time="time", cohort="first_treat")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    tracemalloc.start()
    fit = fn(d, **keys)
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        again = fn(d, **keys)
        seconds.append(time.perf_counter() - start)
        del again
    att = fit.get("att")
    return {"townships": townships, "rows": len(d), "path": path, "estimator": estimator,
            "cells": len(fit.diagnostics["cells"]), "seconds": seconds, "traced_peak": traced_peak,
            "rss_growth": max(0, rss_after - rss_before), "att": att.estimate, "se": att.std_error}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--townships", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--months", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dense-max", type=int, default=10000, help="largest size run on the dense path")
    parser.add_argument("--one", nargs=3, metavar=("TOWNSHIPS", "PATH", "ESTIMATOR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(int(args.one[0]), args.months, args.one[1], args.one[2], args.repeats)))
        return
    import scipy.linalg  # noqa: F401  (so that scipy's BLAS is listed too)
    from threadpoolctl import threadpool_info

    blas = "; ".join(f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} "
                     f"{i.get('num_threads')} threads" for i in threadpool_info())
    print(f"BLAS: {blas}")
    print(f"{'estimator':>14} {'townships':>9} {'rows':>9} {'cells':>5} {'path':>6} {'seconds, median (min-max)':>26} "
          f"{'traced peak':>12} {'RSS growth':>11}")
    results = {}
    for townships in args.townships:
        for estimator in ("sun_abraham", "extended_twfe"):
            for path in ("counts", "dense"):
                if path == "dense" and townships > args.dense_max:
                    continue
                out = subprocess.run([sys.executable, __file__, "--one", str(townships), path, estimator,
                                      "--months", str(args.months), "--repeats", str(args.repeats)],
                                     capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                results[(townships, estimator, path)] = r
                s = r["seconds"]
                print(f"{estimator:>14} {townships:>9,} {r['rows']:>9,} {r['cells']:>5} {path:>6} "
                      f"{statistics.median(s):>12.2f} ({min(s):.2f}-{max(s):.2f}) "
                      f"{r['traced_peak'] / GIB:>8.3f} GiB {r['rss_growth'] / GIB:>7.3f} GiB", flush=True)
            other = results.get((townships, estimator, "dense"))
            if other is not None:
                new = results[(townships, estimator, "counts")]
                assert abs(new["att"] - other["att"]) < 1e-10 and abs(new["se"] - other["se"]) < 1e-10, (new, other)


if __name__ == "__main__":
    main()
