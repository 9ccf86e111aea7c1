"""The assessment and summary (评估总结): one scorecard over all indicators.

Nothing is estimated here: every number comes from the chapters' stored results
(:mod:`evaluation.report.store`), and every threshold from the analysis plan.

For each indicator: the ATT by Callaway and Sant'Anna (the plan's comparison group), its
interval and p-value, the randomization-inference p-value of the TWFE coefficient
(the recommended test with fewer than ``few_pilots`` pilot townships: it keeps its size
where clustered errors do not, docs/power.md), the effect relative to the pilots'
counterfactual mean, target attainment in pilot and non-pilot townships over the plan's
``target_window``, and a plain-language verdict in Chinese and English that states how
many pilot townships the evidence rests on.

How much weight the evidence bears (stated in every verdict):
* fewer than ``very_few_pilots`` (5) pilot townships: weak (cluster-robust inference is unreliable);
* fewer than ``few_pilots`` (15): limited (few clusters; p-values may be too small);
* more: adequate.
A pre-trend test that rejects at ``alpha`` downgrades the verdict's confidence. Synthetic
DiD (Arkhangelsky et al. 2021, which re-weights townships and periods so that parallel
trends is more plausible) is computed beside the headline; the verdict says whether it
reaches the same conclusion, and cautions when it does not. It also says whether the
average effect over the plan's smoothness target (the first year by default) stays clear of
zero when a linear difference in pre-period trends is allowed to continue (Rambachan and
Roth 2023, smoothness bound M = 0, from the robustness chapter's stored result).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from evaluation.study.plan import Settings

RECOMMENDED = "Callaway-Sant'Anna simple ATT, analytic clustered errors"
# The stored results a scorecard row reads (see evaluation.report.chapters.SECTIONS).
SCORECARD_SECTIONS = ("trends", "did.callaway_santanna", "did.event_study", "robustness.randomization",
                      "robustness.synthetic_did", "robustness.smoothness")
SCORECARD_HEADERS = {
    "name_zh": "指标", "name_en": "Indicator", "att": "效果 ATT", "ci_low": "CI 下限", "ci_high": "CI 上限",
    "p_value": "p (解析 analytic)", "ri_p_value": "p (随机化 RI)", "relative_pct": "相对变化 %", "target": "目标 target",
    "pilot_recent": "试点近期", "comparison_recent": "非试点近期", "pilot_meets_target": "试点达标",
    "comparison_meets_target": "非试点达标", "n_pilots": "试点数", "pretrend_p": "前趋势检验 p"}


def recommended_test(n_pilots: int, settings: Settings) -> str:
    return "randomization inference" if n_pilots < settings.few_pilots else "analytic (clustered)"


def evidence_weight(n_pilots: int, settings: Settings) -> tuple[str, str]:
    if n_pilots < settings.very_few_pilots:
        return (f"证据很弱：试点乡镇少于{settings.very_few_pilots}个，聚类稳健推断不可靠",
                f"weak: fewer than {settings.very_few_pilots} pilot townships, cluster-robust inference is unreliable")
    if n_pilots < settings.few_pilots:
        return (f"证据有限：仅{n_pilots}个试点乡镇，p值采用随机化推断（试点少时仍然有效），置信区间需谨慎解读",
                f"limited: only {n_pilots} pilot townships; the p-value is from randomization inference, which stays "
                "valid with few pilots, but read the interval with caution")
    return (f"证据较充分：{n_pilots}个试点乡镇", f"adequate: {n_pilots} pilot townships")


def indicator_row(indicator, results: dict, settings: Settings) -> dict:
    """The scorecard row of one indicator from its stored results (see the module docstring)."""
    alpha = settings.alpha
    cs, trends = results["did.callaway_santanna"], results["trends"]
    att = cs.effect("att", section="simple")
    nan = pd.Series({"estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan,
                     "inference": "not estimated"})
    estimated = {name: not r.not_estimable for name, r in results.items()}
    ri = results["robustness.randomization"].effects.iloc[0] if estimated["robustness.randomization"] else nan
    sdid = _overall(results["robustness.synthetic_did"].effects) if estimated["robustness.synthetic_did"] else nan
    # M = 0: the first bound value
    trend = results["robustness.smoothness"].effects.iloc[1] if estimated["robustness.smoothness"] else nan
    counterfactual_mean = cs.values["counterfactual_mean"]
    n_pilots, n_townships = int(att["n_treated"]), int(cs.values["n_townships"])
    use_ri = n_pilots < settings.few_pilots and estimated["robustness.randomization"]
    p_recommended = float(ri["p_value"]) if use_ri else float(att["p_value"])
    test_rejects, interval_excludes = p_recommended <= alpha, bool(att["ci_low"] > 0 or att["ci_high"] < 0)
    significant = test_rejects and interval_excludes
    mixed = test_rejects != interval_excludes
    better = att["estimate"] > 0 if indicator.direction == "increase" else att["estimate"] < 0
    improved, worsened = bool(significant and better), bool(significant and not better)
    sdid_sign = 0 if sdid["ci_low"] <= 0 <= sdid["ci_high"] else int(np.sign(sdid["estimate"]))
    headline_sign = int(np.sign(att["estimate"])) if significant else 0
    t = trends.values
    row = {
        "indicator": indicator.id, "name_zh": indicator.name_zh, "name_en": indicator.name_en,
        "unit": indicator.unit, "unit_label": indicator.unit_for(settings.frequency),  # rates name their period
        "direction": indicator.direction,
        "att": float(att["estimate"]), "ci_low": float(att["ci_low"]), "ci_high": float(att["ci_high"]),
        "p_value": float(att["p_value"]), "std_error": float(att["std_error"]),
        "inference": f"{RECOMMENDED} ({att['inference']})",
        "ri_p_value": float(ri["p_value"]), "ri_inference": ri["inference"], "p_recommended": p_recommended,
        "recommended_test": recommended_test(n_pilots, settings) if use_ri or n_pilots >= settings.few_pilots
        else "analytic (clustered; randomization inference not estimable)",
        "counterfactual_mean": counterfactual_mean,
        "relative_pct": 100 * att["estimate"] / counterfactual_mean,
        "relative_low_pct": 100 * att["ci_low"] / counterfactual_mean,
        "relative_high_pct": 100 * att["ci_high"] / counterfactual_mean,
        "pretrend_p": (results["did.event_study"].values.get("pretrend_p") or np.nan) if estimated["did.event_study"]
        else np.nan,
        "target": t["target"] if t["target"] is not None else np.nan,
        "pilot_recent": t["pilot_recent"], "comparison_recent": t["comparison_recent"],
        "pilot_meets_target": t["pilot_meets_target"], "comparison_meets_target": t["comparison_meets_target"],
        "n_pilots": n_pilots, "n_townships": n_townships,
        "improved": improved, "worsened": worsened, "mixed": bool(mixed),
        "sdid_att": float(sdid["estimate"]), "sdid_ci_low": float(sdid["ci_low"]),
        "sdid_ci_high": float(sdid["ci_high"]), "sdid_inference": sdid["inference"],
        "sdid_agrees": bool(sdid_sign == headline_sign) if estimated["robustness.synthetic_did"] else None,
        "trend_ci_low": float(trend["ci_low"]), "trend_ci_high": float(trend["ci_high"]),
        "survives_linear_trend": bool(trend["ci_low"] > 0 or trend["ci_high"] < 0)
        if estimated["robustness.smoothness"] else None,
    }
    row["verdict_zh"], row["verdict_en"] = verdict(row, settings)
    return row


def _overall(effects: pd.DataFrame) -> pd.Series:
    """The overall synthetic-DiD ATT (the row that is not a cohort's)."""
    rows = effects[(effects["estimand"] == "att") & effects["cohort"].isna()]
    if len(rows) != 1:
        raise KeyError(f"expected one overall synthetic-DiD ATT, found {len(rows)}")
    return rows.iloc[0]


def verdict(row: dict, settings: Settings) -> tuple[str, str]:
    """Plain-language verdict in Chinese and English."""
    alpha = settings.alpha
    level = f"{100 * (1 - alpha):g}%"
    post_zh, post_en = settings.text(settings.sd_post_periods)
    weight_zh, weight_en = evidence_weight(row["n_pilots"], settings)
    change_zh = "提高" if row["att"] > 0 else "降低"
    change_en = "raised" if row["att"] > 0 else "lowered"
    if row["improved"]:
        finding_zh, finding_en = "指标改善，且在统计学上可识别", "an improvement that the data can distinguish from no change"
    elif row["worsened"]:
        finding_zh, finding_en = "指标恶化，且在统计学上可识别", "a deterioration that the data can distinguish from no change"
    elif row["mixed"]:
        finding_zh = "证据不一致：检验与置信区间的结论不同，不能确认有变化"
        finding_en = "mixed evidence: the test and the interval disagree, so a change is not established"
    else:
        finding_zh, finding_en = "未见统计学上可靠的变化", "no change that the data can tell apart from none"
    fmt = _fmt(row)
    size = _fmt({**row, "att": abs(row["att"])})["att"]  # "lowered it by 1.7 pp", not "by -1.7 pp"
    p = row["p_recommended"]
    p_text = ("< 0.001" if p < 0.001 else f"= {p:.3f}") + f", {row['recommended_test']}"
    p_zh = ("< 0.001" if p < 0.001 else f"= {p:.3f}") + ("，随机化推断" if row["recommended_test"].startswith("random")
                                                        else "，聚类稳健解析推断")
    if "not estimable" in row["recommended_test"]:
        p_zh += "（随机化推断未能估计）"
    zh = (f"{row['name_zh']}：与{row['n_townships'] - row['n_pilots']}个非试点乡镇相比，{row['n_pilots']}个试点乡镇的"
          f"该指标{change_zh}了{size}（{level}置信区间 {fmt['lo']} 至 {fmt['hi']}，p {p_zh}），"
          f"{finding_zh}。{weight_zh}。")
    en = (f"{row['name_en']}: compared with {row['n_townships'] - row['n_pilots']} non-pilot townships, the pilots "
          f"{change_en} it by {size} ({level} CI {fmt['lo']} to {fmt['hi']}, p {p_text}): "
          f"{finding_en}. Evidence: {weight_en}.")
    sd = _fmt(row, ("sdid_att", "sdid_ci_low", "sdid_ci_high"))
    if row["sdid_agrees"] is None:
        zh += "合成双重差分未能估计（见稳健性检验章节）。"
        en += " Synthetic DiD could not be estimated (see the robustness chapter)."
    elif row["sdid_agrees"]:
        zh += f"合成双重差分结论一致（{sd['att']}，{level}置信区间 {sd['lo']} 至 {sd['hi']}）。"
        en += f" Synthetic DiD agrees ({sd['att']}, {level} CI {sd['lo']} to {sd['hi']})."
    else:
        zh += (f"注意：合成双重差分结论不同（{sd['att']}，{level}置信区间 {sd['lo']} 至 {sd['hi']}），"
               "结论对平行趋势假设敏感。")
        en += (f" Caution: synthetic DiD differs ({sd['att']}, {level} CI {sd['lo']} to {sd['hi']}); the conclusion "
               "depends on the parallel-trends assumption.")
    tr = _fmt(row, ("att", "trend_ci_low", "trend_ci_high"))
    if (row["improved"] or row["worsened"]) and row["survives_linear_trend"] is not None:
        if row["survives_linear_trend"]:
            zh += f"即使试点前的趋势差异按直线延续，试点后前{post_zh}平均效果的置信区间（{tr['lo']} 至 {tr['hi']}）仍不含0。"
            en += (f" Even if the pre-period difference in trends continued in a straight line, the first {post_en}' "
                   f"average effect stays clear of zero ({tr['lo']} to {tr['hi']}).")
        else:
            zh += f"但若试点前的趋势差异按直线延续，前{post_zh}平均效果的置信区间（{tr['lo']} 至 {tr['hi']}）包含0。"
            en += (f" But if the pre-period difference in trends continued in a straight line, the first {post_en}' "
                   f"average effect could be zero ({tr['lo']} to {tr['hi']}).")
    if row["pretrend_p"] < alpha:
        zh += f"注意：试点前趋势检验拒绝平行趋势（p = {row['pretrend_p']:.3f}），估计可能有偏。"
        en += f" Caution: the pre-trend test rejects parallel trends (p = {row['pretrend_p']:.3f}); the estimate may be biased."
    return zh, en


def _fmt(row: dict, columns: tuple[str, str, str] = ("att", "ci_low", "ci_high")) -> dict:
    pairs = list(zip(("att", "lo", "hi"), columns, strict=True))
    if row["unit"] == "share":
        return {k: f"{100 * row[v]:.2f} pp" for k, v in pairs}
    return {k: f"{row[v]:.3g}" for k, v in pairs}


def failed_row(indicator, reason: str) -> dict:
    """The scorecard row of an indicator whose results could not be estimated: every
    number missing, the reason in the verdict (the other indicators' rows are unaffected)."""
    row = {"indicator": indicator.id, "name_zh": indicator.name_zh, "name_en": indicator.name_en,
           "unit": indicator.unit, "direction": indicator.direction, "improved": False, "worsened": False,
           "mixed": False, "sdid_agrees": False, "survives_linear_trend": False, "estimated": False,
           "failure": reason}
    row["verdict_zh"] = f"{indicator.name_zh}：未能估计（{reason}）。"
    row["verdict_en"] = f"{indicator.name_en}: could not be estimated ({reason})."
    return row


def scorecard(indicators, results: dict, settings: Settings, failures: dict | None = None) -> pd.DataFrame:
    """One row per indicator from the stored results (``results[indicator_id][section]``);
    an indicator in ``failures`` (id -> reason) gets :func:`failed_row`."""
    failures = failures or {}
    rows = [failed_row(ind, failures[ind.id]) if ind.id in failures
            else {**indicator_row(ind, results[ind.id], settings), "estimated": True, "failure": ""}
            for ind in indicators]
    return pd.DataFrame(rows)
