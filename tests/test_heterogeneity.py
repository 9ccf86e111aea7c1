"""Heterogeneity by covariate subgroups: split-sample effects with randomization inference,
and the relabelling test of their difference.

References: the subgroup effects equal `randomization_inference` (itself checked against
refits and peers in tests/test_inference.py) on each subgroup's townships to 1e-12; the
pilot DiDs equal a hand computation to 1e-12; the exact relabelling p-value equals a brute
force over every relabelling; recovery: on a panel where the effect is 0.10 in one
subgroup and 0.30 in the other, each subgroup interval covers its truth and the difference
is detected."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
import pytest

from evaluation.errors import EstimationError
from evaluation.inference.few_clusters import randomization_inference
from evaluation.inference.heterogeneity import heterogeneity_randomization, pilot_did, subgroup_labels


def _panel(n_units=24, n_pilots=8, periods=20, start=11, effects=(0.1, 0.3), seed=3):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_units):
        pilot = u < n_pilots
        z = u % 2                       # the characteristic, half of pilots and comparisons each
        distance = 10 + 5 * ((u * 5) % n_units) + rng.normal()
        alpha = rng.normal()
        for t in range(1, periods + 1):
            effect = effects[z] if (pilot and t >= start) else 0.0
            rows.append({"unit": f"u{u:02d}", "time": t, "cohort": start if pilot else 0, "z": float(z),
                         "distance": distance, "y": alpha + 0.05 * t + effect + rng.normal(scale=0.05)})
    return pd.DataFrame(rows)


def test_labels_binary_and_median_split():
    labels, median = subgroup_labels(pd.Series([1.0, 5.0, 3.0, np.nan, 9.0], name="d"))
    assert median == 4.0 and list(labels.fillna("-")) == ["low", "high", "low", "-", "high"]
    labels, median = subgroup_labels(pd.Series([1.0, 0.0, 1.0], name="m"))
    assert median is None and list(labels) == ["1", "0", "1"]
    with pytest.raises(EstimationError, match="'c' has one value"):
        subgroup_labels(pd.Series([2.0, 2.0], name="c"))


def test_pilot_did_is_the_hand_computed_two_by_two():
    d = _panel()
    got = pilot_did(d, outcome="y", unit="unit", time="time", cohort="cohort", window=(-3, 2))
    u = d[d["unit"] == "u00"].set_index("time")["y"]
    comp = d[d["cohort"] == 0].groupby("time")["y"].mean()
    hand = (u.loc[11:13].mean() - u.loc[8:10].mean()) - (comp.loc[11:13].mean() - comp.loc[8:10].mean())
    assert got["u00"] == pytest.approx(hand, abs=1e-12)


def test_subgroup_effects_equal_randomization_inference_on_the_subsample_and_recover_truth():
    d = _panel()
    res = heterogeneity_randomization(d, outcome="y", unit="unit", time="time", cohort="cohort", by=["z"],
                                      event_window=(-5, 5), draws=199, seed=1)
    tidy = res.tidy().set_index("group")
    for g, truth in (("0", 0.1), ("1", 0.3)):
        sub = d[d["z"] == float(g)]
        ri = randomization_inference(sub, outcome="y", unit="unit", time="time", cohort="cohort", draws=199, seed=1)
        assert tidy.at[g, "estimate"] == pytest.approx(ri.effects[0].estimate, abs=1e-12)
        assert tidy.at[g, "ci_low"] <= truth <= tidy.at[g, "ci_high"]
    extra = res.effects[0].extra
    assert extra["difference"] == pytest.approx(0.2, abs=0.03)
    # 4 pilots in each group: C(8, 4) = 70 relabellings, the observed one the most extreme pair
    assert extra["n_relabellings"] == 70 and extra["p_difference"] == pytest.approx(2 / 70, abs=1e-12)


def test_exact_relabelling_p_is_the_brute_force():
    d = _panel(effects=(0.2, 0.22), seed=9)
    res = heterogeneity_randomization(d, outcome="y", unit="unit", time="time", cohort="cohort", by=["distance"],
                                      event_window=(-5, 5), draws=99, seed=1)
    labels, _ = subgroup_labels(d.groupby("unit")["distance"].first())
    d = d.assign(_group=d["unit"].map(labels))
    did = pilot_did(d, outcome="y", unit="unit", time="time", cohort="cohort", window=(-5, 5),
                    comparison_group="_group")
    high = (labels.reindex(did.index) == "high").to_numpy()
    obs = did[high].mean() - did[~high].mean()
    stats = []
    for chosen in combinations(range(len(did)), int(high.sum())):
        m = np.zeros(len(did), bool)
        m[list(chosen)] = True
        stats.append(did[m].mean() - did[~m].mean())
    brute = np.mean(np.abs(stats) >= abs(obs) - 1e-12)
    assert res.effects[0].extra["p_difference"] == pytest.approx(brute, abs=1e-12)
    assert res.effects[0].extra["difference"] == pytest.approx(obs, abs=1e-12)


def test_time_varying_covariate_is_refused_by_name():
    d = _panel()
    d["beds"] = np.arange(len(d), dtype=float)
    with pytest.raises(EstimationError, match="'beds' varies within unit"):
        heterogeneity_randomization(d, outcome="y", unit="unit", time="time", cohort="cohort", by=["beds"], draws=99)
