"""The assessment and summary (评估总结): one scorecard over all indicators.

For each indicator: the ATT by Callaway and Sant'Anna (never-treated comparison), its
95% interval and p-value, the randomization-inference p-value of the TWFE coefficient
(the recommended test with fewer than 15 pilot townships: it keeps its size where
clustered errors do not, docs/power.md), the effect relative to the pilots' counterfactual mean, target
attainment in pilot and non-pilot townships over the last 12 periods, and a plain-language
verdict in Chinese and English that states how many pilot townships the evidence rests on.

How much weight the evidence bears (stated in every verdict):
* fewer than 5 pilot townships: weak (cluster-robust inference is unreliable);
* 5 to 14: limited (few clusters; p-values may be too small);
* 15 or more: adequate.
A pre-trend test that rejects at 5% downgrades the verdict's confidence. Synthetic
DiD (Arkhangelsky et al. 2021, which re-weights townships and periods so that parallel
trends is more plausible) is computed beside the headline; the verdict says whether it
reaches the same conclusion, and cautions when it does not. It also says whether the
first year's average effect stays clear of zero when a linear difference in pre-period
trends is allowed to continue (Rambachan and Roth 2023, smoothness bound M = 0, from
the Callaway-Sant'Anna event times over the 12 months before the start).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from evaluation.data.frames import did_frame
from evaluation.diagnostics.sensitivity import honest_sensitivity
from evaluation.estimators.did import event_study
from evaluation.estimators.staggered import callaway_santanna
from evaluation.estimators.synth import synthetic_did
from evaluation.inference.few_clusters import randomization_inference

PRETREND_LEADS = 3  # joint test of leads -3 and -2: with ~10 pilot townships more leads over-reject
RECOMMENDED = "Callaway-Sant'Anna simple ATT, never-treated comparison, analytic clustered errors"
FEW_PILOTS = 15  # below this the randomization-inference p-value decides


def recommended_test(n_pilots: int) -> str:
    return "randomization inference" if n_pilots < FEW_PILOTS else "analytic (clustered)"


def evidence_weight(n_pilots: int) -> tuple[str, str]:
    if n_pilots < 5:
        return ("证据很弱：试点乡镇少于5个，聚类稳健推断不可靠", "weak: fewer than 5 pilot townships, "
                "cluster-robust inference is unreliable")
    if n_pilots < 15:
        return (f"证据有限：仅{n_pilots}个试点乡镇，p值采用随机化推断（试点少时仍然有效），置信区间需谨慎解读",
                f"limited: only {n_pilots} pilot townships; the p-value is from randomization inference, which stays "
                "valid with few pilots, but read the interval with caution")
    return (f"证据较充分：{n_pilots}个试点乡镇", f"adequate: {n_pilots} pilot townships")


def indicator_row(panel, indicator, seed: int | None = None, alpha: float = 0.05, ri_draws: int = 999) -> dict:
    """The scorecard row of one indicator (see the module docstring)."""
    d = did_frame(panel, indicator)
    att = callaway_santanna(d, "value", "township_id", "time", "first_treat", seed=seed, alpha=alpha,
                            indicator=indicator.id).aggregate("simple").get("att")
    ri = randomization_inference(d, "value", "township_id", "time", "first_treat", draws=ri_draws, seed=seed,
                                 alpha=alpha).effects[0]
    treated_post = d[(d["post"] == 1)]
    counterfactual_mean = float(treated_post["value"].mean() - att.estimate)
    pretrend = event_study(d, "value", "township_id", "time", "first_treat", leads=PRETREND_LEADS, lags=24)
    raw = panel.data
    level = indicator.aggregate(raw[raw["time"] > raw["time"].max() - 12], "treated")
    pilot_level, comparison_level = float(level.loc[1]), float(level.loc[0])
    n_pilots = int(d.loc[d["treated"] == 1, "township_id"].nunique())
    p_recommended = ri.p_value if n_pilots < FEW_PILOTS else att.p_value
    test_rejects, interval_excludes = p_recommended <= alpha, bool(att.ci_low > 0 or att.ci_high < 0)
    significant = test_rejects and interval_excludes
    mixed = test_rejects != interval_excludes
    better = att.estimate > 0 if indicator.direction == "increase" else att.estimate < 0
    improved, worsened = bool(significant and better), bool(significant and not better)
    sdid = synthetic_did(d, "value", "township_id", "time", "first_treat", se=sdid_standard_error(d), seed=seed,
                         alpha=alpha, replications=100).get("att")
    sdid_sign = 0 if sdid.ci_low <= 0 <= sdid.ci_high else int(np.sign(sdid.estimate))
    headline_sign = int(np.sign(att.estimate)) if significant else 0
    trend = linear_trend_interval(d, alpha)
    row = {
        "indicator": indicator.id, "name_zh": indicator.name_zh, "name_en": indicator.name_en,
        "unit": indicator.unit, "direction": indicator.direction,
        "att": att.estimate, "ci_low": att.ci_low, "ci_high": att.ci_high, "p_value": att.p_value,
        "std_error": att.std_error, "inference": RECOMMENDED,
        "ri_p_value": ri.p_value, "p_recommended": p_recommended, "recommended_test": recommended_test(n_pilots),
        "counterfactual_mean": counterfactual_mean,
        "relative_pct": 100 * att.estimate / counterfactual_mean,
        "relative_low_pct": 100 * att.ci_low / counterfactual_mean,
        "relative_high_pct": 100 * att.ci_high / counterfactual_mean,
        "pretrend_p": pretrend.diagnostics.get("pretrend_p", np.nan),
        "target": indicator.target.value if indicator.target else np.nan,
        "pilot_last12": pilot_level, "comparison_last12": comparison_level,
        "pilot_meets_target": bool(indicator.meets_target(pilot_level)) if indicator.target else None,
        "comparison_meets_target": bool(indicator.meets_target(comparison_level)) if indicator.target else None,
        "n_pilots": n_pilots, "n_townships": int(d["township_id"].nunique()),
        "improved": improved, "worsened": worsened, "mixed": bool(mixed),
        "sdid_att": sdid.estimate, "sdid_ci_low": sdid.ci_low, "sdid_ci_high": sdid.ci_high,
        "sdid_inference": sdid.inference, "sdid_agrees": bool(sdid_sign == headline_sign),
        "trend_ci_low": trend.ci_low, "trend_ci_high": trend.ci_high,
        "survives_linear_trend": bool(trend.ci_low > 0 or trend.ci_high < 0),
    }
    row["verdict_zh"], row["verdict_en"] = verdict(row, alpha)
    return row


def verdict(row: dict, alpha: float = 0.05) -> tuple[str, str]:
    """Plain-language verdict in Chinese and English."""
    weight_zh, weight_en = evidence_weight(row["n_pilots"])
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
    zh = (f"{row['name_zh']}：与{row['n_townships'] - row['n_pilots']}个非试点乡镇相比，{row['n_pilots']}个试点乡镇的"
          f"该指标{change_zh}了{size}（95%置信区间 {fmt['lo']} 至 {fmt['hi']}，p {p_zh}），"
          f"{finding_zh}。{weight_zh}。")
    en = (f"{row['name_en']}: compared with {row['n_townships'] - row['n_pilots']} non-pilot townships, the pilots "
          f"{change_en} it by {size} (95% CI {fmt['lo']} to {fmt['hi']}, p {p_text}): "
          f"{finding_en}. Evidence: {weight_en}.")
    sd = _fmt(row, ("sdid_att", "sdid_ci_low", "sdid_ci_high"))
    if row["sdid_agrees"]:
        zh += f"合成双重差分结论一致（{sd['att']}，95%置信区间 {sd['lo']} 至 {sd['hi']}）。"
        en += f" Synthetic DiD agrees ({sd['att']}, 95% CI {sd['lo']} to {sd['hi']})."
    else:
        zh += (f"注意：合成双重差分结论不同（{sd['att']}，95%置信区间 {sd['lo']} 至 {sd['hi']}），"
               "结论对平行趋势假设敏感。")
        en += (f" Caution: synthetic DiD differs ({sd['att']}, 95% CI {sd['lo']} to {sd['hi']}); the conclusion "
               "depends on the parallel-trends assumption.")
    tr = _fmt(row, ("att", "trend_ci_low", "trend_ci_high"))
    if row["improved"] or row["worsened"]:
        if row["survives_linear_trend"]:
            zh += f"即使试点前的趋势差异按直线延续，试点后首年平均效果的置信区间（{tr['lo']} 至 {tr['hi']}）仍不含0。"
            en += (f" Even if the pre-period difference in trends continued in a straight line, the first year's "
                   f"average effect stays clear of zero ({tr['lo']} to {tr['hi']}).")
        else:
            zh += f"但若试点前的趋势差异按直线延续，首年平均效果的置信区间（{tr['lo']} 至 {tr['hi']}）包含0。"
            en += (f" But if the pre-period difference in trends continued in a straight line, the first year's "
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


def linear_trend_interval(d: pd.DataFrame, alpha: float = 0.05):
    """Fixed-length interval for the average effect over months 0-11 under a linear
    extrapolation of the pre-period trend difference (Delta^SD(0)), from Callaway and
    Sant'Anna's event times with a universal base period and 12 pre-period months."""
    dyn = callaway_santanna(d, "value", "township_id", "time", "first_treat", base_period="universal",
                            alpha=alpha).aggregate("dynamic", min_e=-13, max_e=11)
    fit = honest_sensitivity(dyn, bound="smoothness", values=[0.0], max_pre=11, max_post=11,
                             l_post=np.full(12, 1 / 12), alpha=alpha, breakdown=False)
    return fit.effects[1]


def sdid_standard_error(d: pd.DataFrame) -> str:
    """Jackknife (weights fixed: cheap) when every cohort has two or more pilots, else placebo."""
    sizes = d.loc[d["first_treat"] > 0].groupby("first_treat")["township_id"].nunique()
    return "jackknife" if len(sizes) and sizes.min() >= 2 else "placebo"


def scorecard(panel, indicators, seed: int | None = None, alpha: float = 0.05, ri_draws: int = 999) -> pd.DataFrame:
    """One row per indicator (see :func:`indicator_row`)."""
    return pd.DataFrame([indicator_row(panel, ind, seed=seed, alpha=alpha, ri_draws=ri_draws) for ind in indicators])
