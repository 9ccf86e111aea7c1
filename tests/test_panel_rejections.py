"""Every rejection of bad input names the file, the row or column and what was expected,
exits with code 2 and writes nothing to the outputs folder."""

from __future__ import annotations

import pandas as pd
import pytest

from evaluation.cli import main
from tests.conftest import tiny_panel, tiny_pilots


def _set(frame: pd.DataFrame, row: int, column: str, value) -> pd.DataFrame:
    """Set a cell by spreadsheet row number (header = row 1, first data row = 2)."""
    frame = frame.astype({column: object})
    frame.loc[row - 2, column] = value
    return frame


# Each case: (id, function(panel, pilots) -> (panel, pilots), file the message must name,
# fragments the message must contain).
CASES = [
    ("missing_mapped_column",
     lambda p, q: (p.drop(columns="population"), q), "panel.csv", ["常住人口", "population", "not found"]),
    ("duplicate_township_period",
     lambda p, q: (pd.concat([p, p.iloc[[5]]], ignore_index=True), q), "panel.csv",
     ["duplicate township-period", "rows 7, 50", "T01", "2019-06"]),
    ("unparseable_period",
     lambda p, q: (_set(p, 9, "period", "2019-13"), q), "panel.csv",
     ["unparseable period", "row 9", "'2019-13'", "YYYY-MM"]),
    ("negative_count",
     lambda p, q: (_set(p, 4, "referrals_down", -3), q), "panel.csv",
     ["negative count", "row 4", "column 'referrals_down' (header '下转人次')", "-3"]),
    ("numerator_above_denominator",
     lambda p, q: (_set(p, 12, "visits_in_county", 99_999), q), "panel.csv",
     ["visits_in_county", "above its denominator", "visits_total", "row 12"]),
    ("missing_population",
     lambda p, q: (_set(p, 3, "population", ""), q), "panel.csv",
     ["missing population", "row 3", "population"]),
    ("zero_population",
     lambda p, q: (_set(p, 20, "population", 0), q), "panel.csv",
     ["zero or negative population", "row 20"]),
    ("dash_in_numeric_cell",
     lambda p, q: (_set(p, 15, "visits_total", "—"), q), "panel.csv",
     ["text in a numeric cell", "row 15", "visits_total", "'—'"]),
    ("word_in_population",
     lambda p, q: (_set(p, 6, "population", "约1万"), q), "panel.csv",
     ["text in a numeric cell", "row 6", "population", "约1万"]),
    ("empty_township_id",
     lambda p, q: (_set(p, 8, "township_id", ""), q), "panel.csv",
     ["empty cell", "row 8", "township_id"]),
    ("pilot_absent_from_panel",
     lambda p, q: (p, pd.concat([q, pd.DataFrame({"township_id": ["T99"], "pilot_start": ["2019-05"],
                                                  "model": ["托管"]})], ignore_index=True)),
     "pilots.csv", ["absent from the panel", "row 4", "T99"]),
    ("pilot_start_after_panel",
     lambda p, q: (p, _set(q, 2, "pilot_start", "2021-03")), "pilots.csv",
     ["pilot start outside the panel's range", "row 2", "T01", "2021-03"]),
    ("pilot_start_at_first_period",
     lambda p, q: (p, _set(q, 3, "pilot_start", "2019-01")), "pilots.csv",
     ["outside the panel's range", "row 3", "at least one pre-period"]),
    ("unparseable_pilot_start",
     lambda p, q: (p, _set(q, 2, "pilot_start", "next spring")), "pilots.csv",
     ["unparseable period", "row 2", "pilot_start"]),
    ("duplicate_pilot",
     lambda p, q: (p, pd.concat([q, q.iloc[[0]]], ignore_index=True)), "pilots.csv",
     ["listed more than once", "rows 2, 4", "T01"]),
    ("empty_pilot_model",
     lambda p, q: (p, _set(q, 3, "model", "")), "pilots.csv", ["empty cell", "row 3", "column 'model' (header '整合模式')"]),
    ("no_comparison_townships",
     lambda p, q: (p, pd.DataFrame({"township_id": ["T01", "T02", "T03", "T04"],
                                    "pilot_start": ["2019-07"] * 4, "model": ["托管"] * 4})),
     "pilots.csv", ["no comparison townships left"]),
]


@pytest.mark.parametrize("case_id, corrupt, culprit_file, fragments", CASES, ids=[c[0] for c in CASES])
def test_rejection_names_culprit_and_writes_nothing(study_files, capsys, case_id, corrupt, culprit_file, fragments):
    panel, pilots = corrupt(tiny_panel(), tiny_pilots())
    study_files.write_panel(panel)
    study_files.write_pilots(pilots)
    code = main(["validate", str(study_files.study), "--write-panel"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert culprit_file in err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in: {err}"
    assert not study_files.outputs.exists() or not any(study_files.outputs.rglob("*"))


def test_missing_unmapped_column_is_named(study_files, capsys):
    config = study_files.config()
    del config["data"]["columns"]["总诊疗人次"]
    study_files.write_config(config)
    study_files.write_panel(tiny_panel().drop(columns="visits_total"))
    assert main(["validate", str(study_files.study), "--write-panel"]) == 2
    err = capsys.readouterr().err
    assert "panel.csv" in err and "missing column 'visits_total'" in err
    assert not study_files.outputs.exists()


@pytest.mark.parametrize("content, fragments", [
    (b"\xff\xfe\x00\x41\xff\xff", ["cannot decode", "UTF-8 or GBK"]),
    (b"", ["empty"]),
    ("县区,县区\n甲县,乙县\n".encode(), ["duplicate column header", "县区"]),
    (b"a,b\n1,2,3\n", ["not a rectangular CSV"]),
], ids=["undecodable", "empty_file", "duplicate_header", "ragged_rows"])
def test_unreadable_panel_files(study_files, capsys, content, fragments):
    study_files.panel.write_bytes(content)
    assert main(["validate", str(study_files.study), "--write-panel"]) == 2
    err = capsys.readouterr().err
    assert "panel.csv" in err
    for fragment in fragments:
        assert fragment in err, err
    assert not study_files.outputs.exists()


def test_unsupported_file_type(study_files, capsys):
    json_file = study_files.panel.with_suffix(".json")
    json_file.write_text("{}", encoding="utf-8")
    config = study_files.config()
    config["data"]["panel"] = "data/panel.json"
    study_files.write_config(config)
    assert main(["validate", str(study_files.study)]) == 2
    err = capsys.readouterr().err
    assert "panel.json" in err and "unsupported file type" in err and ".csv or .xlsx" in err


def test_many_bad_rows_are_all_counted(study_files, capsys):
    panel = tiny_panel()
    panel["visits_total"] = panel["visits_total"].astype(object)
    panel.loc[panel.index[:15], "visits_total"] = "n/a"
    study_files.write_panel(panel)
    assert main(["validate", str(study_files.study)]) == 2
    err = capsys.readouterr().err
    assert "rows 2, 3, 4" in err and "and 5 more" in err
