"""The data layer: reading users' files, periods and the calendar, the validated panel,
its aggregation to a coarser analysis frequency, the analysis frames the estimators take,
and the synthetic demo prefecture."""
