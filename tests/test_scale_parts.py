"""Speed and scale: a demo prefecture of any size, randomization inference in blocks of
assignments, and one BLAS thread in the resampling loops.

Reference values marked "commit 6254924" are the output of the code before these changes
(numpy 2.4, OpenBLAS 0.3.31, this machine), pinned to the last bit: the changes must not
move a single draw.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import tracemalloc

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_info

import evaluation.inference.few_clusters as fc
from evaluation.cli import main
from evaluation.data.demo import (
    MIN_TOWNSHIPS,
    DemoConfig,
    _county_names,
    _township_names,
    generate,
)
from evaluation.inference.multiple import multiplier_draws
from evaluation.study.catalogue import load_catalogue

# ----------------------------------------------------------------------------- demo of any size


@pytest.fixture(scope="module")
def big():
    start = time.perf_counter()
    demo = generate(DemoConfig(townships=2000))
    return demo, time.perf_counter() - start


def test_two_thousand_townships_generate_quickly_with_unique_names(big):
    demo, seconds = big
    panel, pilots = demo.panel, demo.pilots
    assert seconds < 30  # 2.1 s measured on the 2-core development machine
    assert panel["township_id"].nunique() == 2000 and panel["township_name"].nunique() == 2000
    assert panel.groupby("township_id").size().eq(96).all()
    # one name per township, and every id 9 digits (prefecture, county, township codes)
    assert panel.groupby("township_id")["township_name"].nunique().eq(1).all()
    assert panel["township_id"].str.fullmatch(r"36\d{7}").all()
    # county structure scaled: 125 counties of 16 (townships_per_county), each with its own name
    per_county = panel.groupby("county")["township_id"].nunique()
    assert len(per_county) == 125 and per_county.eq(16).all()
    assert panel.groupby("township_id")["county"].nunique().eq(1).all()
    # the same 10 pilots in 3 cohorts, at most one per county (ceil(10 / 125))
    assert len(pilots) == 10 and pilots["pilot_start"].nunique() == 3 and pilots["model"].nunique() == 3
    assert panel[panel["township_id"].isin(pilots["township_id"])].groupby("county")["township_id"].nunique().max() == 1
    assert (panel["visits_in_county"] <= panel["visits_total"]).all()
    assert (panel["referrals_out_county"] <= panel["admissions_total"]).all()


def test_large_demo_truth_is_consistent(big):
    """tests/test_demo.py's truth checks on the 2,000-township prefecture: every indicator,
    the cost per admission exactly 0, the overall ATT the cell-weighted mean of the cohort
    ATTs (an identity, to 1e-12), effects that build up over the first year and order by
    integration model, and one cell per pilot-month after the start."""
    demo, _ = big
    truth = demo.truth
    assert list(truth.columns) == ["indicator", "estimand", "group", "att", "relative", "mean_counterfactual",
                                   "n_cells"]
    overall = truth[truth["estimand"] == "att"].set_index("indicator")
    assert set(overall.index) == set(load_catalogue().ids)
    assert (overall["att"] == 0).sum() == 1 and overall.loc["cost_per_admission", "att"] == 0.0
    assert set(truth["estimand"]) == {"att", "att_cohort", "att_event_time", "att_model", "att_township",
                                      "att_cohort_event_time"}
    starts = pd.PeriodIndex(demo.pilots["pilot_start"], freq="M")
    post_months = int(sum((pd.Period("2023-12", "M") - s).n + 1 for s in starts))
    assert (overall["n_cells"] == post_months).all()
    cohort = truth[truth["estimand"] == "att_cohort"]
    for ind, g in cohort.groupby("indicator"):
        assert np.isclose((g["att"] * g["n_cells"]).sum() / g["n_cells"].sum(), overall.loc[ind, "att"], rtol=1e-12)
    for ind in ("referrals_down_per_1000", "primary_care_visit_share", "admissions_thc_share"):
        ev = truth[(truth["indicator"] == ind) & (truth["estimand"] == "att_event_time")]
        ev = ev.assign(e=ev["group"].astype(int)).set_index("e")["att"]
        assert (np.diff(ev.loc[0:11].to_numpy()) > 0).all(), ind
        by_model = truth[(truth["indicator"] == ind) & (truth["estimand"] == "att_model")].set_index("group")["att"]
        assert by_model["托管"] > by_model["紧密型医共体分院"] > by_model["对口支援"] > 0


def test_townships_option_at_the_default_size_is_the_committed_demo():
    """townships=64 (4 counties of 16) draws the same prefecture as the defaults."""
    a, b = generate(), generate(DemoConfig(townships=64))
    pd.testing.assert_frame_equal(a.panel, b.panel)
    pd.testing.assert_frame_equal(a.truth, b.truth)
    assert "townships" not in a.design["config"] and b.design["config"]["townships"] == 64


def test_names_beyond_the_pool_are_unique_and_follow_the_seed():
    for n in (650, 5_000, 40_000):  # past the 649 two-character and the 38,291 three-character names
        names = _township_names(np.random.default_rng(3), n)
        assert len(set(names)) == n and all(name[-1] in "镇乡" for name in names)
    assert (_township_names(np.random.default_rng(3), 700) == _township_names(np.random.default_rng(3), 700)).all()
    assert (_township_names(np.random.default_rng(3), 700) != _township_names(np.random.default_rng(4), 700)).any()
    counties = _county_names(4000)
    assert len(set(counties)) == 4000 and counties[:6] == ["东林县", "南溪县", "西岭县", "北原县", "中坪县", "新河县"]


def test_demo_data_command_takes_townships(tmp_path, capsys):
    assert main(["demo-data", "--out", str(tmp_path), "--townships", "100"]) == 0
    panel = pd.read_csv(tmp_path / "panel.csv", dtype={"乡镇编码": str})
    assert panel["乡镇编码"].nunique() == 100 and panel["乡镇名称"].nunique() == 100
    sizes = panel.groupby("县区")["乡镇编码"].nunique()
    assert sorted(sizes) == [14] * 5 + [15] * 2  # ceil(100 / 16) = 7 counties of near-equal size
    truth = pd.read_csv(tmp_path / "truth.csv")
    assert truth.loc[(truth["estimand"] == "att") & (truth["indicator"] == "cost_per_admission"), "att"].item() == 0
    assert main(["demo-data", "--out", str(tmp_path / "small"), "--townships", str(MIN_TOWNSHIPS - 1)]) != 0
    assert f"at least {MIN_TOWNSHIPS} townships" in capsys.readouterr().err


# ----------------------------------------------------------------------------- randomization inference in blocks


def _panel(n_units=60, n_t=12, seed=3, drop=0):
    rng = np.random.default_rng(seed)
    u = np.repeat(np.arange(n_units), n_t)
    t = np.tile(np.arange(1, n_t + 1), n_units)
    cohort_of = np.zeros(n_units)
    cohort_of[:4], cohort_of[4:7], cohort_of[7:9] = 5, 8, 10
    g = cohort_of[u]
    y = rng.normal(size=n_units)[u] + 0.1 * t + rng.normal(size=len(u)) + 0.5 * ((g > 0) & (t >= g))
    d = pd.DataFrame({"unit": u, "time": t, "g": g, "y": y, "county": u % 5})
    if drop:
        d = d.drop(index=rng.choice(len(d), drop, replace=False)).reset_index(drop=True)
    return d


def _digest(values) -> str:
    return hashlib.sha256(np.ascontiguousarray(values, dtype=float).tobytes()).hexdigest()[:16]


KEYS = {"outcome": "y", "unit": "unit", "time": "time", "cohort": "g"}
# commit 6254924 (all assignments gathered at once): digest of the 1,000 permuted
# coefficients, estimate, p-value, interval
RI_BEFORE = {
    0: ("0c6668d714196cd3", 0.3769688977700221, 0.053, -0.004442880159012702, 0.7675366790240048),
    25: ("d3027a814f8e3280", 0.4163487596544893, 0.037, 0.01899620324078874, 0.818158904541153),
}


@pytest.mark.parametrize("drop", [0, 25])  # balanced panel; 25 rows dropped (the _Projection path)
def test_randomization_inference_in_blocks_gives_the_same_numbers(drop, monkeypatch):
    fit = fc.randomization_inference(_panel(drop=drop), **KEYS, draws=999, seed=11)
    e = fit.effects[0]
    assert fit.diagnostics["panel"] == ("balanced" if drop == 0 else "unbalanced")
    assert (_digest(fit.plot_data["permuted_estimate"]), e.estimate, e.p_value, e.ci_low, e.ci_high) == RI_BEFORE[drop]
    assert fit.diagnostics["assignments"] == 1000 and e.p_floor == 1 / 1000
    # blocks of 7 assignments (balanced) or 64 (unbalanced): the same draws, bit for bit
    monkeypatch.setattr(fc, "_CHUNK_ELEMENTS", 60 * 7)
    monkeypatch.setattr(fc, "_PROJECTION_CHUNK", 64)
    small = fc.randomization_inference(_panel(drop=drop), **KEYS, draws=999, seed=11)
    np.testing.assert_array_equal(small.plot_data["permuted_estimate"], fit.plot_data["permuted_estimate"])
    assert small.effects[0].ci_low == e.ci_low and small.effects[0].ci_high == e.ci_high


def test_randomization_inference_strata_and_exact_in_blocks(monkeypatch):
    # commit 6254924: within counties, 499 draws, seed 11
    fit = fc.randomization_inference(_panel(), **KEYS, draws=499, seed=11, strata="county")
    assert _digest(fit.plot_data["permuted_estimate"]) == "61f7e4c27cd5d54b" and fit.effects[0].p_value == 0.06
    # exact enumeration (8 units, 2 pilots: 28 assignments) in blocks of 3
    tiny = _panel(n_units=8, n_t=6).assign(g=lambda d: np.where(d["unit"] < 2, 4.0, 0.0))
    whole = fc.randomization_inference(tiny, **KEYS, seed=1)
    monkeypatch.setattr(fc, "_CHUNK_ELEMENTS", 8 * 3)
    blocks = fc.randomization_inference(tiny, **KEYS, seed=1)
    assert whole.diagnostics["exact"] and whole.diagnostics["assignments"] == 28
    np.testing.assert_array_equal(blocks.plot_data["permuted_estimate"], whole.plot_data["permuted_estimate"])


def test_randomization_inference_memory_is_per_block():
    """2,000 townships, 5,999 draws: gathering every assignment at once (commit 6254924)
    peaked at 204 MB of traced memory (several 6,000 x 2,000 arrays of 96 MB; 340 MB with
    9,999 draws); in blocks of about 2,000 assignments the peak is 73 MB, whatever the
    number of draws."""
    rng = np.random.default_rng(0)
    n, T = 2000, 12
    u, t = np.repeat(np.arange(n), T), np.tile(np.arange(1, T + 1), n)
    g = np.where(np.arange(n) < 20, 7.0, 0.0)[u]
    d = pd.DataFrame({"unit": u, "time": t, "g": g, "y": rng.normal(size=n * T)})
    tracemalloc.start()
    try:
        fit = fc.randomization_inference(d, **KEYS, draws=5999, seed=2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert fit.diagnostics["assignments"] == 6000
    assert peak < 100e6, f"peak {peak / 1e6:.0f} MB"


# ----------------------------------------------------------------------------- one BLAS thread


def test_single_blas_thread_limits_and_restores():
    def blas_threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    with fc._single_blas_thread():
        assert blas_threads() and set(blas_threads()) == {1}
    assert blas_threads() == before


def test_resampling_runs_under_the_limit_with_the_same_numbers(monkeypatch):
    """The wild bootstrap (random Webb draws, clustered by township), unbalanced
    randomization inference and multiplier draws each enter _single_blas_thread. The wild
    bootstrap matches commit 6254924 exactly; without the limit every result agrees to
    1e-13 (multiplier draws differ in the last bit: a product's summation order depends on
    the thread count)."""
    entered = []

    @contextlib.contextmanager
    def recording():
        entered.append(1)
        with fc.threadpool_limits(limits=1, user_api="blas"):
            yield

    def run_all():
        wb = fc.wild_cluster_bootstrap(_panel(drop=25), **KEYS, draws=999, seed=5, weights_type="webb")
        ri = fc.randomization_inference(_panel(drop=25), **KEYS, draws=199, seed=11)
        mb = multiplier_draws(np.random.default_rng(2).normal(size=(300, 4)), draws=999, seed=4)
        return wb, ri, mb

    monkeypatch.setattr(fc, "_single_blas_thread", recording)
    wb, ri, mb = run_all()
    assert len(entered) == 4  # wild bootstrap: Z'Z and the draws; randomization inference; multiplier draws
    e = wb.effects[0]
    assert (_digest(wb.plot_data["t_star"]), e.p_value, e.ci_low, e.ci_high) == (
        "b7d55ff51871b369", 0.024024024024024024, 0.06618626771036398, 0.7895639023894987)
    monkeypatch.setattr(fc, "_single_blas_thread", contextlib.nullcontext)
    wb2, ri2, mb2 = run_all()
    np.testing.assert_allclose(wb2.plot_data["t_star"], wb.plot_data["t_star"], rtol=1e-13)
    np.testing.assert_allclose(ri2.plot_data["permuted_estimate"], ri.plot_data["permuted_estimate"], rtol=1e-13)
    np.testing.assert_allclose(mb2, mb, rtol=1e-13, atol=1e-16)
