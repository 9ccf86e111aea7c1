"""Executors of the batch's chapter runs.

The local pool keeps one kernel per worker process for all the runs it takes: a run must
not see the previous run's variables, the cells are numbered as in a fresh kernel, and a
worker that dies under a run loses only that run, which is retried once on a fresh
worker. The notebooks are copies of the chapters with one probe cell added (the workers
are forked, so they see ``batch.NOTEBOOKS`` patched).
"""

from __future__ import annotations

import json

import nbformat
import pytest
from study_builders import batch_notebooks, small_demo, write_study

from evaluation.cli import main

INDICATOR = "county_internal_visit_rate"
STEMS = [f"trends__{INDICATOR}", f"did__{INDICATOR}", f"its__{INDICATOR}"]
FILES = {"trends": "02_trends.ipynb", "did": "03_did.ipynb", "its": "04_its.ipynb"}


def _probe(notebooks, source: str, chapters=tuple(FILES)) -> None:
    """Add a code cell with ``source`` after the setup cell of ``chapters`` (trends, DiD, ITS)."""
    for name in (FILES[c] for c in chapters):
        nb = nbformat.read(notebooks / name, as_version=4)
        nb.cells.insert(2, nbformat.v4.new_code_cell(source))
        nbformat.write(nb, notebooks / name)


@pytest.fixture
def study(tmp_path, monkeypatch):
    built = write_study(tmp_path / "study", *small_demo()[:2])
    monkeypatch.setenv("EVALUATION_OUTPUT_ROOT", str(tmp_path / "outputs"))
    return built.study, tmp_path / "outputs" / "messy", batch_notebooks(tmp_path, monkeypatch)


@pytest.mark.batch
def test_one_kept_kernel_runs_three_chapters_each_in_a_clean_namespace(study):
    """One worker (``--jobs 1``) runs three chapters in one kernel: the probe cell finds
    neither the name the previous chapter's probe defined nor a figure left open, nor an
    object of a reference cycle the previous chapter made (the reset collects it before it
    freezes the survivors, ``gc.freeze``), and every chapter's cells are numbered 1, 2, ...
    as papermill numbers them in a fresh kernel."""
    path, folder, notebooks = study
    _probe(notebooks, 'import gc, os, sys, weakref\nimport matplotlib.pyplot as plt\n'
                      'assert "leak_probe" not in globals(), "a name leaked from the previous run"\n'
                      'assert not plt.get_fignums(), "a figure leaked from the previous run"\n'
                      'previous = getattr(sys, "_cycle_probe", None)\n'
                      'assert previous is None or previous() is None, "a cycle of the previous run outlived the reset"\n'
                      'assert previous is None or gc.get_freeze_count() > 0, "the reset froze nothing"\n'
                      'class Node:\n    pass\n'
                      'node = Node()\nnode.self = node\nsys._cycle_probe = weakref.ref(node)\n'
                      'leak_probe = os.getpid()\nplt.figure()\nprint("kernel", os.getpid())')
    assert main(["batch", str(path), "--fast", "--jobs", "1", "--chapters", "trends", "did", "its"]) == 0
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert [r["stem"] for r in manifest["runs"]] == STEMS and all(r["status"] == "ok" for r in manifest["runs"])
    kernels = set()
    for stem in STEMS:
        nb = nbformat.read(folder / f"{stem}.ipynb", as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert [c.execution_count for c in code] == list(range(1, len(code) + 1))  # exact
        text = "".join(o.get("text", "") for c in code for o in c.outputs if o.get("name") == "stdout")
        kernels |= {line.split()[1] for line in text.splitlines() if line.startswith("kernel ")}
    assert len(kernels) == 1  # one kernel ran the three chapters


@pytest.mark.batch
def test_a_worker_that_dies_loses_only_its_run_which_is_retried_on_a_fresh_worker(study, tmp_path):
    """The DiD chapter SIGKILLs its worker the first time it runs (the kernel follows its
    parent): the batch goes on, runs DiD again on a fresh worker and publishes all three."""
    path, folder, notebooks = study
    marker = tmp_path / "killed-once"
    _probe(notebooks, "import os, signal\n"
                      f"if not os.path.exists({str(marker)!r}):\n"
                      f"    open({str(marker)!r}, 'w').close()\n"
                      "    os.kill(int(os.environ['JPY_PARENT_PID']), signal.SIGKILL)", chapters=["did"])
    assert main(["batch", str(path), "--fast", "--jobs", "2", "--chapters", "trends", "did", "its"]) == 0
    assert marker.is_file()  # the worker was killed once
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert [r["stem"] for r in manifest["runs"]] == STEMS and all(r["status"] == "ok" for r in manifest["runs"])
    assert all((folder / f"{stem}.html").is_file() for stem in STEMS)
    assert not list(folder.rglob(".publishing-*")) and not (folder / "failed").exists()


def _store(folder, drop=("created",)) -> dict[str, object]:
    """Every file of a report's results store: CSVs as bytes, result.json without ``drop``
    (its creation time; and its key, which hashes the study's id, for another study)."""
    out = {}
    for path in sorted((folder / "results").rglob("*")):
        if not path.is_file():
            continue
        name = path.relative_to(folder).as_posix()
        if path.name == "result.json":
            record = json.loads(path.read_text(encoding="utf-8"))
            for name_ in drop:
                record.pop(name_)
            out[name] = record
        else:
            out[name] = path.read_bytes()
    return out


@pytest.mark.batch
def test_a_local_dask_cluster_computes_the_same_store_bit_for_bit_as_the_local_pool(tmp_path, monkeypatch):
    """Two studies (the small prefecture under two ids) on a Dask LocalCluster of 2 worker
    processes (``--workers 2``) against one of them on the local pool: the same results
    store, file for file, every CSV byte for byte and every result.json equal but for its
    creation time (and, for the other id, its key) (reference: this package's local
    executor, same code and inputs); the
    summary ran after DiD in each study; the same pages; no temporary folder left."""
    pytest.importorskip("distributed")
    panel, pilots, _ = small_demo()
    first = write_study(tmp_path / "a", panel, pilots).study
    second = write_study(tmp_path / "b", panel, pilots, study_id="messy_two").study
    chapters = ["--chapters", "did", "summary"]
    monkeypatch.setenv("EVALUATION_OUTPUT_ROOT", str(tmp_path / "local"))
    assert main(["batch", str(first), "--fast", "--jobs", "2", *chapters]) == 0
    monkeypatch.setenv("EVALUATION_OUTPUT_ROOT", str(tmp_path / "dask"))
    assert main(["batch", str(first), str(second), "--fast", "--workers", "2", *chapters]) == 0
    local = _store(tmp_path / "local" / "messy")
    assert len(local) > 10 and any(k.startswith("results/_study/summary.") for k in local)
    for study, drop in (("messy", ("created",)), ("messy_two", ("created", "key"))):
        folder = tmp_path / "dask" / study
        assert _store(folder, drop) == _store(tmp_path / "local" / "messy", drop)  # bit for bit
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        assert [r["stem"] for r in manifest["runs"]] == [f"did__{INDICATOR}", "summary"]
        assert all(r["status"] == "ok" and (folder / r["html"]).is_file() for r in manifest["runs"])
        assert manifest["complete"] is False and manifest["ok"] is True  # a partial report, all runs fine
    assert sorted(p.name for p in (tmp_path / "dask").iterdir()) == ["messy", "messy_two"]
