"""Scale benchmark: the event study (18 event-time terms) against TWFE, against one memory
pass over the inputs, and against pyfixest's ``feols(y ~ i(rel, ref=-1) | unit + time)``,
on the staggered 40,000 townships x 96 months panel of ``did_scale.py``, in one process.

    .venv/bin/python benchmarks/event_study_scale.py                    # 40,000 x 96, 3 repeats
    .venv/bin/python benchmarks/event_study_scale.py --townships 4000   # a quicker run

Prints median / min / max seconds of each, and the ratios: event study / TWFE (goal <= 2),
TWFE / one memory pass (np.sum over the y, unit and period arrays; goal <= 10), pyfixest /
ours. The dense-design path (the n x K dummy matrix through ``fe_ols``, which the event
study still takes with ``weights``; here weights of one) is timed alongside. Peak memory
(tracemalloc) of each of ours. Points and errors are checked to agree before timing counts.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
import warnings

import numpy as np
from did_scale import make_panel


def timed(fn, repeats: int) -> tuple[object, list[float]]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, times


def peak_memory(fn) -> int:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--townships", type=int, default=40_000)
    parser.add_argument("--months", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import pyfixest as pf

    from evaluation.estimators.did import event_study, twfe

    d = make_panel(args.townships, args.months)
    d["one"] = 1.0
    small = make_panel(200, args.months)  # compile pyfixest's numba kernels before timing anything
    pf.feols("y ~ post | unit + time", small, vcov={"CRV1": "unit"})
    pf.feols("y ~ i(rel, ref=-1) | unit + time", small, vcov={"CRV1": "unit"})
    print(f"panel: {args.townships:,} townships x {args.months} months = {len(d):,} rows; {args.repeats} repeats")
    common = dict(outcome="y", unit="unit", time="time", cohort="first_treat")
    y, unit, period = d["y"].to_numpy(), d["unit"].to_numpy(), d["time"].to_numpy()

    runs = {
        "one memory pass (np.sum of y, unit, period)": lambda: (np.sum(y), np.sum(unit), np.sum(period)),
        "TWFE (ours)": lambda: twfe(d, **common),
        "event study (ours)": lambda: event_study(d, **common, event_window=(-6, 12)),
        "event study, dense design (ours, weights=1)": lambda: event_study(d, **common, event_window=(-6, 12),
                                                                           weights="one"),
        "TWFE (pyfixest feols)": lambda: pf.feols("y ~ post | unit + time", d, vcov={"CRV1": "unit"}),
        "event study (pyfixest feols i(rel))": lambda: pf.feols("y ~ i(rel, ref=-1) | unit + time", d,
                                                               vcov={"CRV1": "unit"}),
    }
    out, times = {}, {}
    for name, fn in runs.items():
        out[name], times[name] = timed(fn, args.repeats)

    es, dense, peer = (out[k] for k in ("event study (ours)", "event study, dense design (ours, weights=1)",
                                        "event study (pyfixest feols i(rel))"))
    ours_b = np.array([e.estimate for e in es.effects])
    ours_se = np.array([e.std_error for e in es.effects])
    assert np.allclose(ours_b, peer.coef().to_numpy(), rtol=0, atol=1e-8)
    assert np.allclose(ours_se, peer.se().to_numpy(), rtol=1e-6, atol=0)
    assert np.allclose(ours_b, [e.estimate for e in dense.effects], rtol=0, atol=1e-10)
    assert np.allclose(ours_se, [e.std_error for e in dense.effects], rtol=0, atol=1e-10)
    tw, tw_peer = out["TWFE (ours)"], out["TWFE (pyfixest feols)"]
    assert abs(tw.effects[0].estimate - tw_peer.coef()["post"]) < 1e-8
    assert abs(tw.effects[0].std_error / tw_peer.se()["post"] - 1) < 1e-6

    print(f"{'run':46s} {'median s':>9s} {'min s':>8s} {'max s':>8s} {'peak GiB':>9s}")
    median = {}
    for name, ts in times.items():
        median[name] = statistics.median(ts)
        peak = peak_memory(runs[name]) / 2**30 if "ours" in name else float("nan")
        print(f"{name:46s} {median[name]:9.3f} {min(ts):8.3f} {max(ts):8.3f} {peak:9.3f}")
    ratios = [
        ("event study / TWFE (ours; goal <= 2)", "event study (ours)", "TWFE (ours)"),
        ("TWFE / one memory pass (goal <= 10)", "TWFE (ours)", "one memory pass (np.sum of y, unit, period)"),
        ("dense-design event study / event study", "event study, dense design (ours, weights=1)",
         "event study (ours)"),
        ("pyfixest / ours, TWFE", "TWFE (pyfixest feols)", "TWFE (ours)"),
        ("pyfixest / ours, event study", "event study (pyfixest feols i(rel))", "event study (ours)"),
    ]
    for label, a, b in ratios:
        print(f"{label:46s} {median[a] / median[b]:9.1f}")


if __name__ == "__main__":
    main()
