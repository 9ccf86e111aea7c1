"""The relative-magnitude breakdown search with fewer linear programs (issue #17): each
step of the bisection over Mbar asks only whether the confidence set excludes 0, which an
accepted grid point and the grid points next to 0 answer, instead of searching both ends
of the set; the same breakdown value with far fewer conditional tests (each a few LPs).

Reference values: this package's full search (``rm_confidence_set``'s ends, the code path
of the breakdown search before this change); answers and breakdown values must agree exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

import evaluation.diagnostics.sensitivity as sens
from evaluation.results import Effect, Estimates, vcov_frame

# an event study with 3 leads and 3 lags (coefficients and a covariance with correlated
# neighbours), effects of about 3 standard errors: a breakdown value near 1
TIMES = [-4, -3, -2, 0, 1, 2]
BETA = np.array([0.010, -0.012, 0.006, 0.060, 0.075, 0.082])
SD = np.array([0.015, 0.014, 0.013, 0.020, 0.022, 0.025])
CORR = 0.3 ** np.abs(np.subtract.outer(np.arange(6), np.arange(6)))
SIGMA = np.outer(SD, SD) * CORR


def _counting(monkeypatch) -> list[int]:
    calls = [0]
    test = sens._conditional_test

    def counted(*args, **kwargs):
        calls[0] += 1
        return test(*args, **kwargs)

    monkeypatch.setattr(sens, "_conditional_test", counted)
    return calls


def test_excludes_zero_answers_as_the_full_set_with_fewer_tests(monkeypatch):
    """Along the Mbar values a bisection visits, ``only_excludes_zero`` gives exactly the
    answer of the full set (not empty, one side of 0), with at most a third of its tests."""
    calls = _counting(monkeypatch)
    values = [0.0, 1.0, 2.0, 1.5, 1.25, 1.125, 1.0625, 1.09375, 0.5, 4.0]
    l_post = np.full(3, 1 / 3)
    full = []
    for v in values:
        r = sens.rm_confidence_set(BETA, SIGMA, 3, 3, v, l_post=l_post)
        full.append(bool(np.isfinite(r["ci_low"]) and (r["ci_low"] > 0 or r["ci_high"] < 0)))
    full_tests, calls[0] = calls[0], 0
    quick = [sens._rm_search(BETA, SIGMA, 3, 3, v, l_post=l_post, only_excludes_zero=True) for v in values]
    quick_tests = calls[0]
    assert quick == full  # exact
    assert True in full and False in full  # both answers occur along the way
    assert quick_tests <= full_tests / 3, (quick_tests, full_tests)


@pytest.mark.parametrize(("scale", "excludes"), [(1.0, True), (-1.0, True), (0.3, False)],
                         ids=["positive", "negative", "weak"])
def test_breakdown_value_is_unchanged(scale, excludes, monkeypatch):
    """``honest_sensitivity`` (relative magnitudes, breakdown searched) gives exactly the
    breakdown value and sets of the search through the full sets (``excludes_zero`` off);
    the effect's sign flipped, and an effect too weak to exclude 0 (breakdown 0)."""
    beta = BETA * scale

    def fit():
        effects = [Effect.from_normal("att_event_time", b, s, alpha=0.05, method="event study", inference="test",
                                      n_obs=1000, term=f"k={k}", event_time=k)
                   for b, s, k in zip(beta, SD, TIMES, strict=True)]
        return Estimates(effects=effects, method="event study", kind="event_study", vcov=vcov_frame(SIGMA, effects))

    quick = sens.honest_sensitivity(fit(), bound="relative_magnitude", values=[0.5, 1.0], l_post=np.full(3, 1 / 3))
    full_breakdown = sens._breakdown
    monkeypatch.setattr(sens, "_breakdown", lambda interval, theta, sd, bound, excludes_zero=None:
                        full_breakdown(interval, theta, sd, bound))
    full = sens.honest_sensitivity(fit(), bound="relative_magnitude", values=[0.5, 1.0], l_post=np.full(3, 1 / 3))
    assert quick.diagnostics["breakdown"] == full.diagnostics["breakdown"]
    assert [(e.ci_low, e.ci_high) for e in quick.effects] == [(e.ci_low, e.ci_high) for e in full.effects]
    assert (0 < quick.diagnostics["breakdown"] < np.inf) if excludes else quick.diagnostics["breakdown"] == 0.0
