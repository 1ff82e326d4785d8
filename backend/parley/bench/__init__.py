"""Benchmarks and the test speech they use."""
