"""The data layer: reading users' files, periods and the calendar, the validated panel,
the analysis frames the estimators take, and the synthetic demo prefecture."""
