"""Batch runs of the chapters with papermill, HTML export, index page and manifest.

``evaluation batch STUDY`` runs every chapter for every indicator (the per-study
chapters once), ``--jobs`` at a time, and keeps the report in ``outputs/<study>/`` whole
at every moment:

- **Kept kernels.** The local pool has ``--jobs`` worker processes; each starts one
  Jupyter kernel at its first run and keeps it for all the runs it takes (papermill runs
  each chapter in it through the engine :data:`KEPT_KERNEL_ENGINE`), so the kernel start,
  the imports of the setup cell and the shutdown are paid once per worker, not once per
  run. Before each run the kernel's user namespace is reset (:data:`RESET_CODE`: names,
  figures, warning filters, execution counter). A worker or kernel that dies under a run
  loses only that run, which is retried once on a fresh worker (and kernel). The chapters
  stay plain papermill notebooks: the papermill command line runs each one alone.

- **Per-run publishing.** A run executes in the batch's temporary folder
  (``outputs/.<study>-batch-<pid>-*``). When it succeeds, its executed notebook, its HTML
  page and the results-store sections it owns (``results/<indicator>/<chapter>*``) are
  renamed into place, each file or folder atomically. A partial batch (``--chapters``,
  ``--indicators``) therefore replaces only its own pages; the index and the manifest
  are rebuilt from the union of the previous manifest's runs and this batch's.
- **Failures keep the last good page.** A run that fails leaves its last good page in
  place, marked *stale* in the index and the manifest with the failure beside it: the
  exception's class and message from inside the notebook, the cell it came from, and the
  failed notebook, kept as ``failed/<stem>.ipynb`` (and ``.html``, and the worker's log).
- **The summary reads current results.** The batch's results store starts as a
  hard-linked copy of the published one, so the summary chapter reads this batch's
  results and, for the indicators not in it, the stored results that are still current
  (a stored result is read only when its key, see :mod:`evaluation.report.store`,
  matches the current inputs, plan and code; otherwise it is computed again).
- **One batch per study.** ``outputs/.<study>.lock`` is held (``fcntl.flock``) for the
  whole batch; a second batch exits 2 naming the holder, or waits with ``--wait``. The
  operating system releases the lock when its holder dies, even by SIGKILL.
- **Interrupts.** SIGINT and SIGTERM stop the running and queued runs at once (their
  worker processes and kernels are killed), the runs already published stay, the index
  and manifest are rebuilt for them, the temporary folder is removed, and
  :class:`BatchInterrupted` tells the command line to exit 130 or 143. Workers ask the
  kernel to kill them when the batch dies (``PR_SET_PDEATHSIG``); their kernels exit
  within a second of their worker (ipykernel's parent poller, ``JPY_PARENT_PID``). The next
  batch removes the temporary folders that a killed batch left.
- **Exact resume.** ``--resume`` reuses a run whose key is unchanged: the key hashes the
  run's parameters, its notebook, the package's code (``.py`` and ``.yml``), the versions
  of :data:`PACKAGES` and its inputs (:func:`input_hashes`: the *resolved* study
  configuration, so a comment in the study file does not rerun anything, and the panel
  and pilot files; the truth file is read by no chapter and is left out).

- **Peak memory.** Each run records the peak resident memory of its kernel and of its
  worker process (:class:`PeakMemory`, ``memory`` in the manifest's run record), and the
  manifest's ``batch.memory`` the largest per worker (:func:`memory_summary`).

The worker's output and the kernel's own messages (start-up warnings, interrupts) go to
a log per run, never to the console; the log of a failed run is kept beside its notebook.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import errno
import fcntl
import functools
import hashlib
import html
import json
import multiprocessing
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from importlib import metadata
from multiprocessing.connection import wait as wait_for
from pathlib import Path

from evaluation.errors import EvaluationError, UsageError
from evaluation.paths import (
    INDICATOR_CATALOGUE,
    NOTEBOOKS,
    PROJECT_ROOT,
    output_root,
    resolve_study_path,
    study_output_dir,
)
from evaluation.report.outline import CHAPTER_BY_KEY, CHAPTERS
from evaluation.report.store import STUDY_LEVEL, ResultsStore, code_hash
from evaluation.study.config import load_study

# jsonschema, which nbformat imports to read any notebook, imports ``rfc3987_syntax`` when
# it is installed (JupyterLab's jupyter-events installs it), and that module compiles 39
# Earley grammars at import: 2.7 s in the coordinator and in every worker of a batch. Notebook
# validation never checks the IRI formats it serves, so the batch's processes, which import
# this module before nbformat, treat it as absent (jsonschema then leaves those two formats
# unchecked). A process that imported it already keeps it.
sys.modules.setdefault("rfc3987_syntax", None)

KERNEL_NAME = "evaluation"

PACKAGES = ("evaluation", "pandas", "numpy", "scipy", "statsmodels", "linearmodels", "matplotlib", "seaborn",
            "papermill", "nbconvert", "pandera", "lunardate")

FAILED = "failed"  # folder of the report that keeps failed notebooks, their HTML and logs
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


class BatchRunningError(UsageError):
    """Another batch of the same study holds its lock."""


class BatchInterrupted(Exception):  # noqa: N818 - an interrupt, not an error of the user's input
    """SIGINT or SIGTERM stopped the batch; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int, finished: int = 0, stopped: int = 0):
        self.signum, self.finished, self.stopped = signum, finished, stopped
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)

    def message(self) -> str:
        return (f"interrupted by {signal.Signals(self.signum).name}: {self.stopped} run(s) stopped, "
                f"{self.finished} finished run(s) published; the other pages are unchanged")


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
    failure: dict | None = field(default=None)
    memory: dict | None = field(default=None)  # peak resident memory of the run (see :class:`PeakMemory`)

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
        if ch.key not in wanted or (ch.needs_covariates and study.covariates is None):
            continue
        for ind in (chosen if ch.per_indicator else [None]):
            params = {"study_path": str(study_path), "fast": fast}
            if results_dir is not None:
                params["results_dir"] = results_dir
            if ind is not None:
                params["indicator"] = ind
            runs.append(Run(ch.key, ch.notebook, ind, params))
    return runs


# ----------------------------------------------------------------------------- keys and provenance

def package_versions() -> dict[str, str | None]:
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return versions


def study_hash(study) -> str:
    """SHA-256 of the resolved study configuration (the validated keys and their values,
    defaults filled in), not of the file: comments, key order and quoting do not count.
    The truth file's path is left out (no chapter reads it)."""
    config = study.model_dump(mode="json")
    config.get("data", {}).pop("truth", None)
    return hashlib.sha256(json.dumps(config, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def data_hash(panel, indicator=None) -> str:
    """SHA-256 of the validated data a run reads: the panel's keys, population and derived
    treatment columns with the indicator's own columns (every column for the study-level
    chapters, ``indicator=None``), the pilot table, and what the loader left out or noted.
    A change in a column that no chapter of this indicator reads leaves its runs current."""
    import pandas as pd

    from evaluation.data.panel import MEASURE_COLUMNS
    from evaluation.study.catalogue import required_columns

    d = panel.data
    if indicator is None:
        columns = list(d.columns)
    else:
        own = [c for c in required_columns([indicator]) if c in MEASURE_COLUMNS]
        columns = [c for c in d.columns if c not in MEASURE_COLUMNS or c in own]
    h = hashlib.sha256(json.dumps([panel.frequency, columns]).encode())
    for column in columns:  # each column hashed once per panel (Panel.column_hash), then combined
        h.update(panel.column_hash(column))
    for frame in (panel.pilots, panel.excluded):
        h.update(pd.util.hash_pandas_object(frame.astype(str), index=False).to_numpy().tobytes())
    if indicator is None:
        h.update(json.dumps([panel.units, panel.notes, panel.dropped_rows.astype(str).to_dict("records")],
                            sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()


def input_hashes(study, panel=None, indicator=None) -> dict[str, str]:
    """What a run reads, hashed: the resolved study configuration (:func:`study_hash`), the
    validated data it reads (:func:`data_hash`; the panel and pilot files when no panel is
    given), the indicator catalogue and the versions of :data:`PACKAGES`. The results
    store's keys and the runs' keys are made from these. ``study`` is a Study or its path."""
    study = load_study(study) if isinstance(study, str | Path) else study
    versions = json.dumps(package_versions(), sort_keys=True)
    data = ({"data": data_hash(panel, indicator)} if panel is not None
            else {"panel": sha256(study.panel_path), "pilots": sha256(study.pilots_path)})
    return {"study": study_hash(study), **data, "indicator_catalogue": sha256(INDICATOR_CATALOGUE),
            "packages": hashlib.sha256(versions.encode()).hexdigest()}


class _InputsByIndicator(dict):
    """:func:`input_hashes` of each indicator's runs (``None``: the study-level chapters), made on first use."""

    def __init__(self, study, panel):
        super().__init__()
        self.study, self.panel = study, panel
        self.by_id = {i.id: i for i in study.selected_indicators()}

    def __missing__(self, indicator_id):
        value = input_hashes(self.study, self.panel, self.by_id.get(indicator_id) if indicator_id else None)
        self[indicator_id] = value
        return value


KEY_PARAMETERS = ("indicator", "fast")  # the study's content is in the inputs, its path does not matter


def _run_key(run: Run, inputs: dict, code: str, notebooks: Path | None = None) -> str:
    parameters = {k: v for k, v in run.parameters.items() if k in KEY_PARAMETERS}
    payload = json.dumps({"chapter": run.chapter, "parameters": parameters, "inputs": inputs, "code": code,
                          "notebook": sha256((notebooks or NOTEBOOKS) / run.notebook)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _relative(path: Path | str, *bases: Path) -> str:
    """``path`` relative to the first of ``bases`` that holds it, else as given."""
    p = Path(path).resolve()
    for base in bases:
        with contextlib.suppress(ValueError):
            return p.relative_to(base.resolve()).as_posix()
    return str(p)


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                              check=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def _git_commit() -> str | None:
    out = _git("rev-parse", "HEAD")
    return out.strip() if out else None


def _git_dirty() -> bool | None:
    """Whether the project's working tree has uncommitted changes (``git status
    --porcelain``: modified, staged or untracked files that git does not ignore)."""
    out = _git("status", "--porcelain")
    return None if out is None else bool(out.strip())


# ----------------------------------------------------------------------------- one run, in a worker

def execute(run: Run, out_dir: str, kernel: KeptKernel | None = None, meter: PeakMemory | None = None) -> dict:
    """Execute one chapter and export it to HTML (runs in a worker process). Returns
    ``status``, ``seconds``, ``error`` (one line) and ``failure`` (what failed, where).
    With ``kernel`` (a :class:`KeptKernel`) the chapter runs in that kernel, its user
    namespace reset first; without, papermill starts a kernel for the run and shuts it down.
    ``meter`` (a :class:`PeakMemory`) starts counting once the kernel is reset."""
    import papermill as pm

    start = time.perf_counter()
    out = Path(out_dir)
    try:
        extra = {}
        if kernel is not None:
            _register_kept_kernel_engine()
            kernel.reset()
            extra = {"engine_name": KEPT_KERNEL_ENGINE, "kept_kernel": kernel}
        if meter is not None:
            meter.start()
        # written once, at the end (or with the error when a cell fails), not at each cell's
        # start and end: those saves re-encoded the whole notebook, figures included, some 60
        # times per chapter (0.1-0.2 s of a robustness run)
        pm.execute_notebook(str(NOTEBOOKS / run.notebook), str(out / f"{run.stem}.ipynb"),
                            parameters=run.parameters, kernel_name=KERNEL_NAME, cwd=str(NOTEBOOKS),
                            progress_bar=False, request_save_on_cell_execute=False, **extra)
        export_html(out / f"{run.stem}.ipynb", out / f"{run.stem}.html",
                    title=page_title(run.parameters["study_path"], run.chapter, run.indicator))
        return {"status": "ok", "seconds": time.perf_counter() - start, "error": "", "failure": None}
    except Exception as exc:  # recorded in the manifest; the batch goes on
        traceback.print_exc()  # to the run's log
        failure = describe_failure(exc)
        return {"status": "failed", "seconds": time.perf_counter() - start, "error": failure_line(failure),
                "failure": failure}


# ----------------------------------------------------------------------------- a kernel kept for many runs

KEPT_KERNEL_ENGINE = "evaluation-kept-kernel"  # papermill engine that runs a notebook in a KeptKernel

# Run in the kept kernel before each chapter: the figures closed, the warning filters as the
# kernel started with them (and the "shown once" registries emptied), every name the previous
# chapter defined removed (``%reset -f``: the user namespace and the output history), and the
# execution counter at 1, so the chapter's first cell is ``In [1]`` as in a fresh kernel.
# Modules stay imported: that is the point of keeping the kernel. The objects that outlive a
# run (modules, their caches) are then moved to the collector's permanent generation
# (``gc.freeze``): the full collections of the next reset (IPython's ``%reset`` runs one) and
# of the next chapter's own cells only traverse what that chapter made. Without it each reset
# traversed some 270,000 long-lived objects twice (0.4 s of the demo's 0.9 s per run outside
# its cells). A frozen object is never collected as part of a reference cycle; it is still
# freed when its last reference goes.
RESET_CODE = """\
import sys as _sys
import warnings as _warnings
if "matplotlib.pyplot" in _sys.modules:
    _sys.modules["matplotlib.pyplot"].close("all")
if not hasattr(_warnings, "_evaluation_initial_filters"):
    _warnings._evaluation_initial_filters = list(_warnings.filters)
_warnings.resetwarnings()
_warnings.filters[:] = _warnings._evaluation_initial_filters
get_ipython().run_line_magic("reset", "-f")
__import__("gc").collect()
__import__("gc").freeze()
get_ipython().execution_count = 1  # the count the next cell shows
"""


class KeptKernel:
    """One Jupyter kernel (:data:`KERNEL_NAME`, started in the notebooks' folder) and its
    client, kept by a worker process for all the runs it takes: the kernel start, the
    imports of the setup cell and the shutdown are paid once per worker instead of once per
    run. :meth:`reset` clears what a run left (see :data:`RESET_CODE`) before the next one."""

    def __init__(self, cwd: str | Path, output: str | None = None):
        from jupyter_client.manager import AsyncKernelManager
        from nbclient.util import run_sync

        self.km = AsyncKernelManager(kernel_name=KERNEL_NAME)
        self.kc = None
        self._run_sync = run_sync
        self.pid: int | None = None
        run_sync(self._start)(str(cwd), output)

    async def _start(self, cwd: str, output: str | None) -> None:
        """Start the kernel in ``cwd``, its own output to the file ``output`` (else inherited)."""
        streams = {}
        if output is not None:
            log = open(output, "ab")  # noqa: SIM115 - the kernel gets a copy of the descriptor
            streams = {"stdout": log, "stderr": log}
        try:
            await self.km.start_kernel(cwd=cwd, extra_arguments=["--HistoryManager.hist_file=:memory:"], **streams)
        finally:
            if streams:
                streams["stdout"].close()
        self.pid = getattr(self.km.provisioner, "pid", None)
        self.kc = self.km.client()
        self.kc.start_channels()
        try:
            await self.kc.wait_for_ready(timeout=60)
        except BaseException:
            self.shutdown()
            raise
        self.kc.allow_stdin = False

    def alive(self) -> bool:
        try:
            return bool(self._run_sync(self.km.is_alive)())
        except Exception:  # noqa: BLE001 - a kernel that cannot say is treated as dead
            return False

    def reset(self) -> None:
        """Run :data:`RESET_CODE`; raises when the kernel cannot run it."""
        import nbformat
        from nbclient import NotebookClient

        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(RESET_CODE)])
        nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": KERNEL_NAME, "language": "python"}
        client = NotebookClient(nb, km=self.km, kernel_name=KERNEL_NAME, timeout=120)
        client.kc = self.kc
        client.execute()

    def shutdown(self) -> None:
        """Stop the client's channels and kill the kernel (nothing in it needs saving)."""
        with contextlib.suppress(Exception):
            if self.kc is not None:
                self.kc.stop_channels()
        with contextlib.suppress(Exception):
            self._run_sync(self.km.shutdown_kernel)(now=True)


def _register_kept_kernel_engine() -> None:
    """Register papermill's engine :data:`KEPT_KERNEL_ENGINE`: papermill's own nbclient
    engine (parameters injected, cells timed, the notebook written with the error on
    failure), executing in a :class:`KeptKernel` given as ``kept_kernel=`` instead of a
    kernel of its own; the kernel is left running."""
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines
    from papermill.log import logger
    from papermill.utils import merge_kwargs, remove_args

    if KEPT_KERNEL_ENGINE in papermill_engines._engines:
        return

    class KeptKernelEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,
                                     stderr_file=None, start_timeout=60, execution_timeout=None, kept_kernel=None,
                                     **kwargs):
            kwargs = remove_args(["input_path"], **kwargs)
            safe_kwargs = remove_args(["timeout", "startup_timeout"], **kwargs)
            final_kwargs = merge_kwargs(safe_kwargs, timeout=execution_timeout or kwargs.get("timeout"),
                                        startup_timeout=start_timeout, kernel_name=kernel_name, log=logger,
                                        log_output=log_output, stdout_file=stdout_file, stderr_file=stderr_file)
            client = PapermillNotebookClient(nb_man, km=kept_kernel.km, **final_kwargs)
            client.kc = kept_kernel.kc  # the kept client: nbclient neither starts nor stops one
            return client.execute()

    papermill_engines.register(KEPT_KERNEL_ENGINE, KeptKernelEngine)


def describe_failure(exc: BaseException) -> dict:
    """What failed and where: for an error raised inside the notebook (papermill's
    ``PapermillExecutionError``) the notebook's exception class (``ename``), its message
    (``evalue``), the cell's index in the notebook and its execution count, and the first
    line of the cell's code; for anything else (the kernel died, the export failed), the
    exception raised in the worker."""
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    if ename is not None:
        source = (getattr(exc, "source", "") or "").strip().splitlines()
        return {"ename": str(ename), "evalue": str(evalue or "")[:2000], "cell_index": getattr(exc, "cell_index", None),
                "exec_count": getattr(exc, "exec_count", None), "cell_source": source[0][:200] if source else "",
                "in_notebook": True}
    return {"ename": type(exc).__name__, "evalue": str(exc).strip()[:2000], "cell_index": None, "exec_count": None,
            "cell_source": "", "in_notebook": False}


def failure_line(failure: dict | None) -> str:
    """One line: ``AssertionError: injected failure (cell 3, In [2]: assert ...)``."""
    if not failure:
        return ""
    message = " ".join(failure["evalue"].split())[:300]
    text = f"{failure['ename']}: {message}" if message else failure["ename"]
    if failure.get("cell_index") is not None:
        where = f"cell {failure['cell_index'] + 1}"
        if failure.get("exec_count") is not None:
            where += f", In [{failure['exec_count']}]"
        if failure.get("cell_source"):
            where += f": {failure['cell_source'][:80]}"
        text += f" ({where})"
    return text


REPORT_CSS = "report.css"

# The lab template without its remote scripts (require.js, MathJax, mermaid: chapter pages
# use none of them; their notes are marked to be skipped by MathJax) and without the
# JupyterLab CSS it inlines in every page: pages link ``report.css``, written once per
# report folder (:func:`report_css`).
_OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block notebook_css -%}
<link rel="stylesheet" href="{{ resources.report_css_href }}">
{%- endblock notebook_css -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""

# A4 pages for printing (``@page``), tables fitted to the page width, the prompt and
# toolbar chrome hidden; appended to the JupyterLab CSS in ``report.css``.
PRINT_CSS = """
/* evaluation: tables written for readers (three-line tables), the conclusion, the index */
.jp-RenderedHTMLCommon table.reader-table, table.reader-table {
  border-collapse: collapse; border: none; border-top: 2px solid #222; border-bottom: 2px solid #222;
  margin: 0.6em 0; font-size: 0.92em; table-layout: auto;
}
.jp-RenderedHTMLCommon table.reader-table thead th, table.reader-table thead th {
  border: none; border-bottom: 1px solid #222; text-align: left; font-weight: 600; vertical-align: bottom;
}
.jp-RenderedHTMLCommon table.reader-table td, table.reader-table td {
  border: none; text-align: left; padding: 3px 8px; vertical-align: top;
}
.jp-RenderedHTMLCommon table.reader-table tbody tr:nth-child(odd), .jp-RenderedHTMLCommon table.reader-table tbody tr:hover {
  background: transparent;
}
table.reader-table td:not(:first-child):not(:last-child) { white-space: nowrap; }  /* numbers stay whole */
.conclusion { background: #f4f8fb; border-left: 4px solid #2e86c1; padding: 4px 14px; margin: 0.5em 0 1em; }
.table-note { font-size: 0.85em; color: #555; margin: 0.2em 0; }
body.evaluation-index { font-family: "Noto Sans CJK SC", "Microsoft YaHei", "PingFang SC", sans-serif;
  max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.5; }
.evaluation-index .banner { background: #fdecea; border: 2px solid #c0392b; color: #922b21; padding: 10px 14px;
  font-weight: bold; }
.evaluation-index .subtitle { font-size: 1.2em; color: #444; margin-top: -0.6em; }
.evaluation-index .failed { color: #c0392b; }
.evaluation-index .outdated { color: #a0522d; }
.evaluation-index footer { margin-top: 3em; font-size: 0.85em; color: #666; border-top: 1px solid #ddd;
  padding-top: 0.5em; }

/* evaluation: A4 printing */
@page { size: A4; margin: 15mm; }
@media print {
  body, .jp-Notebook { margin: 0; padding: 0; }
  table { width: 100%; table-layout: auto; font-size: 9pt; }
  img { max-width: 100%; height: auto; }
  .jp-InputPrompt, .jp-OutputPrompt, .jp-Toolbar, .jp-Collapser, .jp-cell-toolbar, a.anchor-link {
    display: none !important;
  }
  .jp-OutputArea-output { overflow: visible; display: block; width: 100%; }
  .jp-OutputArea-child { break-inside: auto; }  /* a long table starts where it is, not on the next page */
  .jp-RenderedHTMLCommon table.reader-table, table.reader-table { width: 100%; font-size: 7.5pt; }
  table.reader-table td:not(:first-child):not(:last-child) { white-space: normal; }  /* fit the page */
  .jp-RenderedHTMLCommon table.reader-table td, .jp-RenderedHTMLCommon table.reader-table th { padding: 2px 3px; }
  table.reader-table tr, img, .conclusion { break-inside: avoid; }
  h1, h2, h3 { break-after: avoid; }
}
"""


@functools.lru_cache(maxsize=4)
def _exporter(template: str = "lab/index.html.j2"):
    """nbconvert's lab HTML exporter with the page's settings, one per template and process
    (its Jinja templates are compiled on first use: 0.1 s a page when made anew)."""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    loader = DictLoader({"evaluation_offline.html.j2": _OFFLINE_TEMPLATE})
    exporter = HTMLExporter(template_name="lab", extra_loaders=[loader])
    exporter.template_file = template
    exporter.language_code = "zh-CN"  # the pages are Chinese first
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    return exporter


def page_title(study_path: str | Path, chapter: str, indicator: str | None) -> str:
    """The page's ``<title>``: the chapter's names, then the indicator's Chinese name
    (``双重差分 / Difference-in-differences — 县域内就诊率``)."""
    from evaluation.report.readable import Reader

    ch = CHAPTER_BY_KEY[chapter]
    study = load_study(Path(study_path))
    reader = Reader(study.report.language)
    title = reader.say(ch.title_zh, ch.title_en)
    if indicator is not None:
        names = {i.id: i.name_en if reader.language == "en" else i.name_zh for i in study.selected_indicators()}
        title += f" — {names.get(indicator, indicator)}"
    return title


def export_html(notebook: Path, target: Path, *, title: str | None = None, css_href: str = REPORT_CSS) -> None:
    """HTML with the code hidden (inputs and prompts left out) that loads nothing from the
    network: no remote script, style or font; the figures are embedded and the shared CSS
    is linked as ``css_href`` (``report.css`` in the report folder, see :func:`report_css`).
    ``title`` is the page's ``<title>`` (the notebook's file name when not given)."""
    import nbformat

    exporter = _exporter("evaluation_offline.html.j2")
    resources = {"metadata": {"name": title or Path(notebook).stem}, "report_css_href": css_href}
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:  # the page only; the executed notebook keeps its figures as drawn
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" in data:
                data["image/png"] = compact_png(data["image/png"])
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    target.write_text(body, encoding="utf-8")


def compact_png(encoded: str) -> str:
    """A base64 PNG re-encoded with a palette of at most 256 colours (Pillow's median cut;
    fast octree when the image is transparent), same size in pixels, when that is smaller.
    Matplotlib's figures (flat colours, anti-aliased text) come out at 35-50 % of their
    bytes and look the same to a reader; the page embeds them, so this is most of its size.
    zlib's default level without Pillow's ``optimize`` search: 4-7 % more bytes, 8x less time
    (0.1 s of a robustness page's export)."""
    import base64
    import io

    from PIL import Image

    raw = base64.b64decode(encoded)
    with Image.open(io.BytesIO(raw)) as image:
        image.load()
        if image.mode in ("RGBA", "LA") and image.getchannel("A").getextrema()[0] < 255:
            palette = image.convert("RGBA").quantize(256, method=Image.Quantize.FASTOCTREE)
        else:
            palette = image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    palette.save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode("ascii") if out.tell() < len(raw) else encoded


def report_css() -> str:
    """The CSS every page links: the lab template's own CSS (JupyterLab's ``index.css``,
    the light theme and the template's inline rules, taken from an export with the
    unmodified template) and :data:`PRINT_CSS`."""
    import nbformat

    body, _ = _exporter().from_notebook_node(nbformat.v4.new_notebook())
    head = body.split("</head>", 1)[0]
    styles = re.findall(r"<style[^>]*>(.*?)</style>", head, flags=re.S)
    if not styles:
        raise RuntimeError("report.css: the lab template's export holds no <style> block")
    return "\n".join(s.strip() for s in styles) + "\n" + PRINT_CSS


PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (``prctl(PR_SET_PDEATHSIG)``);
    exit at once if the parent is already gone. Elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


_LOCK_FDS: set[int] = set()  # the study locks' descriptors: a worker closes its inherited copies


def _redirect_output(path: str) -> None:
    """Point this process's file descriptors 1 and 2 (and ``sys.stdout``/``sys.stderr``) at ``path``."""
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    sys.stdout = open(1, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)  # noqa: SIM115


def _worker(conn, tmp: str, parent_pid: int, warm: bool = False) -> None:
    """A worker process (forked) of the local pool: dies with the batch, ignores the
    terminal's SIGINT (the batch stops it), keeps temporary files and its kernel's
    connection file in the batch's temporary folder, and then takes runs from ``conn``
    until it receives ``None``: ``(run, pages folder, log path)`` in, the run's outcome out.

    It starts one :class:`KeptKernel` at its first run (at once with ``warm``, while the
    batch prepares) and reuses it for the next ones.
    The worker's output during a run goes to the run's log; the kernel's own output
    (start-up warnings, interrupts) to the worker's kernel log, whose part written during
    a run is copied to the end of the run's log. When the kernel dies during a run, the
    outcome says ``retry`` and the next run starts a fresh kernel."""
    die_with_parent(parent_pid)
    os.setpgrp()  # Ctrl-C reaches the batch only; the batch kills the worker's group
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for fd in _LOCK_FDS:
        with contextlib.suppress(OSError):
            os.close(fd)
    scratch = Path(tmp) / "scratch"  # the kernel's connection file (a mkstemp file) and other
    scratch.mkdir(exist_ok=True)     # temporary files go with the batch's temporary folder
    tempfile.tempdir = str(scratch)
    os.environ.update(TMPDIR=str(scratch), JUPYTER_RUNTIME_DIR=str(scratch))
    (Path(tmp) / "logs").mkdir(exist_ok=True)
    kernel_log = str(Path(tmp) / "logs" / f".kernel-{os.getpid()}.log")
    _redirect_output(kernel_log)
    current = {"log": kernel_log}

    @contextlib.contextmanager
    def kernel_output():  # the kernel inherits descriptors 1 and 2: its own output goes to the kernel log
        _redirect_output(kernel_log)
        try:
            yield
        finally:
            _redirect_output(current["log"])

    slot = KernelSlot(on_start=kernel_output)
    if warm:  # a kernel that fails to start now is started again, and its failure reported, by the first run
        with contextlib.suppress(Exception):
            slot.get()
            _warm_worker()
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            break
        if job is None:
            break
        run, out_dir, current["log"] = job
        mark = os.path.getsize(kernel_log) if os.path.exists(kernel_log) else 0
        _redirect_output(current["log"])
        outcome = run_chapter(run, out_dir, slot)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # nbclient's asyncio handlers reset it
        copy_tail(kernel_log, mark, current["log"])
        current["log"] = kernel_log
        _redirect_output(kernel_log)
        try:
            conn.send(outcome)
        except (EOFError, OSError):
            break
    slot.drop()
    conn.close()


def _warm_worker() -> None:
    """What a worker's first run would otherwise pay for (about 1 s): the imports of
    papermill and of the page's title, the kept-kernel engine, the HTML exporter's compiled
    templates."""
    import nbformat
    import papermill  # noqa: F401

    from evaluation.report.readable import Reader  # noqa: F401 - page_title's

    _register_kept_kernel_engine()
    _exporter("evaluation_offline.html.j2").from_notebook_node(
        nbformat.v4.new_notebook(), resources={"metadata": {"name": ""}, "report_css_href": REPORT_CSS})


class KernelSlot:
    """Where a worker (a process of the local pool, a thread of a Dask worker) keeps its
    :class:`KeptKernel`: started at the first run (inside ``on_start()``, a context
    manager, when given; its own output to the file ``output`` when given), dropped when
    it dies. ``worker`` names the worker in the manifest (``host:pid`` by default)."""

    def __init__(self, on_start=None, output: str | None = None, worker: str | None = None):
        self.kernel: KeptKernel | None = None
        self.on_start, self.output = on_start, output
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"

    def get(self) -> KeptKernel:
        if self.kernel is None:
            with self.on_start() if self.on_start else contextlib.nullcontext():
                self.kernel = KeptKernel(NOTEBOOKS, output=self.output)
        return self.kernel

    def drop(self) -> None:
        if self.kernel is not None:
            self.kernel.shutdown()
            self.kernel = None

    def interrupt(self) -> None:
        """SIGINT to the kernel: the cell it runs raises KeyboardInterrupt."""
        if self.kernel is not None and self.kernel.pid:
            with contextlib.suppress(OSError):
                os.kill(self.kernel.pid, signal.SIGINT)

    def kill(self) -> None:
        """SIGKILL the kernel without waiting (from any thread)."""
        if self.kernel is not None and self.kernel.pid:
            with contextlib.suppress(OSError):
                os.kill(self.kernel.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                self.kernel.km.cleanup_connection_file()
        self.kernel = None


def run_chapter(run: Run, out_dir: str, slot: KernelSlot) -> dict:
    """One chapter run as every executor runs it (the local pool's workers and the Dask
    tasks alike): in the slot's kept kernel (started now if there is none), executed and
    exported by :func:`execute`. Never raises: a failure is the outcome's ``failure``.
    When the kernel died under the run, it is dropped and the outcome says ``retry`` (the
    batch runs it once more, on a fresh kernel). The outcome's ``memory`` is the run's
    peak resident memory in the kernel and the worker (:class:`PeakMemory`)."""
    meter = None
    try:
        kernel = slot.get()
        meter = PeakMemory(kernel.pid)
        outcome = execute(run, out_dir, kernel, meter)
    except BaseException as exc:  # noqa: BLE001 - reported to the batch, never raised in a worker
        traceback.print_exc()
        outcome = {"status": "failed", "seconds": 0.0, "error": f"{type(exc).__name__}: {exc}",
                   "failure": describe_failure(exc)}
    outcome["memory"] = {"worker": slot.worker, **meter.read()} if meter is not None else None
    if slot.kernel is not None and not slot.kernel.alive():
        slot.drop()
        if outcome["status"] != "ok":
            outcome["retry"] = True
    return outcome


def _proc_status_bytes(pid: int | str, name: str) -> int | None:
    """A ``kB`` line of ``/proc/<pid>/status`` (``VmHWM``, ``VmRSS``) in bytes; None when unreadable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak(pid: int | str) -> bool:
    """Reset the peak resident set size (``VmHWM``) of process ``pid`` to its current size
    (Linux 4.0+: ``5`` written to ``/proc/<pid>/clear_refs``); False when it cannot."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """The peak resident memory of one chapter run: of its kernel (the computation) and of
    the worker process that drives it (papermill, the HTML export), from the kernel's and
    the worker's ``VmHWM`` (Linux ``/proc``), both reset to the current size by
    :meth:`start` (once the kernel's namespace is reset: what the previous run left and
    the allocator kept still counts, as the worker does hold it). :meth:`read` gives ``kernel_peak_bytes``, ``worker_peak_bytes`` and their sum,
    ``peak_bytes``: an upper bound on the memory the worker and its kernel held at any one
    moment of the run (the two peaks need not coincide). ``since`` says from when the
    peaks count: ``run``, or ``start`` (the process's start) where the reset is refused
    (before Linux 4.0); without ``/proc`` (macOS, Windows) every figure is None."""

    def __init__(self, kernel_pid: int | None):
        self.kernel_pid = kernel_pid
        self.reset = False

    def start(self) -> None:
        self.reset = all([_reset_peak("self"), self.kernel_pid is not None and _reset_peak(self.kernel_pid)])

    def read(self) -> dict:
        kernel = _proc_status_bytes(self.kernel_pid, "VmHWM") if self.kernel_pid is not None else None
        worker = _proc_status_bytes("self", "VmHWM")
        total = kernel + worker if kernel is not None and worker is not None else None
        return {"peak_bytes": total, "kernel_peak_bytes": kernel, "worker_peak_bytes": worker,
                "since": "run" if self.reset else "start"}


def memory_summary(runs: list[Run]) -> dict:
    """The batch's peak memory per worker: for each worker (``host:pid`` of a local-pool
    process; host, process and thread of a Dask worker) the largest ``peak_bytes`` of the
    runs it executed in this batch, and the largest of all (``max_per_worker_bytes``)."""
    workers: dict[str, int] = {}
    for r in runs:
        memory = r.memory or {}
        if r.reused or memory.get("peak_bytes") is None:
            continue
        name = str(memory.get("worker"))
        workers[name] = max(workers.get(name, 0), int(memory["peak_bytes"]))
    return {"max_per_worker_bytes": max(workers.values()) if workers else None,
            "max_per_worker_gib": round(max(workers.values()) / 2**30, 3) if workers else None,
            "per_worker_bytes": dict(sorted(workers.items())),
            "measured": "peak resident set size (VmHWM) of the kernel plus that of the worker process, "
                        "reset at the start of each run"}


def copy_tail(source: str, offset: int, target: str) -> None:
    """Append what ``source`` gained after ``offset`` bytes to ``target``."""
    with contextlib.suppress(OSError), open(source, "rb") as f:
        f.seek(offset)
        tail = f.read()
        if tail:
            with open(target, "ab") as out:
                out.write(b"\n--- kernel ---\n" + tail)


class _LocalPool:
    """The local executor: at most ``size`` forked worker processes (:func:`_worker`),
    started as runs come and kept, each with its kernel, until :meth:`close`. ``submit``
    a run to an idle worker; ``wait`` returns the ``(run, outcome)`` of finished runs. A
    worker that ends without an outcome (killed, crashed) loses only its run, reported as
    ``WorkerDied`` with ``retry``; a fresh worker takes the next run."""

    def __init__(self, size: int, tmp: Path, signals: _Signals):
        self.size, self.tmp, self.signals = max(1, size), tmp, signals
        self.ctx = multiprocessing.get_context("fork")
        self.workers: list[dict] = []  # {"proc", "conn", "run"}

    @property
    def busy(self) -> int:
        return sum(1 for w in self.workers if w["run"] is not None)

    def idle(self) -> bool:
        return any(w["run"] is None for w in self.workers) or len(self.workers) < self.size

    def start(self) -> None:
        """Start all the workers now, each starting its kernel at once (``warm``): their
        start-up overlaps what the batch does before its first run."""
        while len(self.workers) < self.size:
            self._start_worker(warm=True)

    def _start_worker(self, warm: bool = False) -> dict:
        mine, theirs = self.ctx.Pipe(duplex=True)
        proc = self.ctx.Process(target=_worker, name=f"evaluation-worker-{len(self.workers)}", daemon=False,
                                args=(theirs, str(self.tmp), os.getpid(), warm))
        with self.signals.deferred():  # a started worker is always known, so it can be stopped
            proc.start()
            worker = {"proc": proc, "conn": mine, "run": None}
            self.workers.append(worker)
        theirs.close()
        return worker

    def submit(self, run: Run, pages: str, log: str) -> None:
        """Give ``run`` to an idle worker (started now when there is none); its executed
        notebook and HTML go to the folder ``pages``, its output to the file ``log``."""
        worker = next((w for w in self.workers if w["run"] is None), None)
        if worker is None:
            worker = self._start_worker()
        worker["run"] = run
        worker["conn"].send((run, pages, log))

    def wait(self, timeout: float = 1.0) -> list[tuple[Run, dict]]:
        busy = [w for w in self.workers if w["run"] is not None]
        ready = set(wait_for([w["conn"] for w in busy] + [w["proc"].sentinel for w in busy], timeout=timeout))
        done = []
        for w in busy:
            if w["conn"] not in ready and w["proc"].sentinel not in ready:
                continue
            outcome = None
            try:
                if w["conn"].poll():
                    outcome = w["conn"].recv()
            except (EOFError, OSError):
                outcome = None
            run, w["run"] = w["run"], None
            if outcome is None:
                outcome = self._died(w)
            done.append((run, outcome))
        return done

    def _died(self, worker: dict) -> dict:
        proc = worker["proc"]
        with contextlib.suppress(OSError):
            worker["conn"].close()
        proc.join(timeout=5)
        if proc.exitcode is None:
            _kill_processes([proc])
        self.workers.remove(worker)
        code = proc.exitcode
        reason = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        failure = {"ename": "WorkerDied", "evalue": f"the worker process ended without a result ({reason})",
                   "cell_index": None, "exec_count": None, "cell_source": "", "in_notebook": False}
        return {"status": "failed", "seconds": 0.0, "error": failure_line(failure), "failure": failure,
                "retry": True}

    def close(self, timeout: float = 10.0) -> None:
        """Ask idle workers to stop their kernels and exit; kill what is left after ``timeout``."""
        for w in self.workers:
            with contextlib.suppress(OSError, EOFError, BrokenPipeError):
                if w["run"] is None:
                    w["conn"].send(None)
        deadline = time.monotonic() + timeout
        for w in self.workers:
            w["proc"].join(timeout=max(0.0, deadline - time.monotonic()))
        self.kill()

    def kill(self) -> None:
        """SIGKILL every worker and its kernel (see :func:`_kill_processes`)."""
        _kill_processes([w["proc"] for w in self.workers if w["proc"].exitcode is None])
        for w in self.workers:
            with contextlib.suppress(OSError):
                w["conn"].close()
        self.workers.clear()


# ----------------------------------------------------------------------------- the lock

@contextlib.contextmanager
def study_lock(study_id: str, *, wait: bool = False):
    """Hold ``outputs/.<study>.lock`` (``fcntl.flock``) while the batch runs. A second
    batch raises :class:`BatchRunningError` (exit 2) naming the holder, or blocks with
    ``wait``. The lock file holds the holder's pid, host and start time; the kernel
    releases the lock when the holder dies, however it dies."""
    root = output_root()
    root.mkdir(parents=True, exist_ok=True)
    path = root / f".{study_id}.lock"
    announced = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            holder = _lock_holder(fd)
            if not wait:
                os.close(fd)
                raise BatchRunningError(f"another batch of study {study_id} is running ({holder}); wait for it to "
                                        f"finish or pass --wait (lock file {path})") from None
            if not announced:
                print(f"waiting for the other batch of study {study_id} ({holder}) to finish ...", file=sys.stderr)
                announced = True
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:  # the previous holder may have removed the file between our open and our lock
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": started}).encode(), 0)
    _LOCK_FDS.add(fd)
    try:
        yield path
    finally:
        _LOCK_FDS.discard(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _lock_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "pid unknown"
    return f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"


# ----------------------------------------------------------------------------- signals

class _Signals:
    """SIGINT and SIGTERM raise :class:`BatchInterrupted` in the batch's main thread, except
    inside :meth:`deferred` blocks (a publication), after which they are raised."""

    def __init__(self):
        self.pending: int | None = None
        self.depth = 0
        self.previous = {}

    def _handler(self, signum, frame):
        if self.pending is None:
            self.pending = signum
        if self.depth == 0:
            raise BatchInterrupted(self.pending)

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in EXIT_SIGNAL:
                self.previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, old in self.previous.items():
            signal.signal(sig, old)
        return False

    @contextlib.contextmanager
    def deferred(self):
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        if self.depth == 0 and self.pending is not None:
            raise BatchInterrupted(self.pending)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (its workers' kernels included), deepest last."""
    try:
        import psutil

        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 - the process is gone
        return []
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill_processes(procs: list) -> None:
    """SIGKILL worker processes, their process groups and every process below them (the
    kernels run in sessions of their own), then reap the workers."""
    victims = []
    for proc in procs:
        victims += _descendants(proc.pid)
    for proc in procs:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
    for pid in victims:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    for proc in procs:
        proc.join(timeout=5)


# ----------------------------------------------------------------------------- the batch

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


def _previous_manifest(final: Path) -> dict:
    path = final / "manifest.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # unreadable: the pages stay, the index lists this batch's runs


def run_batch(study_path: str | Path, *, jobs: int = 2, indicators=None, chapters=None, resume: bool = False,
              fast: bool = False, progress: bool = True, wait: bool = False) -> dict:
    """Run the batch of one study on the local pool; returns the manifest. ``manifest["runs"]``
    lists every run of the report (this batch's and the previous ones' still published),
    ``manifest["batch"]`` this batch's stems and whether they all succeeded
    (``manifest["ok"]``). Raises :class:`BatchRunningError` when another batch of the study
    runs (unless ``wait``) and :class:`BatchInterrupted` on SIGINT / SIGTERM."""
    return run_batches([study_path], jobs=jobs, indicators=indicators, chapters=chapters, resume=resume, fast=fast,
                       progress=progress, wait=wait)[0]


def run_batches(study_paths, *, jobs: int = 2, indicators=None, chapters=None, resume: bool = False,
                fast: bool = False, progress: bool = True, wait: bool = False, scheduler: str | None = None,
                workers: int | None = None) -> list[dict]:
    """Run the batches of several studies (a province: one study per county and the
    province-wide one) on one executor; returns their manifests, in the order given.

    The executor is the local pool of ``jobs`` worker processes (:class:`_LocalPool`),
    unless ``scheduler`` (a Dask scheduler's address, ``tcp://host:8786``) or ``workers``
    (the number of workers of a Dask ``LocalCluster`` started for the batch) is given:
    then the runs go to Dask (:class:`evaluation.report.executors.DaskPool`). Either way
    each run goes through :func:`run_chapter` in a kept kernel, the runs of all studies
    share the executor and one progress bar, and a study's summary starts when its other
    runs have finished. Each study's lock is held for the whole batch; its pages and
    manifest are published as for one study."""
    with _Signals() as signals:  # from here SIGINT and SIGTERM raise BatchInterrupted
        batches, seen = [], {}
        for given in study_paths:
            study_path = resolve_study_path(given)
            study = load_study(study_path)
            if study.id in seen:
                raise UsageError(f"{given}: study id {study.id} is also the id of {seen[study.id]}; each study "
                                 "of a batch needs its own id (its report folder)")
            seen[study.id] = given
            runs = plan(study_path, indicators, chapters, fast)  # unknown --indicators/--chapters: exit 2
            panel = _validate_data(study)  # invalid data stop the batch before anything is written
            batches.append(_StudyBatch(study, study_path, runs, study_output_dir(study.id), panel, fast=fast))
        with contextlib.ExitStack() as stack:
            for b in sorted(batches, key=lambda b: b.study.id):  # one order: two --wait batches do not deadlock
                stack.enter_context(study_lock(b.study.id, wait=wait))
            try:
                for b in batches:
                    with signals.deferred():
                        b.open()
                return _run_locked(batches, signals, jobs=jobs, resume=resume, progress=progress,
                                   scheduler=scheduler, workers=workers)
            finally:
                signals.depth += 1  # the temporary folders go, whatever arrives now
                for b in batches:
                    b.close()
                signals.depth -= 1


class _StudyBatch:
    """One study's part of a batch: its runs, its temporary folder, what it published."""

    def __init__(self, study, study_path: Path, runs: list[Run], final: Path, panel, *, fast: bool):
        self.study, self.study_path, self.runs, self.final, self.panel, self.fast = (study, study_path, runs, final,
                                                                                     panel, fast)
        self.tmp: Path | None = None
        self.todo: list[Run] = []
        self.pending: list[Run] = []  # not yet handed to the executor
        self.finished: set[str] = set()
        self.published: set[str] = set()
        self.manifest: dict | None = None
        self.helper = None  # the deliverables' helper process, started with the summary (export.Helper)

    def open(self) -> None:
        _remove_debris(self.study.id, self.final)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.study.id}-batch-{os.getpid()}-", dir=self.final.parent))

    def close(self) -> None:
        if self.helper is not None:  # not used: the batch ended before its deliverables
            self.helper.kill()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def prepare(self, resume: bool) -> None:
        """The batch's folders, store and CSS; the runs' keys; the runs to do (``--resume``
        reuses a run whose key, page and notebook are unchanged)."""
        tmp = self.tmp
        self.started, self.created = time.perf_counter(), dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        (tmp / "pages").mkdir(exist_ok=True)
        (tmp / "logs").mkdir(exist_ok=True)  # a worker started ahead may have made it
        (tmp / REPORT_CSS).write_text(report_css(), encoding="utf-8")
        _seed_store(self.final / "results", tmp / "results")
        for r in self.runs:
            r.parameters["results_dir"] = str(tmp / "results")
        code = code_hash()
        self.inputs = _InputsByIndicator(self.study, self.panel)
        for r in self.runs:
            r.key = _run_key(r, self.inputs[r.indicator], code)
        previous = {r["stem"]: r for r in _previous_manifest(self.final).get("runs", [])}
        self.previous_seconds = {stem: r.get("seconds") for stem, r in previous.items()
                                 if r.get("status") == "ok" and not r.get("reused")}
        for r in self.runs:
            old = previous.get(r.stem)
            if (resume and old and old.get("key") == r.key and old.get("status") == "ok" and not old.get("stale")
                    and (self.final / f"{r.stem}.html").is_file() and (self.final / f"{r.stem}.ipynb").is_file()):
                r.status, r.seconds, r.reused = "ok", old.get("seconds", 0.0), True
            else:
                self.todo.append(r)
        self.pending = list(self.todo)

    def ready(self) -> list[Run]:
        """The runs that may start now, taken from the pending ones: every run but the
        summary, and the summary (which reads the other chapters' stored results) once
        all the others have finished."""
        others_done = all(r.stem in self.finished for r in self.todo if r.chapter != "summary")
        out = [r for r in self.pending if r.chapter != "summary" or others_done]
        self.pending = [r for r in self.pending if r not in out]
        return out

    def expected_seconds(self, run: Run) -> float:
        """How long ``run`` is expected to take: its time in the previous manifest, else
        :data:`CHAPTER_SECONDS` (rough, by chapter)."""
        return float(self.previous_seconds.get(run.stem) or CHAPTER_SECONDS.get(run.chapter, 1.0))

    def paths(self, run: Run) -> tuple[str, str]:
        return str(self.tmp / "pages"), str(self.tmp / "logs" / f"{run.stem}.log")

    def finish_run(self, run: Run, outcome: dict, signals: _Signals) -> None:
        run.status, run.seconds, run.error = outcome["status"], outcome["seconds"], outcome["error"]
        run.failure, run.memory = outcome.get("failure"), outcome.get("memory")
        with signals.deferred():
            _publish_run(run, self.tmp, self.final)
            self.published.add(run.stem)
            self.finished.add(run.stem)

    @property
    def complete(self) -> bool:
        return not self.pending and all(r.stem in self.finished for r in self.todo)

    def finish(self, signals: _Signals) -> dict:
        """Publish the batch's results and rebuild the manifest and index."""
        with signals.deferred():
            failed_sections = {(r.indicator or STUDY_LEVEL, r.chapter) for r in self.runs if r.status != "ok"}
            if self.final.is_dir():  # also when every page was reused (--resume) and report.css had gone
                _publish_css(self.tmp, self.final)
            _publish_sections(self.tmp / "results", self.final / "results", skip=failed_sections)
            helper, self.helper = self.helper, None
            self.manifest = _write_report(self.study, self.study_path, self.runs, self.final, self.inputs,
                                          self.created, time.perf_counter() - self.started, self.fast,
                                          helper=helper)
            return self.manifest

    def interrupted(self, signals: _Signals) -> None:
        """After SIGINT / SIGTERM: list the pages already replaced (the index stays consistent)."""
        if self.published and self.manifest is None:
            done = [r for r in self.runs if r.stem in self.published or r.reused]
            with signals.deferred():
                _write_report(self.study, self.study_path, done, self.final, self.inputs, self.created,
                              time.perf_counter() - self.started, self.fast, interrupted=True)


# Rough seconds of one run by chapter (the demo, --fast; the robustness chapter is most of the
# computation): used only to order the runs, longest first, when the previous manifest has no
# time for them.
CHAPTER_SECONDS = {"robustness": 12.0, "selection": 3.0, "did": 4.0, "its": 2.0, "trends": 1.5, "data_quality": 2.0, "summary": 3.0}


def _make_pool(size: int, tmp: Path, signals: _Signals, scheduler: str | None, workers: int | None):
    if scheduler is None and workers is None:
        return _LocalPool(size, tmp, signals)
    from evaluation.report.executors import DaskPool

    return DaskPool(scheduler=scheduler, workers=workers)


def _run_locked(batches: list[_StudyBatch], signals: _Signals, *, jobs: int, resume: bool, progress: bool,
                scheduler: str | None = None, workers: int | None = None) -> list[dict]:
    from tqdm import tqdm

    pool = bar = None
    retried: set[int] = set()
    planned = sum(len(b.runs) for b in batches)
    try:
        with _single_threaded_numerics(workers if workers is not None else jobs):  # before Dask starts workers
            if not resume and planned and scheduler is None and workers is None:
                # every run will run: the local workers and their kernels start while the batch prepares
                pool = _LocalPool(min(max(1, jobs), planned), batches[0].tmp, signals)
                pool.start()
            for b in batches:
                b.prepare(resume)
            todo = [r for b in batches for r in b.todo]
            if todo and pool is None:
                import nbconvert  # noqa: F401 - imported once here rather than in every worker
                import papermill  # noqa: F401
                pool = _make_pool(min(max(1, jobs), len(todo)), batches[0].tmp, signals, scheduler, workers)
            owner = {id(r): b for b in batches for r in b.todo}
            label = batches[0].study.id if len(batches) == 1 else f"{len(batches)} studies"
            bar = tqdm(total=len(todo), desc=f"{label}: chapters", unit="run", disable=not progress)
            queue: list[Run] = []
            warmed = False
            while True:
                fresh = [r for b in batches for r in b.ready()]
                if fresh:  # longest first: a long run started last would leave the other workers idle
                    queue += fresh
                    queue.sort(key=lambda r: -owner[id(r)].expected_seconds(r))
                while queue and pool is not None and pool.idle():
                    r = queue.pop(0)
                    pool.submit(r, *owner[id(r)].paths(r))
                    if r.chapter == "summary":  # it runs alone: a core is free to prepare the deliverables
                        if owner[id(r)].helper is None:  # (a summary run again after its worker died has one)
                            owner[id(r)].helper = _deliverables_helper()
                        if not warmed:
                            warmed = True
                            _warm_deliverables()
                if not queue and (pool is None or not pool.busy):
                    break
                for r, outcome in pool.wait(timeout=1.0):
                    if outcome.get("retry") and id(r) not in retried:
                        retried.add(id(r))  # its worker or kernel died: once more, on a fresh one
                        queue.insert(0, r)
                        continue
                    b = owner[id(r)]
                    b.finish_run(r, outcome, signals)
                    bar.update(1)
                    bar.set_postfix_str(f"{r.stem} {r.status}" if len(batches) == 1 else
                                        f"{b.study.id}/{r.stem} {r.status}")
                    if b.complete:
                        b.finish(signals)
            if pool is not None:
                with signals.deferred():
                    pool.close()
    except BatchInterrupted as exc:
        signals.depth += 1  # a second signal does not cut the clean-up short
        stopped = sum(1 for b in batches for r in b.todo if r.stem not in b.published)
        if pool is not None:
            pool.kill()
        if bar is not None:
            bar.close()
        for b in batches:
            b.interrupted(signals)
        finished = sum(len(b.published) for b in batches)
        raise BatchInterrupted(exc.signum, finished=finished, stopped=stopped) from None
    finally:
        if pool is not None:
            pool.kill()
    bar.close()
    return [b.manifest if b.manifest is not None else b.finish(signals) for b in batches]


def _deliverables_helper():
    """A helper process for the study's deliverables (:class:`evaluation.report.export.Helper`),
    started now so that its imports are done when the summary has run; None when it cannot
    start (the deliverables then start their own)."""
    from evaluation.report.export import Helper

    try:
        return Helper()
    except OSError:
        return None


def _warm_deliverables() -> None:
    """Import what the Word report is written with (about 1 s) while the summary chapter,
    the last run of a study, runs alone, so that writing the deliverables after it does not
    wait for the import. A failure here is
    left to the deliverables' own step, which reports it."""
    with contextlib.suppress(Exception):
        from evaluation.report.export import warm_imports

        warm_imports()


def _validate_data(study):
    """Load the study's panel once, as ``evaluation validate`` does: a
    :class:`~evaluation.errors.DataValidationError` stops the batch (exit 2), the
    previous report untouched."""
    import warnings

    from evaluation.data.panel import LISTED_WARNINGS, load_panel

    with warnings.catch_warnings():  # gaps, dropped rows and odd cells are listed in the chapters
        for listed in LISTED_WARNINGS:
            warnings.simplefilter("ignore", listed)
        return load_panel(study)


# ----------------------------------------------------------------------------- publishing

PUBLISHING = ".publishing-"  # prefix of the files and folders being renamed into place


def _remove_debris(study_id: str, final: Path) -> None:
    """What killed batches of this study left (called with the lock held, so none of it
    belongs to a live batch): temporary batch folders, half-renamed files and folders."""
    root = final.parent
    for pattern in (f".{study_id}-batch-*", f".{study_id}-old-*"):
        for item in root.glob(pattern):
            shutil.rmtree(item, ignore_errors=True)
    if final.is_dir():
        for item in [*final.glob(f"{PUBLISHING}*"), *final.glob(f"{FAILED}/{PUBLISHING}*"),
                     *final.glob(f"results/*/{PUBLISHING}*"), *final.glob("results/*/.*-old-*")]:
            if item.is_dir():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)


def _seed_store(published: Path, target: Path) -> None:
    """The batch's store starts as hard links to the published results (the store never
    changes a file in place: it writes a new folder and renames it), so the chapters,
    and the summary above all, read every published result that is still current."""
    target.mkdir(parents=True, exist_ok=True)
    if not published.is_dir():
        return
    for indicator in published.iterdir():
        if not indicator.is_dir() or indicator.name.startswith("."):
            continue
        for section in indicator.iterdir():
            if section.is_dir() and not section.name.startswith("."):
                with contextlib.suppress(OSError):
                    _link_tree(section, target / indicator.name / section.name)


def _link_tree(source: Path, target: Path) -> None:
    try:
        shutil.copytree(source, target, copy_function=os.link)
    except (OSError, shutil.Error):  # another file system: copy
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)


def _replace(source: Path, target: Path) -> None:
    """Put ``source`` (a file or folder) at ``target`` with one rename each."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir() and target.exists():
        old = target.with_name(f"{PUBLISHING}old-{os.getpid()}-{target.name}")
        os.replace(target, old)
        os.replace(source, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, target)


def _publish_run(run: Run, tmp: Path, final: Path) -> None:
    """A succeeded run's page (notebook, then HTML) and its own results replace the
    published ones; a failed run's notebook, HTML and log go to ``failed/`` and its last
    good page stays."""
    pages, stem = tmp / "pages", run.stem
    final.mkdir(parents=True, exist_ok=True)
    _publish_css(tmp, final)  # before the first page that links it
    failed = final / FAILED
    if run.status == "ok":
        for suffix in (".ipynb", ".html"):
            _replace(pages / f"{stem}{suffix}", final / f"{stem}{suffix}")
        for suffix in (".ipynb", ".html", ".log"):
            (failed / f"{stem}{suffix}").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            failed.rmdir()  # only when empty
        _publish_sections(tmp / "results", final / "results", only={(run.indicator or STUDY_LEVEL, run.chapter)})
        return
    failed.mkdir(parents=True, exist_ok=True)
    for suffix in (".html", ".ipynb", ".log"):
        (failed / f"{stem}{suffix}").unlink(missing_ok=True)
    notebook = pages / f"{stem}.ipynb"
    if notebook.is_file():
        with contextlib.suppress(Exception):  # the notebook is kept even when it cannot be exported
            export_html(notebook, pages / f"{stem}.failed.html", css_href=f"../{REPORT_CSS}",
                        title=f"{page_title(run.parameters['study_path'], run.chapter, run.indicator)} (failed)")
            _replace(pages / f"{stem}.failed.html", failed / f"{stem}.html")
        _replace(notebook, failed / f"{stem}.ipynb")
    log = tmp / "logs" / f"{stem}.log"
    if log.is_file():
        _replace(log, failed / f"{stem}.log")
    run.failure = {**(run.failure or {}),
                   "notebook": f"{FAILED}/{stem}.ipynb" if (failed / f"{stem}.ipynb").is_file() else None,
                   "html": f"{FAILED}/{stem}.html" if (failed / f"{stem}.html").is_file() else None,
                   "log": f"{FAILED}/{stem}.log" if (failed / f"{stem}.log").is_file() else None}


def _publish_css(tmp: Path, final: Path) -> None:
    """Rename the batch's ``report.css`` into the report folder unless the published one
    is the same (a partial batch keeps it)."""
    css = tmp / REPORT_CSS
    target = final / REPORT_CSS
    if target.is_file() and target.read_bytes() == css.read_bytes():
        return
    staging = final / f"{PUBLISHING}{REPORT_CSS}"
    shutil.copyfile(css, staging)
    os.replace(staging, target)


def _owner(section: str) -> str:
    """The chapter a results-store section belongs to (``did.twfe`` -> ``did``)."""
    return section.split(".", 1)[0]


def _publish_sections(source: Path, target: Path, *, only: set | None = None, skip: set = frozenset()) -> None:
    """Rename the batch's new results into the published store, one section at a time:
    the sections of ``only`` ((indicator folder, chapter) pairs), or every section this
    batch computed except those of ``skip``. Unchanged sections (hard links of the
    published ones) are left alone."""
    if not source.is_dir():
        return
    for section in sorted(source.glob("*/*")):
        folder, name = section.parent.name, section.name
        if name.startswith(".") or folder.startswith(".") or not (section / "result.json").is_file():
            continue
        pair = (folder, _owner(name))
        if (only is not None and pair not in only) or pair in skip:
            continue
        published = target / folder / name / "result.json"
        with contextlib.suppress(OSError):
            if published.is_file() and os.path.samefile(published, section / "result.json"):
                continue
        for _attempt in range(3):  # a worker may be rewriting the same section: take it again
            staging = target / folder / f"{PUBLISHING}{os.getpid()}-{name}"
            shutil.rmtree(staging, ignore_errors=True)
            try:
                staging.parent.mkdir(parents=True, exist_ok=True)
                _link_tree(section, staging)
                _replace(staging, target / folder / name)
                break
            except (OSError, shutil.Error):
                shutil.rmtree(staging, ignore_errors=True)
                time.sleep(0.1)


# ----------------------------------------------------------------------------- manifest and index

def _record(run: Run, final: Path, created: str, old: dict | None) -> dict:
    """The manifest's entry for a run of this batch: the page it shows (its own, or the
    last good one marked stale when it failed) and the failure."""
    record = {**asdict(run), "stem": run.stem, "attempted": created}
    record["parameters"] = {k: v for k, v in run.parameters.items() if k in KEY_PARAMETERS}
    if run.status == "ok":
        when = old.get("page_created", created) if run.reused and old else created
        record.update(html=f"{run.stem}.html", notebook_out=f"{run.stem}.ipynb", page_key=run.key,
                      page_created=when, stale=False)
        if run.reused and old:
            record["attempted"] = old.get("attempted", created)
            record["memory"] = old.get("memory")  # measured by the batch that made the page
    else:
        page_key = _page_key(old)
        has_page = (final / f"{run.stem}.html").is_file() and page_key is not None
        record.update(html=f"{run.stem}.html" if has_page else None,
                      notebook_out=f"{run.stem}.ipynb" if has_page else None,
                      page_key=page_key if has_page else None,
                      page_created=old.get("page_created") if has_page else None, stale=bool(has_page))
    return record


def _page_key(old: dict | None) -> str | None:
    """The key of the page a previous record shows (manifests written before pages were
    published per run have no ``page_key``: their page is the run's when it succeeded)."""
    if not old:
        return None
    return old.get("page_key") or (old.get("key") if old.get("status") == "ok" else None)


def _write_report(study, study_path: Path, runs: list[Run], final: Path, inputs: dict, created: str,
                  seconds: float, fast: bool, interrupted: bool = False, helper=None) -> dict:
    """Rebuild the manifest and the index from the previous manifest's runs and this
    batch's, and rename them into place (``helper``: the deliverables' helper process)."""
    previous = _previous_manifest(final)
    old = {r["stem"]: r for r in previous.get("runs", []) if isinstance(r, dict) and "stem" in r}
    mine = {r.stem: _record(r, final, created, old.get(r.stem)) for r in runs}
    order = [r.stem for r in plan(study_path)]  # the study's whole report, in chapter order
    rows = []
    code = code_hash()
    for stem in order:
        row = mine.get(stem) or old.get(stem)
        if row is None:
            continue
        if stem not in mine and row.get("html") and not (final / row["html"]).is_file():
            continue  # a page that is gone is not listed
        probe = Run(row["chapter"], row["notebook"], row.get("indicator"), dict(row.get("parameters", {})))
        try:
            row["current"] = (_page_key(row) is not None
                              and _run_key(probe, inputs[probe.indicator], code) == _page_key(row))
        except OSError:
            row["current"] = False
        rows.append(row)
    manifest = {
        "study": study.id, "study_file": _relative(study_path, PROJECT_ROOT),
        "study_file_sha256": sha256(study_path),
        "data_files": {"panel": _relative(study.panel_path, PROJECT_ROOT, study_path.parent),
                       "pilots": _relative(study.pilots_path, PROJECT_ROOT, study_path.parent),
                       **({"townships": _relative(study.covariate_table_path, PROJECT_ROOT, study_path.parent)}
                          if study.covariate_table_path else {})},
        "data_files_sha256": {"panel": sha256(study.panel_path), "pilots": sha256(study.pilots_path),
                              **({"townships": sha256(study.covariate_table_path)}
                                 if study.covariate_table_path else {})},
        "title": study.title.model_dump(), "synthetic": study.synthetic, "fast": fast,
        "created": created, "git_commit": _git_commit(), "git_dirty": _git_dirty(),
        "python": platform.python_version(), "packages": package_versions(),
        "inputs_sha256": inputs[None], "seconds": round(seconds, 2),
        "ok": all(r.status == "ok" for r in runs) and not interrupted,
        "complete": all(r.get("status") == "ok" and r.get("current") for r in rows) and len(rows) == len(order),
        "batch": {"created": created, "stems": [r.stem for r in runs], "interrupted": interrupted,
                  "seconds": round(seconds, 2), "memory": memory_summary(runs)},
        "runs": rows,
    }
    final.mkdir(parents=True, exist_ok=True)
    _write_published(final, "manifest.json", json.dumps(manifest, ensure_ascii=False, indent=2))
    manifest["deliverables"] = _write_deliverables(study, final, helper)  # they quote the manifest's SHA-256
    _write_published(final, "manifest.json", json.dumps(manifest, ensure_ascii=False, indent=2))
    _write_published(final, "index.html", index_page(study, rows, final, manifest["deliverables"]))
    return manifest


def _write_published(final: Path, name: str, text: str) -> None:
    staging = final / f"{PUBLISHING}{os.getpid()}-{name}"
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, final / name)


def _write_deliverables(study, final: Path, helper=None) -> dict:
    """The Word report, workbook, CSV and regression tables from the published store
    (:mod:`evaluation.report.export`): ``{"written": [names], "failed": reason or None}``.
    When the store cannot support them (no summary yet, say) the reason is recorded and the
    index says so; the pages are published all the same."""
    from evaluation.report.export import export_deliverables

    try:
        paths = export_deliverables(final, study, helper=helper)
    except EvaluationError as exc:
        return {"written": [], "failed": f"{type(exc).__name__}: {str(exc).splitlines()[0][:400]}"}
    return {"written": sorted({p.relative_to(final).parts[0] for p in paths}), "failed": None}


def _headline_rows(study, folder: Path) -> str:
    """The overall conclusion and the scorecard, read from the summary chapter's stored
    result and written for readers (:func:`evaluation.report.scorecard.reader_scorecard`)."""
    from evaluation.report.chapters import table_html
    from evaluation.report.readable import Reader
    from evaluation.report.scorecard import reader_scorecard, scorecard_note

    result = ResultsStore(folder / "results").read("summary.scorecard", None)
    if result is None:
        return ""
    reader, settings = Reader(study.report.language), study.settings()
    card = result.tables["scorecard"]
    esc = html.escape
    conclusion = [result.values.get("conclusion_zh"), result.values.get("conclusion_en")]
    conclusion = conclusion[:1] if reader.language == "zh" else conclusion[1:] if reader.language == "en" else conclusion
    paragraphs = "".join(f"<p>{esc(c)}</p>" for c in conclusion if c)
    note = "".join(f"<p class=\"table-note\">{esc(line)}</p>" for line in scorecard_note(card, reader, settings)
                   .split("\n"))
    return (f'<h2>{esc(reader.say("总体结论", "Overall conclusion"))}</h2><div class="conclusion">{paragraphs}</div>'
            f'<h2>{esc(reader.say("核心结果", "Headline results"))}</h2>'
            f"{table_html(reader_scorecard(card, reader, settings))}{note}")


def _as_record(run) -> dict:
    """A manifest record from a :class:`Run` (the index takes either)."""
    if isinstance(run, dict):
        return run
    ok = run.status == "ok"
    return {**asdict(run), "stem": run.stem, "html": f"{run.stem}.html" if ok else None, "stale": False,
            "current": True}


def _status_html(r: dict) -> str:
    esc = html.escape
    parts = []
    if r.get("status") != "ok":
        failure = r.get("failure") or {}
        text = failure_line(failure) if failure.get("ename") else r.get("error", "")
        links = " ".join(f'<a href="{esc(failure[k])}">{label}</a>' for k, label in
                         (("html", "失败的页面 / failed page"), ("notebook", "notebook"), ("log", "log"))
                         if failure.get(k))
        when = f" ({esc(str(r['attempted']))})" if r.get("attempted") else ""
        if r.get("html"):
            parts.append(f'<span class="failed">过期：最近一次运行失败 / stale: the last run{when} failed, this page is '
                         f'from {esc(str(r.get("page_created") or "an earlier batch"))} — {esc(text[:600])}</span>')
        else:
            parts.append(f'<span class="failed">失败 / failed{when}: {esc(text[:600])}</span>')
        if links:
            parts.append(f"[{links}]")
    elif not r.get("current", True):
        parts.append('<span class="outdated">过期：输入、代码或软件包已变 / outdated: made with earlier inputs, code or '
                     'package versions; run the batch again</span>')
    return " ".join(parts)


def index_page(study, runs: list, folder: Path, deliverables: dict | None = None) -> str:
    """The report's front page: the overall conclusion and the headline table (the
    summary's stored scorecard) and a link to every page, with failed, stale and outdated
    pages marked (``runs``: the manifest's records or :class:`Run` objects; every string
    escaped), in the report's language; styled by the folder's ``report.css``."""
    from evaluation.report.readable import Reader

    esc, reader = html.escape, Reader(study.report.language)
    names = {i.id: reader.name(i) for i in study.selected_indicators()}
    banner = (f'<div class="banner">{esc(reader.say("合成演示数据，非真实乡镇", "SYNTHETIC DEMO DATA — not real townships"))}'
              "</div>" if study.synthetic else "")
    records = [_as_record(r) for r in runs]
    chapters_html = []
    for ch in CHAPTERS:
        mine = [r for r in records if r["chapter"] == ch.key]
        if not mine:
            continue
        items = []
        for r in mine:
            ind = r.get("indicator")
            label = esc(names.get(ind, ind) if ind else reader.say(ch.title_zh, ch.title_en))
            link = f'<a href="{esc(r["html"])}">{label}</a>' if r.get("html") else label
            status = _status_html(r)
            items.append(f"<li>{link}{' ' + status if status else ''}</li>")
        chapters_html.append(f"<h3>{esc(reader.say(ch.title_zh, ch.title_en))}</h3><ul>{''.join(items)}</ul>")
    created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    commit = _git_commit() or "unknown"
    dirty = " (uncommitted changes)" if _git_dirty() else ""
    title = study.title.en if reader.language == "en" else study.title.zh
    subtitle = f'<p class="subtitle">{esc(study.title.en)}</p>' if reader.language == "both" else ""
    from evaluation.report.export import DELIVERABLES

    written = set((deliverables or {}).get("written", []))
    downloads = [(name, label) for name, label in DELIVERABLES if name.rstrip("/") in written]
    links = " · ".join(f'<a href="{esc(name)}">{esc(reader.say(*label))}</a>' for name, label in downloads)
    if (deliverables or {}).get("failed"):
        links += (" " if links else "") + '<span class="failed">' + esc(reader.say(
            "Word 报告和表格未能生成", "The Word report and tables could not be written")) + \
            f": {esc(deliverables['failed'])}</span>"
    return f"""<!DOCTYPE html>
<html lang="{'en' if reader.language == 'en' else 'zh-CN'}"><head><meta charset="utf-8"><title>{esc(title)}</title>
<link rel="stylesheet" href="{REPORT_CSS}">
</head><body class="evaluation-index">
{banner}
<h1>{esc(title)}</h1>
{subtitle}
{f'<p class="downloads">{esc(reader.say("下载", "Downloads"))}: {links}</p>' if links else ''}
{_headline_rows(study, folder)}
<h2>{esc(reader.say("章节", "Chapters"))}</h2>
{''.join(chapters_html)}
<footer>{esc(reader.say("生成时间", "Generated"))} {esc(created)} · evaluation {esc(metadata.version("evaluation"))} ·
git {esc(commit[:12])}{esc(dirty)} · {esc(reader.say("研究文件", "study file"))} {esc(Path(study.source).name)} ·
<a href="manifest.json">manifest.json</a> ({esc(reader.say("输入文件的 SHA-256、参数、软件包版本、用时",
                                                         "inputs' SHA-256, parameters, package versions, timings"))})</footer>
</body></html>
"""
