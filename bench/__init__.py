"""prunedge bench: latency, size, accuracy and memory of exported models in every runtime.

`python -m bench run` sweeps artifacts/export into artifacts/bench/results.{csv,json};
the runtimes are one table in export/runtimes.py.
"""
