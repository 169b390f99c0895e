"""Benchmarks behind ``ptd bench <name>``; each prints a JSON object as its last line."""
