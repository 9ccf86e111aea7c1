"""The assessment and summary (评估总结): one scorecard over all indicators.

Nothing is estimated here: every number comes from the chapters' stored results
(:mod:`evaluation.report.store`), and every threshold from the analysis plan.

For each indicator: the headline, one method's estimate, interval and p-value together
(:func:`headline_method`): with fewer than ``few_pilots`` pilot townships the TWFE DiD
coefficient with randomization inference (its p-value, and the interval that inverts the
same test: it keeps its size where clustered errors do not, docs/power.md), otherwise the
Callaway-Sant'Anna ATT (the plan's comparison group) with its analytic clustered interval
and p-value; Callaway-Sant'Anna beside a TWFE headline; the effect relative to the pilots'
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

from dataclasses import dataclass

import numpy as np
import pandas as pd

from evaluation.errors import EstimationError
from evaluation.inference.multiple import (
    benjamini_hochberg,
    holm,
    multiplier_draws,
    randomization_romano_wolf,
    romano_wolf,
)
from evaluation.report.readable import DASH, UNIT_WORDS, Reader, p_value, written
from evaluation.study.plan import Settings

RECOMMENDED = "Callaway-Sant'Anna simple ATT, analytic clustered errors"
# The stored results a scorecard row reads (see evaluation.report.chapters.SECTIONS).
SCORECARD_SECTIONS = ("trends", "did.callaway_santanna", "did.event_study", "robustness.randomization",
                      "robustness.synthetic_did", "robustness.smoothness")


def evidence_weight(n_pilots: int, settings: Settings) -> tuple[str, str]:
    if n_pilots < settings.very_few_pilots:
        return (f"证据很弱：试点乡镇少于{settings.very_few_pilots}个，聚类稳健推断不可靠",
                f"weak: fewer than {settings.very_few_pilots} pilot townships, cluster-robust inference is unreliable")
    if n_pilots < settings.few_pilots:
        return (f"证据有限：仅{n_pilots}个试点乡镇，p值采用随机化推断（试点少时仍然有效），置信区间需谨慎解读",
                f"limited: only {n_pilots} pilot townships; the p-value is from randomization inference, which stays "
                "valid with few pilots, but read the interval with caution")
    return (f"证据较充分：{n_pilots}个试点乡镇", f"adequate: {n_pilots} pilot townships")


HEADLINE_LABELS = {
    "callaway_santanna": ("Callaway–Sant'Anna ATT，聚类稳健解析推断", "Callaway–Sant'Anna ATT, analytic clustered errors"),
    "twfe_randomization": ("双向固定效应 DiD，随机化推断", "two-way fixed effects DiD, randomization inference"),
}


def headline_method(n_pilots: int, settings: Settings, ri_estimated: bool) -> str:
    """The one method of an indicator's headline: with fewer than ``few_pilots`` pilot
    townships the TWFE DiD coefficient with its randomization-inference p-value and the
    interval that inverts the same test (it keeps its size where clustered errors do not,
    docs/power.md); otherwise, or when randomization inference could not be estimated,
    the Callaway-Sant'Anna simple ATT with its analytic clustered interval and p-value."""
    return "twfe_randomization" if n_pilots < settings.few_pilots and ri_estimated else "callaway_santanna"


def indicator_row(indicator, results: dict, settings: Settings) -> dict:
    """The scorecard row of one indicator from its stored results (see the module docstring).

    The headline (``headline_*``) is one method's estimate, interval and p-value
    (:func:`headline_method`); the verdict is derived from it alone. The other methods
    (Callaway-Sant'Anna when the headline is TWFE with randomization inference, synthetic
    DiD, the smoothness bound) are stated beside it."""
    alpha = settings.alpha
    cs, trends = results["did.callaway_santanna"], results["trends"]
    att = cs.effect("att", section="simple")
    nan = pd.Series({"estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan, "p_floor": np.nan,
                     "inference": "not estimated"})
    estimated = {name: not r.not_estimable for name, r in results.items()}
    ri = results["robustness.randomization"].effects.iloc[0] if estimated["robustness.randomization"] else nan
    sdid = _overall(results["robustness.synthetic_did"].effects) if estimated["robustness.synthetic_did"] else nan
    # M = 0: the first bound value
    trend = results["robustness.smoothness"].effects.iloc[1] if estimated["robustness.smoothness"] else nan
    n_pilots, n_townships = int(att["n_treated"]), int(cs.values["n_townships"])
    method = headline_method(n_pilots, settings, estimated["robustness.randomization"])
    head = ri if method == "twfe_randomization" else att
    p_floor = head.get("p_floor", np.nan)
    treated_post_mean = cs.values["treated_post_mean"]
    counterfactual_mean = treated_post_mean - float(head["estimate"])
    test_rejects = float(head["p_value"]) <= alpha
    interval_excludes = bool(head["ci_low"] > 0 or head["ci_high"] < 0)
    significant = test_rejects and interval_excludes
    mixed = test_rejects != interval_excludes  # one method: only where the inverted interval and the test differ
    better = head["estimate"] > 0 if indicator.direction == "increase" else head["estimate"] < 0
    improved, worsened = bool(significant and better), bool(significant and not better)
    sdid_sign = 0 if sdid["ci_low"] <= 0 <= sdid["ci_high"] else int(np.sign(sdid["estimate"]))
    headline_sign = int(np.sign(head["estimate"])) if significant else 0
    cs_sign = 0 if att["ci_low"] <= 0 <= att["ci_high"] else int(np.sign(att["estimate"]))
    t = trends.values
    label_zh, label_en = HEADLINE_LABELS[method]
    row = {
        "indicator": indicator.id, "name_zh": indicator.name_zh, "name_en": indicator.name_en,
        "unit": indicator.unit, "unit_label": indicator.unit_for(settings.frequency),  # rates name their period
        "direction": indicator.direction,
        "headline_method": method, "headline_label_zh": label_zh, "headline_label_en": label_en,
        "headline_att": float(head["estimate"]), "headline_ci_low": float(head["ci_low"]),
        "headline_ci_high": float(head["ci_high"]), "headline_p": float(head["p_value"]),
        "headline_p_floor": float(p_floor) if p_floor is not None and pd.notna(p_floor) else np.nan,
        "headline_inference": str(head["inference"]),
        # Callaway-Sant'Anna, always shown (the headline with enough pilots, beside it otherwise)
        "att": float(att["estimate"]), "ci_low": float(att["ci_low"]), "ci_high": float(att["ci_high"]),
        "p_value": float(att["p_value"]), "std_error": float(att["std_error"]),
        "inference": f"{RECOMMENDED} ({att['inference']})",
        "cs_agrees": bool(cs_sign == headline_sign),
        "ri_p_value": float(ri["p_value"]), "ri_inference": ri["inference"],
        "recommended_test": "randomization inference" if method == "twfe_randomization" else (
            "analytic (clustered)" if n_pilots >= settings.few_pilots
            else "analytic (clustered; randomization inference not estimable)"),
        "counterfactual_mean": counterfactual_mean,
        "relative_pct": 100 * head["estimate"] / counterfactual_mean,
        "relative_low_pct": 100 * head["ci_low"] / counterfactual_mean,
        "relative_high_pct": 100 * head["ci_high"] / counterfactual_mean,
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


def finding(row: dict) -> tuple[str, str]:
    """The verdict's word: improved, worsened, mixed or no clear change (zh, en)."""
    if not row.get("estimated", True):
        return "未能估计", "not estimated"
    if row["improved"]:
        return "改善", "improved"
    if row["worsened"]:
        return "恶化", "worsened"
    if row["mixed"]:
        return "证据不一致", "mixed"
    return "无可靠变化", "no clear change"


def verdict(row: dict, settings: Settings) -> tuple[str, str]:
    """Plain-language verdict in Chinese and English, from the headline method alone."""
    zh_reader, en_reader = Reader("zh"), Reader("en")
    ind = _UnitOnly(row["unit"])
    level = f"{100 * (1 - settings.alpha):g}%"
    post_zh, post_en = settings.text(settings.sd_post_periods)
    weight_zh, weight_en = evidence_weight(row["n_pilots"], settings)
    change_zh = "提高" if row["headline_att"] > 0 else "降低"
    change_en = "raised" if row["headline_att"] > 0 else "lowered"
    if row["improved"]:
        finding_zh, finding_en = "指标改善，差异有统计学意义", "a statistically significant improvement"
    elif row["worsened"]:
        finding_zh, finding_en = "指标恶化，差异有统计学意义", "a statistically significant deterioration"
    elif row["mixed"]:
        finding_zh = "证据不一致：检验与置信区间的结论不同，不能确认有变化"
        finding_en = "mixed evidence: the test and the interval disagree, so a change is not established"
    else:
        finding_zh, finding_en = "差异无统计学意义", "no statistically significant change"

    def eff(reader, value):
        return reader.effect(value, ind)

    def span(reader, lo, hi):
        return f"{eff(reader, lo)} {'至' if reader.language == 'zh' else 'to'} {eff(reader, hi)}"

    p = p_value(row["headline_p"], row["headline_p_floor"])
    p = p if p.startswith(("<", "≤")) else f"= {p}"
    n_comparison = row["n_townships"] - row["n_pilots"]
    changed = row["improved"] or row["worsened"]
    # a change that is not significant is an estimate, not a direction
    what_zh = (f"{change_zh}了{eff(zh_reader, abs(row['headline_att']))}" if changed
               else f"的估计变化为{eff(zh_reader, row['headline_att'])}")
    what_en = (f"{change_en} it by {eff(en_reader, abs(row['headline_att']))}" if changed
               else f"changed it by an estimated {eff(en_reader, row['headline_att'])}")
    zh = (f"{row['name_zh']}：与{n_comparison}个非试点乡镇相比，{row['n_pilots']}个试点乡镇的该指标{what_zh}"
          f"（{level}置信区间 {span(zh_reader, row['headline_ci_low'], row['headline_ci_high'])}，p {p}；"
          f"{row['headline_label_zh']}），{finding_zh}。{weight_zh}。")
    en = (f"{row['name_en']}: compared with {n_comparison} non-pilot townships, the {row['n_pilots']} pilots "
          f"{what_en} ({level} CI {span(en_reader, row['headline_ci_low'], row['headline_ci_high'])}, p {p}; "
          f"{row['headline_label_en']}): {finding_en}. Evidence is {weight_en}.")
    if row["headline_method"] != "callaway_santanna":
        cs_zh = f"{eff(zh_reader, row['att'])}，{level}置信区间 {span(zh_reader, row['ci_low'], row['ci_high'])}"
        cs_en = f"{eff(en_reader, row['att'])}, {level} CI {span(en_reader, row['ci_low'], row['ci_high'])}"
        if row["cs_agrees"]:
            zh += f"Callaway–Sant'Anna 估计结论一致（{cs_zh}）。"
            en += f" Callaway–Sant'Anna agrees ({cs_en})."
        else:
            zh += f"注意：Callaway–Sant'Anna 估计结论不同（{cs_zh}），效果随试点批次或时间变化时两者可能不一致。"
            en += (f" Caution: Callaway–Sant'Anna differs ({cs_en}); the two can differ when effects vary across "
                   "cohorts or over time.")
    if row["sdid_agrees"] is None:
        zh += "合成双重差分未能估计（见稳健性检验章节）。"
        en += " Synthetic DiD could not be estimated (see the robustness chapter)."
    else:
        sd_zh = f"{eff(zh_reader, row['sdid_att'])}，{level}置信区间 {span(zh_reader, row['sdid_ci_low'], row['sdid_ci_high'])}"
        sd_en = f"{eff(en_reader, row['sdid_att'])}, {level} CI {span(en_reader, row['sdid_ci_low'], row['sdid_ci_high'])}"
        if row["sdid_agrees"]:
            zh += f"合成双重差分结论一致（{sd_zh}）。"
            en += f" Synthetic DiD agrees ({sd_en})."
        else:
            zh += f"注意：合成双重差分结论不同（{sd_zh}），结论对平行趋势假设敏感。"
            en += f" Caution: synthetic DiD differs ({sd_en}); the conclusion depends on the parallel-trends assumption."
    if (row["improved"] or row["worsened"]) and row["survives_linear_trend"] is not None:
        tr_zh, tr_en = (span(r, row["trend_ci_low"], row["trend_ci_high"]) for r in (zh_reader, en_reader))
        if row["survives_linear_trend"]:
            zh += f"即使试点前的趋势差异按直线延续，试点后前{post_zh}平均效果的置信区间（{tr_zh}）仍不含0。"
            en += (f" Even if the pre-period difference in trends continued in a straight line, the first {post_en}' "
                   f"average effect stays clear of zero ({tr_en}).")
        else:
            zh += f"但若试点前的趋势差异按直线延续，前{post_zh}平均效果的置信区间（{tr_zh}）包含0。"
            en += (f" But if the pre-period difference in trends continued in a straight line, the first {post_en}' "
                   f"average effect could be zero ({tr_en}).")
    if row["pretrend_p"] < settings.alpha:
        zh += f"注意：试点前趋势检验（随机化推断）拒绝平行趋势（p = {p_value(row['pretrend_p'])}），估计可能有偏。"
        en += (f" Caution: the pre-trend test (randomization inference) rejects parallel trends (p = "
               f"{p_value(row['pretrend_p'])}); the estimate may be biased.")
    return zh, en


@dataclass(frozen=True)
class _UnitOnly:
    """What :class:`Reader` needs of an indicator to format its effects: the unit."""

    unit: str
    frequency: str | None = None


def reader_scorecard(card: pd.DataFrame, reader: Reader, settings: Settings) -> pd.DataFrame:
    """The scorecard as readers see it (strings, headers in the report's language): each
    indicator's headline effect, interval and p-value (one method), the effect relative to
    the counterfactual mean, the recent levels against the target, and the verdict word.
    The method of each headline is named in the table's note (:func:`scorecard_note`)."""
    recent_zh, recent_en = settings.text(settings.target_window)
    level = f"{100 * (1 - settings.alpha):g}%"
    adjusted, adjusted_zh, adjusted_en = ADJUSTED[settings.multiple_testing]
    rows = []
    for r in card.to_dict("records"):
        ind = _UnitOnly(r["unit"])
        name = reader.say(r["name_zh"], r["name_en"])
        if r["unit"] not in ("share", "yuan"):  # other units are named beside the indicator
            unit_zh, _, unit_en = str(r.get("unit_label") or r["unit"]).partition(" / ")
            unit_zh = UNIT_WORDS.get(unit_zh, unit_zh)
            if reader.language == "en":
                name += f" ({unit_en or r.get('unit_label') or r['unit']})"
            else:
                base = r["name_zh"].replace("（每千常住人口）", "")  # the unit below names it, with its period
                zh_name = f"{base}（{unit_zh}）"
                name = zh_name if reader.language == "zh" else f"{zh_name} / {r['name_en']}"
        estimated = r.get("estimated", True) is not False and pd.notna(r.get("headline_att"))
        has_target = pd.notna(r.get("target"))
        word_zh, word_en = finding(r if estimated else {**r, "estimated": False})
        recent = (f"{reader.level(r.get('pilot_recent'), ind)} / {reader.level(r.get('comparison_recent'), ind)}")
        attained = reader.attainment(r.get("pilot_meets_target"), True)
        target = ((f"{reader.level(r.get('target'), ind)} ({attained})" if reader.language == "en"
                   else f"{reader.level(r.get('target'), ind)}（{attained}）")
                  if has_target else reader.say("无目标", "No target"))
        rows.append({
            reader.say("指标", "Indicator"): name,
            reader.say("效果", "Effect"): reader.effect(r.get("headline_att"), ind) if estimated else DASH,
            reader.say(f"{level}置信区间", f"{level} CI"): reader.interval(
                r.get("headline_ci_low"), r.get("headline_ci_high"), lambda v, i=ind: reader.effect(v, i))
            if estimated else DASH,
            "p": reader.p(r.get("headline_p"), r.get("headline_p_floor")) if estimated else DASH,
            reader.say(adjusted_zh, adjusted_en): reader.p(r.get(adjusted), r.get(f"{adjusted}_floor")
                                                           if adjusted == "p_romano_wolf" else None)
            if estimated else DASH,
            reader.say("相对变化", "Relative change"): reader.percent(r.get("relative_pct")) if estimated else DASH,
            reader.say(f"近{recent_zh}水平（试点 / 非试点）", f"Last {recent_en} (pilots / non-pilots)"): recent,
            reader.say("目标（试点是否达标）", "Target (pilots)"): target,
            reader.say("试点数", "Pilots"): reader.count(r.get("n_pilots")),
            reader.say("结论", "Verdict"): reader.say(word_zh, word_en),
        })
    return written(pd.DataFrame(rows, dtype=object))


def scorecard_note(card: pd.DataFrame, reader: Reader, settings: Settings) -> str:
    """The scorecard's note: the headline method(s), the p-value rule and the relative change."""
    methods = [m for m in dict.fromkeys(card.get("headline_method", pd.Series(dtype=object)).dropna())]
    used = "；".join(HEADLINE_LABELS[m][0] for m in methods), "; ".join(HEADLINE_LABELS[m][1] for m in methods)
    zh = (f"效果：{used[0]}。试点乡镇少于{settings.few_pilots}个时核心结果采用随机化推断，区间由同一检验反演得到；否则为"
          "Callaway–Sant'Anna 估计及聚类稳健解析推断。百分比指标的效果以百分点（pp）表示；相对变化为效果占试点乡镇反事实均值的"
          "百分比。p ≤ 1/(B+1) 表示B次重抽样所能给出的最小值。" + adjustment_note(card, settings)[0])
    en = (f"Effect: {used[1]}. With fewer than {settings.few_pilots} pilot townships the headline uses randomization "
          "inference, its interval inverting the same test; otherwise Callaway–Sant'Anna with analytic clustered errors. "
          "Effects on shares are in percentage points (pp); the relative change is the effect as a percentage of the "
          "pilots' counterfactual mean. p ≤ 1/(B+1) is the smallest value B resampling draws can give. "
          + adjustment_note(card, settings)[1])
    return reader.say(zh, en, sep="\n")


def adjustment_note(card: pd.DataFrame, settings: Settings) -> tuple[str, str]:
    """What the adjusted p-value column is (zh, en)."""
    n = int(card.get("estimated", pd.Series(True, index=card.index)).fillna(False).astype(bool).sum())
    if settings.multiple_testing == "romano_wolf":
        family = int(card["rw_family"].max()) if "rw_family" in card and len(card) else 0
        methods = set(card.loc[card.get("rw_family", pd.Series(0, index=card.index)) > 0, "headline_method"]) \
            if family else set()
        floor = card["p_romano_wolf_floor"].dropna() if "p_romano_wolf_floor" in card else pd.Series(dtype=float)
        how_zh = ("与核心结果相同的随机化推断置换" if methods == {"twfe_randomization"} else
                  "Callaway–Sant'Anna 影响函数的乘数自助法" if methods == {"callaway_santanna"} else
                  "与核心结果相同的重抽样（随机化推断的置换；Callaway–Sant'Anna 为影响函数的乘数自助法）")
        how_en = ("the same randomization draws as the headline" if methods == {"twfe_randomization"} else
                  "a multiplier bootstrap of the Callaway–Sant'Anna influence functions"
                  if methods == {"callaway_santanna"} else
                  "the headline's resampling (the randomization draws; for Callaway–Sant'Anna a multiplier bootstrap "
                  "of the influence functions)")
        zh = (f"校正 p 值考虑同时检验全部{family}项指标：Romano–Wolf 逐步法，使用{how_zh}，控制族错误率；工作簿中另有 Holm 与 BH "
              "校正。" if family else "未能计算 Romano–Wolf 校正 p 值；工作簿中有 Holm 与 BH 校正。")
        en = (f"The adjusted p accounts for testing all {family} indicators at once: Romano–Wolf step-down on "
              f"{how_en}, controlling the family-wise error; the workbook also holds Holm and BH."
              if family else "No Romano–Wolf p could be computed; the workbook holds Holm and BH.")
        if len(floor):
            f = float(floor.max())
            zh += (f"重抽样 {round(1 / f) - 1:,} 次时，p 值与校正 p 值的最小可能值均为 {p_value(f, f).lstrip('≤ ')}，"
                   "处于此下限的两者相同。")
            en += (f" With {round(1 / f) - 1:,} draws the smallest possible p and adjusted p are both "
                   f"{p_value(f, f).lstrip('≤ ')}, so at that floor the two coincide.")
        if family and family < n:
            zh += f"其余{n - family}项指标的重抽样不同，未纳入。"
            en += f" The other {n - family} indicators' draws differ and are left out."
    elif settings.multiple_testing == "holm":
        zh, en = (f"校正 p 值为 Holm 法（{n}项指标，控制族错误率）。",
                  f"The adjusted p is Holm's over {n} indicators (family-wise error).")
    else:
        zh, en = (f"校正值为 Benjamini–Hochberg q 值（{n}项指标，控制错误发现率）。",
                  f"The adjusted value is the Benjamini–Hochberg q over {n} indicators (false discovery rate).")
    return zh, en


def overall_conclusion(card: pd.DataFrame, settings: Settings) -> tuple[str, str]:
    """总体结论: one paragraph (zh, en) over the scorecard: how many indicators improved,
    worsened or did not change by their headline method, on how many pilot townships the
    evidence rests and how much weight it bears, whether synthetic DiD agrees, and which
    indicators could not be estimated."""
    rows = card.to_dict("records")
    done = [r for r in rows if r.get("estimated", True)]
    failed = [r for r in rows if not r.get("estimated", True)]

    def names(group, lang):
        sep = "、" if lang == "zh" else ", "
        return sep.join(r["name_zh"] if lang == "zh" else r["name_en"] for r in group)

    improved = [r for r in done if r["improved"]]
    worsened = [r for r in done if r["worsened"]]
    unclear = [r for r in done if not (r["improved"] or r["worsened"])]
    zh, en = [], []
    if done:
        pilots = sorted({int(r["n_pilots"]) for r in done})
        comparison = sorted({int(r["n_townships"] - r["n_pilots"]) for r in done})
        p_zh = "、".join(map(str, pilots))
        c_zh = "、".join(map(str, comparison))
        p_en = " or ".join(map(str, pilots))
        c_en = " or ".join(map(str, comparison))
        zh.append(f"本评估比较了{p_zh}个试点乡镇与{c_zh}个非试点乡镇的{len(rows)}项指标。")
        en.append(f"This evaluation compares {p_en} pilot townships with {c_en} non-pilot townships on "
                  f"{len(rows)} indicators.")
        methods = sorted({r["headline_method"] for r in done})
        zh.append("各指标的结论均来自同一方法的估计、置信区间和p值：" + "；".join(HEADLINE_LABELS[m][0] for m in methods) + "。")
        en.append("Each indicator's conclusion rests on one method's estimate, interval and p-value: "
                  + "; ".join(HEADLINE_LABELS[m][1] for m in methods) + ".")
        if improved:
            zh.append(f"{len(improved)}项指标改善，差异有统计学意义（{names(improved, 'zh')}）。")
            en.append(f"{len(improved)} improved significantly ({names(improved, 'en')}).")
        if worsened:
            zh.append(f"{len(worsened)}项指标恶化，差异有统计学意义（{names(worsened, 'zh')}）。")
            en.append(f"{len(worsened)} worsened significantly ({names(worsened, 'en')}).")
        if unclear:
            zh.append(f"{len(unclear)}项指标差异无统计学意义（{names(unclear, 'zh')}）。")
            en.append(f"{len(unclear)} showed no statistically significant change ({names(unclear, 'en')}).")
        column, label_zh, label_en = ADJUSTED[settings.multiple_testing]
        changed = improved + worsened
        judged = [r for r in changed if pd.notna(r.get(column))]
        if judged:
            lost = [r for r in judged if not r[column] <= settings.alpha]
            method_zh, method_en = label_zh.split(" ")[0], label_en.split(" ")[0]
            if not lost:
                zh.append(f"考虑同时检验全部{len(done)}项指标（{method_zh}校正）后，这{len(judged)}项变化仍全部有统计学意义。")
                en.append(f"Adjusted for testing all {len(done)} indicators at once ({method_en}), all {len(judged)} "
                          "changes remain significant.")
            else:
                zh.append(f"考虑同时检验全部{len(done)}项指标（{method_zh}校正）后，{len(judged)}项变化中"
                          f"{len(judged) - len(lost)}项仍有统计学意义，{names(lost, 'zh')}不再有统计学意义。")
                en.append(f"Adjusted for testing all {len(done)} indicators at once ({method_en}), "
                          f"{len(judged) - len(lost)} of the {len(judged)} changes remain significant; "
                          f"{names(lost, 'en')} no longer do.")
        weight_zh, weight_en = evidence_weight(min(pilots), settings)
        zh.append(f"{weight_zh}。")
        en.append(f"Evidence is {weight_en}.")
        checked = [r for r in improved + worsened if r["sdid_agrees"] is not None and not pd.isna(r["sdid_agrees"])]
        if checked:
            agree = [r for r in checked if bool(r["sdid_agrees"])]
            zh.append(f"在有变化的{len(checked)}项指标中，合成双重差分（不依赖平行趋势假设）在{len(agree)}项上结论一致。")
            en.append(f"Of the {len(checked)} indicators that changed, synthetic DiD (which does not rely on parallel "
                      f"trends) agrees on {len(agree)}.")
        sensitive = [r for r in improved + worsened
                     if r.get("cs_agrees") is False or r.get("survives_linear_trend") is False
                     or r.get("sdid_agrees") is False]
        if sensitive:
            zh.append(f"其中{names(sensitive, 'zh')}的结论对估计方法或平行趋势假设较敏感（另一估计方法结论不同，或试点前趋势差异"
                      "按直线延续时置信区间包含0），详见各指标结论。")
            en.append(f"For {names(sensitive, 'en')} the conclusion depends on the method or on parallel trends "
                      "(another estimator differs, or the interval includes zero if the pre-period difference in trends "
                      "continued in a straight line); see their verdicts.")
        rejected = [r for r in done if pd.notna(r["pretrend_p"]) and r["pretrend_p"] < settings.alpha]
        if rejected:
            zh.append(f"试点前趋势检验在{len(rejected)}项指标上拒绝平行趋势（{names(rejected, 'zh')}），这些结论需谨慎解读。")
            en.append(f"The pre-trend test rejects parallel trends for {len(rejected)} ({names(rejected, 'en')}); "
                      "read those conclusions with caution.")
    if failed:
        zh.append(f"{len(failed)}项指标未能估计（{names(failed, 'zh')}），原因见各自章节。")
        en.append(f"{len(failed)} could not be estimated ({names(failed, 'en')}); their chapters say why.")
    return "".join(zh), " ".join(en)


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
    an indicator in ``failures`` (id -> reason) gets :func:`failed_row`; the headline
    p-values adjusted across the indicators (:func:`adjust_across_indicators`)."""
    failures = failures or {}
    rows = [failed_row(ind, failures[ind.id]) if ind.id in failures
            else {**indicator_row(ind, results[ind.id], settings), "estimated": True, "failure": ""}
            for ind in indicators]
    return adjust_across_indicators(pd.DataFrame(rows), results, settings)


# The adjusted p-value the scorecard shows (analysis plan ``multiple_testing``): column, zh, en.
ADJUSTED = {"romano_wolf": ("p_romano_wolf", "Romano–Wolf 校正 p", "Romano–Wolf p"),
            "holm": ("p_holm", "Holm 校正 p", "Holm p"),
            "benjamini_hochberg": ("q_benjamini_hochberg", "BH 校正 q", "BH q")}


def adjust_across_indicators(card: pd.DataFrame, results: dict, settings: Settings) -> pd.DataFrame:
    """The headline p-values adjusted for testing every indicator at once.

    Holm (family-wise error; Holm 1979) and Benjamini-Hochberg (false discovery rate;
    Benjamini and Hochberg 1995) over every estimated indicator's headline p. Romano-Wolf
    (family-wise error, using how the indicators move together; Romano and Wolf 2005,
    Econometrica 73:1237-1282) from the same resampling as the headline:
    * TWFE with randomization inference: the stored randomization draws of the indicators
      whose draws used the same assignments row by row (``assignment_key``: the same
      townships, cohorts, seed and draws; the largest such family);
    * Callaway-Sant'Anna: a multiplier bootstrap of the stored influence functions with one
      weight per township shared by the indicators (the plan's seed and randomization draws).
    ``rw_family`` is the size of a row's family (0: no Romano-Wolf p). Returns a copy with
    ``p_holm``, ``q_benjamini_hochberg``, ``p_romano_wolf`` and ``rw_family``."""
    out = card.copy()
    for column in ("p_holm", "q_benjamini_hochberg", "p_romano_wolf", "p_romano_wolf_floor"):
        out[column] = np.nan
    out["rw_family"] = 0
    if out.empty or "headline_p" not in out:
        return out
    ok = out.get("estimated", pd.Series(True, index=out.index)).fillna(False).astype(bool) \
        & out["headline_p"].notna()
    if not ok.any():
        return out
    out.loc[ok, "p_holm"] = holm(out.loc[ok, "headline_p"].to_numpy(float))
    out.loc[ok, "q_benjamini_hochberg"] = benjamini_hochberg(out.loc[ok, "headline_p"].to_numpy(float))
    stored = {i: results[out.at[i, "indicator"]] for i in out.index[ok]}

    randomized = [i for i in stored if out.at[i, "headline_method"] == "twfe_randomization"
                  and stored[i]["robustness.randomization"].values.get("assignment_key")]
    if randomized:
        keys = pd.Series({i: stored[i]["robustness.randomization"].values["assignment_key"] for i in randomized})
        family = list(keys.index[keys == keys.value_counts().index[0]])
        permuted = pd.DataFrame({out.at[i, "indicator"]: stored[i]["robustness.randomization"].tables["draws"]
                                 ["permuted_estimate"].to_numpy(float) for i in family})
        observed = pd.Series({out.at[i, "indicator"]: float(out.at[i, "headline_att"]) for i in family})
        try:
            table = randomization_romano_wolf(observed, permuted=permuted)
        except EstimationError:  # draws not joint after all: no Romano-Wolf p rather than a wrong one
            table = None
        if table is not None:
            out.loc[family, "p_romano_wolf"] = table["p_romano_wolf"].to_numpy()
            out.loc[family, "rw_family"] = len(family)
            out.loc[family, "p_romano_wolf_floor"] = 1 / len(permuted)  # the observed assignment is a draw

    analytic = [i for i in stored if out.at[i, "headline_method"] == "callaway_santanna"
                and "influence" in stored[i]["did.callaway_santanna"].tables]
    if analytic:
        columns = {}
        for i in analytic:
            inf = stored[i]["did.callaway_santanna"].tables["influence"]
            # each township's contribution to the estimate's deviation: influence / n of this indicator
            columns[i] = pd.Series(inf["influence"].to_numpy(float) / len(inf), index=inf["township_id"].astype(str))
        contributions = pd.DataFrame(columns).fillna(0.0)
        n = len(contributions)
        se = np.sqrt((contributions**2).sum(axis=0)).to_numpy()
        draws = multiplier_draws(contributions.to_numpy() * n, draws=settings.draws_randomization, seed=settings.seed)
        t = np.array([out.at[i, "headline_att"] for i in analytic], float) / se
        out.loc[analytic, "p_romano_wolf"] = romano_wolf(t, draws / se)
        out.loc[analytic, "rw_family"] = len(analytic)
        out.loc[analytic, "p_romano_wolf_floor"] = 1 / (settings.draws_randomization + 1)
    return out
