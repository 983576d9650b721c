"""Benchmarks: where items come from (generated, a local file, or a dataset adapter)."""
