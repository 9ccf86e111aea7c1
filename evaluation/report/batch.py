"""Batch runs of the chapters with papermill, HTML export, index page and manifest.

Each chapter run writes its results to the batch's results store (``results/``, see
:mod:`evaluation.report.store`); the summary chapter runs after the others and reads
them, and the index page's headline table is the summary's stored scorecard.

``evaluation batch STUDY`` runs every chapter for every indicator (the per-study
chapters once) in parallel worker processes, writes executed notebooks and
self-contained HTML (images embedded, code hidden) to a temporary folder beside
``outputs/<study>/`` and moves it into place at the end, so an interrupted batch never
leaves a half-written report. A failing run is recorded with its error and the others go
on; the batch then exits non-zero. ``--resume`` reuses runs whose inputs and parameters
have not changed since the last manifest.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import html
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from evaluation.errors import UsageError
from evaluation.paths import INDICATOR_CATALOGUE, NOTEBOOKS, PROJECT_ROOT, study_output_dir
from evaluation.report.chapters import CHAPTERS, resolve_study_path
from evaluation.report.store import STUDY_LEVEL, ResultsStore, code_hash
from evaluation.study.config import load_study

KERNEL_NAME = "evaluation"


PACKAGES = ("evaluation", "pandas", "numpy", "scipy", "statsmodels", "linearmodels", "matplotlib", "seaborn",
            "papermill", "nbconvert", "pandera", "lunardate")


@dataclass
class Run:
    chapter: str
    notebook: str
    indicator: str | None
    parameters: dict
    key: str = ""
    status: str = "pending"
    seconds: float = 0.0
    error: str = ""
    reused: bool = False

    @property
    def stem(self) -> str:
        return self.chapter if self.indicator is None else f"{self.chapter}__{self.indicator}"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def plan(study_path: Path, indicators=None, chapters=None, fast: bool = False,
         results_dir: str | None = None) -> list[Run]:
    study = load_study(study_path)
    all_ids = [i.id for i in study.selected_indicators()]
    chosen = list(indicators or all_ids)
    unknown = [i for i in chosen if i not in all_ids]
    if unknown:
        raise UsageError(f"--indicators: {', '.join(unknown)} not among the study's indicators; "
                         f"choose from {', '.join(all_ids)}")
    keys = [c.key for c in CHAPTERS]
    wanted = list(chapters or keys)
    bad = [c for c in wanted if c not in keys]
    if bad:
        raise UsageError(f"--chapters: unknown chapter(s) {', '.join(bad)}; choose from {', '.join(keys)}")
    runs = []
    for ch in CHAPTERS:
        if ch.key not in wanted:
            continue
        for ind in (chosen if ch.per_indicator else [None]):
            params = {"study_path": str(study_path), "fast": fast}
            if results_dir is not None:
                params["results_dir"] = results_dir
            if ind is not None:
                params["indicator"] = ind
            runs.append(Run(ch.key, ch.notebook, ind, params))
    return runs


def input_hashes(study_path: Path) -> dict[str, str]:
    """SHA-256 of every input: the study file, the data files, the indicator catalogue."""
    study = load_study(study_path)
    files = {"study": study_path, "panel": study.panel_path, "pilots": study.pilots_path}
    if study.truth_path:
        files["truth"] = study.truth_path
    out = {name: sha256(p) for name, p in files.items()}
    out["indicator_catalogue"] = sha256(INDICATOR_CATALOGUE)
    return out


def _run_key(run: Run, inputs: dict, code: str) -> str:
    parameters = {k: v for k, v in run.parameters.items() if k != "results_dir"}  # a new folder each batch
    payload = json.dumps({"parameters": parameters, "inputs": inputs, "code": code,
                          "notebook": sha256(NOTEBOOKS / run.notebook)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def execute(run: Run, out_dir: str) -> tuple[str, float, str]:
    """Execute one chapter and export it to HTML (runs in a worker process)."""
    import papermill as pm

    start = time.perf_counter()
    out = Path(out_dir)
    try:
        pm.execute_notebook(str(NOTEBOOKS / run.notebook), str(out / f"{run.stem}.ipynb"),
                            parameters=run.parameters, kernel_name=KERNEL_NAME, cwd=str(NOTEBOOKS),
                            progress_bar=False)
        export_html(out / f"{run.stem}.ipynb", out / f"{run.stem}.html")
        return "ok", time.perf_counter() - start, ""
    except Exception as exc:  # recorded in the manifest; the batch goes on
        message = f"{type(exc).__name__}: {exc}"
        return "failed", time.perf_counter() - start, message[-4000:] or traceback.format_exc()[-4000:]


def export_html(notebook: Path, target: Path) -> None:
    """Self-contained HTML with the code hidden (inputs and prompts left out)."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab")
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    target.write_text(body, encoding="utf-8")


def _previous_manifest(final: Path) -> dict:
    path = final / "manifest.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def _single_threaded_numerics(jobs: int):
    """With several chapters at once, one BLAS thread per chapter: multi-threaded BLAS in
    each parallel kernel oversubscribes the cores (4 robustness chapters on 2 cores: 188 s
    with default threads, 41 s with one). Variables the user has set are left alone."""
    if jobs <= 1:
        yield
        return
    added = [v for v in THREAD_VARIABLES if v not in os.environ]
    os.environ.update({v: "1" for v in added})
    try:
        yield
    finally:
        for v in added:
            os.environ.pop(v, None)


def run_batch(study_path: str | Path, *, jobs: int = 2, indicators=None, chapters=None, resume: bool = False,
              fast: bool = False, progress: bool = True) -> dict:
    """Run the batch; returns the manifest (``manifest["ok"]`` is False when a run failed)."""
    from tqdm import tqdm

    study_path = resolve_study_path(study_path)
    study = load_study(study_path)
    runs = plan(study_path, indicators, chapters, fast)  # unknown --indicators/--chapters: exit 2
    _validate_data(study)  # invalid data stop the batch before anything is written
    final = study_output_dir(study.id)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{study.id}-batch-", dir=final.parent))
    for r in runs:
        r.parameters["results_dir"] = str(tmp / "results")
    inputs, code = input_hashes(study_path), code_hash()
    for r in runs:
        r.key = _run_key(r, inputs, code)
    previous = {r["stem"]: r for r in _previous_manifest(final).get("runs", [])} if resume else {}
    started = time.perf_counter()
    try:
        todo = []
        for r in runs:
            old = previous.get(r.stem)
            if (old and old.get("key") == r.key and old.get("status") == "ok"
                    and (final / f"{r.stem}.html").is_file() and (final / f"{r.stem}.ipynb").is_file()):
                for suffix in (".ipynb", ".html"):
                    shutil.copy2(final / f"{r.stem}{suffix}", tmp / f"{r.stem}{suffix}")
                _copy_results(final / "results", tmp / "results", r.indicator)
                r.status, r.seconds, r.reused = "ok", old.get("seconds", 0.0), True
            else:
                todo.append(r)
        # the summary reads the other chapters' stored results, so it runs after them
        waves = [[r for r in todo if r.chapter != "summary"], [r for r in todo if r.chapter == "summary"]]
        bar = tqdm(total=len(todo), desc=f"{study.id}: chapters", unit="run", disable=not progress)
        with _single_threaded_numerics(jobs), ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
            for wave in waves:
                futures = {pool.submit(execute, r, str(tmp)): r for r in wave}
                for fut in as_completed(futures):
                    r = futures[fut]
                    r.status, r.seconds, r.error = fut.result()
                    bar.update(1)
                    bar.set_postfix_str(f"{r.stem} {r.status}")
        bar.close()
        manifest = _manifest(study, study_path, runs, inputs, time.perf_counter() - started, fast)
        (tmp / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
        (tmp / "index.html").write_text(index_page(study, runs, tmp), encoding="utf-8")
        _move_into_place(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _validate_data(study) -> None:
    """Load the study's panel once, as ``evaluation validate`` does: a
    :class:`~evaluation.errors.DataValidationError` stops the batch (exit 2), the
    previous report untouched."""
    import warnings

    from evaluation.data.panel import LISTED_WARNINGS, load_panel

    with warnings.catch_warnings():  # gaps, dropped rows and odd cells are listed in the chapters
        for listed in LISTED_WARNINGS:
            warnings.simplefilter("ignore", listed)
        load_panel(study)


def _copy_results(source: Path, target: Path, indicator: str | None) -> None:
    """A reused run's stored results come along with its pages."""
    folder = source / (indicator or STUDY_LEVEL)
    if folder.is_dir():
        shutil.copytree(folder, target / folder.name, dirs_exist_ok=True)


def _move_into_place(tmp: Path, final: Path) -> None:
    """Swap the finished folder in: the old report stays whole until the new one is complete.
    Files of the old folder that the batch does not make (e.g. the validated panel) are kept."""
    if final.exists():
        for item in final.iterdir():
            if not (tmp / item.name).exists() and item.name not in ("index.html", "manifest.json") \
                    and not item.name.endswith((".ipynb", ".html")):
                shutil.move(str(item), tmp / item.name)
        old = final.with_name(f".{final.name}-old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _manifest(study, study_path: Path, runs: list[Run], inputs: dict, seconds: float, fast: bool) -> dict:
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    rows = [{**asdict(r), "stem": r.stem, "html": f"{r.stem}.html", "notebook_out": f"{r.stem}.ipynb"} for r in runs]
    return {
        "study": study.id, "study_file": str(study_path), "title": study.title.model_dump(),
        "synthetic": study.synthetic, "fast": fast,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": _git_commit(), "python": platform.python_version(), "packages": versions,
        "inputs_sha256": inputs, "seconds": round(seconds, 2),
        "ok": all(r.status == "ok" for r in runs), "runs": rows,
    }


def _headline_rows(tmp: Path) -> str:
    """The summary chapter's scorecard, read from the results store."""
    result = ResultsStore(tmp / "results").read("summary.scorecard", None)
    if result is None:
        return ""
    return _scorecard_html(result.tables["scorecard"].to_dict("records"))


def _scorecard_html(records: list[dict]) -> str:
    head = ("<tr><th>指标 / Indicator</th><th>效果 / Effect</th><th>95% CI</th><th>p (推荐 recommended)</th>"
            "<th>试点乡镇 / Pilots</th><th>结论 / Verdict</th></tr>")
    body = []
    for r in records:
        if not r.get("estimated", True):
            body.append(f"<tr><td>{html.escape(r['name_zh'])} / {html.escape(r['name_en'])}</td>"
                        f"<td colspan=\"5\">未能估计 / could not be estimated: {html.escape(str(r['failure']))}</td></tr>")
            continue
        body.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            f"{r['name_zh']} / {r['name_en']}", f"{r['att']:.4g}", f"{r['ci_low']:.4g} – {r['ci_high']:.4g}",
            ("< 0.001" if r["p_recommended"] < 0.001 else f"{r['p_recommended']:.3f}") + f" ({r['recommended_test']})",
            r["n_pilots"],
            "改善 / improved" if r["improved"] else "恶化 / worsened" if r["worsened"]
            else "证据不一致 / mixed" if r.get("mixed") else "无可靠变化 / no clear change"))
            + "</tr>")
    return f"<h2>核心结果 / Headline results</h2><table>{head}{''.join(body)}</table>"


def index_page(study, runs: list[Run], tmp: Path) -> str:
    esc = html.escape
    names = {i.id: f"{i.name_zh} / {i.name_en}" for i in study.selected_indicators()}
    banner = ('<div class="banner">合成演示数据，非真实乡镇 / SYNTHETIC DEMO DATA — not real townships</div>'
              if study.synthetic else "")
    chapters_html = []
    for ch in CHAPTERS:
        mine = [r for r in runs if r.chapter == ch.key]
        if not mine:
            continue
        items = []
        for r in mine:
            label = esc(names.get(r.indicator, r.indicator) if r.indicator else f"{ch.title_zh} / {ch.title_en}")
            status = "" if r.status == "ok" else f' <span class="failed">failed: {esc(r.error[:200])}</span>'
            link = f'<a href="{esc(r.stem)}.html">{label}</a>' if r.status == "ok" else label
            items.append(f"<li>{link}{status}</li>")
        chapters_html.append(f"<h3>{esc(ch.title_zh)} / {esc(ch.title_en)}</h3><ul>{''.join(items)}</ul>")
    created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    commit = _git_commit() or "unknown"
    return f"""<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>{esc(study.title.zh)}</title>
<style>
body {{ font-family: "Noto Sans CJK SC", "Microsoft YaHei", "PingFang SC", sans-serif; max-width: 980px;
       margin: 2em auto; color: #222; line-height: 1.5; }}
.banner {{ background: #fdecea; border: 2px solid #c0392b; color: #922b21; padding: 10px 14px; font-weight: bold; }}
table {{ border-collapse: collapse; width: 100%; font-size: 0.92em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 6px; text-align: left; }}
th {{ background: #f4f6f7; }}
.failed {{ color: #c0392b; }}
footer {{ margin-top: 3em; font-size: 0.85em; color: #666; border-top: 1px solid #ddd; padding-top: 0.5em; }}
</style></head><body>
{banner}
<h1>{esc(study.title.zh)}</h1>
<h2 style="font-weight:normal">{esc(study.title.en)}</h2>
{_headline_rows(tmp)}
<h2>章节 / Chapters</h2>
{''.join(chapters_html)}
<footer>生成时间 / Generated {esc(created)} · evaluation {esc(metadata.version("evaluation"))} ·
git {esc(commit[:12])} · study file {esc(Path(study.source).name)} · manifest: <a href="manifest.json">manifest.json</a>
(inputs' SHA-256, parameters, package versions, timings)</footer>
</body></html>
"""
