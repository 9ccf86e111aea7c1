"""The report's outline: its chapters, in order, with their notebooks and titles.

Kept apart from :mod:`evaluation.report.chapters` (the chapters' display code, which
imports every estimator, matplotlib and statsmodels) so that what only needs the list,
``evaluation batch``'s coordinator and its workers, starts without those imports.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chapter:
    key: str
    notebook: str
    title_zh: str
    title_en: str
    per_indicator: bool
    needs_covariates: bool = False  # runs only for a study that declares covariates


CHAPTERS = (
    Chapter("data_quality", "01_data_quality.ipynb", "数据质量", "Data quality", False),
    Chapter("trends", "02_trends.ipynb", "趋势", "Trends", True),
    Chapter("did", "03_did.ipynb", "双重差分", "Difference-in-differences", True),
    Chapter("its", "04_its.ipynb", "中断时间序列", "Interrupted time series", True),
    Chapter("robustness", "05_robustness.ipynb", "稳健性检验", "Robustness", True),
    Chapter("selection", "05b_selection.ipynb", "选择偏差：协变量、匹配与异质性",
            "Selection: covariates, matching and heterogeneity", True, needs_covariates=True),
    Chapter("summary", "06_summary.ipynb", "评估总结", "Assessment and summary", False),
)
CHAPTER_BY_KEY = {c.key: c for c in CHAPTERS}
