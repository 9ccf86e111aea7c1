"""Inference benchmark: randomization inference and the wild cluster bootstrap against
pyfixest's ``ritest`` and ``wildboottest`` on one synthetic panel, side by side.

    .venv/bin/python benchmarks/inference_scale.py --townships 40000 --peer-wild-townships 300

Randomization inference: ours permutes pilot status among townships (keeping cohorts);
pyfixest's ``ritest`` cannot re-assign a unit's treatment path on a panel (it holds the
drawn value constant within a cluster, which the unit effect then absorbs), so the peer
run re-draws the treatment row by row (its fast algorithm: one two-way demeaning and one
least-squares fit per draw). Same panel, same number of draws, different designs: a cost
comparison, not a check of p-values (tests/test_inference.py checks those).

Wild bootstrap: pyfixest's ``wildboottest`` builds the dummy-variable design densely
(n x townships), so it runs on a smaller panel (``--peer-wild-townships``); ours runs on
both. Prints timings and peer / ours.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from did_scale import make_panel  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--townships", type=int, default=1000)
    parser.add_argument("--months", type=int, default=96)
    parser.add_argument("--ri-draws", type=int, default=999)
    parser.add_argument("--wb-draws", type=int, default=9999)
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--skip-wild", action="store_true")
    parser.add_argument("--peer-wild-townships", type=int, default=300,
                        help="panel size for pyfixest's wildboottest (0: skip it)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from evaluation.inference.few_clusters import randomization_inference, wild_cluster_bootstrap

    d = make_panel(args.townships, args.months)
    print(f"panel: {args.townships:,} townships x {args.months} months = {len(d):,} rows")
    rows = []
    _, t_ri = timed(lambda: randomization_inference(d, outcome="y", unit="unit", time="time", cohort="first_treat",
                                                    draws=args.ri_draws, seed=1))
    t_peer = float("nan")
    if not args.skip_peers:
        import numpy as np
        import pyfixest as pf

        # pyfixest 0.60 splits the fixed effects on "+" without stripping spaces and wants a float treatment
        fit = pf.feols("y ~ post | unit+time", d.assign(post=d["post"].astype(float)), vcov={"CRV1": "unit"})
        fit.ritest(resampvar="post", reps=2, rng=np.random.default_rng(0), choose_algorithm="fast")  # numba compile
        _, t_peer = timed(lambda: fit.ritest(resampvar="post", reps=args.ri_draws, rng=np.random.default_rng(1),
                                             choose_algorithm="fast"))
    rows.append((f"randomization inference, {args.ri_draws} draws, {len(d):,} rows", "pyfixest ritest (fast)",
                 t_ri, t_peer))
    if not args.skip_wild:
        def ours_wild(panel):
            return wild_cluster_bootstrap(panel, outcome="y", unit="unit", time="time", cohort="first_treat",
                                          draws=args.wb_draws, seed=1,
                                          max_enumerate=0)
        _, t_wb = timed(lambda: ours_wild(d))
        rows.append((f"wild cluster bootstrap, {args.wb_draws} draws, {len(d):,} rows", "(none can run)", t_wb,
                     float("nan")))
        if not args.skip_peers and args.peer_wild_townships:
            import pyfixest as pf

            small = make_panel(args.peer_wild_townships, args.months)
            _, t_small = timed(lambda: ours_wild(small))
            fit = pf.feols("y ~ post | unit + time", small, vcov={"CRV1": "unit"})
            _, t_peer = timed(lambda: fit.wildboottest(param="post", reps=args.wb_draws, seed=1))
            rows.append((f"wild cluster bootstrap, {args.wb_draws} draws, {len(small):,} rows",
                         "pyfixest wildboottest", t_small, t_peer))
    print(f"{'method':62s} {'peer':22s} {'ours s':>8s} {'peer s':>8s} {'peer/ours':>9s}")
    for name, peer, a, b in rows:
        print(f"{name:62s} {peer:22s} {a:8.2f} {b:8.2f} {b / a:9.1f}")


if __name__ == "__main__":
    main()
