"""Inference that stays valid with few pilot townships (randomization inference, wild
cluster bootstrap, CR2, placebo in space) and size and power by simulation.

The few-pilot functions take the data with the estimators' keywords (``outcome``,
``unit``, ``time``, ``cohort``; ``draws`` for resampling counts), or a
:func:`evaluation.estimators.did.twfe` fit, whose stored call (``fit.spec``) they reuse so
that the coefficient they test is the one reported."""
