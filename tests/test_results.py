"""The shared result type."""

from __future__ import annotations

import math

import pytest

from evaluation.results import TIDY_COLUMNS, Effect, Estimates, tidy


def test_wald_interval_and_p_value():
    e = Effect.from_normal("att", 0.2, 0.1, method="m", inference="i", n_obs=10)
    assert e.ci_low == pytest.approx(0.2 - 1.959963984540054 * 0.1, abs=1e-12)
    assert e.p_value == pytest.approx(0.04550026389635842, abs=1e-12)
    t = Effect.from_normal("att", 0.2, 0.1, df=5, method="m", inference="i", n_obs=10)
    assert t.p_value == pytest.approx(0.10193948, abs=1e-8) and t.ci_high > e.ci_high


def test_exp_gives_rate_ratio():
    e = Effect.from_normal("level_change", math.log(1.5), 0.1, method="m", inference="i", n_obs=10, scale="log")
    rr = e.exp()
    assert rr.estimate == pytest.approx(1.5) and rr.scale == "rate_ratio"
    assert rr.ci_low == pytest.approx(math.exp(e.ci_low)) and rr.p_value == e.p_value


def test_tidy_mixes_effects_and_fits():
    a = Effect.from_normal("att", 1.0, 0.5, method="m", inference="i", n_obs=10, indicator="x")
    fit = Estimates(effects=[a, Effect.from_normal("slope_change", 0.1, 0.2, method="m", inference="i", n_obs=10,
                                                   term="pilot")], method="m")
    table = tidy([a, fit])
    assert list(table.columns) == TIDY_COLUMNS and len(table) == 3
    assert fit.get("slope_change").term == "pilot"
    with pytest.raises(KeyError, match="no effects 'level_change'"):
        fit.get("level_change")
    with pytest.raises(TypeError):
        tidy([1.0])
    assert tidy([]).columns.tolist() == TIDY_COLUMNS


def test_conf_int_recomputes_wald_intervals_and_refuses_resampled_ones():
    from evaluation.errors import EstimationError, EvaluationError

    a = Effect.from_normal("att", 0.2, 0.1, df=7, method="m", inference="i", n_obs=10)
    at90 = Effect.from_normal("att", 0.2, 0.1, df=7, alpha=0.10, method="m", inference="i", n_obs=10)
    rr = Effect.from_normal("att", math.log(1.5), 0.1, method="m", inference="i", n_obs=10, scale="log").exp()
    rr90 = Effect.from_normal("att", math.log(1.5), 0.1, alpha=0.1, method="m", inference="i", n_obs=10).exp()
    fit = Estimates(effects=[a, rr], method="m")
    assert fit.conf_int().to_numpy().tolist() == [[a.ci_low, a.ci_high], [rr.ci_low, rr.ci_high]]
    ci = fit.conf_int(alpha=0.10)
    assert ci.iloc[0].tolist() == pytest.approx([at90.ci_low, at90.ci_high], abs=1e-12)
    assert ci.iloc[1].tolist() == pytest.approx([rr90.ci_low, rr90.ci_high], abs=1e-12)
    resampled = Estimates(effects=[a], method="randomization", wald=False)
    with pytest.raises(EstimationError, match="resampling"):
        resampled.conf_int(alpha=0.10)
    assert resampled.conf_int(alpha=0.05).shape == (1, 2)
    with pytest.raises(EvaluationError):
        fit.get("nothing")


def test_summary_html_plot_and_structured_lookup():
    import matplotlib

    matplotlib.use("Agg")
    effects = [Effect.from_normal("att_event_time", 0.1 * k, 0.05, method="<b>es</b>", inference="i", n_obs=10,
                                  term=f"k={k}", event_time=k) for k in (-2, 0, 1)]
    fit = Estimates(effects=effects, method="<b>es</b>", kind="event_study")
    assert "<b>es</b>" not in fit._repr_html_() and "&lt;b&gt;es&lt;/b&gt;" in fit._repr_html_()
    text = str(fit.summary())
    assert "event_study" in text and "k=-2" in text
    assert fit.get("att_event_time", event_time=1).estimate == pytest.approx(0.1)
    assert fit.tidy()["event_time"].tolist() == [-2, 0, 1]
    fig = fit.plot()
    assert isinstance(fig, matplotlib.figure.Figure) and fig.axes[0].get_xlabel() == "event time"
