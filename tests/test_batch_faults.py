"""Batch faults: a report is replaced only by a complete, better one.

Each test starts from one small published report (24 townships, one indicator, the
trends and DiD chapters, ``--fast``) and checks by SHA-256 which of its files a partial
batch, a failing rerun, a concurrent batch and SIGINT / SIGTERM / SIGKILL of a batch
leave unchanged, that failures say why, that the lock never sticks and that no worker
or kernel outlives a killed batch by more than 10 s.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from study_builders import small_demo, write_study

from evaluation.cli import main
from evaluation.paths import NOTEBOOKS, PROJECT_ROOT
from evaluation.report.batch import _descendants  # every process below a pid (psutil or /proc)

INDICATOR = "county_internal_visit_rate"
DID, TRENDS = f"did__{INDICATOR}", f"trends__{INDICATOR}"
NOISE = ("Traceback", "without encryption", "KeyboardInterrupt caught in kernel")
linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")


def _hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A study and its published report (trends and DiD pages)."""
    root = tmp_path_factory.mktemp("faults")
    built = write_study(root / "study", *small_demo()[:2])
    mp = pytest.MonkeyPatch()
    mp.setenv("EVALUATION_OUTPUT_ROOT", str(root / "outputs"))
    code = main(["batch", str(built.study), "--fast", "--jobs", "2", "--chapters", "trends", "did"])
    mp.undo()
    assert code == 0
    return built.study, root / "outputs"


@pytest.fixture
def report(published, tmp_path, monkeypatch):
    """A copy of the published report for one test: (study file, outputs root, report folder)."""
    study, outputs = published
    shutil.copytree(outputs, tmp_path / "outputs")
    monkeypatch.setenv("EVALUATION_OUTPUT_ROOT", str(tmp_path / "outputs"))
    return study, tmp_path / "outputs", tmp_path / "outputs" / "messy"


def _no_temporary_folders(outputs: Path) -> bool:
    return not [p for p in outputs.iterdir() if p.name.startswith(".messy-")] \
        and not list((outputs / "messy").rglob(".publishing-*"))


@pytest.mark.batch
def test_partial_batch_keeps_other_pages_and_a_failing_rerun_keeps_the_last_good_page(report, tmp_path,
                                                                                       monkeypatch, capfd):
    import evaluation.report.batch as batch

    study, outputs, folder = report
    before = _hashes(folder)
    assert {f"{DID}.html", f"{DID}.ipynb", f"{TRENDS}.html", "index.html", "manifest.json"} <= set(before)

    # 1. a partial batch (--chapters trends) replaces the trends page and its results only
    assert main(["batch", str(study), "--fast", "--jobs", "1", "--chapters", "trends"]) == 0
    after = _hashes(folder)
    did_files = {k for k in before if k.startswith((DID, f"results/{INDICATOR}/did."))}
    assert len(did_files) > 8 and all(after[k] == before[k] for k in did_files)
    assert after[f"{TRENDS}.ipynb"] != before[f"{TRENDS}.ipynb"]  # run again (new execution times)
    manifest = _manifest(folder)
    assert [r["stem"] for r in manifest["runs"]] == [TRENDS, DID] and manifest["batch"]["stems"] == [TRENDS]
    assert manifest["ok"] and all(r["status"] == "ok" and r["current"] for r in manifest["runs"])
    assert manifest["git_dirty"] in (True, False) and manifest["data_files"] == {"panel": "panel.csv",
                                                                                "pilots": "pilots.csv"}
    index = (folder / "index.html").read_text(encoding="utf-8")
    assert f'href="{DID}.html"' in index and f'href="{TRENDS}.html"' in index

    # 1b. the summary alone reads the published results that are still current: DiD's and
    # trends' stored results are read, not recomputed (result.json holds its creation time)
    assert main(["batch", str(study), "--fast", "--jobs", "1", "--chapters", "summary"]) == 0
    summary = _hashes(folder)
    stored = [k for k in after if k.startswith((f"results/{INDICATOR}/did.", f"results/{INDICATOR}/trends/"))]
    assert len(stored) > 8 and all(summary[k] == after[k] for k in stored)
    assert all(summary[k] == after[k] for k in after if k.startswith((DID, TRENDS)))
    from evaluation.report.store import ResultsStore

    store = ResultsStore(folder / "results")
    card = store.read("summary.scorecard", None).tables["scorecard"].set_index("indicator").loc[INDICATOR]
    headline = store.read("did.callaway_santanna", INDICATOR).effect("att", section="simple")
    assert card["att"] == headline["estimate"]  # the same stored number, exactly
    assert store.read("robustness.randomization", INDICATOR) is not None  # computed for the summary, published
    after = summary

    # 2. a failing rerun of DiD keeps its last good page, byte for byte, and marks it stale
    notebooks = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, notebooks)
    nb = nbformat.read(notebooks / "03_did.ipynb", as_version=4)
    nb.cells.insert(2, nbformat.v4.new_code_cell('assert indicator == "nothing", "injected failure"'))
    nbformat.write(nb, notebooks / "03_did.ipynb")
    monkeypatch.setattr(batch, "NOTEBOOKS", notebooks)  # the workers are forked: they see it
    capfd.readouterr()
    assert main(["batch", str(study), "--fast", "--jobs", "1", "--chapters", "did"]) == 1
    out, err = capfd.readouterr()
    again = _hashes(folder)
    assert all(again[k] == before[k] for k in did_files)
    assert all(again[k] == after[k] for k in after if k.startswith(TRENDS))
    record = {r["stem"]: r for r in _manifest(folder)["runs"]}[DID]
    assert record["status"] == "failed" and record["stale"] is True and record["html"] == f"{DID}.html"
    failure = record["failure"]
    assert failure["ename"] == "AssertionError" and failure["evalue"] == "injected failure"
    # cell 4 of the failed notebook: papermill adds the injected parameters after the parameters cell
    assert failure["cell_index"] == 3 and "injected failure" in failure["cell_source"]
    assert failure["notebook"] == f"failed/{DID}.ipynb" and (folder / failure["notebook"]).is_file()
    assert (folder / failure["html"]).is_file() and (folder / failure["log"]).is_file()
    # the console: the class and message from inside the notebook, the cell, the failed notebook
    line = next(x for x in err.splitlines() if x.startswith("FAILED"))
    assert f"FAILED {DID}: AssertionError: injected failure (cell 4" in line
    assert f"failed/{DID}.ipynb" in line and "stale" in line
    assert not [n for n in NOISE if n in out + err], (out + err)[-2000:]
    index = (folder / "index.html").read_text(encoding="utf-8")
    assert f'href="{DID}.html"' in index and "stale" in index
    assert f'href="failed/{DID}.ipynb"' in index and "AssertionError: injected failure (cell 4" in index
    assert _no_temporary_folders(outputs) and not (outputs / ".messy.lock").exists()


@pytest.mark.batch
def test_a_second_batch_of_the_study_exits_2_while_the_first_completes(report, capfd):
    study, outputs, folder = report
    first = subprocess.Popen([sys.executable, "-m", "evaluation", "batch", str(study), "--fast", "--jobs", "1",
                              "--chapters", "trends"], cwd=PROJECT_ROOT, env={**os.environ, "PYTHONPATH": str(
                                  PROJECT_ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = outputs / ".messy.lock"
    _until(lambda: lock.is_file() and str(first.pid) in lock.read_text(), 60)
    capfd.readouterr()
    assert main(["batch", str(study), "--fast", "--chapters", "did"]) == 2
    err = capfd.readouterr().err
    assert f"another batch of study messy is running (pid {first.pid} on" in err and "--wait" in err
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err[-2000:]
    assert not [n for n in NOISE if n in out + err], err[-2000:]  # no kernel start-up noise on the console
    manifest = _manifest(folder)
    assert [r["stem"] for r in manifest["runs"]] == [TRENDS, DID]
    assert all((folder / r["html"]).is_file() and (folder / r["notebook_out"]).is_file() for r in manifest["runs"])
    assert _no_temporary_folders(outputs) and not lock.exists()


@pytest.mark.batch
@linux_only
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_a_signalled_batch_stops_and_leaves_the_report_whole(report, sig):
    """SIGINT / SIGTERM: exit 130 / 143 within 10 s, one line and no traceback, the report
    unchanged, no temporary folder, no worker or kernel left. SIGKILL: no worker or kernel
    outlives the batch by 10 s, the lock is free, and the next batch clears the debris."""
    study, outputs, folder = report
    before = _hashes(folder)
    batch = subprocess.Popen([sys.executable, "-m", "evaluation", "batch", str(study), "--fast", "--jobs", "1",
                              "--chapters", "robustness"], cwd=PROJECT_ROOT, env={**os.environ, "PYTHONPATH": str(
                                  PROJECT_ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _until(lambda: any("ipykernel" in _cmdline(p) for p in _descendants(batch.pid)), 60)
    time.sleep(1.0)  # the kernel is running the chapter
    family = _descendants(batch.pid)
    assert len(family) >= 2  # the worker and its kernel
    signalled = time.monotonic()
    batch.send_signal(sig)
    out, err = batch.communicate(timeout=30)
    _until(lambda: not [p for p in family if _alive(p)], 10)
    assert time.monotonic() - signalled < 12
    if sig != signal.SIGKILL:
        assert batch.returncode == {signal.SIGINT: 130, signal.SIGTERM: 143}[sig]
        assert "Traceback" not in err and f"interrupted by {sig.name}" in err
        assert len([x for x in err.splitlines() if "interrupted" in x]) == 1, err
        assert _hashes(folder) == before
        assert _no_temporary_folders(outputs) and not (outputs / ".messy.lock").exists()
        return
    assert batch.returncode == -signal.SIGKILL and _hashes(folder) == before
    assert [p for p in outputs.iterdir() if p.name.startswith(".messy-batch-")]  # a killed batch's debris
    assert main(["batch", str(study), "--fast", "--jobs", "1", "--chapters", "trends"]) == 0  # lock is free
    assert _no_temporary_folders(outputs)


def test_resume_keys_follow_what_the_runs_read(tmp_path, monkeypatch):
    """A comment in the study file and the truth file change no key; the panel, the plan
    and a package upgrade do."""
    import evaluation.report.batch as batch

    built = write_study(tmp_path / "s", *small_demo()[:2])
    run = batch.plan(built.study, [INDICATOR], ["did"], fast=True)[0]

    def key():
        return batch._run_key(run, batch.input_hashes(built.study), "code")

    first = key()
    built.study.write_text(built.study.read_text(encoding="utf-8") + "# a note\n", encoding="utf-8")
    (tmp_path / "s" / "truth.csv").write_text("indicator,att\nx,1\n", encoding="utf-8")
    text = built.study.read_text(encoding="utf-8").replace("data:\n", "data:\n  truth: truth.csv\n", 1)
    built.study.write_text(text, encoding="utf-8")
    assert key() == first
    (tmp_path / "s" / "truth.csv").write_text("indicator,att\nx,2\n", encoding="utf-8")
    assert key() == first
    monkeypatch.setattr(batch, "package_versions", lambda: {**dict.fromkeys(batch.PACKAGES, "1"), "pandas": "9.9"})
    upgraded = key()
    assert upgraded != first
    built.study.write_text(text.replace("seed: 7", "seed: 8"), encoding="utf-8")
    assert key() != upgraded
    built.study.write_text(text, encoding="utf-8")
    with (tmp_path / "s" / "panel.csv").open("a", encoding="utf-8") as f:
        f.write("\n")
    assert key() != upgraded


def test_a_run_stays_current_while_the_data_it_reads_are_unchanged(tmp_path):
    """With the validated panel, a run's inputs are the columns it reads: a change in
    the cost column leaves the visit-rate runs current and reruns cost per admission and
    the study-level chapters; a blank line added to the file changes nothing."""
    import evaluation.report.batch as batch
    from evaluation.data.panel import load_panel
    from evaluation.study.config import load_study

    panel, pilots, _ = small_demo()
    both = (INDICATOR, "cost_per_admission")

    def hashes(study_path):
        study = load_study(study_path)
        loaded = load_panel(study)
        by_id = {i.id: i for i in study.selected_indicators()}
        return {ind: batch.input_hashes(study, loaded, by_id.get(ind)) for ind in (*both, None)}

    first_study = write_study(tmp_path / "a", panel, pilots, indicators=both).study
    first = hashes(first_study)
    dearer = panel.assign(inpatient_cost_total=panel["inpatient_cost_total"] * 1.01)
    second = hashes(write_study(tmp_path / "b", dearer, pilots, indicators=both).study)
    assert first[INDICATOR] == second[INDICATOR]
    assert first["cost_per_admission"]["data"] != second["cost_per_admission"]["data"]
    assert first[None]["data"] != second[None]["data"]
    with (tmp_path / "a" / "panel.csv").open("a", encoding="utf-8") as f:
        f.write("\n")
    assert hashes(first_study) == first


def test_the_lock_refuses_a_second_holder_and_is_free_after_the_first(tmp_path, monkeypatch):
    from evaluation.report.batch import BatchRunningError, study_lock

    monkeypatch.setenv("EVALUATION_OUTPUT_ROOT", str(tmp_path))
    with study_lock("s") as path:
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"]
        child = subprocess.run([sys.executable, "-c", "from evaluation.report.batch import study_lock\n"
                                "with study_lock('s'): pass"], capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
        assert child.returncode == 1 and "BatchRunningError" in child.stderr
        assert f"another batch of study s is running (pid {os.getpid()} on" in child.stderr
        with pytest.raises(BatchRunningError):
            with study_lock("s"):
                pass
    assert not path.exists()
    holder = subprocess.Popen([sys.executable, "-c", "import time\nfrom evaluation.report.batch import study_lock\n"
                               "with study_lock('s'):\n    print('held', flush=True)\n    time.sleep(2)"],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert holder.stdout.readline().strip() == "held"
    start = time.monotonic()
    with study_lock("s", wait=True):  # --wait: blocks until the holder is done
        assert holder.wait(timeout=10) == 0 and time.monotonic() - start > 0.5


# ----------------------------------------------------------------------------- processes

def _until(condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s")
        time.sleep(0.2)


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has ended; only its exit status is left


def test_a_batch_on_invalid_data_changes_nothing(report, tmp_path, capfd):
    study, outputs, folder = report
    before = _hashes(outputs)
    broken = tmp_path / "broken"
    shutil.copytree(study.parent, broken)
    lines = (broken / "panel.csv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    column = header.index("月份")
    (broken / "panel.csv").write_text("\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != column)
                                                for line in lines) + "\n", encoding="utf-8")
    capfd.readouterr()
    assert main(["batch", str(broken / "study.yml"), "--fast", "--chapters", "trends"]) == 2
    err = capfd.readouterr().err
    assert "月份" in err and "Traceback" not in err
    assert _hashes(outputs) == before and sorted(p.name for p in outputs.iterdir()) == ["messy"]
