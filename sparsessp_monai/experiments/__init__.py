"""Experiment runners behind ``scripts/benchmark.py``, ``scripts/benchmark_topologies.py`` and ``scripts/study.py``;
not imported by the bundle."""
