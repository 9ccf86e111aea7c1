"""Side-by-side benchmark: the estimators of benchmarks/README.md's older rows against their
peers, in one run of one process, each timed ``--repeats`` times (median and min-max).

    .venv/bin/python benchmarks/side_by_side.py                 # the sizes of the README
    .venv/bin/python benchmarks/side_by_side.py --townships 4000 --repeats 3   # a quicker run

Rows (each one's estimates checked to agree with the peer's before its timings count):

- TWFE, clustered by unit: ours against pyfixest ``feols("y ~ post | unit + time")``;
- event study (18 event-time terms): ours against pyfixest ``feols("y ~ i(rel, ref=-1) | ...")``;
- one memory pass (``np.sum`` of y, unit and period): the floor TWFE is measured against;
- Callaway-Sant'Anna with the event-time aggregation: ours against csdid ``ATTgt`` (doubly
  robust, never-treated comparison, no bootstrap), on ``--cs-townships``;
- synthetic-control placebos in space (outcome-only, every donor refitted): ours against
  pysyncon ``PlaceboTest`` (SLSQP, 2 worker processes) with ``--synth-donors`` donors;
- wild cluster bootstrap (9,999 Rademacher draws, the null imposed, both): ours against
  pyfixest ``wildboottest`` on ``--wild-townships`` (the peer builds the n x townships design);
  their p-values must agree within 0.02 (Monte Carlo error).

Prints the BLAS library (threadpoolctl), the load average before each row, and a Markdown
table: ours and the peer's median (min-max) seconds and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import contextlib
import io
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
from synth_scale import make_panel as make_synth_panel  # noqa: E402
from synth_scale import peer as pysyncon_placebos  # noqa: E402


def timed(fn, repeats: int) -> tuple[object, list[float]]:
    out, times = None, []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, times


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def span(times: list[float]) -> str:
    if not times:
        return "—"
    fmt = (lambda v: f"{v:.3f}") if max(times) < 1 else (lambda v: f"{v:.2f}")
    return f"{fmt(statistics.median(times))} ({fmt(min(times))}-{fmt(max(times))})"


def blas() -> str:
    from threadpoolctl import threadpool_info

    return "; ".join(f"{i['internal_api']} {i['version']} ({i.get('architecture')}, {i['num_threads']} threads)"
                     for i in threadpool_info() if i["user_api"] == "blas")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--townships", type=int, default=40_000)
    parser.add_argument("--months", type=int, default=96)
    parser.add_argument("--cs-townships", type=int, default=40_000)
    parser.add_argument("--synth-donors", type=int, default=30)
    parser.add_argument("--wild-townships", type=int, default=300)
    parser.add_argument("--wild-draws", type=int, default=9_999)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[], choices=["twfe", "event_study", "cs", "synth", "wild"])
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import pyfixest as pf

    from evaluation.estimators.did import event_study, twfe
    from evaluation.estimators.staggered import callaway_santanna
    from evaluation.estimators.synth import synthetic_control
    from evaluation.inference.few_clusters import wild_cluster_bootstrap

    print(f"python {platform.python_version()}, numpy {np.__version__}, pyfixest {pf.__version__}; "
          f"{os.cpu_count()} cores; BLAS: {blas()}")
    R = args.repeats
    small = make_panel(200, args.months)  # compile pyfixest's numba kernels before timing anything
    pf.feols("y ~ post | unit + time", small, vcov={"CRV1": "unit"})
    pf.feols("y ~ i(rel, ref=-1) | unit + time", small, vcov={"CRV1": "unit"})
    rows = []  # (row, size, ours times, peer, peer times, load)

    d = make_panel(args.townships, args.months)
    size = f"{args.townships:,} x {args.months}"
    common = dict(outcome="y", unit="unit", time="time", cohort="first_treat")
    if "twfe" not in args.skip:
        y, unit, period = d["y"].to_numpy(), d["unit"].to_numpy(), d["time"].to_numpy()
        before = load()
        _, t_pass = timed(lambda: (np.sum(y), np.sum(unit), np.sum(period)), R)
        ours, t_ours = timed(lambda: twfe(d, **common), R)
        peer, t_peer = timed(lambda: pf.feols("y ~ post | unit + time", d, vcov={"CRV1": "unit"}), R)
        assert abs(ours.effects[0].estimate - peer.coef()["post"]) < 1e-8
        assert abs(ours.effects[0].std_error / peer.se()["post"] - 1) < 1e-6
        rows.append(("one memory pass (np.sum of y, unit, period)", size, t_pass, "—", [], before))
        rows.append(("TWFE, clustered by unit", size, t_ours, "pyfixest feols", t_peer, before))
    if "event_study" not in args.skip:
        before = load()
        ours, t_ours = timed(lambda: event_study(d, **common, event_window=(-6, 12)), R)
        peer, t_peer = timed(lambda: pf.feols("y ~ i(rel, ref=-1) | unit + time", d, vcov={"CRV1": "unit"}), R)
        assert np.allclose([e.estimate for e in ours.effects], peer.coef().to_numpy(), rtol=0, atol=1e-8)
        assert np.allclose([e.std_error for e in ours.effects], peer.se().to_numpy(), rtol=1e-6, atol=0)
        rows.append(("event study, 18 terms", size, t_ours, "pyfixest feols i(rel)", t_peer, before))
    if "cs" not in args.skip:
        from csdid.att_gt import ATTgt

        c = d if args.cs_townships == args.townships else make_panel(args.cs_townships, args.months)

        def run_csdid():
            m = ATTgt(yname="y", tname="time", idname="unit", gname="first_treat", data=c,
                      control_group="nevertreated").fit(est_method="dr", bstrap=False)
            m.aggte(typec="dynamic", bstrap=False)
            return m

        before = load()
        ours, t_ours = timed(lambda: callaway_santanna(c, **common).aggregate("dynamic"), R)
        peer, t_peer = timed(run_csdid, R)
        assert abs(ours.get("att").estimate - peer.atte["overall_att"]) < 1e-6
        rows.append(("Callaway-Sant'Anna + event-time aggregation", f"{args.cs_townships:,} x {args.months}",
                     t_ours, "csdid ATTgt (dr)", t_peer, before))
    d = None  # free the big panel before the smaller ones
    if "synth" not in args.skip:
        start, k = 61, args.synth_donors
        s = make_synth_panel(k, args.months, start)
        before = load()
        ours, t_ours = timed(lambda: synthetic_control(s, outcome="y", unit="unit", time="time",
                                                       cohort="first_treat"), R)
        with contextlib.redirect_stderr(io.StringIO()):
            gaps, t_peer = timed(lambda: pysyncon_placebos(s, start, k), R)
        mine = ours.diagnostics["placebos"].set_index("township")["att"]
        theirs = gaps.rename(index=lambda v: int(str(v)[1:])).reindex(mine.index)
        assert np.nanmax(np.abs(mine - theirs)) < 1e-3
        rows.append((f"synthetic-control placebos, {k} donors", f"{k + 1} x {args.months}", t_ours,
                     "pysyncon PlaceboTest", t_peer, before))
    if "wild" not in args.skip:
        w = make_panel(args.wild_townships, args.months)
        before = load()
        ours, t_ours = timed(lambda: wild_cluster_bootstrap(w, **common, draws=args.wild_draws, seed=1,
                                                            max_enumerate=0), R)
        fit = pf.feols("y ~ post | unit + time", w, vcov={"CRV1": "unit"})
        peer, t_peer = timed(lambda: fit.wildboottest(param="post", reps=args.wild_draws, seed=1), R)
        p_peer = float(peer["Pr(>|t|)"])
        assert abs(ours.effects[0].p_value - p_peer) < 0.02, (ours.effects[0].p_value, p_peer)
        rows.append((f"wild cluster bootstrap, {args.wild_draws:,} draws", f"{args.wild_townships:,} x {args.months}",
                     t_ours, "pyfixest wildboottest", t_peer, before))

    print(f"\n{R} repeats each, seconds, median (min-max); load average (1, 5, 15 min) before each row\n")
    print("| estimator | panel | ours (s) | peer | peer (s) | peer / ours | load before |")
    print("| --- | --- | ---: | --- | ---: | ---: | --- |")
    for name, size, ours_t, peer_name, peer_t, before in rows:
        ratio = f"{statistics.median(peer_t) / statistics.median(ours_t):.1f}" if peer_t else "—"
        print(f"| {name} | {size} | {span(ours_t)} | {peer_name} | {span(peer_t)} | {ratio} | {before} |")
    tw = next((r for r in rows if r[0].startswith("TWFE")), None)
    one = next((r for r in rows if r[0].startswith("one memory")), None)
    es = next((r for r in rows if r[0].startswith("event study")), None)
    if tw and one:
        print(f"\nTWFE / one memory pass: {statistics.median(tw[2]) / statistics.median(one[2]):.0f} (goal 10)")
    if tw and es:
        print(f"event study / TWFE: {statistics.median(es[2]) / statistics.median(tw[2]):.1f} (goal 2)")


if __name__ == "__main__":
    main()
