"""Memory benchmark: peak memory and time of ``twfe_cr2`` (CR2 errors with Bell-McCaffrey
degrees of freedom) on a synthetic township x month panel, clustered by township and by county.

    .venv/bin/python benchmarks/cr2_memory.py                         # 640 townships x 96 months
    .venv/bin/python benchmarks/cr2_memory.py --townships 64 128 640  # several sizes

Each size and clustering runs in a fresh process, so that the process's peak resident
memory (``resource.getrusage``) belongs to that run alone. Printed per run: the peak
memory allocated during the call (``tracemalloc``: numpy arrays and Python objects;
LAPACK's small workspaces are not traced), the growth of the peak resident set over the
call, and the wall-clock time. Exits with status 1 when a traced peak reaches ``--limit-gib``
(default 1 GiB), so the script doubles as a check.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from did_scale import make_panel  # noqa: E402

GIB = 2**30


def one_run(townships: int, months: int, cluster: str, per_county: int) -> dict:
    """Runs twfe_cr2 once in this process and returns its peak memory and time."""
    from evaluation.inference.few_clusters import twfe_cr2

    d = make_panel(townships, months)
    d["county"] = (d["unit"] - 1) // per_county
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    tracemalloc.start()
    start = time.perf_counter()
    fit = twfe_cr2(d, outcome="y", unit="unit", time="time", cohort="first_treat", cluster=cluster)
    seconds = time.perf_counter() - start
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    effect = fit.effects[0]
    return {"townships": townships, "months": months, "rows": len(d), "cluster": cluster,
            "clusters": int(d[cluster].nunique()), "traced_peak": traced_peak,
            "rss_growth": max(0, rss_after - rss_before), "seconds": seconds,
            "estimate": effect.estimate, "std_error": effect.std_error, "df": fit.diagnostics["bell_mccaffrey_df"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--townships", type=int, nargs="+", default=[640])
    parser.add_argument("--months", type=int, default=96)
    parser.add_argument("--per-county", type=int, default=16, help="townships per county (county clusters)")
    parser.add_argument("--clusters", nargs="+", default=["unit", "county"], choices=["unit", "county"])
    parser.add_argument("--limit-gib", type=float, default=1.0)
    parser.add_argument("--one", nargs=2, metavar=("TOWNSHIPS", "CLUSTER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(int(args.one[0]), args.months, args.one[1], args.per_county)))
        return
    print(f"{'townships':>9} {'rows':>8} {'cluster':>7} {'G':>5} {'traced peak':>12} {'RSS growth':>11} "
          f"{'seconds':>8}  estimate / se / df")
    over = False
    for townships in args.townships:
        for cluster in args.clusters:
            out = subprocess.run([sys.executable, __file__, "--one", str(townships), cluster,
                                  "--months", str(args.months), "--per-county", str(args.per_county)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            over |= r["traced_peak"] >= args.limit_gib * GIB
            print(f"{r['townships']:>9,} {r['rows']:>8,} {r['cluster']:>7} {r['clusters']:>5} "
                  f"{r['traced_peak'] / GIB:>8.3f} GiB {r['rss_growth'] / GIB:>7.3f} GiB {r['seconds']:>8.2f}  "
                  f"{r['estimate']:.4f} / {r['std_error']:.4f} / {r['df']:.1f}")
    if over:
        print(f"a traced peak reached {args.limit_gib} GiB")
        sys.exit(1)


if __name__ == "__main__":
    main()
