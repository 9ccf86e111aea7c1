"""TWFE and the event study against one memory pass over their inputs, in one process.

    .venv/bin/python benchmarks/did_floor.py                      # 40,000 townships x 96 months, 5 repeats
    .venv/bin/python benchmarks/did_floor.py --townships 4000 --repeats 3

Panel: ``did_scale.make_panel`` (3,840,000 rows, sorted by township then month, three
staggered cohorts), errors clustered by township. Rows, timed in rounds (each round runs
every row once, in this order, so that a change in the machine's load falls on all rows):

- one memory pass: ``np.sum`` of the y, unit and period arrays (the floor of issue #17);
- TWFE (``did.twfe``) and the event study with 18 terms (``did.event_study``,
  ``event_window=(-6, 12)``): on this panel both take the grid fast path;
- the same two with the fast path switched off (``did._GRID_FAST_PATH = False``: the
  general path, ``fe_ols`` and the count-table event study), for comparison.

Before timing, the fast path's coefficients and standard errors are checked against the
general path's (1e-10 absolute). Prints median (min-max) milliseconds of each row, the
ratios TWFE / one pass (goal <= 10) and event study / TWFE (goal <= 2), the load average
before and after, the BLAS library, and where the fast path's time goes (medians of the
grid check, ``did._grid_panel``, and of the engine, ``fixed_effects._fe_ols_grid``, timed
by wrappers in separate rounds).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from did_scale import make_panel  # noqa: E402


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def span(times: list[float]) -> str:
    ms = [t * 1e3 for t in times]
    return f"{statistics.median(ms):.1f} ({min(ms):.1f}-{max(ms):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--townships", type=int, default=40_000)
    parser.add_argument("--months", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from threadpoolctl import threadpool_info

    import evaluation.estimators.did as did

    blas = "; ".join(f"{i['internal_api']} {i['version']} ({i.get('architecture')}, {i['num_threads']} threads)"
                     for i in threadpool_info() if i["user_api"] == "blas")
    print(f"python {platform.python_version()}, numpy {np.__version__}; {os.cpu_count()} cores; BLAS: {blas}")
    d = make_panel(args.townships, args.months)
    common = dict(outcome="y", unit="unit", time="time", cohort="first_treat")
    y, unit, period = d["y"].to_numpy(), d["unit"].to_numpy(), d["time"].to_numpy()

    def general(fn):
        def run():
            did._GRID_FAST_PATH = False
            try:
                return fn()
            finally:
                did._GRID_FAST_PATH = True
        return run

    fit_twfe = lambda: did.twfe(d, **common)  # noqa: E731
    fit_es = lambda: did.event_study(d, **common, event_window=(-6, 12))  # noqa: E731
    runs = {
        "one memory pass (np.sum of y, unit, period)": lambda: (np.sum(y), np.sum(unit), np.sum(period)),
        "TWFE (fast path)": fit_twfe,
        "event study, 18 terms (fast path)": fit_es,
        "TWFE (general path)": general(fit_twfe),
        "event study, 18 terms (general path)": general(fit_es),
    }
    for fast, slow in (("TWFE (fast path)", "TWFE (general path)"),
                       ("event study, 18 terms (fast path)", "event study, 18 terms (general path)")):
        a, b = runs[fast](), runs[slow]()
        assert a.model.deferred is not None, f"{fast} did not take the fast path"
        assert np.allclose(a.model.coef, b.model.coef, rtol=0, atol=1e-10), fast
        assert np.allclose(a.model.se, b.model.se, rtol=0, atol=1e-10), fast

    before = load()
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    after = load()

    parts = {"_grid_panel": [], "_fe_ols_grid": []}  # where the fast path's time goes

    def timed(name, fn):
        def wrapper(*a, **k):
            start = time.perf_counter()
            out = fn(*a, **k)
            parts[name].append(time.perf_counter() - start)
            return out
        return wrapper

    originals = {name: getattr(did, name) for name in parts}
    for name, fn in originals.items():
        setattr(did, name, timed(name, fn))
    split = {"TWFE": {k: [] for k in parts}, "event study": {k: [] for k in parts}}
    for _ in range(args.repeats):
        for label, fn in (("TWFE", fit_twfe), ("event study", fit_es)):
            for k in parts:
                parts[k].clear()
            start = time.perf_counter()
            fn()
            total = time.perf_counter() - start
            for k in parts:
                split[label][k].append(parts[k][0])
            split[label].setdefault("rest", []).append(total - sum(parts[k][0] for k in parts))
    for name, fn in originals.items():
        setattr(did, name, fn)

    print(f"panel: {args.townships:,} x {args.months} = {len(d):,} rows; {args.repeats} rounds; "
          f"load before {before}, after {after}")
    print("| run | ms, median (min-max) |\n| --- | ---: |")
    for name, ts in times.items():
        print(f"| {name} | {span(ts)} |")
    med = {name: statistics.median(ts) for name, ts in times.items()}
    one, tw, es = (med[k] for k in ("one memory pass (np.sum of y, unit, period)", "TWFE (fast path)",
                                    "event study, 18 terms (fast path)"))
    print(f"TWFE / one pass: {tw / one:.1f} (goal <= 10); event study / TWFE: {es / tw:.2f} (goal <= 2); "
          f"general / fast: TWFE {med['TWFE (general path)'] / tw:.1f}, "
          f"event study {med['event study, 18 terms (general path)'] / es:.1f}")
    for label, p in split.items():
        print(f"{label}: grid check (_grid_panel) {span(p['_grid_panel'])}, engine (_fe_ols_grid) "
              f"{span(p['_fe_ols_grid'])}, the rest {span(p['rest'])} ms")


if __name__ == "__main__":
    main()
