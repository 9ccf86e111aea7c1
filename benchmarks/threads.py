"""BLAS threads in the resampling: the wild cluster bootstrap with one BLAS thread (as the
package now runs it, :func:`evaluation.inference.few_clusters._single_blas_thread`) and with
BLAS's own thread count, on a machine kept busy by a competing process.

    .venv/bin/python benchmarks/threads.py                       # 40,000 townships x 96 months
    .venv/bin/python benchmarks/threads.py --townships 4000 --repeats 1 --idle

Panel: ``did_scale.make_panel`` (as benchmarks/inference_scale.py), 9,999 Rademacher draws
clustered by township. The competing process is a subprocess multiplying 1,000 x 1,000
matrices in a loop with its own BLAS threads (as another job on the machine would). Each
setting runs ``--repeats`` times, the two settings alternating; prints median, min and max
seconds, and checks that the two settings give the same p-value and interval (the t*
draws agree to the last bits). ``--idle`` adds the same pair without the competing process
(the machine's other jobs still run: the 1-minute load average is printed with each setting).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from did_scale import make_panel  # noqa: E402

SPINNER = """
import numpy as np
a = np.random.default_rng(0).standard_normal((1000, 1000))
while True:
    a = a @ a
    a /= np.abs(a).max()
"""


def run(panel, draws: int, limited: bool):
    import evaluation.inference.few_clusters as fc

    original = fc._single_blas_thread
    if not limited:
        fc._single_blas_thread = contextlib.nullcontext
    try:
        start = time.perf_counter()
        out = fc.wild_cluster_bootstrap(panel, outcome="y", unit="unit", time="time", cohort="first_treat",
                                        draws=draws, seed=1, max_enumerate=0)
        return out, time.perf_counter() - start
    finally:
        fc._single_blas_thread = original


def compare(panel, draws: int, repeats: int, label: str) -> dict:
    times = {True: [], False: []}
    fits = {}
    print(f"{label}: load average {os.getloadavg()[0]:.1f} before", flush=True)
    for _ in range(repeats):
        for limited in (False, True):
            fits[limited], seconds = run(panel, draws, limited)
            times[limited].append(seconds)
            print(f"  {label:30s} {'1 BLAS thread' if limited else 'BLAS default':14s} {seconds:8.2f} s", flush=True)
    a, b = fits[True].effects[0], fits[False].effects[0]
    diff = float(np.max(np.abs(fits[True].plot_data["t_star"].to_numpy() - fits[False].plot_data["t_star"].to_numpy())))
    print(f"  same result: p {a.p_value} vs {b.p_value}, interval ({a.ci_low:.6f}, {a.ci_high:.6f}) vs "
          f"({b.ci_low:.6f}, {b.ci_high:.6f}), max |t* difference| {diff:.2e}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--townships", type=int, default=40_000)
    parser.add_argument("--months", type=int, default=96)
    parser.add_argument("--draws", type=int, default=9999)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--idle", action="store_true", help="also time both settings without the competing process")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from threadpoolctl import threadpool_info

    blas = [(i["internal_api"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"]
    panel = make_panel(args.townships, args.months)
    print(f"panel: {args.townships:,} townships x {args.months} months = {len(panel):,} rows; "
          f"{args.draws:,} draws; BLAS {blas}")
    results = {}
    if args.idle:
        results["no added load"] = compare(panel, args.draws, args.repeats, "no added load")
    spinner = subprocess.Popen([sys.executable, "-c", SPINNER])
    try:
        time.sleep(2.0)
        results["busy machine"] = compare(panel, args.draws, args.repeats, "busy (competing matmuls)")
    finally:
        spinner.terminate()
        spinner.wait()
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(f"\n{'setting':16s} {'BLAS threads':14s} {'median s':>9s} {'min s':>8s} {'max s':>8s}")
    for label, times in results.items():
        for limited in (False, True):
            t = times[limited]
            print(f"{label:16s} {'1' if limited else 'default':14s} {statistics.median(t):9.2f} {min(t):8.2f} "
                  f"{max(t):8.2f}")
        ratio = statistics.median(times[False]) / statistics.median(times[True])
        print(f"{label:16s} default / 1 thread (medians): {ratio:.2f}")


if __name__ == "__main__":
    main()
