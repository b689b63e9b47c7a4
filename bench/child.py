"""One bench child process: a fresh interpreter that measures one runtime on a batch of files.

The sweep starts `python -m bench.child` with a job as JSON on stdin: a runtime, the thread
counts this process may use (one, for runtimes whose threads are fixed at start-up), the test
set as .npy files, and the files with what each still needs (memory, accuracy, latency per
thread x batch). The child sets threads and imports the runtime once, then measures each file
in a fork of that state (bench.fork): load it and run it once at batch 1 (peak memory,
bench.memory), time every thread count x batch, then full test-set accuracy. So each file is
measured as in a freshly started process, without paying for the import per file.
Each result is one stdout line `@@bench {json}`, written as soon as it is known; "start" and
"done" lines frame each file, so the sweep can tell which file a crash or hang of the child
itself belongs to and restart a child with the rest. Every step reports its own failure as an
error record; a fork that crashes or hangs becomes a "process" error of its file.
"""
from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from bench.fork import run_forked
from bench.latency import LatencyConfig, measure
from bench.memory import peak_rss_mb, resident_file_pages, touch
from export.runtimes import RUNTIMES, Runtime

MARK = "@@bench "
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


def write_test_set(data_dir: str | None, directory: Path) -> list[str]:
    """The test set as x.npy / y.npy in `directory`: a child maps them (nothing copied per file,
    and nothing resident before a file's memory is read)."""
    x, y = load_test_set(data_dir)
    paths = [Path(directory) / "x.npy", Path(directory) / "y.npy"]
    np.save(paths[0], np.ascontiguousarray(x, dtype=np.float32))
    np.save(paths[1], y)
    return [str(p) for p in paths]


def batch_of(x: np.ndarray, batch: int) -> np.ndarray:
    """The first `batch` test images (repeated if the set is smaller): a writeable float32 copy
    (`x` may be a read-only memory map; some runtimes refuse read-only inputs)."""
    reps = -(-batch // len(x))
    return np.array(np.tile(x, (reps, 1))[:batch] if reps > 1 else x[:batch], dtype=np.float32, order="C")


def accuracy(session: Callable, x: np.ndarray, y: np.ndarray, chunk: int = ACCURACY_CHUNK) -> float:
    correct = 0
    for i in range(0, len(x), chunk):
        xb = np.array(x[i:i + chunk], dtype=np.float32, order="C")
        logits = np.asarray(session(xb))
        if logits.ndim != 2 or len(logits) != len(xb):
            raise ValueError(f"output shape {list(logits.shape)} for a batch of {len(xb)}")
        correct += int((logits.argmax(axis=1) == y[i:i + chunk]).sum())
    return correct / len(x)


class Child:
    """The measurements of one job, reported through `emit`."""

    def __init__(self, job: dict, emit: Callable[[dict], None], runtime: Runtime):
        self.job, self.emit, self.runtime = job, emit, runtime
        self.threads: list[int] = job["threads"]
        self.config = LatencyConfig(**job.get("latency", {}))

    def error(self, item: dict, stage: str, e: BaseException | str, **extra) -> None:
        text = e if isinstance(e, str) else reason(e)
        self.emit({"kind": "error", "key": item["key"], "stage": stage, "reason": text, **extra})
        if self.job.get("debug") and not isinstance(e, str):
            traceback.print_exc()

    @contextmanager
    def phase(self, item: dict, name: str):
        """Report the wall and CPU seconds of a step (results.json "phase_seconds": where time goes)."""
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.emit({"kind": "phase", "key": item["key"], "phase": name,
                       "s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu})

    def start(self) -> bool:
        """Threads, then the runtime's imports; False (every file an import error) if they fail."""
        try:
            if self.runtime.configure is not None:
                self.runtime.configure(self.threads[0])
            for module in self.runtime.imports:
                importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 - any import failure is this runtime's failure
            for item in self.job["items"]:
                self.error(item, "import", e)
            return False
        return True

    def run(self) -> None:
        """Import once, then each file in a fork of this state (nothing loaded here, ever)."""
        if not self.start():
            return
        pages = resident_file_pages() if any(it.get("memory") for it in self.job["items"]) else []
        baseline = peak_rss_mb()
        for item in self.job["items"]:
            self.emit({"kind": "start", "key": item["key"]})
            with self.phase(item, "file"):
                problem = run_forked(lambda send: self.file(item, send, pages, baseline),
                                     self.job.get("timeout_s", 900.0), self.emit)
            if problem is not None:
                self.error(item, "process", problem)
            self.emit({"kind": "done", "key": item["key"]})

    def file(self, item: dict, send: Callable[[dict], None], pages: list[int], baseline_mb: float) -> None:
        """In the fork: memory (load, run once at batch 1, VmHWM), latency, accuracy."""
        self.emit = send
        x, y = np.load(self.job["test_set"][0], mmap_mode="r"), np.load(self.job["test_set"][1])
        sessions = {}
        if item.get("memory"):
            with self.phase(item, "memory"):
                touch(pages)
                t = self.threads[0]
                try:
                    sessions[t] = self.runtime.load(Path(item["path"]), t)
                    sessions[t](batch_of(x, 1))
                    self.emit({"kind": "memory", "key": item["key"], "threads": t, "baseline_mb": baseline_mb,
                               "peak_mb": peak_rss_mb()})
                except Exception as e:  # noqa: BLE001 - whatever the runtime raises is its failure
                    sessions.pop(t, None)
                    self.error(item, "memory", e)
        session = self.latency(item, x, sessions)
        if item.get("accuracy"):  # with the last session (all cores): 10k images are the slow part
            with self.phase(item, "accuracy"):
                try:
                    if session is None:
                        session = self.runtime.load(Path(item["path"]), self.threads[-1])
                    self.emit({"kind": "accuracy", "key": item["key"], "accuracy": accuracy(session, x, y)})
                except Exception as e:  # noqa: BLE001
                    self.error(item, "accuracy", e)

    def latency(self, item: dict, x: np.ndarray, sessions: dict):
        """Every thread count x batch the item asks for; returns the last session loaded."""
        session = None
        for t in self.threads:
            batches = [b for tt, b in item.get("latency", []) if tt == t]
            if not batches:
                continue
            try:
                session = sessions.pop(t, None)
                if session is None:
                    with self.phase(item, "load"):
                        session = self.runtime.load(Path(item["path"]), t)
            except Exception as e:  # noqa: BLE001
                session = None
                for b in batches:
                    self.error(item, "load", e, threads=t, batch=b)
                continue
            for b in batches:
                try:
                    with self.phase(item, "latency"):
                        stats = time_batch(session, batch_of(x, b), self.config)
                    self.emit({"kind": "latency", "key": item["key"], "threads": t, "batch": b, **asdict(stats)})
                except Exception as e:  # noqa: BLE001
                    self.error(item, "latency", e, threads=t, batch=b)
        return session


def run_job(job: dict, emit: Callable[[dict], None] = emit_stdout,
            runtimes: dict[str, Runtime] = RUNTIMES) -> None:
    """Measure job["items"] with job["runtime"]; see the module docstring for the order."""
    Child(job, emit, runtimes[job["runtime"]]).run()


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
