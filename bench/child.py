"""One bench child process: a fresh interpreter that measures one runtime on its artifacts.

The sweep starts `python -m bench.child` with a job as JSON on stdin. The child configures
threads, imports the runtime (memory baseline), loads the artifact and runs it once at
batch 1 (memory peak), times every thread x batch setting, then computes test accuracy. Each result is one stdout line `@@bench {json}`, written as soon as it is known,
so a crash or timeout loses only what was not measured yet. Every step catches its own
exception and reports it as an error record: one failure never hides the other numbers.
"""
from __future__ import annotations

import importlib
import json
import sys
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from bench.latency import LatencyConfig, measure
from bench.memory import peak_rss_mb
from export.runtimes import RUNTIMES, Runtime

MARK = "@@bench "
INPUT_DIM = 784  # Fashion-MNIST; the memory probe runs before the test set is loaded
ACCURACY_CHUNK = 1000


def emit_stdout(record: dict) -> None:
    sys.stdout.write(MARK + json.dumps(record) + "\n")
    sys.stdout.flush()


def reason(e: BaseException) -> str:
    """One line: exception type and the first line of its message."""
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"[:300]


def load_test_set(data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    from pipeline.data import FILES, data_dir as resolve, load_idx_pair
    d = resolve(data_dir)
    return load_idx_pair(d / FILES["test"][0], d / FILES["test"][1])


def batch_of(x: np.ndarray, batch: int) -> np.ndarray:
    """The first `batch` test images (repeated if the set is smaller), contiguous float32."""
    reps = -(-batch // len(x))
    return np.ascontiguousarray(np.tile(x, (reps, 1))[:batch] if reps > 1 else x[:batch],
                                dtype=np.float32)


def accuracy(session: Callable, x: np.ndarray, y: np.ndarray, chunk: int = ACCURACY_CHUNK) -> float:
    correct = 0
    for i in range(0, len(x), chunk):
        xb = np.ascontiguousarray(x[i:i + chunk])
        logits = np.asarray(session(xb))
        if logits.ndim != 2 or len(logits) != len(xb):
            raise ValueError(f"output shape {list(logits.shape)} for a batch of {len(xb)}")
        correct += int((logits.argmax(axis=1) == y[i:i + chunk]).sum())
    return correct / len(x)


def run_job(job: dict, emit: Callable[[dict], None] = emit_stdout,
            runtimes: dict[str, Runtime] = RUNTIMES) -> None:
    """Measure job["items"] with job["runtime"]; see the module docstring for the order."""
    runtime = runtimes[job["runtime"]]
    threads: list[int] = job["threads"]
    config = LatencyConfig(**job.get("latency", {}))
    items = job["items"]

    def error(item, stage, e, **extra):
        emit({"kind": "error", "key": item["key"], "stage": stage, "reason": reason(e), **extra})
        if job.get("debug"):
            traceback.print_exc()

    try:
        if runtime.configure is not None:
            runtime.configure(threads[0])
        for module in runtime.imports:
            importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - any import failure is this runtime's failure
        for item in items:
            error(item, "import", e)
        return
    baseline = peak_rss_mb()
    data = None
    for item in items:
        path = Path(item["path"])
        try:
            session = runtime.load(path, threads[0])
            if job.get("memory"):
                session(np.random.default_rng(0).random((1, INPUT_DIM), dtype=np.float32))
                emit({"kind": "memory", "key": item["key"], "baseline_mb": baseline,
                      "peak_mb": peak_rss_mb()})
        except Exception as e:  # noqa: BLE001 - whatever the runtime raises is its failure
            error(item, "load", e)
            continue
        if data is None:
            try:
                data = load_test_set(job.get("data_dir"))
            except Exception as e:  # noqa: BLE001
                for other in items:
                    error(other, "data", e)
                return
        for i, t in enumerate(threads):
            try:
                if i > 0:
                    session = None
                    session = runtime.load(path, t)
            except Exception as e:  # noqa: BLE001
                for b in job["batches"]:
                    error(item, "load", e, threads=t, batch=b)
                continue
            for b in job["batches"]:
                try:
                    emit({"kind": "latency", "key": item["key"], "threads": t, "batch": b,
                          **asdict(time_batch(session, batch_of(data[0], b), config))})
                except Exception as e:  # noqa: BLE001
                    error(item, "latency", e, threads=t, batch=b)
        if job.get("accuracy"):  # with the last session (all cores): 10k images are the slow part
            try:
                if session is None:
                    session = runtime.load(path, threads[0])
                emit({"kind": "accuracy", "key": item["key"], "accuracy": accuracy(session, *data)})
            except Exception as e:  # noqa: BLE001
                error(item, "accuracy", e)


def time_batch(session: Callable, xb: np.ndarray, config: LatencyConfig):
    """Check the output shape once, then time calls on this batch."""
    out = np.asarray(session(xb))
    if out.ndim != 2 or out.shape[0] != len(xb):
        raise ValueError(f"output shape {list(out.shape)} for batch {len(xb)}")
    return measure(lambda: session(xb), config)


def main() -> int:
    job = json.loads(sys.stdin.read())
    run_job(job)
    return 0


if __name__ == "__main__":
    sys.exit(main())
