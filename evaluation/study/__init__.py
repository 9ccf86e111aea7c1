"""The study layer: the study file (data, mapping, analysis plan) and the indicator catalogue.

Imports only :mod:`evaluation.errors` and :mod:`evaluation.paths`.
"""
