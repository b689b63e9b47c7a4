"""What still needs measuring, and the child jobs that measure it.

One child per runtime measures a batch of files; a runtime whose threads are fixed at start-up
(`Runtime.threads_in_process` False) gets one child per thread count, and only the first of
those measures memory and accuracy. Measurements already in the cache are not asked for again,
and accuracy the export measured in the same runtime on the same test set comes from the manifest
(thread count does not change it).
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from bench.children import pending
from export.runtimes import RUNTIMES, runs


def reuse_manifest_accuracy(artifacts, idents: dict, store, data_sha256: str | None) -> int:
    """Put the export's accuracy of each file (in the runtime it shipped with) into the store when
    it was measured on this data set (`data_sha256`, as the manifest records it), on this very
    file; returns how many."""
    n = 0
    for a in artifacts:
        entry, sha = a.manifest or {}, idents[a.rel].sha256
        rt, acc = entry.get("runtime"), entry.get("accuracy")
        if (sha is None or acc is None or rt not in RUNTIMES or entry.get("sha256") != sha
                or data_sha256 is None or entry.get("data_sha256") != data_sha256):
            continue
        key = store.accuracy_key(sha, rt)
        if store.get(key) is None:
            store.put(key, {"accuracy": float(acc), "source": "manifest"}, a.path)
            n += 1
    return n


def needs(a, sha: str, runtime: str, config, store) -> dict:
    """The job item for artifact `a` in `runtime`: what the store does not hold yet."""
    latency = [[t, b] for t in config.threads for b in config.batches
               if store.get(store.latency_key(sha, runtime, t, b)) is None]
    return {"key": a.rel, "path": str(Path(a.path).resolve()),
            "memory": store.get(store.memory_key(sha, runtime, config.threads[0])) is None,
            "accuracy": store.get(store.accuracy_key(sha, runtime)) is None, "latency": latency}


def plan(artifacts, idents: dict, config, store, test_set: list[str]) -> list[dict]:
    """Jobs for every runtime of `config.runtimes` that has something left to measure
    (`test_set`: x.npy and y.npy paths, bench.child.write_test_set)."""
    jobs = []
    for name in config.runtimes:
        row = RUNTIMES[name]
        items = [needs(a, idents[a.rel].sha256, name, config, store) for a in artifacts
                 if runs(row, fmt=a.format, method=a.method) and idents[a.rel].sha256 is not None]
        items = [it for it in items if pending(it)]
        if row.threads_in_process:
            jobs += _jobs(name, config.threads, items, config, test_set)
            continue
        first = config.threads[0]
        for t in config.threads:
            share = [{**it, "memory": it["memory"] and t == first, "accuracy": it["accuracy"] and t == first,
                      "latency": [tb for tb in it["latency"] if tb[0] == t]} for it in items]
            jobs += _jobs(name, [t], [it for it in share if pending(it)], config, test_set)
    return jobs


def _jobs(runtime: str, threads, items: list[dict], config, test_set: list[str]) -> list[dict]:
    """Children of at most `config.files_per_child` files (bounds what a runtime leaks per load)."""
    size = max(1, config.files_per_child)
    return [{"runtime": runtime, "threads": list(threads), "batches": list(config.batches),
             "latency": asdict(config.latency), "test_set": list(test_set), "items": items[i:i + size]}
            for i in range(0, len(items), size)]
