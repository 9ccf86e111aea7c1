"""The report layer: the chapters' facade for the notebooks, the results store, the
scorecard and verdicts, figures, and the batch that runs and publishes the chapters."""
