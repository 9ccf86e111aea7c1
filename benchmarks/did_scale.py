"""Scale benchmark: TWFE, event study and Callaway-Sant'Anna against pyfixest,
linearmodels and csdid on one synthetic national-scale panel, side by side in one process.

    .venv/bin/python benchmarks/did_scale.py                      # 40,000 townships x 96 months
    .venv/bin/python benchmarks/did_scale.py --townships 4000     # a quicker run

Prints each timing and the ratio peer / ours (above 1: ours is faster), and the peak
memory that ours allocated (tracemalloc). Points are checked to agree before timing counts.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
import warnings

import numpy as np
import pandas as pd


def make_panel(townships: int, months: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    unit = np.repeat(np.arange(1, townships + 1), months)
    t = np.tile(np.arange(1, months + 1), townships)
    cohorts = np.array([0, 30, 45, 70])
    first = rng.choice(cohorts, size=townships, p=[0.7, 0.1, 0.1, 0.1])
    ft = np.repeat(first, months)
    post = ((ft > 0) & (t >= ft)).astype(float)
    effect = post * np.minimum((t - ft + 1) / 12, 1.0) * 0.5
    y = (np.repeat(rng.normal(0, 1, townships), months) + np.tile(rng.normal(0, 0.3, months), townships)
         + effect + rng.normal(0, 1, townships * months))
    rel = np.where(ft > 0, np.clip(t - ft, -6, 12), -1)
    return pd.DataFrame({"unit": unit, "time": t, "first_treat": ft, "post": post, "y": y, "rel": rel})


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def peak_memory(fn):
    tracemalloc.start()
    out = fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--townships", type=int, default=40_000)
    parser.add_argument("--months", type=int, default=96)
    parser.add_argument("--skip", nargs="*", default=[], choices=["csdid", "linearmodels"],
                        help="peers to leave out (csdid needs hours at full scale)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import pyfixest as pf

    from evaluation.estimators.did import event_study, twfe
    from evaluation.estimators.staggered import callaway_santanna

    d = make_panel(args.townships, args.months)
    # compile pyfixest's numba kernels before timing anything
    small = make_panel(200, args.months)
    pf.feols("y ~ post | unit + time", small, vcov={"CRV1": "unit"})
    pf.feols("y ~ i(rel, ref=-1) | unit + time", small, vcov={"CRV1": "unit"})
    print(f"panel: {args.townships:,} townships x {args.months} months = {len(d):,} rows")
    rows = []

    ours, t_ours = timed(lambda: twfe(d, outcome="y", unit="unit", time="time", cohort="first_treat"))
    peer, t_pf = timed(lambda: pf.feols("y ~ post | unit + time", d, vcov={"CRV1": "unit"}))
    assert abs(ours.effects[0].estimate - peer.coef()["post"]) < 1e-8
    rows.append(("TWFE, clustered", "pyfixest feols", t_ours, t_pf))
    if "linearmodels" not in args.skip:
        from linearmodels import PanelOLS

        p = d.set_index(["unit", "time"])
        lm, t_lm = timed(lambda: PanelOLS(p["y"], p[["post"]], entity_effects=True, time_effects=True).fit(
            cov_type="clustered", cluster_entity=True))
        assert abs(ours.effects[0].estimate - lm.params["post"]) < 1e-8
        rows.append(("TWFE, clustered", "linearmodels PanelOLS", t_ours, t_lm))

    ours, t_ours = timed(lambda: event_study(d, outcome="y", unit="unit", time="time", cohort="first_treat",
                                             event_window=(-6, 12)))
    peer, t_pf = timed(lambda: pf.feols("y ~ i(rel, ref=-1) | unit + time", d, vcov={"CRV1": "unit"}))
    assert np.allclose([e.estimate for e in ours.effects], peer.coef().to_numpy(), atol=1e-8)
    rows.append(("event study (18 terms)", "pyfixest feols", t_ours, t_pf))

    (cs, t_ours) = timed(lambda: callaway_santanna(d, outcome="y", unit="unit", time="time",
                                                   cohort="first_treat").aggregate("dynamic"))
    _, peak = peak_memory(lambda: callaway_santanna(d, outcome="y", unit="unit", time="time",
                                                    cohort="first_treat").aggregate("dynamic"))
    if "csdid" not in args.skip:
        from csdid.att_gt import ATTgt

        def run_csdid():
            m = ATTgt(yname="y", tname="time", idname="unit", gname="first_treat", data=d,
                      control_group="nevertreated").fit(est_method="dr", bstrap=False)
            m.aggte(typec="dynamic", bstrap=False)
            return m

        peer, t_cs = timed(run_csdid)
        assert abs(cs.get("att").estimate - peer.atte["overall_att"]) < 1e-6
        rows.append(("Callaway-Sant'Anna + event-time aggregation", "csdid", t_ours, t_cs))
    else:
        rows.append(("Callaway-Sant'Anna + event-time aggregation", "(csdid skipped)", t_ours, float("nan")))

    print(f"{'estimator':46s} {'peer':24s} {'ours s':>8s} {'peer s':>8s} {'peer/ours':>9s}")
    for name, peer_name, a, b in rows:
        print(f"{name:46s} {peer_name:24s} {a:8.2f} {b:8.2f} {b / a:9.1f}")
    print(f"peak memory of our Callaway-Sant'Anna: {peak / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
