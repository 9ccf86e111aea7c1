"""Synthetic-control placebo-in-space benchmark: one pilot township and many donors,
every donor refitted as a fake pilot, against pysyncon's ``PlaceboTest`` in one run.

    .venv/bin/python benchmarks/synth_scale.py --donors 1000 --months 96

Both fit the outcome-only synthetic control (weights on the simplex matching the
pre-period outcomes): ours by active-set non-negative least squares, pysyncon by SLSQP
with predictor weights that undo its scaling of the pre-period outcomes (``custom_V``), run in a
process pool over both cores. ``--peer-donors`` sets the donor pool for pysyncon when
its full run would take too long (its cost grows with the cube of the donors). Prints
timings, peer / ours, and the largest difference between the two sets of placebo ATTs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
import warnings

import numpy as np
import pandas as pd


def make_panel(donors: int, months: int, start: int, seed: int = 0) -> pd.DataFrame:
    """Townships driven by three common factors; the pilot is a mix of donors plus 2.0."""
    rng = np.random.default_rng(seed)
    factors = np.cumsum(rng.normal(size=(3, months)), axis=1)
    loadings = rng.uniform(0.2, 1.5, size=(donors + 1, 3))
    y = 50 + loadings @ factors + rng.normal(scale=0.5, size=(donors + 1, months))
    y[0, start - 1:] += 2.0
    unit = np.repeat(np.arange(donors + 1), months)
    return pd.DataFrame({"unit": unit, "time": np.tile(np.arange(1, months + 1), donors + 1), "y": y.ravel(),
                         "first_treat": np.where(unit == 0, start, 0)})


def timed(fn):
    begin = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - begin


def peer(d: pd.DataFrame, start: int, donors: int):
    from pysyncon import Dataprep, Synth
    from pysyncon.utils import PlaceboTest

    pre = list(range(1, start))
    d = d[d["unit"] <= donors].assign(unit=lambda x: "u" + x["unit"].astype(str))
    prep = Dataprep(foo=d, predictors=[], predictors_op="mean", dependent="y", unit_variable="unit",
                    time_variable="time", treatment_identifier="u0",
                    controls_identifier=[f"u{i}" for i in range(1, donors + 1)], time_predictors_prior=pre,
                    time_optimize_ssr=pre, special_predictors=[("y", [t], "mean") for t in pre])
    # pysyncon divides each predictor by its SD across the units; V = SD^2 undoes that, so
    # both minimise the same unscaled pre-period distance
    wide = d[d["time"] < start].pivot(index="time", columns="unit", values="y")
    v = wide.drop(columns="u0").var(axis=1, ddof=1).to_numpy()
    test = PlaceboTest()
    with contextlib.redirect_stdout(io.StringIO()):
        test.fit(dataprep=prep, scm=Synth(), scm_options={"custom_V": v}, max_workers=2, verbose=False)
    post = test.gaps.index >= start
    return test.gaps.loc[post].mean(axis=0)  # placebo ATT by donor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--donors", type=int, default=1000)
    parser.add_argument("--months", type=int, default=96)
    parser.add_argument("--start", type=int, default=61)
    parser.add_argument("--peer-donors", type=int, default=None, help="donor pool for pysyncon (default: all)")
    parser.add_argument("--skip-peers", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from evaluation.estimators.synth import synthetic_control

    d = make_panel(args.donors, args.months, args.start)
    print(f"panel: 1 pilot + {args.donors:,} donors x {args.months} months (start {args.start})")
    ours, t_ours = timed(lambda: synthetic_control(d, outcome="y", unit="unit", time="time", cohort="first_treat"))
    e = ours.effects[0]
    print(f"ours: ATT {e.estimate:.3f} (true 2.0), rank p {e.p_value:.4f}, {args.donors} placebos in {t_ours:.2f} s")
    if args.skip_peers:
        return
    k = args.peer_donors or args.donors
    small = d if k == args.donors else d[d["unit"] <= k]
    ours_k, t_ours_k = timed(lambda: synthetic_control(small, outcome="y", unit="unit", time="time",
                                                       cohort="first_treat"))
    gaps, t_peer = timed(lambda: peer(d, args.start, k))
    mine = ours_k.diagnostics["placebos"].set_index("township")["att"]
    theirs = gaps.rename(index=lambda s: int(str(s)[1:])).reindex(mine.index)
    print(f"{'placebo in space, outcome-only SC':40s} {'donors':>7s} {'ours s':>8s} {'pysyncon s':>10s} "
          f"{'peer/ours':>9s} {'max |ATT diff|':>15s}")
    print(f"{'':40s} {k:7d} {t_ours_k:8.2f} {t_peer:10.2f} {t_peer / t_ours_k:9.1f} "
          f"{np.nanmax(np.abs(mine - theirs)):15.2e}")


if __name__ == "__main__":
    main()
