"""Loading: encodings and Excel give the same panel; derived treatment columns; gaps."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest

from evaluation.cli import main
from evaluation.data.demo import PANEL_HEADERS, PILOT_HEADERS
from evaluation.data.panel import PanelGapWarning, load_panel, write_validated_panel
from evaluation.paths import DEMO_STUDY
from evaluation.study.config import load_study
from tests.conftest import tiny_panel, tiny_pilots


def _load(files):
    return load_panel(load_study(files.study))


@pytest.fixture
def reference(study_files):
    return _load(study_files).data


def test_gbk_bom_and_excel_with_chinese_headers_load_identically(study_files, reference):
    for encoding in ("gbk", "utf-8-sig"):
        study_files.write_panel(tiny_panel(), encoding=encoding)
        pd.testing.assert_frame_equal(_load(study_files).data, reference)
    assert study_files.panel.read_bytes()[:3] == b"\xef\xbb\xbf"

    xlsx = study_files.panel.with_suffix(".xlsx")
    with pd.ExcelWriter(xlsx, engine="openpyxl") as writer:
        tiny_panel().rename(columns=PANEL_HEADERS).to_excel(writer, sheet_name="乡镇月报", index=False)
    pilots_xlsx = study_files.pilots.with_suffix(".xlsx")
    tiny_pilots().rename(columns=PILOT_HEADERS).to_excel(pilots_xlsx, index=False)
    config = study_files.config()
    config["data"].update(panel="data/panel.xlsx", pilots="data/pilots.xlsx", panel_sheet="乡镇月报")
    study_files.write_config(config)
    from_excel = _load(study_files)
    pd.testing.assert_frame_equal(from_excel.data, reference)


def test_gbk_file_actually_differs_from_utf8(study_files):
    study_files.write_panel(tiny_panel(), encoding="gbk")
    raw = study_files.panel.read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    assert "常住人口" in raw.decode("gbk")


def test_derived_treatment_columns(reference):
    d = reference.set_index(["township_id", reference["period"].astype(str)])
    # T01 starts 2019-07 (time 7), T03 2019-09 (time 9); T02, T04 never treated
    assert d.loc[("T01", "2019-06"), "post"] == 0 and d.loc[("T01", "2019-07"), "post"] == 1
    assert d.loc[("T01", "2019-07"), "event_time"] == 0
    assert d.loc[("T01", "2019-01"), "event_time"] == -6
    assert d.loc[("T03", "2019-12"), "event_time"] == 3
    assert d.loc[("T01", "2019-12"), "first_treat"] == 7 and d.loc[("T03", "2019-01"), "first_treat"] == 9
    assert d.loc[("T01", "2019-03"), "cohort"] == "2019-07" and d.loc[("T03", "2019-03"), "model"] == "对口支援"
    never = reference[reference["township_id"].isin(["T02", "T04"])]
    assert never["treated"].eq(0).all() and never["post"].eq(0).all() and never["first_treat"].eq(0).all()
    assert never["event_time"].isna().all() and never["cohort"].isna().all()
    assert reference["time"].min() == 1 and reference["time"].max() == 12
    assert int(reference["post"].sum()) == 6 + 4


def test_thousands_separators_and_spaces_are_numbers(study_files, reference):
    panel = tiny_panel().astype({"visits_total": object, "population": object})
    panel.loc[0, "visits_total"] = "1,010"
    panel.loc[1, "population"] = " 10,000 "
    study_files.write_panel(panel)
    loaded = _load(study_files).data
    pd.testing.assert_frame_equal(loaded, reference)


def test_empty_count_cell_is_missing_and_counted(study_files):
    panel = tiny_panel().astype({"services_offered": object})
    panel.loc[[3, 4], "services_offered"] = ""
    study_files.write_panel(panel)
    p = _load(study_files)
    assert p.missing_cells()["services_offered"] == 2
    assert p.summary()["missing_cells"] == {"services_offered": 2}


def test_window_restricts_rows(study_files):
    config = study_files.config()
    config["window"] = {"start": "2019-03", "end": "2019-10"}
    study_files.write_config(config)
    p = _load(study_files)
    assert len(p.data) == 4 * 8 and str(p.data["period"].min()) == "2019-03"
    assert p.data["time"].min() == 1  # time restarts at the window's first period


def test_gaps_are_reported_not_filled(study_files, capsys):
    panel = tiny_panel()
    panel = panel[~((panel["township_id"] == "T02") & panel["period"].isin(["2019-04", "2019-05"]))]
    study_files.write_panel(panel)
    with pytest.warns(PanelGapWarning, match=r"T02 \(二号乡\): 2019-04, 2019-05"):
        p = _load(study_files)
    assert len(p.data) == 46  # nothing filled in
    assert p.gaps.to_dict("records") == [
        {"township_id": "T02", "township_name": "二号乡", "missing_periods": "2019-04, 2019-05"}]
    assert main(["validate", str(study_files.study)]) == 0
    out = capsys.readouterr().out
    assert "T02 二号乡: 2019-04, 2019-05" in out and "valid" in out


def test_quarterly_panel(study_files):
    panel = tiny_panel()
    panel = panel[panel["period"].str[-2:].isin(["01", "04", "07", "10"])].copy()
    panel["period"] = panel["period"].map(lambda s: f"{s[:4]}Q{(int(s[5:]) - 1) // 3 + 1}")
    study_files.write_panel(panel)
    study_files.write_pilots(pd.DataFrame({"township_id": ["T01"], "pilot_start": ["2019年第3季度"],
                                           "model": ["托管"]}))
    config = study_files.config()
    config["frequency"] = "quarter"
    config["window"] = {"start": "2019Q1", "end": "2019Q4"}
    study_files.write_config(config)
    d = _load(study_files).data
    assert d.loc[d["township_id"] == "T01", "event_time"].tolist() == [-2, -1, 0, 1]


def test_validated_panel_written_atomically(study_files, tmp_path):
    p = _load(study_files)
    target = tmp_path / "out" / "panel.csv"
    write_validated_panel(p, target)
    back = pd.read_csv(target, dtype={"township_id": str})
    assert len(back) == 48 and back["period"].iloc[0] == "2019-01"
    assert [f.name for f in target.parent.iterdir()] == ["panel.csv"]  # no temporary left


def test_demo_study_validates_and_writes_panel(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EVALUATION_OUTPUT_ROOT", str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["validate", str(DEMO_STUDY), "--write-panel"]) == 0
    out = capsys.readouterr().out
    assert "64 in 4 counties (10 pilot, 54 comparison)" in out and "SYNTHETIC" in out
    written = pd.read_csv(tmp_path / "demo" / "panel_validated.csv")
    assert len(written) == 64 * 96
