"""Studies as researchers bring them, built inside the tests: a small synthetic
prefecture from the demo generator (24 townships, 10 pilots in 3 cohorts, 2016-2023,
with its exact truth), then made messy one way at a time (empty cells, missing months,
quarterly or annual exports, GBK text ...)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from evaluation.data.demo import PANEL_HEADERS, PILOT_HEADERS, DemoConfig, generate

SMALL = DemoConfig(n_counties=2, townships_per_county=12)
COUNTS = [c for c in PANEL_HEADERS if c not in ("county", "township_id", "township_name", "period", "population")]


@dataclass
class Built:
    root: Path
    study: Path
    panel: pd.DataFrame      # contract names, as written (before renaming to the user's headers)
    pilots: pd.DataFrame
    truth: pd.DataFrame


_CACHE: dict = {}


def small_demo():
    """The small prefecture (generated once per test session)."""
    if "demo" not in _CACHE:
        _CACHE["demo"] = generate(SMALL)
    d = _CACHE["demo"]
    return d.panel.copy(), d.pilots.copy(), d.truth.copy()


def to_frequency(panel: pd.DataFrame, pilots: pd.DataFrame, frequency: str):
    """A monthly panel as a statistics office would export it by quarter or year: counts
    summed, the resident population averaged; pilots start in the period of their start month."""
    freq = {"quarter": "Q", "year": "Y"}[frequency]
    p = panel.copy()
    p["period"] = pd.PeriodIndex(p["period"], freq="M").asfreq(freq)
    agg = {c: "sum" for c in COUNTS} | {"population": "mean"}
    out = p.groupby(["county", "township_id", "township_name", "period"], as_index=False).agg(agg)
    out["population"] = out["population"].round()
    out["period"] = out["period"].astype(str)
    pil = pilots.copy()
    pil["pilot_start"] = pd.PeriodIndex(pil["pilot_start"], freq="M").asfreq(freq).astype(str)
    return out, pil


def write_study(root: Path, panel: pd.DataFrame, pilots: pd.DataFrame, *, frequency: str = "month",
                indicators=("county_internal_visit_rate",), encoding: str = "utf-8", study_id: str = "messy",
                extra: dict | None = None, truth: pd.DataFrame | None = None, wide: bool = False) -> Built:
    """Write the panel and pilots with the demo's Chinese headers and a study file mapping
    them; ``wide``: one row per township and measure, one column per period."""
    root.mkdir(parents=True, exist_ok=True)
    period_header = {"month": "月份", "quarter": "季度", "year": "年份"}[frequency]
    headers = {**PANEL_HEADERS, "period": period_header}
    table = to_wide(panel) if wide else panel.rename(columns=headers)
    table.to_csv(root / "panel.csv", index=False, encoding=encoding)
    pilots.rename(columns=PILOT_HEADERS).to_csv(root / "pilots.csv", index=False, encoding=encoding)
    first, last = sorted(panel["period"].astype(str))[0], sorted(panel["period"].astype(str))[-1]
    config = {
        "id": study_id, "title": {"zh": "测试研究", "en": "Test study"}, "synthetic": True,
        "data": {"panel": "panel.csv", "pilots": "pilots.csv",
                 "columns": {v: k for k, v in headers.items()},
                 "pilot_columns": {v: k for k, v in PILOT_HEADERS.items()}},
        "frequency": frequency, "window": {"start": first, "end": last},
        "indicators": list(indicators),
        "covid": {"handling": "phases", "phases": [
            {"name": "2020年初疫情 / early-2020 wave", "start": "2020-01", "end": "2020-04"}]
            if frequency == "month" else []},
        "analysis": {"seed": 7},
        **(extra or {}),
    }
    if wide:
        config["data"].update(layout="wide", wide={"measure_column": "指标"})
    (root / "study.yml").write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return Built(root, root / "study.yml", panel, pilots, truth if truth is not None else pd.DataFrame())


def to_wide(panel: pd.DataFrame) -> pd.DataFrame:
    """The panel as a statistics office's wide sheet: county, township, measure (指标, the
    demo's Chinese header), then one column per period."""
    keys = ["county", "township_id", "township_name"]
    long = panel.melt(id_vars=[*keys, "period"], value_vars=["population", *COUNTS], var_name="measure")
    long["measure"] = long["measure"].map(PANEL_HEADERS)
    wide = long.pivot_table(index=[*keys, "measure"], columns="period", values="value", aggfunc="first",
                            sort=False).reset_index()
    wide.columns.name = None
    return wide.rename(columns={"county": "县区", "township_id": "乡镇编码", "township_name": "乡镇名称",
                                "measure": "指标"})


def with_gaps(panel: pd.DataFrame, pilots: pd.DataFrame) -> pd.DataFrame:
    """One empty cell (a comparison township's in-county visits) and a pilot township
    missing three months after its start."""
    p = panel.copy()
    comparison = sorted(set(p["township_id"]) - set(pilots["township_id"]))[0]
    row = p.index[(p["township_id"] == comparison) & (p["period"] == "2019-05")][0]
    p["visits_in_county"] = p["visits_in_county"].astype(object)
    p.loc[row, "visits_in_county"] = ""
    pilot = pilots["township_id"].iloc[0]
    gone = (p["township_id"] == pilot) & p["period"].isin(["2019-03", "2019-04", "2019-05"])
    return p[~gone].reset_index(drop=True)


# The published demo report the deliverable tests read (pages, Word, workbook; conftest's
# session fixture demo_batch): one share, one per-1,000 rate and one money indicator.
DEMO_REPORT_INDICATORS = ["county_internal_visit_rate", "referrals_down_per_1000", "cost_per_admission"]


def batch_notebooks(tmp_path: Path, monkeypatch) -> Path:
    """A copy of the chapter notebooks in ``tmp_path / "notebooks"`` that the batch runs
    instead of the project's (``batch.NOTEBOOKS`` patched; its workers are forked, so they
    see it), for tests that add cells to a chapter."""
    import shutil

    import evaluation.report.batch as batch
    from evaluation.paths import NOTEBOOKS

    notebooks = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, notebooks)
    monkeypatch.setattr(batch, "NOTEBOOKS", notebooks)
    return notebooks
