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
``--general`` also times, with one thread, the general computation that unbalanced panels and
fits with controls take (the balanced panel's fast path switched off) and checks that it gives
the same p-value, interval and t* draws.
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


def run(panel, draws: int, limited: bool, general: bool = False):
    import evaluation.inference.few_clusters as fc

    original = fc._single_blas_thread
    if not limited:
        fc._single_blas_thread = contextlib.nullcontext
    fc._BALANCED_FAST_PATH = not general
    try:
        start = time.perf_counter()
        out = fc.wild_cluster_bootstrap(panel, outcome="y", unit="unit", time="time", cohort="first_treat",
                                        draws=draws, seed=1, max_enumerate=0)
        return out, time.perf_counter() - start
    finally:
        fc._single_blas_thread = original
        fc._BALANCED_FAST_PATH = True


def compare(panel, draws: int, repeats: int, label: str, general: bool = False) -> dict:
    """Times of each setting: True (one BLAS thread), False (BLAS default) and, with
    ``general``, "general" (one thread, the general computation forced: the balanced panel's
    fast path switched off), alternating within each repeat."""
    settings = [False, True] + (["general"] if general else [])
    times = {s: [] for s in settings}
    fits = {}
    print(f"{label}: load average {os.getloadavg()[0]:.1f} before", flush=True)
    for _ in range(repeats):
        for setting in settings:
            fits[setting], seconds = run(panel, draws, setting is not False, general=setting == "general")
            times[setting].append(seconds)
            name = {False: "BLAS default", True: "1 BLAS thread", "general": "general path"}[setting]
            print(f"  {label:30s} {name:14s} {seconds:8.2f} s", flush=True)
    a = fits[True].effects[0]
    for other in settings[::2]:  # BLAS default, and the general path
        b = fits[other].effects[0]
        t_a, t_b = (fits[s].plot_data["t_star"].to_numpy() for s in (True, other))
        diff = float(np.max(np.abs(t_a - t_b)) / np.max(np.abs(t_a)))
        print(f"  same result as {'BLAS default' if other is False else 'the general path'}: p {a.p_value} vs "
              f"{b.p_value}, interval ({a.ci_low:.6f}, {a.ci_high:.6f}) vs ({b.ci_low:.6f}, {b.ci_high:.6f}), "
              f"max |t* difference| / max |t*| {diff:.1e}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--townships", type=int, default=40_000)
    parser.add_argument("--months", type=int, default=96)
    parser.add_argument("--draws", type=int, default=9999)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--idle", action="store_true", help="also time both settings without the competing process")
    parser.add_argument("--general", action="store_true",
                        help="also time the general computation (the balanced fast path switched off), one thread")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from threadpoolctl import threadpool_info

    blas = [(i["internal_api"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"]
    panel = make_panel(args.townships, args.months)
    print(f"panel: {args.townships:,} townships x {args.months} months = {len(panel):,} rows; "
          f"{args.draws:,} draws; BLAS {blas}")
    results = {}
    if args.idle:
        results["no added load"] = compare(panel, args.draws, args.repeats, "no added load", args.general)
    spinner = subprocess.Popen([sys.executable, "-c", SPINNER])
    try:
        time.sleep(2.0)
        results["busy machine"] = compare(panel, args.draws, args.repeats, "busy (competing matmuls)", args.general)
    finally:
        spinner.terminate()
        spinner.wait()
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(f"\n{'setting':16s} {'BLAS threads':14s} {'median s':>9s} {'min s':>8s} {'max s':>8s}")
    for label, times in results.items():
        for setting, t in times.items():
            name = {False: "default", True: "1", "general": "1 (general path)"}[setting]
            print(f"{label:16s} {name:14s} {statistics.median(t):9.2f} {min(t):8.2f} {max(t):8.2f}")
        ratio = statistics.median(times[False]) / statistics.median(times[True])
        print(f"{label:16s} default / 1 thread (medians): {ratio:.2f}")
        if "general" in times:
            print(f"{label:16s} general / fast path, 1 thread (medians): "
                  f"{statistics.median(times['general']) / statistics.median(times[True]):.2f}")


if __name__ == "__main__":
    main()
