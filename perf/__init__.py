"""Benchmarks: run on purpose (``make bench``), never as tests; each writes JSON to ``perf/results/``."""
