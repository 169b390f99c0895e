"""Paired significance tests, intervals, multiple-comparison correction and the summary table."""
