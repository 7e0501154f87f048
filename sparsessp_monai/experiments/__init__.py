"""Experiment runners behind ``scripts/benchmark.py``, ``scripts/benchmark_topologies.py`` and ``scripts/study.py``
(``benchmarking``: timing and report helpers; ``study``: variants, training, evaluation; ``claims``: the paper's
claims and the study report); not imported by the bundle."""
