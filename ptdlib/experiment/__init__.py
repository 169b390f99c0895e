"""Experiment grids: configuration, the resumable runner (serial or on Ray), own-length labels, result tables and merging shards."""
