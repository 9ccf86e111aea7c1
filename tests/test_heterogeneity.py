"""Heterogeneity by covariate subgroups: the cell-weighted mean of the pilots' own DiDs
in each subgroup with randomization inference, and the relabelling test of the difference.

References: the subgroup estimate equals the pilot DiDs computed with pandas to 1e-12; the
exact randomization p-value and the relabelling p-value equal brute forces over every
assignment; the covariate adjustment equals a per-period least-squares fit written out;
recovery: on panels where the effect is 0.10 in one subgroup and 0.30 in the other each
interval covers its truth; on the selection demo see tests/test_selection_truth.py."""

from __future__ import annotations

from itertools import combinations, permutations

import numpy as np
import pandas as pd
import pytest

from evaluation.errors import EstimationError
from evaluation.inference.heterogeneity import (
    adjust_for_covariates,
    heterogeneity_randomization,
    pilot_did,
    subgroup_labels,
)

KEYS = dict(outcome="y", unit="unit", time="time", cohort="cohort")


def _panel(n_units=24, n_pilots=8, periods=20, start=11, effects=(0.1, 0.3), seed=3, ramp=False):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_units):
        pilot = u < n_pilots
        z = u % 2                       # the characteristic, half of pilots and comparisons each
        distance = 10 + 5 * ((u * 5) % n_units) + rng.normal()
        alpha = rng.normal()
        g = start + (u % 4 == 1) * 2 if pilot else 0   # two cohorts
        for t in range(1, periods + 1):
            on = pilot and t >= g
            effect = effects[z] * (min(1.0, (t - g + 1) / 4) if ramp else 1.0) if on else 0.0
            rows.append({"unit": f"u{u:02d}", "time": t, "cohort": g, "z": float(z), "distance": distance,
                         "y": alpha + 0.05 * t + effect + rng.normal(scale=0.05)})
    return pd.DataFrame(rows)


def _mean_pilot_did(frame, pre):
    did = pilot_did(frame, **KEYS, pre_periods=pre)
    return float(np.average(did["did"], weights=did["weight"]))


def test_labels_binary_and_median_split():
    labels, median = subgroup_labels(pd.Series([1.0, 5.0, 3.0, np.nan, 9.0], name="d"))
    assert median == 4.0 and list(labels.fillna("-")) == ["low", "high", "low", "-", "high"]
    labels, median = subgroup_labels(pd.Series([1.0, 0.0, 1.0], name="m"))
    assert median is None and list(labels) == ["1", "0", "1"]
    with pytest.raises(EstimationError, match="'c' has one value"):
        subgroup_labels(pd.Series([2.0, 2.0], name="c"))


def test_pilot_did_is_the_hand_computed_two_by_two():
    d = _panel()
    got = pilot_did(d, **KEYS, pre_periods=3)
    u = d[d["unit"] == "u00"].set_index("time")["y"]
    comp = d[d["cohort"] == 0].groupby("time")["y"].mean()
    hand = (u.loc[11:20].mean() - u.loc[8:10].mean()) - (comp.loc[11:20].mean() - comp.loc[8:10].mean())
    assert got.at["u00", "did"] == pytest.approx(hand, abs=1e-12) and got.at["u00", "weight"] == 10


def test_subgroup_estimates_equal_the_pilot_dids_and_recover_truth():
    d = _panel(ramp=True)
    res = heterogeneity_randomization(d, **KEYS, by=["z"], pre_periods=5, draws=199, seed=1)
    tidy = res.tidy().set_index("group")
    for g, truth in (("0", 0.1), ("1", 0.3)):
        sub = d[d["z"] == float(g)]
        assert tidy.at[g, "estimate"] == pytest.approx(_mean_pilot_did(sub, 5), abs=1e-12)
        # truth: the mean effect over treated cells (the ramp's first 3 periods are partial)
        cells = sub[(sub["cohort"] > 0) & (sub["time"] >= sub["cohort"])]
        true_att = float(np.mean([truth * min(1.0, (t - c + 1) / 4) for t, c in zip(cells["time"], cells["cohort"],
                                                                                     strict=True)]))
        assert tidy.at[g, "ci_low"] <= true_att <= tidy.at[g, "ci_high"]
    assert res.effects[0].extra["difference"] == pytest.approx(0.2, abs=0.05)


def test_exact_randomization_p_is_the_brute_force():
    d = _panel(n_units=8, n_pilots=2, effects=(0.05, 0.05), seed=4)
    d["z"] = (d["unit"] != "u07").astype(float)   # one comparison township in the other group
    res = heterogeneity_randomization(d, **KEYS, by=["z"], pre_periods=4, draws=99, seed=1)
    e = next(x for x in res.effects if x.group == "1")
    sub = d[d["z"] == 1.0]
    units = sorted(sub["unit"].unique())
    starts = sub.groupby("unit")["cohort"].first()
    observed = _mean_pilot_did(sub, 4)
    stats = []
    pilot_starts = sorted(starts[starts > 0].tolist())
    for chosen in combinations(units, len(pilot_starts)):
        for order in set(permutations(pilot_starts)):
            new = dict.fromkeys(units, 0)
            new.update(dict(zip(chosen, order, strict=True)))
            stats.append(_mean_pilot_did(sub.assign(cohort=sub["unit"].map(new)), 4))
    brute = np.mean(np.abs(stats) >= abs(observed) - 1e-12)
    assert e.p_value == pytest.approx(brute, abs=1e-12) and e.p_floor == pytest.approx(1 / len(stats))


def test_relabelling_p_is_the_brute_force():
    d = _panel(effects=(0.2, 0.22), seed=9)
    res = heterogeneity_randomization(d, **KEYS, by=["distance"], pre_periods=5, draws=99, seed=1)
    labels, _ = subgroup_labels(d.groupby("unit")["distance"].first())
    d = d.assign(_group=d["unit"].map(labels))
    did = pilot_did(d, **KEYS, pre_periods=5, comparison_group="_group")
    high = (labels.reindex(did.index) == "high").to_numpy()
    values, weights = did["did"].to_numpy(), did["weight"].to_numpy(float)

    def split(mask):
        return np.average(values[mask], weights=weights[mask]) - np.average(values[~mask], weights=weights[~mask])
    obs = split(high)
    stats = []
    for chosen in combinations(range(len(did)), int(high.sum())):
        m = np.zeros(len(did), bool)
        m[list(chosen)] = True
        stats.append(split(m))
    brute = np.mean(np.abs(stats) >= abs(obs) - 1e-12)
    assert res.effects[0].extra["p_difference"] == pytest.approx(brute, abs=1e-12)
    assert res.effects[0].extra["difference"] == pytest.approx(obs, abs=1e-12)


def test_covariate_adjustment_is_the_per_period_fit():
    d = _panel()
    got = adjust_for_covariates(d, **KEYS, covariates=["distance"])
    comp = d[d["cohort"] == 0]
    dev = comp["y"] - comp.groupby("unit")["y"].transform("mean")
    slopes = {}
    for t, rows in comp.groupby("time"):
        X = np.column_stack([np.ones(len(rows)), rows["distance"]])
        slopes[t] = np.linalg.lstsq(X, dev[rows.index], rcond=None)[0][1]
    mean = np.mean(list(slopes.values()))
    hand = d["y"] - d["time"].map(slopes).sub(mean) * d["distance"]
    assert np.allclose(got, hand, atol=1e-12)


def test_time_varying_covariate_is_refused_by_name():
    d = _panel()
    d["beds"] = np.arange(len(d), dtype=float)
    with pytest.raises(EstimationError, match="'beds' varies within unit"):
        heterogeneity_randomization(d, **KEYS, by=["beds"], draws=99)
