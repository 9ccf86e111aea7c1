"""Estimators: the fixed-effects engine, difference-in-differences, staggered adoption,
interrupted time series and synthetic designs. Each takes a long DataFrame first and the
names of its columns as keywords, and returns :class:`evaluation.results.Estimates`."""
