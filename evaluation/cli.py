"""Command line: ``evaluation init PANEL PILOTS``, ``evaluation validate STUDY``, ``evaluation batch STUDY`` and ``evaluation demo-data``.

Exit codes: 0 success; 1 a chapter run failed (batch), or a file that cannot be read or written
(named, without a traceback); 2 rejected input (the message names the file, key, row or column) or
another batch of the study is running; 130 / 143 batch stopped by SIGINT / SIGTERM.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from evaluation.errors import EvaluationError, EvaluationInputError, UsageError

EXIT_INPUT_ERROR = 2
EXIT_FAILURE = 1


def _validate(args) -> int:
    return _validate_study(args.study, write_panel=args.write_panel)


def _validate_study(path, *, write_panel: bool = False) -> int:
    from evaluation.data.panel import LISTED_WARNINGS, load_panel, write_validated_panel
    from evaluation.study.config import load_study

    study = load_study(path)
    with warnings.catch_warnings():  # each is listed in the summary below
        for listed in LISTED_WARNINGS:
            warnings.simplefilter("ignore", listed)
        panel = load_panel(study)
    print(f"study:     {study.id} — {study.title.zh} / {study.title.en}")
    if study.encoding != "utf-8":
        print(f"note:      the study file was read as {study.encoding.upper()} (GBK) text; save it as UTF-8 "
              "to share it safely")
    if study.synthetic:
        print("data:      SYNTHETIC demo data (not real townships)")
    print(panel.describe())
    for note in [_window_beyond_data(study, panel), *_plan_notes(study, panel)]:
        if note:
            print(note)
    print("indicators: " + ", ".join(i.id for i in study.selected_indicators()))
    print(_coverage(panel, study))
    if write_panel:
        target = study.output_dir / "panel_validated.csv"
        write_validated_panel(panel, target)
        print(f"wrote {target}")
    print("valid")
    return 0


def _window_beyond_data(study, panel) -> str:
    """A note when the study window starts before the data's first period or ends after its
    last: the analysis covers the data's periods only."""
    from evaluation.study.periods import period_label

    start, end = study.window_periods
    periods = panel.periods
    if not len(periods):
        return ""
    first, last = periods.min(), periods.max()
    start, end = (p.asfreq(periods.freqstr) if p is not None else None for p in (start, end))  # analysis frequency
    parts = []
    if start is not None and start < first:
        parts.append(f"window.start {period_label(start)} is before the data's first period {period_label(first)}")
    if end is not None and end > last:
        parts.append(f"window.end {period_label(end)} is after the data's last period {period_label(last)}")
    return ("note:      " + "; ".join(parts) + ": the analysis covers "
            f"{period_label(first)} .. {period_label(last)}") if parts else ""


def _plan_notes(study, panel) -> list[str]:
    """Settings of the analysis plan that this panel cannot support: the page of the method
    will say "not estimable"; validate says so first, with the value that would work."""
    from evaluation.study.periods import period_label

    settings, periods = study.settings(), panel.periods
    starts = panel.pilots["pilot_start"] if "pilot_start" in panel.pilots else []
    if not len(periods) or not len(starts):
        return []
    first_start = min(starts).asfreq(periods.freqstr)
    before = (first_start - periods[0]).n   # periods before the first pilot start
    after = (periods[-1] - first_start).n   # periods after it
    text = lambda n: settings.text(n)[1]  # noqa: E731 (12 months, 1 quarter ...)
    notes = []
    if settings.placebo_shift >= before:
        notes.append(f"note:      analysis.placebo_shift is {text(settings.placebo_shift)}, but the first pilot starts "
                     f"{period_label(first_start)}, {text(before)} into the data: the placebo-in-time test will be "
                     f"not estimable (a shift below {before} works)")
    if settings.its_phase_in > after:
        notes.append(f"note:      analysis.its.phase_in is {text(settings.its_phase_in)}, but the data end "
                     f"{text(after)} after the first pilot start ({period_label(first_start)}): the ITS will be "
                     "not estimable")
    return notes


def _coverage(panel, study) -> str:
    """Per indicator, the townships that methods needing a complete panel leave out."""
    from evaluation.data.frames import NEEDS_COMPLETE_PANEL

    lines = []
    for ind in study.selected_indicators():
        incomplete = panel.incomplete(ind)
        if len(incomplete):
            lines.append(f"  {ind.id}: " + ", ".join(
                f"{r.township_id} ({r.missing_periods} missing period(s), {r.empty_cells} empty cell(s))"
                for r in incomplete.itertuples()))
    if not lines:
        return "complete panel: every method uses every township"
    return ("incomplete townships (every method uses their observed values, except "
            f"{', '.join(sorted(NEEDS_COMPLETE_PANEL))}, which leave them out; nothing is imputed):\n"
            + "\n".join(lines))
def _init(args) -> int:
    from evaluation.data.init_study import propose_study, summary, write_study

    out = Path(args.out)
    if out.exists() and not args.force:  # refuse before reading anything
        from evaluation.errors import OutputExistsError

        raise OutputExistsError(out, "the study file exists; pass --force to overwrite it")
    proposal = propose_study(args.panel, args.pilots, out=out, study_id=args.id)
    print(summary(proposal, lang=args.lang))
    path = write_study(proposal, force=args.force, lang=args.lang)
    print(_say(f"已写入 {path}", f"wrote {path}", args.lang))
    print(_say("校验：", "validation:", args.lang))
    try:
        return _validate_study(path)
    except EvaluationInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(_say(f"研究文件已保留：修改后运行 evaluation validate {path}",
                   f"the study file is kept: edit it, then run evaluation validate {path}", args.lang),
              file=sys.stderr)
        return EXIT_INPUT_ERROR


def _say(zh: str, en: str, lang: str) -> str:
    return {"zh": zh, "en": en}.get(lang, f"{zh} / {en}")


def _demo_data(args) -> int:
    from evaluation.data.demo import (
        DEMO_SELECTION_DATA,
        MIN_TOWNSHIPS,
        DemoConfig,
        SelectionDemoConfig,
        write_demo,
        write_selection_demo,
    )
    from evaluation.errors import UsageError
    from evaluation.paths import DEMO_DATA

    out = Path(args.out) if args.out else (DEMO_SELECTION_DATA if args.selection else DEMO_DATA)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: --out is a file, not a folder")
    if args.selection:
        if args.spillover is not None or args.townships is not None:
            raise UsageError("--selection: the selection demo takes --seed and --out only")
        config = SelectionDemoConfig(**({} if args.seed is None else {"seed": args.seed}))
        for path in write_selection_demo(out, config):
            print(f"wrote {path}")
        return 0
    if args.townships is not None and args.townships < MIN_TOWNSHIPS:
        raise UsageError(f"--townships {args.townships}: the demo needs at least {MIN_TOWNSHIPS} townships "
                         "(twice as many as its 10 pilots)")
    given = {"seed": args.seed, "spillover": args.spillover,
             "townships": args.townships}  # None: the demo's default
    config = DemoConfig(**{name: value for name, value in given.items() if value is not None})
    for path in write_demo(out, config):
        print(f"wrote {path}")
    return 0


def _batch(args) -> int:
    from evaluation.paths import study_output_dir
    from evaluation.report.batch import BatchInterrupted, run_batches

    if args.scheduler is not None and args.workers is not None:
        raise UsageError("--scheduler and --workers: give one (a running Dask scheduler, or a local Dask cluster "
                         "of that many workers)")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers {args.workers}: give at least 1")
    if args.scheduler is not None or args.workers is not None:
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise UsageError("--scheduler/--workers need dask.distributed: pip install "
                             "'dask[distributed]==2026.8.0' (see docs/dask.md)") from None
    try:
        manifests = run_batches(args.study, jobs=args.jobs, indicators=args.indicators, chapters=args.chapters,
                                resume=args.resume, fast=args.fast, wait=args.wait, scheduler=args.scheduler,
                                workers=args.workers)
    except BatchInterrupted as exc:  # SIGINT / SIGTERM: one line, no traceback
        print(f"evaluation batch: {exc.message()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # Ctrl-C while the study and data were read: nothing was written
        print("evaluation batch: interrupted by SIGINT before any run started; nothing changed", file=sys.stderr)
        return 130
    any_failed = False
    for manifest in manifests:
        folder = study_output_dir(manifest["study"])
        mine = set(manifest["batch"]["stems"])
        runs = [r for r in manifest["runs"] if r["stem"] in mine]
        failed = [r for r in runs if r["status"] != "ok"]
        any_failed = any_failed or bool(failed)
        reused = sum(bool(r["reused"]) for r in runs)
        name = f"{manifest['study']}: " if len(manifests) > 1 else ""
        print(f"{name}{len(runs)} runs ({reused} reused), {len(failed)} failed, {manifest['seconds']:.0f} s")
        for r in failed:
            failure = r.get("failure") or {}
            where = f"; notebook: {folder / failure['notebook']}" if failure.get("notebook") else ""
            kept = "; the last good page is kept, marked stale" if r.get("stale") else ""
            print(f"FAILED {name}{r['stem']}: {r['error']}{where}{kept}", file=sys.stderr)
        print(f"report: {folder / 'index.html'}")
    return 1 if any_failed else 0


def _export(args) -> int:
    from evaluation.paths import resolve_study_path, study_output_dir
    from evaluation.report.export import export_deliverables
    from evaluation.study.config import load_study

    study = load_study(resolve_study_path(args.study))
    folder = Path(args.folder) if args.folder else study_output_dir(study.id)
    if not (folder / "manifest.json").is_file():
        raise UsageError(f"{folder}: no published report here (manifest.json is missing); run "
                         f"'evaluation batch {args.study}' first")
    for path in export_deliverables(folder, study, language=args.language):
        print(path)
    return 0


def _seed(text: str) -> int:
    """An argparse type: a seed from 0 to 2**32 - 1 (what numpy's seeding takes)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= 2**32 - 1:
        raise argparse.ArgumentTypeError(f"{value} is outside 0 to 4294967295")
    return value


def _share(text: str) -> float:
    """An argparse type: a share from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:  # NaN fails too
        raise argparse.ArgumentTypeError(f"{text} is outside 0 to 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser. It imports nothing heavy (no pandas, numpy or scipy), so that
    ``evaluation --help`` starts at once: each command imports what it needs when it runs,
    and options whose default lives in a heavy module default to None here."""
    parser = argparse.ArgumentParser(prog="evaluation", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    i = sub.add_parser("init", help="write a study file from your panel and pilot table, then validate it")
    i.add_argument("panel", help="the township panel (.csv in UTF-8 or GBK, or .xlsx)")
    i.add_argument("pilots", help="the pilot table (.csv or .xlsx)")
    i.add_argument("--out", default="study.yml", help="study file to write (default study.yml)")
    i.add_argument("--id", help="study id, names the output folder (default: from the file names)")
    i.add_argument("--lang", choices=["zh", "en", "both"], default="both",
                   help="language of the messages and of the study file's notes (default both)")
    i.add_argument("--force", action="store_true", help="overwrite an existing study file")
    i.set_defaults(func=_init)
    p = sub.add_parser("validate", help="check a study file and its data; print a summary")
    p.add_argument("study", help="study YAML file, e.g. studies/demo.yml")
    p.add_argument("--write-panel", action="store_true",
                   help="write the validated analysis panel to outputs/<study>/panel_validated.csv")
    p.set_defaults(func=_validate)
    b = sub.add_parser("batch", help="run every chapter for every indicator and build the HTML report")
    b.add_argument("study", nargs="+", help="study YAML file(s): several share the workers (a province: one "
                                            "study per county and the province-wide one)")
    b.add_argument("--jobs", type=int, default=2, help="parallel worker processes (default 2)")
    b.add_argument("--scheduler", metavar="ADDRESS",
                   help="run the chapters on this Dask scheduler (tcp://host:8786; see docs/dask.md)")
    b.add_argument("--workers", type=int, metavar="N",
                   help="run the chapters on a local Dask cluster of N worker processes")
    b.add_argument("--indicators", nargs="+", help="only these indicator ids")
    b.add_argument("--chapters", nargs="+", help="only these chapters (data_quality trends did its robustness summary)")
    b.add_argument("--resume", action="store_true", help="reuse runs whose inputs and parameters did not change")
    b.add_argument("--fast", action="store_true", help="fewer bootstrap draws (quick checks; CI)")
    b.add_argument("--wait", action="store_true",
                   help="when another batch of the study is running, wait for it instead of exiting (code 2)")
    b.set_defaults(func=_batch)
    e = sub.add_parser("export", help="write the Word report, Excel workbook, CSV and regression tables of a "
                                      "study's published report (evaluation batch writes them too)")
    e.add_argument("study", help="study YAML file")
    e.add_argument("--language", choices=["zh", "en", "both"],
                   help="language of the deliverables (default: the study's report.language)")
    e.add_argument("--folder", help="the published report folder (default outputs/<study id>)")
    e.set_defaults(func=_export)
    d = sub.add_parser("demo-data", help="regenerate the synthetic demo prefecture (data_raw/demo)")
    d.add_argument("--out", help="folder to write to (default data_raw/demo)")
    d.add_argument("--seed", type=_seed, help="random seed, 0 to 4294967295 (default: the committed demo's)")
    d.add_argument("--spillover", type=_share,
                   help="share of a neighbouring pilot's effect felt by non-pilot townships (default 0)")
    d.add_argument("--townships", type=int, metavar="N",
                   help="number of townships, 20 or more, in counties of about 16 (default: the committed "
                        "demo's 64; a different number makes a different prefecture)")
    d.add_argument("--selection", action="store_true",
                   help="the selection demo instead (data_raw/demo_selection): pilots chosen on township "
                        "characteristics that also drive trends and effects")
    d.set_defaults(func=_demo_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EvaluationError as exc:  # rejected input, or data that cannot support the design
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except OSError as exc:  # a file that cannot be read or written: say which, without a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
