"""Memory benchmark: each computation of the DiD chapter, one after the other in one process,
on a demo prefecture (issue #17: the chapter's memory linear and small in townships).

    .venv/bin/python benchmarks/did_chapter_memory.py --townships 2000
    .venv/bin/python benchmarks/did_chapter_memory.py --townships 2000 --data /tmp/data-2000  # an existing demo
    .venv/bin/python benchmarks/did_chapter_memory.py --townships 2000 --before  # the dense paths replaced

A demo prefecture (``evaluation demo-data --townships N``, 96 months, 10 pilots) and the
study of ``benchmarks/scaling.py`` (``studies/demo.yml`` with one indicator, fast mode) are
opened as the chapter notebook opens them (:func:`evaluation.report.chapters.setup`, a
fresh results store in a temporary folder). Then each computation of the chapter's
sections (the calls of ``build_callaway_santanna``, ``build_event_study``, ``build_twfe``
and ``build_staggered_estimators``, with their arguments), and last the chapter as the
notebook runs it (``did``, ``staggered_estimators`` and the figures, through the store),
each after ``gc.collect()`` with two measures reset at its start: the peak of
``tracemalloc`` above what was traced before (numpy arrays and Python objects allocated
during the call) and the peak
resident set (``VmHWM`` reset through ``/proc/self/clear_refs``, as the batch measures a
run) minus the resident set before. Seconds are of one call under tracing (slower than
without). The results are dropped after each step (the chapter step keeps what the
notebook keeps). ``--before`` swaps in the dense implementations the count tables replaced
(``saturated._dense_cell_poisson``: the Poisson extended TWFE's rows x cells design through
``fe_poisson``; ``imputation._dense_lead_fit``: the rows x leads design of BJS Test 1
through ``fe_ols``), for the table before and after.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from scaling import make_study  # noqa: E402

GIB = 2**30


def _status(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(name: str, call) -> dict:
    """One call with its traced peak and its resident-set growth (peak minus before)."""
    gc.collect()
    _reset_peak()
    rss = _status("VmRSS")
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    out = call()
    seconds = time.perf_counter() - start
    traced = tracemalloc.get_traced_memory()[1] - before
    hwm = _status("VmHWM")
    del out
    return {"step": name, "seconds": seconds, "traced": traced, "rss_growth": max(0, hwm - rss)}


def steps(ctx) -> list[tuple[str, object]]:
    """The chapter's computations, as its section builders call them."""
    from evaluation.diagnostics.bacon import bacon_decomposition
    from evaluation.estimators.did import event_study, poisson_did, twfe
    from evaluation.estimators.imputation import imputation_did
    from evaluation.estimators.saturated import extended_twfe, sun_abraham
    from evaluation.estimators.staggered import callaway_santanna
    from evaluation.inference.few_treated import subgroup_randomization
    from evaluation.inference.pretrend import pretrend_randomization

    s, ind = ctx.settings, ctx.indicator
    d = ctx.frame
    keys = dict(outcome="value", unit="township_id", time="time", cohort="first_treat")
    family = ind.model_family
    exposure = {"poisson_offset": "population", "binomial": "denominator", "poisson": None}.get(family)
    count = family in ("poisson_offset", "poisson", "binomial")
    window = (-s.pretrend_leads, s.event_window[1])
    complete = ctx.frame_for("pre-trend randomization")[0]
    balanced = ctx.frame_for("Goodman-Bacon")[0]
    cs = {}

    def cs_fit():
        cs["fit"] = callaway_santanna(d, control_group=s.comparison, seed=s.seed, alpha=s.alpha, indicator=ind.id,
                                      **keys)
        return cs["fit"]

    out = [
        ("frame (did_frame)", lambda: ctx.frame),
        ("Callaway-Sant'Anna fit", cs_fit),
        ("CS aggregate simple", lambda: cs["fit"].aggregate("simple")),
        ("CS aggregate dynamic (uniform band)", lambda: cs["fit"].aggregate("dynamic", event_window=s.event_window,
                                                                            draws=s.draws_uniform_band)),
        ("CS aggregate group", lambda: cs["fit"].aggregate("group")),
        ("event study", lambda: event_study(d, event_window=window, cluster=s.cluster, alpha=s.alpha,
                                            indicator=ind.id, **keys)),
        ("pre-trend randomization", lambda: pretrend_randomization(
            complete, event_window=window, draws=s.draws_randomization, seed=s.seed, alpha=s.alpha,
            indicator=ind.id, **keys)),
        ("TWFE", lambda: twfe(d, cluster=s.cluster, alpha=s.alpha, indicator=ind.id, **keys)),
    ]
    if s.subgroups:
        out.append(("subgroup randomization", lambda: subgroup_randomization(
            d, by=list(s.subgroups), draws=s.draws_randomization, seed=s.seed, alpha=s.alpha, indicator=ind.id,
            **keys)))
    if count:
        out.append(("Poisson DiD", lambda: poisson_did(d, **{**keys, "outcome": "numerator"}, exposure=exposure,
                                                       cluster=s.cluster, alpha=s.alpha, indicator=ind.id)))
    out.append(("Goodman-Bacon", lambda: bacon_decomposition(balanced, **keys)))
    ckeys = dict(keys, cluster=s.cluster, alpha=s.alpha, indicator=ind.id)
    out += [
        ("imputation (BJS)", lambda: imputation_did(d, event_window=s.event_window, **ckeys)),
        ("Sun-Abraham", lambda: sun_abraham(d, event_window=s.event_window, **ckeys)),
        ("extended TWFE (linear)", lambda: extended_twfe(d, **ckeys)),
    ]
    if count:
        out.append(("extended TWFE (Poisson)", lambda: extended_twfe(d, **{**ckeys, "outcome": "numerator"},
                                                                     family="poisson", exposure=exposure)))
    return out


def chapter(ctx):
    """The notebook's calls after the setup cell (through the store: computed here, as the batch does)."""
    from evaluation.report import chapters

    res = chapters.did(ctx)
    figures = chapters.did_figures(res, ctx)
    estimators = chapters.staggered_estimators(ctx)
    return res, figures, estimators


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--townships", type=int, default=2000)
    parser.add_argument("--data", type=Path, help="an existing demo folder (evaluation demo-data --out)")
    parser.add_argument("--indicator", default="county_internal_visit_rate")
    parser.add_argument("--only", nargs="*", help="steps whose names start with these")
    parser.add_argument("--before", action="store_true", help="the dense paths the count tables replaced")
    args = parser.parse_args()
    from evaluation.estimators import imputation, saturated
    from evaluation.report import chapters

    if args.before:
        saturated._cell_poisson = saturated._dense_cell_poisson
        imputation._lead_fit = imputation._dense_lead_fit

    with tempfile.TemporaryDirectory(prefix="did-memory-") as tmp:
        study = make_study(Path(tmp), args.townships, f"scale_{args.townships}", args.indicator, data=args.data)
        ctx = chapters.setup(study, args.indicator, fast=True, results_dir=Path(tmp) / "results")
        rows = len(ctx.frame)
        print(f"{'before (dense paths)' if args.before else 'after'}: {args.townships} townships, {rows:,} rows, {os.cpu_count()} cores, load "
              f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}; resident after setup "
              f"{_status('VmRSS') / GIB:.3f} GiB", flush=True)
        tracemalloc.start()
        todo = steps(ctx) + [("chapter (did, figures, staggered_estimators)", lambda: chapter(ctx))]
        if args.only:
            todo = [(n, c) for n, c in todo if any(n.startswith(o) for o in args.only)]
        print("| step | seconds (traced) | traced peak, GiB | RSS growth, GiB |")
        print("| --- | ---: | ---: | ---: |")
        for name, call in todo:
            r = measure(name, call)
            print(f"| {r['step']} | {r['seconds']:.2f} | {r['traced'] / GIB:.3f} | {r['rss_growth'] / GIB:.3f} |",
                  flush=True)
        tracemalloc.stop()
        print(f"load after {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
