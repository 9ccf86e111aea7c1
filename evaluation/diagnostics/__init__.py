"""Diagnostics of a design: the Goodman-Bacon decomposition of TWFE, robustness checks
(placebo in time, leave one out, excluded periods, comparison groups) and parallel-trends
sensitivity (Rambachan and Roth). Each returns :class:`evaluation.results.Estimates`;
``honest_sensitivity`` takes a fitted event study (``fit``) rather than data."""
