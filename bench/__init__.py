"""prunedge bench: latency, size, accuracy and memory of exported models in every runtime.

`python -m bench run` sweeps artifacts/export into artifacts/bench/results.{csv,json};
the runners are one table in bench/runtimes.py.
"""
