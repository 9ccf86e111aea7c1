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
