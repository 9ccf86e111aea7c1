"""The imputation estimator's pre-trend regression (BJS Test 1) from count tables
(``imputation._lead_fit``: the leads as sums of cohort x period cells through
``saturated._cell_ols``, no rows x leads design) against the dense design it replaced.

Reference: ``imputation._dense_lead_fit``, the demeaned rows x leads dummy matrix through
``fe_ols`` (the implementation of commit f270faa), swapped in for the whole estimator.
Tolerance 1e-10 (absolute, on every effect's estimate, standard error, interval and
p-value, the joint covariance of the ATTs and the leads, the leads' fit (coefficients,
covariance, residuals), the plot data and the pre-trend p; relative on the pre-trend F):
on balanced panels both are exact; on unbalanced ones the reference's alternating
projections stop at a change of 1e-12 of the columns' scale.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_saturated_counts import PANELS, make_panel

from evaluation.estimators import imputation
from evaluation.estimators.imputation import imputation_did

TOL = 1e-10
KEYS = dict(outcome="y", unit="unit", time="time", cohort="first_treat")


def dense(monkeypatch, data, **args):
    with monkeypatch.context() as m:
        m.setattr(imputation, "_lead_fit", imputation._dense_lead_fit)
        return imputation_did(data, **args)


def assert_same(new, old):
    assert [e.label for e in new.effects] == [e.label for e in old.effects]
    for a, b in zip(new.effects, old.effects, strict=True):
        for field in ("estimate", "std_error", "ci_low", "ci_high", "p_value"):
            assert getattr(a, field) == pytest.approx(getattr(b, field), abs=TOL), (a.label, field)
        assert (a.n_obs, a.n_units, a.n_treated, a.inference, a.extra) == (b.n_obs, b.n_units, b.n_treated,
                                                                           b.inference, b.extra)
    np.testing.assert_allclose(new.vcov.to_numpy(), old.vcov.to_numpy(), rtol=0, atol=TOL)
    pd.testing.assert_frame_equal(new.plot_data, old.plot_data, check_exact=False, rtol=0, atol=TOL)
    fa, fb = new.model["pretrend"], old.model["pretrend"]
    assert (fa is None) == (fb is None)
    if fa is not None:
        assert fa.names == fb.names and (fa.n_obs, fa.n_clusters, fa.df_k) == (fb.n_obs, fb.n_clusters, fb.df_k)
        for name in ("coef", "vcov", "resid"):
            np.testing.assert_allclose(getattr(fa, name), getattr(fb, name), rtol=0, atol=TOL, err_msg=name)
    da, db = new.diagnostics, old.diagnostics
    assert set(da) == set(db)
    for key, value in db.items():
        if key == "pretrend_F" and np.isfinite(value):
            assert da[key] == pytest.approx(value, rel=TOL)
        elif isinstance(value, float):
            assert da[key] == pytest.approx(value, abs=TOL, nan_ok=True), key
        else:
            assert da[key] == value, key


@pytest.mark.parametrize("panel", list(PANELS))
@pytest.mark.parametrize("cluster", [None, "county"])
@pytest.mark.parametrize("event_window", [(-4, 5), None])
def test_equals_the_dense_design(monkeypatch, panel, cluster, event_window):
    """Balanced, shuffled, gapped, gapped-shuffled-with-missing-outcomes panels and one
    without never-treated units, clustered by unit or county; a window of 4 leads and every
    lead (``None``: the earliest leads become the reference when the rank needs it; without
    never-treated units the periods up to the last cohort's start)."""
    d = make_panel(**PANELS[panel])
    if panel == "no_never_treated":  # periods from the last cohort's start on have no untreated row
        d = d[d["time"] < 13]
    args = dict(**KEYS, cluster=cluster, event_window=event_window)
    new = imputation_did(d, **args)
    assert any(e.event_time is not None and e.event_time < 0 for e in new.effects)
    assert_same(new, dense(monkeypatch, d, **args))


def test_reference_leads_and_clusters_that_split_units(monkeypatch):
    """Every treated unit's untreated rows inside the window (the leads add up to unit
    effects: the earliest is the reference, in both), and clusters that are not unions of
    units (unit x half of the panel)."""
    d = make_panel(gaps=0.05, shuffle=True)
    d["half"] = d["unit"] * 2 + (d["time"] > 10)
    window = (-12, 4)  # cohort 13's earliest untreated row is k = -12
    for cluster in (None, "half"):
        args = dict(**KEYS, cluster=cluster, event_window=window)
        new = imputation_did(d, **args)
        assert_same(new, dense(monkeypatch, d, **args))
    assert new.diagnostics.get("pretrend_reference")
