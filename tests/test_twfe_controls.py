"""TWFE and the event study with time-varying controls (``covariates=[...]``).

Peer and tolerances (those of the existing TWFE tests, tests/test_did.py): pyfixest 0.60.0
``feols("value ~ post + log_population + services | township_id + time")`` (and the
event study ``i(rel, ref=-1) + controls``), CR1 by township or by county: coefficients to
1e-8, standard errors to 1e-6 (observed agreement ~1e-15); the controls' coefficients
likewise; the same with population weights (WLS). On the demo panel with gaps (rows removed) to 1e-8 in both, as
tests/test_unbalanced.py.

Collinear controls: a control that does not vary within any township (time-invariant),
or only by period, is refused with an EstimationError naming it (our choice; fixest drops
it with a warning).
"""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.data.frames import did_frame
from evaluation.errors import EstimationError
from evaluation.estimators.did import event_study, twfe
from evaluation.inference.few_clusters import randomization_inference, wild_cluster_bootstrap

pf = pytest.importorskip("pyfixest")
COLUMNS = dict(outcome="value", unit="township_id", time="time", cohort="first_treat")
CONTROLS = ["log_population", "services"]


@pytest.fixture(scope="module")
def panel(demo):
    """The demo's primary-care share with two time-varying controls: log population and
    the services-offered indicator of the same township and month."""
    data, indicators, _ = demo
    d = did_frame(data, indicators["primary_care_visit_share"])
    services = did_frame(data, indicators["services_offered"])
    assert (services["township_id"].to_numpy() == d["township_id"].to_numpy()).all()
    assert (services["time"].to_numpy() == d["time"].to_numpy()).all()
    d["services"] = services["value"].to_numpy()
    d["log_population"] = np.log(d["population"])
    return d


def _check_pf(effects, model, names, tol_coef=1e-8, tol_se=1e-6):
    coef, se = model.coef(), model.se()
    for effect, name in zip(effects, names, strict=True):
        assert effect.estimate == pytest.approx(coef[name], abs=tol_coef), name
        assert effect.std_error == pytest.approx(se[name], abs=tol_se), name


def test_twfe_with_controls_matches_pyfixest(panel):
    formula = "value ~ post + log_population + services | township_id + time"
    for kwargs, vcov in (({}, {"CRV1": "township_id"}), ({"cluster": "county"}, {"CRV1": "county"})):
        ours = twfe(panel, **COLUMNS, covariates=CONTROLS, **kwargs)
        model = pf.feols(formula, panel, vcov=vcov)
        assert [e.estimand for e in ours.effects] == ["att"]
        _check_pf(ours.effects, model, ["post"])
        controls = ours.diagnostics["controls"].set_index("term")
        np.testing.assert_allclose(controls["estimate"], model.coef()[CONTROLS], atol=1e-8)
        np.testing.assert_allclose(controls["std_error"], model.se()[CONTROLS], atol=1e-6)
    weighted = twfe(panel, **COLUMNS, covariates=CONTROLS, weights="population")
    _check_pf(weighted.effects, pf.feols(formula, panel, vcov={"CRV1": "township_id"}, weights="population"), ["post"])
    assert ours.spec["covariates"] == tuple(CONTROLS)
    # the controls matter here: the estimate moves away from the plain TWFE one
    plain = twfe(panel, **COLUMNS).effects[0].estimate
    assert abs(ours.effects[0].estimate - plain) > 1e-6


def test_twfe_with_controls_on_a_panel_with_gaps(panel):
    rng = np.random.default_rng(3)
    gaps = panel.drop(index=rng.choice(panel.index, size=300, replace=False)).reset_index(drop=True)
    ours = twfe(gaps, **COLUMNS, covariates=CONTROLS)
    model = pf.feols("value ~ post + log_population + services | township_id + time", gaps,
                     vcov={"CRV1": "township_id"})
    _check_pf(ours.effects, model, ["post"], tol_se=1e-8)
    assert ours.diagnostics["observations"] == len(gaps)


def test_event_study_with_controls_matches_pyfixest(panel):
    ours = event_study(panel, **COLUMNS, event_window=(-6, 12), covariates=CONTROLS)
    d = panel.assign(rel=np.where(panel["first_treat"] > 0, (panel["time"] - panel["first_treat"]).clip(-6, 12), -1))
    model = pf.feols("value ~ i(rel, ref=-1) + log_population + services | township_id + time", d,
                     vcov={"CRV1": "township_id"})
    names = [n for n in model.coef().index if n.startswith("rel::")]
    assert len(names) == len(ours.effects) == 18
    assert all(e.estimand == "att_event_time" for e in ours.effects)
    _check_pf(ours.effects, model, names)
    assert ours.vcov.shape == (18, 18)
    controls = ours.diagnostics["controls"].set_index("term")
    np.testing.assert_allclose(controls["estimate"], model.coef()[CONTROLS], atol=1e-8)
    weighted = event_study(panel, **COLUMNS, event_window=(-6, 12), covariates=CONTROLS, weights="population")
    _check_pf(weighted.effects, pf.feols("value ~ i(rel, ref=-1) + log_population + services | township_id + time", d,
                                         vcov={"CRV1": "township_id"}, weights="population"), names)
    leads = [i for i, n in enumerate(names) if "-" in n.split("::")[1]]
    idx = [list(model.coef().index).index(names[i]) for i in leads]
    b, V = model.coef().to_numpy()[idx], model._vcov[np.ix_(idx, idx)]
    assert ours.diagnostics["pretrend_F"] == pytest.approx(b @ np.linalg.solve(V, b) / len(leads), rel=1e-6)


def test_few_pilot_inference_takes_a_fit_with_controls(panel):
    """Given a fit with controls, the wild cluster bootstrap and randomization inference
    test that fit's coefficient (controls included: tests/test_inference_controls.py checks
    them against refits and wildboottest); a weighted fit is still refused, naming the weights."""
    fit = twfe(panel, **COLUMNS, covariates=CONTROLS)
    for result in (wild_cluster_bootstrap(fit, draws=99, seed=1, max_enumerate=0),
                   randomization_inference(fit, draws=99, seed=1)):
        assert result.effects[0].estimate == pytest.approx(fit.effects[0].estimate, abs=1e-10)
        assert result.diagnostics["controls"] == CONTROLS
    weighted = twfe(panel, **COLUMNS, covariates=CONTROLS, weights="population")
    with pytest.raises(EstimationError, match=r"unweighted TWFE coefficient; this fit has weights='population'"):
        wild_cluster_bootstrap(weighted, draws=99, seed=1)
    plain = wild_cluster_bootstrap(twfe(panel, **COLUMNS), draws=99, seed=1, max_enumerate=0)
    assert plain.effects[0].estimate == pytest.approx(twfe(panel, **COLUMNS).effects[0].estimate, abs=1e-12)

# ---------------------------------------------------------------- bad controls

@pytest.mark.parametrize("estimator", [twfe, event_study])
def test_collinear_and_bad_controls_are_named(panel, estimator):
    beds = panel["township_id"].astype(str).str[-3:].astype(float)  # a township characteristic
    with pytest.raises(EstimationError, match=r"covariate 'beds' is time-invariant.*'township_id' fixed effects"):
        estimator(panel.assign(beds=beds), **COLUMNS, covariates=["services", "beds"])
    with pytest.raises(EstimationError, match=r"covariate 'trend' is constant within each 'time'"):
        estimator(panel.assign(trend=panel["time"] * 0.5), **COLUMNS, covariates=["trend"])
    d = panel.copy()
    d.loc[d.index[100], "services"] = np.nan
    township = d.loc[d.index[100], "township_id"]
    with pytest.raises(EstimationError, match=rf"covariate 'services' is missing for township_id '{township}'"):
        estimator(d, **COLUMNS, covariates=["services"])
    with pytest.raises(EstimationError, match=r"covariate 'one' is constant"):
        estimator(panel.assign(one=1.0), **COLUMNS, covariates=["one"])
    with pytest.raises(EstimationError, match=r"not in the data.*'nothing'"):
        estimator(panel, **COLUMNS, covariates=["nothing"])
