"""Comparing networks by training: each network trained with several seeds under one recipe and
scored on the test split (``scores.py``, journaled, several trainings side by side), and the
statistics that say whether a searched network beats random networks of its latency window
(``significance.py``). The benchmarks that ask whether the search beats chance are built on it."""
