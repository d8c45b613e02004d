"""Benchmarks: time a Runner (timing), over backends x precisions x batches (suite), report it (report)."""
