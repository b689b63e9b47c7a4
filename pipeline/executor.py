"""Where stage tasks run: this process, a pool of local processes, or a Dask cluster.

Every stage task is a top-level function `fn(item, shared) -> result` whose inputs and outputs are
bytes and plain data, never paths: a worker needs no shared file system, and the driver (the
process that owns the artifacts root) writes every file atomically and owns the manifest. Large
read-only inputs (evaluation images, the training set) go in `shared`, sent once per worker.
The same task gives the same bytes wherever it runs, which tests/test_cluster.py checks on a
LocalCluster. Dask's own transport pickles tasks: run workers only on machines you trust.
"""
from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterable, Iterator

from pipeline.errors import fail

CLUSTER_ENV = "PRUNEDGE_CLUSTER"  # a Dask scheduler address, e.g. tcp://scheduler:8786
_SHARED: dict = {}  # the current worker's shared inputs (pool initializer)


def _init_worker(shared: dict) -> None:
    _SHARED.clear()
    _SHARED.update(shared)


def _call(fn: Callable, item):
    return fn(item, _SHARED)


class InProcess:
    """Run tasks here, one after another (jobs=1, tests, debugging)."""
    workers = 1

    def map(self, fn: Callable, items: Iterable, *, shared: dict) -> Iterator:
        for item in items:
            yield fn(item, shared)

    def close(self) -> None:
        pass


class LocalPool:
    """`jobs` spawned processes (not forked: the parent may hold TF/torch thread pools), one
    BLAS/OpenMP thread each so N workers use N cores; results in completion order."""

    def __init__(self, jobs: int):
        self.workers = jobs

    def map(self, fn: Callable, items: Iterable, *, shared: dict) -> Iterator:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        with single_threaded_children(), ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=(shared,)) as pool:
            futures = [pool.submit(_call, fn, item) for item in items]
            for future in as_completed(futures):
                yield future.result()

    def close(self) -> None:
        pass


class DaskCluster:
    """A dask.distributed Client; `shared` is scattered to every worker once."""

    def __init__(self, address_or_client):
        from distributed import Client
        self.client = address_or_client if isinstance(address_or_client, Client) else _connect(address_or_client)
        self.workers = max(1, len(self.client.scheduler_info().get("workers", {})))

    def map(self, fn: Callable, items: Iterable, *, shared: dict) -> Iterator:
        from distributed import as_completed
        shared_future = self.client.scatter(shared, broadcast=True) if shared else {}
        futures = [self.client.submit(fn, item, shared_future, pure=False) for item in items]
        for future in as_completed(futures):
            yield future.result()

    def close(self) -> None:
        self.client.close()


def _connect(address: str):
    from distributed import Client
    try:
        return Client(address, timeout="20s")
    except (OSError, TimeoutError, ValueError) as e:
        raise fail("--cluster", f"cannot reach the Dask scheduler at {address!r} ({' '.join(str(e).split())[:160]})") \
            from None


def choose(jobs: int, cluster: str | None = None):
    """The executor for `--jobs` / `--cluster` (or $PRUNEDGE_CLUSTER)."""
    address = cluster or os.environ.get(CLUSTER_ENV)
    if address:
        return DaskCluster(address)
    return InProcess() if jobs == 1 else LocalPool(jobs)


THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
              "TF_NUM_INTEROP_THREADS")  # read by BLAS, torch (via OMP) and TensorFlow when they start


def limit_threads(threads: int | None) -> None:
    """In a worker that shares the machine: every library `threads` threads (None: leave as is).
    Libraries already started keep their pools, except torch, which is told directly."""
    if not threads:
        return
    os.environ.update({name: str(threads) for name in THREAD_ENV})
    import sys
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


@contextlib.contextmanager
def single_threaded_children():
    """Spawned workers read these at import: one thread per library each, so N workers use N cores."""
    names = THREAD_ENV
    saved = {n: os.environ.get(n) for n in names}
    os.environ.update({n: "1" for n in names})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
