"""Scale benchmark: Sun-Abraham and extended TWFE against pyfixest on one synthetic
staggered panel, side by side in one process.

    .venv/bin/python benchmarks/saturated_scale.py                       # 5,000 townships x 96 months
    .venv/bin/python benchmarks/saturated_scale.py --townships 10000     # 960,000 rows

Both designs are saturated: Sun-Abraham has a dummy for every cohort x event time (three
cohorts x 95 event times = 285 columns over 96 months), extended TWFE one for every treated
cohort x period cell (146 columns), so the dense design is rows x columns x 8 bytes (8.8 GB
for Sun-Abraham at 40,000 x 96) and each side holds more than one copy: at 2,000 townships
the peak resident memory of Sun-Abraham was 1.05 GB for ours and 2.87 GB for pyfixest, and
it grows with the rows, so the national 40,000 x 96 panel does not fit a 23 GB machine for
pyfixest (about 57 GB) nor, before the count-table engine, for ours (about 21 GB; now 0.37
GiB, benchmarks/saturated_memory.py); 10,000 townships is the
largest run here (pyfixest 30-40 s a run on an idle machine). Peers:
``pf.event_study(estimator="saturated")`` with its ``aggregate()`` for Sun-Abraham, and
``pf.feols`` with the cells as one ``i()`` factor for extended TWFE. Each is run
``--repeats`` times; the table has the median, min and max seconds and the ratio of the
medians peer / ours (above 1: ours is faster). Points are checked to agree first.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import warnings

import numpy as np
import pandas as pd


def make_panel(townships: int, months: int, seed: int = 1) -> pd.DataFrame:
    """Cohorts starting in months 30, 45, 70 (10% each) and 70% never treated; effects that
    build up over 12 months and differ by cohort."""
    rng = np.random.default_rng(seed)
    unit = np.repeat(np.arange(1, townships + 1), months)
    t = np.tile(np.arange(1, months + 1), townships)
    first = rng.choice(np.array([0, 30, 45, 70]), size=townships, p=[0.7, 0.1, 0.1, 0.1])
    ft = np.repeat(first, months)
    post = (ft > 0) & (t >= ft)
    effect = post * np.minimum((t - ft + 1) / 12, 1.0) * (0.3 + ft / 100)
    y = (np.repeat(rng.normal(0, 1, townships), months) + np.tile(rng.normal(0, 0.3, months), townships)
         + effect + rng.normal(0, 1, townships * months))
    d = pd.DataFrame({"unit": unit, "time": t, "first_treat": ft, "y": y})
    d["cell"] = np.where(post, ft * 1000 + t, 0)  # the extended-TWFE cell (0: comparison row)
    return d


def repeat(fn, n: int, keep: bool = False):
    """Seconds of ``n`` calls; the output of the first is returned only with ``keep`` (a
    pyfixest fit holds its design matrices: two alive at once doubles the peak memory)."""
    times, first = [], None
    for i in range(n):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
        if i == 0 and keep:
            first = out
        del out
        gc.collect()
    return first, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--townships", type=int, default=5_000)
    parser.add_argument("--months", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import pyfixest as pf

    from evaluation.estimators.saturated import extended_twfe, sun_abraham

    keys = dict(outcome="y", unit="unit", time="time", cohort="first_treat")
    d = make_panel(args.townships, args.months)
    small = make_panel(200, args.months)  # compile pyfixest's numba kernels before timing
    pf.event_study(small, yname="y", idname="unit", tname="time", gname="first_treat", estimator="saturated")
    pf.feols("y ~ i(cell, ref=0) | unit + time", small, vcov={"CRV1": "unit"})
    print(f"panel: {args.townships:,} townships x {args.months} months = {len(d):,} rows; "
          f"{args.repeats} repeats each")

    def peer_sa():
        fit = pf.event_study(d, yname="y", idname="unit", tname="time", gname="first_treat", estimator="saturated")
        return fit.aggregate()

    rows = []
    ours, t_ours = repeat(lambda: sun_abraham(d, **keys), args.repeats, keep=True)
    peer, t_peer = repeat(peer_sa, args.repeats, keep=True)  # the aggregated table only
    timed = [e for e in ours.effects if e.estimand == "att_event_time"]
    assert np.allclose([e.estimate for e in timed], peer.loc[[float(e.event_time) for e in timed], "Estimate"]
                       .to_numpy(float), atol=1e-8)
    rows.append((f"Sun-Abraham ({len(ours.diagnostics['cells'])} cells) + IW aggregation",
                 "pf.event_study(saturated) + aggregate", t_ours, t_peer))

    ours, t_ours = repeat(lambda: extended_twfe(d, **keys), args.repeats, keep=True)
    peer, t_peer = repeat(lambda: pf.feols("y ~ i(cell, ref=0) | unit + time", d, vcov={"CRV1": "unit"})
                          .coef(), args.repeats, keep=True)
    cells = ours.diagnostics["cells"]
    names = [f"C(cell, contr.treatment(base=0))[T.{int(g) * 1000 + int(t)}]" for g, t in
             zip(cells["cohort"], cells["calendar_time"], strict=True)]
    coef = peer
    if set(names) <= set(coef.index):
        assert np.allclose(cells["coef"], coef[names].to_numpy(), atol=1e-8)
    else:  # pyfixest's i() names: compare in the sorted order of the cells
        assert np.allclose(np.sort(cells["coef"].to_numpy()), np.sort(coef.to_numpy()), atol=1e-8)
    rows.append((f"extended TWFE ({len(cells)} cells) + aggregation", "pf.feols with i(cell)", t_ours, t_peer))

    print(f"{'estimator':48s} {'peer':38s} {'ours s (min-max)':>20s} {'peer s (min-max)':>20s} {'peer/ours':>9s}")
    for name, peer_name, a, b in rows:
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"{name:48s} {peer_name:38s} {ma:7.2f} ({min(a):.2f}-{max(a):.2f}) "
              f"{mb:7.2f} ({min(b):.2f}-{max(b):.2f}) {mb / ma:9.2f}")


if __name__ == "__main__":
    main()
