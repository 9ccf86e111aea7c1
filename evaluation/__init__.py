"""Evaluation of township health-integration pilots in Chinese counties.

Load a study with :func:`evaluation.study.load_study`, its validated panel with
:func:`evaluation.panel.load_panel`, and the indicator catalogue with
:func:`evaluation.indicators.load_catalogue`.
"""

__version__ = "0.1.0"
