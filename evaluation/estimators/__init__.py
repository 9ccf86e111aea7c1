"""Estimators: the fixed-effects engine, difference-in-differences, staggered adoption,
interrupted time series and synthetic designs.

One vocabulary throughout: the data come first (a long DataFrame; for ITS, one series),
everything else is a keyword. Columns are named by ``outcome``, ``unit``, ``time``,
``cohort`` (the first treated period on the ``time`` scale, 0 or missing for never
treated; a binary treatment, where a design needs one, is D = cohort > 0 and time >=
cohort), ``covariates``, ``cluster``, ``weights`` and ``exposure``; ITS takes ``start``.
Resampling counts are ``draws``, the kind of inference ``inference=``, event windows
``event_window=(first, last)``. Every estimator returns
:class:`evaluation.results.Estimates`, whose effects carry ``event_time``, ``cohort``,
``horizon``, ``calendar_time`` and ``unit`` as fields (``term`` is only a label).
"""

# Methods that need every township in every period with a value: they raise
# evaluation.errors.UnbalancedPanelError (attributes .method, .incomplete) on a panel
# with gaps, so callers drop the incomplete townships first and say so. Every other
# estimator, inference and diagnostic uses the rows present (see their docstrings).
NEEDS_BALANCED_PANEL = frozenset({
    "bacon_decomposition",          # evaluation.diagnostics.bacon: Theorem 1 weights need balance
    "synthetic_control",            # evaluation.estimators.synth: weights fit every pre-period of every donor
    "synthetic_control_by_pilot",
    "synthetic_did",
    "synthetic_did_by_pilot",
    "pretrend_randomization",       # evaluation.inference.pretrend: the permutation tables need every cell
    "estimate_noise",               # evaluation.inference.power (EstimationError "not balanced", not typed yet)
})
