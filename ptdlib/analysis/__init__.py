"""Analyses behind the notebooks: each module turns library calls into the tables a notebook plots."""
