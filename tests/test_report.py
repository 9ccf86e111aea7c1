"""The batch report: papermill runs, HTML, index, manifest, failures, resume, nbval."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import nbformat
import pandas as pd
import yaml
from study_builders import DEMO_REPORT_INDICATORS as INDICATORS

from evaluation.cli import main
from evaluation.paths import DEMO_DATA, DEMO_STUDY, NOTEBOOKS, PROJECT_ROOT
from evaluation.report.chapters import CHAPTERS
from evaluation.report.store import ResultsStore
from evaluation.study.config import load_study


def test_batch_runs_every_chapter(demo_batch):
    code, folder = demo_batch
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert code == 0 and manifest["ok"]
    stems = {r["stem"] for r in manifest["runs"]}
    expected = {c.key if not c.per_indicator else f"{c.key}__{i}" for c in CHAPTERS
                for i in (INDICATORS if c.per_indicator else [None])}
    assert stems == expected and len(stems) == 2 + 5 * len(INDICATORS)  # the demo declares covariates: selection
    assert all(r["status"] == "ok" and r["seconds"] > 0 for r in manifest["runs"])
    assert set(manifest["inputs_sha256"]) >= {"study", "data", "indicator_catalogue", "packages"}
    assert len(manifest["data_files_sha256"]["panel"]) == 64 and manifest["packages"]["pandas"]
    index = (folder / "index.html").read_text(encoding="utf-8")
    for stem in stems:
        assert f'href="{stem}.html"' in index
        assert (folder / f"{stem}.html").stat().st_size > 10_000
    assert "SYNTHETIC DEMO DATA" in index and "示范地区" in index
    assert not list(folder.parent.glob(".demo-batch-*"))  # the temporary folder is gone


def test_html_hides_code_and_embeds_images(demo_batch):
    _, folder = demo_batch
    page = (folder / "did__county_internal_visit_rate.html").read_text(encoding="utf-8")
    for code in ("chapters.open_chapter(", "chapters.did(ctx)", "matplotlib inline", "study_path ="):
        assert code not in page, code
    assert "data:image/png;base64," in page and '<img src="http' not in page
    assert "SYNTHETIC DEMO DATA" in page


def test_summary_and_index_read_the_store(demo_batch):
    """The batch's results store holds every chapter's results; the scorecard row of each
    indicator equals the DiD chapter's stored headline, and the index shows it."""
    _, folder = demo_batch
    store = ResultsStore(folder / "results")
    card = store.read("summary.scorecard", None).tables["scorecard"].set_index("indicator")
    assert card.index.tolist() == [i.id for i in load_study(DEMO_STUDY).selected_indicators()]
    for ind in INDICATORS:
        headline = store.read("did.callaway_santanna", ind).effect("att", section="simple")
        for key, column in (("att", "estimate"), ("ci_low", "ci_low"), ("ci_high", "ci_high"), ("p_value", "p_value")):
            assert card.loc[ind, key] == headline[column], (ind, key)
        ri = store.read("robustness.randomization", ind).effects.iloc[0]
        assert card.loc[ind, "ri_p_value"] == ri["p_value"]
    index = (folder / "index.html").read_text(encoding="utf-8")
    first = card.iloc[0]
    assert first["headline_method"] == "twfe_randomization" and first["n_pilots"] < 15  # the demo's 10 pilots
    assert first["headline_att"] == store.read("robustness.randomization", card.index[0]).effects.iloc[0]["estimate"]
    assert f"{100 * first['headline_att']:.2f}\u00a0pp" in index  # a share's effect in percentage points


def _broken_study(tmp_path, monkeypatch):
    """The demo with services_offered blanked out (its chapters say it cannot be
    estimated), and a DiD notebook that fails for that indicator (an injected fault: the
    batch's workers are forked, so they see the patched notebook folder)."""
    import evaluation.report.batch as batch

    notebooks = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, notebooks)
    nb = nbformat.read(notebooks / "03_did.ipynb", as_version=4)
    nb.cells.insert(2, nbformat.v4.new_code_cell('assert indicator != "services_offered", "injected failure"'))
    nbformat.write(nb, notebooks / "03_did.ipynb")
    monkeypatch.setattr(batch, "NOTEBOOKS", notebooks)
    data = tmp_path / "data"
    data.mkdir()
    panel = pd.read_csv(DEMO_DATA / "panel.csv", dtype=str)
    panel["开展技术项目数"] = ""
    panel.to_csv(data / "panel.csv", index=False)
    shutil.copy(DEMO_DATA / "pilots.csv", data / "pilots.csv")
    config = yaml.safe_load(DEMO_STUDY.read_text(encoding="utf-8"))
    config["id"] = "broken"
    config["data"].update(panel="data/panel.csv", pilots="data/pilots.csv", truth=None)
    config["indicators"] = ["county_internal_visit_rate", "services_offered"]
    config["covariates"]["table"]["file"] = str(DEMO_DATA / "townships.csv")
    config["analysis"].pop("mechanisms")  # its channels are not among these indicators
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def test_failure_is_recorded_and_resume_reruns_only_what_changed(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALUATION_OUTPUT_ROOT", str(tmp_path / "out"))
    study = _broken_study(tmp_path, monkeypatch)
    args = ["batch", str(study), "--jobs", "2", "--fast", "--chapters", "did"]
    assert main(args) == 1
    manifest = json.loads((tmp_path / "out" / "broken" / "manifest.json").read_text(encoding="utf-8"))
    status = {r["stem"]: r for r in manifest["runs"]}
    assert status["did__county_internal_visit_rate"]["status"] == "ok"
    assert status["did__services_offered"]["status"] == "failed"
    assert "injected failure" in status["did__services_offered"]["error"]
    index = (tmp_path / "out" / "broken" / "index.html").read_text(encoding="utf-8")
    assert "failed" in index and 'href="did__county_internal_visit_rate.html"' in index

    assert main([*args, "--resume"]) == 1
    again = {r["stem"]: r for r in json.loads(
        (tmp_path / "out" / "broken" / "manifest.json").read_text(encoding="utf-8"))["runs"]}
    assert again["did__county_internal_visit_rate"]["reused"] is True
    assert again["did__services_offered"]["reused"] is False  # failed runs are run again

    assert main(["batch", str(study), "--jobs", "2", "--chapters", "did", "--resume",
                 "--indicators", "county_internal_visit_rate"]) == 0  # fast changed: parameters differ
    third = json.loads((tmp_path / "out" / "broken" / "manifest.json").read_text(encoding="utf-8"))
    assert third["batch"]["stems"] == ["did__county_internal_visit_rate"] and third["ok"]
    runs = {r["stem"]: r for r in third["runs"]}  # the report keeps the run this batch did not touch
    assert runs["did__county_internal_visit_rate"]["reused"] is False
    assert runs["did__services_offered"]["status"] == "failed" and not third["complete"]


def test_plain_papermill_call_works(tmp_path):
    out = tmp_path / "trends.ipynb"
    result = subprocess.run([sys.executable, "-m", "papermill", str(NOTEBOOKS / "02_trends.ipynb"), str(out),
                             "-p", "indicator", "primary_care_visit_share", "--cwd", str(NOTEBOOKS)],
                            capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    nb = nbformat.read(out, as_version=4)
    assert "primary_care_visit_share" in "".join(c.source for c in nb.cells)
    assert nb.metadata["kernelspec"]["name"] == "evaluation"


def test_nbval_catches_an_edited_headline_number(tmp_path):
    """The summary's scorecard is HTML for readers with a plain-text twin that nbval
    compares: editing the first headline effect in the stored output fails the re-run."""
    import re

    nb = nbformat.read(NOTEBOOKS / "06_summary.ipynb", as_version=4)
    edited = False
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            text = o.get("data", {}).get("text/plain")
            if text and "县域内就诊率" in text and "pp" in text and not edited:
                effect = re.search(r"-?\d+\.\d{2}\u00a0pp", text).group(0)
                o["data"]["text/plain"] = text.replace(effect, "99.99\u00a0pp", 1)
                edited = True
    assert edited
    target = NOTEBOOKS / "_edited_summary_test.ipynb"
    nbformat.write(nb, target)
    try:
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(target)],
                                capture_output=True, text=True, cwd=PROJECT_ROOT)
    finally:
        target.unlink()
    assert result.returncode == 1 and "1 failed" in result.stdout, result.stdout[-2000:]


def test_data_derived_strings_are_escaped(tmp_path):
    from evaluation.report.batch import Run, index_page
    from evaluation.report.chapters import Context, header
    from evaluation.study.config import Titles

    study = load_study(DEMO_STUDY)
    hostile = study.model_copy(update={"title": Titles(zh="<script>alert(1)</script>", en="A & <b>B</b>")})
    hostile._source = study.source
    page = index_page(hostile, [Run("trends", "02_trends.ipynb", "county_internal_visit_rate", {}, status="failed",
                                    error="<img src=x onerror=alert(2)>")], tmp_path)
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "A &amp; &lt;b&gt;B&lt;/b&gt;" in page and "<img src=x" not in page
    block = header(Context(study=hostile, settings=study.settings(), panel=None, indicator=None, store=None),
                   "章", "<i>chapter</i>")
    assert "<script>" not in block and "&lt;i&gt;chapter&lt;/i&gt;" in block


def test_parallel_chapters_use_one_blas_thread_each(monkeypatch):
    from evaluation.report.batch import THREAD_VARIABLES, _single_threaded_numerics

    for v in THREAD_VARIABLES:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "4")  # the user's choice stays
    import os

    with _single_threaded_numerics(2):
        assert os.environ["OMP_NUM_THREADS"] == "1" and os.environ["OPENBLAS_NUM_THREADS"] == "1"
        assert os.environ["MKL_NUM_THREADS"] == "4"
    assert "OMP_NUM_THREADS" not in os.environ and os.environ["MKL_NUM_THREADS"] == "4"
    with _single_threaded_numerics(1):
        assert "OMP_NUM_THREADS" not in os.environ
