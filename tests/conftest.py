"""Shared fixtures: a small valid study (4 townships x 12 months) written to a temporary
folder, which tests corrupt one way at a time."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from evaluation.data.demo import PANEL_HEADERS, PILOT_HEADERS


def tiny_panel() -> pd.DataFrame:
    """4 townships in 2 counties, 2019-01..2019-12, contract column names, consistent counts."""
    rows = []
    towns = [("甲县", "T01", "一号镇", 10_000), ("甲县", "T02", "二号乡", 20_000),
             ("乙县", "T03", "三号镇", 15_000), ("乙县", "T04", "四号镇", 30_000)]
    for k, (county, tid, name, pop) in enumerate(towns):
        for m in range(1, 13):
            total = 1000 + 100 * k + 10 * m
            admissions = 50 + k + m
            rows.append({
                "county": county, "township_id": tid, "township_name": name,
                "period": f"2019-{m:02d}", "population": pop,
                "visits_total": total, "visits_in_county": total - 100 - k,
                "visits_primary": total // 2, "admissions_total": admissions,
                "referrals_out_county": 5 + k, "thc_outpatient_visits": total // 4,
                "thc_admissions": admissions // 3, "inpatient_cost_total": 5000.5 * admissions,
                "services_offered": 30 + k, "referrals_down": 2 + (m % 3),
            })
    return pd.DataFrame(rows)


def tiny_pilots() -> pd.DataFrame:
    return pd.DataFrame({"township_id": ["T01", "T03"], "pilot_start": ["2019-07", "2019-09"],
                         "model": ["托管", "对口支援"]})


@dataclass
class StudyFiles:
    root: Path
    study: Path
    panel: Path
    pilots: Path
    outputs: Path

    def config(self) -> dict:
        return yaml.safe_load(self.study.read_text(encoding="utf-8"))

    def write_config(self, config: dict) -> None:
        self.study.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")

    def write_panel(self, frame: pd.DataFrame, *, encoding: str = "utf-8") -> None:
        """Write a contract-named frame with the Chinese headers the study maps."""
        frame.rename(columns=PANEL_HEADERS).to_csv(self.panel, index=False, encoding=encoding)

    def write_pilots(self, frame: pd.DataFrame) -> None:
        frame.rename(columns=PILOT_HEADERS).to_csv(self.pilots, index=False, encoding="utf-8")


def edit_config(config: dict, dotted: str, value) -> None:
    """Set ``config``'s key ``a.b.c`` to ``value`` (creating parents); ``KeyError`` deletes it."""
    node = config
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    if value is KeyError:
        del node[last]
    else:
        node[last] = value


def make_study(root: Path, panel: pd.DataFrame | None = None, pilots: pd.DataFrame | None = None) -> StudyFiles:
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    files = StudyFiles(root=root, study=root / "study.yml", panel=root / "data" / "panel.csv",
                       pilots=root / "data" / "pilots.csv", outputs=root / "outputs")
    files.write_panel(tiny_panel() if panel is None else panel)
    files.write_pilots(tiny_pilots() if pilots is None else pilots)
    files.write_config({
        "id": "tiny",
        "title": {"zh": "测试研究", "en": "Test study"},
        "data": {"panel": "data/panel.csv", "pilots": "data/pilots.csv",
                 "columns": {v: k for k, v in PANEL_HEADERS.items()},
                 "pilot_columns": {v: k for k, v in PILOT_HEADERS.items()}},
        "frequency": "month",
        "window": {"start": "2019-01", "end": "2019-12"},
        "analysis": {"seed": 1},
    })
    return files


@pytest.fixture
def study_files(tmp_path, monkeypatch) -> StudyFiles:
    files = make_study(tmp_path / "study")
    monkeypatch.setenv("EVALUATION_OUTPUT_ROOT", str(files.outputs))
    return files


@pytest.fixture(scope="session")
def demo():
    """The demo study's panel, its indicators by id, and the truth file."""
    from evaluation.data.panel import load_panel
    from evaluation.paths import DEMO_STUDY
    from evaluation.study.config import load_study

    study = load_study(DEMO_STUDY)
    panel = load_panel(study)
    indicators = {i.id: i for i in study.selected_indicators()}
    return panel, indicators, pd.read_csv(study.truth_path)


from study_builders import DEMO_REPORT_INDICATORS  # noqa: E402


@pytest.fixture(scope="session")
def demo_batch(tmp_path_factory):
    """(exit code, report folder) of a fast batch of the demo study over
    :data:`DEMO_REPORT_INDICATORS`."""
    from evaluation.cli import main
    from evaluation.paths import DEMO_STUDY

    out = tmp_path_factory.mktemp("outputs")
    mp = pytest.MonkeyPatch()
    mp.setenv("EVALUATION_OUTPUT_ROOT", str(out))
    try:
        code = main(["batch", str(DEMO_STUDY), "--jobs", "2", "--fast", "--indicators", *DEMO_REPORT_INDICATORS])
    finally:
        mp.undo()
    return code, out / "demo"
