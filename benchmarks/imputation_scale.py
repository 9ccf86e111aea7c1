"""Scale benchmark: the imputation estimator (Borusyak, Jaravel and Spiess 2024) against
pyfixest's ``did2s`` (Gardner's two-stage DiD, the same point estimates) on one synthetic
staggered panel, side by side in one process.

    .venv/bin/python benchmarks/imputation_scale.py                          # 40,000 units x 96 months
    .venv/bin/python benchmarks/imputation_scale.py --units 5000 --repeats 3

Each estimator runs ``--repeats`` times; the script prints the median, min and max wall
time and the ratio of medians peer / ours (above 1: ours is faster). Ours: the overall ATT,
the ATT at event times 0..12 and six pre-trend leads, all with standard errors
(``imputation_did(..., event_window=(-6, 12))``). Peer: ``pf.did2s`` twice, static and
event-time second stage (13 terms), each with its GMM standard errors. Points are checked
to agree before timings count, to 1e-4: pyfixest recovers its first-stage fixed effects by
lsqr to atol = btol = 1e-6, which leaves its points 2e-11 off ours at 1,100 units and 3e-5 at
5,000 (ours are the exact least-squares imputation to 1e-13 there; with lsqr run to 1e-14
pyfixest agrees to 1e-14; tests/test_imputation.py checks both on smaller panels).

pyfixest 0.60's ``did2s`` builds the unit and period dummies as a dense
rows x (units + periods) matrix for its standard errors and loops over clusters with a
full-length mask, so its memory grows with units^2 x periods: the full peer runs on at most
``--peer-units`` units (default: what fits in ``--peer-memory-gb``), and is skipped above.
At every size its two-stage point estimation alone (``_did2s_estimate``, no standard
errors) is timed too, against ours with standard errors.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time
import warnings

import numpy as np
import pandas as pd


def make_panel(units: int, months: int, seed: int = 1) -> pd.DataFrame:
    """Staggered pilots: cohorts starting in months 30, 45 and 70 (10% of units each) and 70%
    never treated; effects that build up over 12 months to a plateau that differs by cohort
    (0.6, 0.4, 0.2); unit, month and idiosyncratic noise."""
    rng = np.random.default_rng(seed)
    unit = np.repeat(np.arange(1, units + 1), months)
    t = np.tile(np.arange(1, months + 1), units)
    cohorts = np.array([0, 30, 45, 70])
    plateau = {0: 0.0, 30: 0.6, 45: 0.4, 70: 0.2}
    first = rng.choice(cohorts, size=units, p=[0.7, 0.1, 0.1, 0.1])
    ft = np.repeat(first, months)
    treated = (ft > 0) & (t >= ft)
    level = np.vectorize(plateau.get)(ft)
    effect = np.where(treated, level * np.minimum((t - ft + 1) / 12, 1.0), 0.0)
    y = (np.repeat(rng.normal(0, 1, units), months) + np.tile(rng.normal(0, 0.3, months), units)
         + effect + rng.normal(0, 1, units * months))
    # did2s's event-time regressor: k = 0..12 on treated rows, -1 (the omitted level) elsewhere
    rel = np.where(treated & (t - ft <= 12), t - ft, -1).astype(float)
    return pd.DataFrame({"unit": unit, "time": t, "first_treat": ft, "D": treated, "rel": rel, "y": y})


def repeated(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, times


def peer_bytes(units: int, months: int) -> float:
    """pyfixest did2s's memory: its dense dummy matrix (rows x (units + periods) doubles) four
    times over (measured: 1.2 GB peak for 500 units x 96 months, whose matrix is 0.23 GB)."""
    return 4 * 8.0 * units * months * (units + months)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=40_000)
    parser.add_argument("--months", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peer-units", type=int, default=None,
                        help="units for the full pyfixest did2s run (default: the most that fit "
                             "--peer-memory-gb; 0: none)")
    parser.add_argument("--peer-memory-gb", type=float, default=4.0)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import pyfixest as pf

    from evaluation.estimators.imputation import imputation_did

    did2s_module = importlib.import_module("pyfixest.did.did2s")  # pf.did.did2s is the function, not the module

    def ours(panel):
        return imputation_did(panel, outcome="y", unit="unit", time="time", cohort="first_treat",
                              event_window=(-6, 12))

    def peer(panel):
        static = pf.did2s(panel, yname="y", first_stage="~0|unit+time", second_stage="~D", treatment="D",
                          cluster="unit")
        dynamic = pf.did2s(panel, yname="y", first_stage="~0|unit+time", second_stage="~i(rel,ref=-1.0)",
                           treatment="D", cluster="unit")
        return static, dynamic

    def peer_points(panel):
        static = did2s_module._did2s_estimate(panel.copy(), "y", "~0|unit+time", "~D", "D")[0]
        dynamic = did2s_module._did2s_estimate(panel.copy(), "y", "~0|unit+time", "~i(rel,ref=-1.0)", "D")[0]
        return static, dynamic

    def check(fit, static, dynamic):
        ours_points = [fit.get("att").estimate] + [fit.get("att_event_time", event_time=k).estimate
                                                    for k in range(13)]
        gap = float(np.max(np.abs(np.array(ours_points) - np.r_[static.coef().to_numpy(), dynamic.coef().to_numpy()])))
        assert gap < 1e-4, gap  # pyfixest recovers its fixed effects by lsqr to atol = btol = 1e-6
        return gap

    peer_units = args.peer_units
    if peer_units is None:
        peer_units = 100
        while peer_bytes(peer_units + 100, args.months) <= args.peer_memory_gb * 2**30:
            peer_units += 100
    peer_units = min(peer_units, args.units)
    print(f"full pyfixest did2s (with SE) on at most {peer_units:,} units (about "
          f"{peer_bytes(peer_units, args.months) / 2**30:.1f} GiB)" if peer_units else "full pyfixest did2s skipped")

    warm = make_panel(200, args.months)
    peer(warm)  # compile pyfixest's numba kernels before timing anything
    ours(warm)
    rows = []
    sizes = sorted({peer_units, args.units} - {0})
    for units in sizes:
        d = make_panel(units, args.months)
        label = f"{units:,} x {args.months} ({len(d):,} rows)"
        fit, t_ours = repeated(lambda: ours(d), args.repeats)  # noqa: B023
        points, t_points = repeated(lambda: peer_points(d), args.repeats)  # noqa: B023
        gap = check(fit, *points)
        rows.append((label, "pyfixest did2s, points only", t_ours, t_points))
        if units <= peer_units:
            full, t_peer = repeated(lambda: peer(d), args.repeats)  # noqa: B023
            gap = max(gap, check(fit, *full))
            rows.append((label, "pyfixest did2s, points + SE", t_ours, t_peer))
        else:
            need = peer_bytes(units, args.months) / 2**30
            rows.append((label, f"did2s + SE skipped (~{need:,.0f} GiB)", t_ours, []))
        print(f"{label}: ATT {fit.get('att').estimate:.4f} (SE {fit.get('att').std_error:.4f}), "
              f"pre-trend p {fit.diagnostics.get('pretrend_p', float('nan')):.3f}; largest gap to did2s's points "
              f"{gap:.1e}", flush=True)

    def stats(times):
        return (statistics.median(times), min(times), max(times)) if times else (float("nan"),) * 3

    print(f"\n{args.repeats} repeats each; seconds as median [min, max]; ratio = peer median / ours median")
    print(f"{'panel':32s} {'peer':36s} {'ours':>22s} {'peer':>22s} {'ratio':>7s}")
    for label, name, a, b in rows:
        (ma, la, ha), (mb, lb, hb) = stats(a), stats(b)
        print(f"{label:32s} {name:36s} {ma:7.2f} [{la:5.2f}, {ha:5.2f}] {mb:7.2f} [{lb:5.2f}, {hb:5.2f}] "
              f"{mb / ma:7.1f}")


if __name__ == "__main__":
    main()
