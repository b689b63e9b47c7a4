"""Latency statistics: warm up, repeat until stable, summarise in microseconds.

Pure functions over timing arrays (nanoseconds) plus one timing loop; nothing here
knows about runtimes or files, so it is tested on synthetic arrays.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import numpy as np


@dataclass(frozen=True, kw_only=True)
class LatencyConfig:
    # A few calls first: first calls pay for lazy allocation, JIT/graph setup and cold caches.
    warmup_reps: int = 3
    warmup_seconds: float = 0.01
    # At least this many timed calls (always) and this much time, so p90 is not one outlier...
    min_reps: int = 15
    min_seconds: float = 0.03
    # ...then stop once the median has settled, or at the cap. `make bench` times ~15,000
    # settings (1,844 files x their runtimes x 2 thread counts x 2 batches): at ~0.05 s each
    # that is ~13 of its 20 minutes on 2 cores; 0.1 s minimum + 0.02 s warm-up (the old
    # defaults) alone took 30. p50s agree with the old defaults' within run-to-run noise (README).
    max_seconds: float = 0.2
    max_reps: int = 20_000
    stable_rel: float = 0.03  # |median(first half) - median(second half)| / median

    def __post_init__(self):
        if self.min_reps < 1 or self.warmup_reps < 0:
            raise ValueError("min_reps must be >= 1 and warmup_reps >= 0")
        if not 0 <= self.min_seconds <= self.max_seconds:
            raise ValueError("need 0 <= min_seconds <= max_seconds")


QUICK = LatencyConfig(warmup_reps=1, warmup_seconds=0.0, min_reps=3, min_seconds=0.01,
                      max_seconds=0.05, max_reps=200)


@dataclass(frozen=True)
class Stats:
    p50_us: float
    p90_us: float
    p99_us: float
    mean_us: float
    reps: int

    def per_sample_us(self, batch: int) -> float:
        return self.p50_us / batch


def summarize(times_ns: Iterable[float]) -> Stats:
    """Percentiles (linear interpolation) and mean of per-call times, in microseconds."""
    t = np.asarray(list(times_ns) if not isinstance(times_ns, np.ndarray) else times_ns,
                   dtype=np.float64)
    if t.ndim != 1 or t.size == 0:
        raise ValueError("need a non-empty 1-D array of timings")
    if not np.isfinite(t).all() or (t < 0).any():
        raise ValueError("timings must be finite and non-negative")
    us = t / 1e3
    p50, p90, p99 = np.percentile(us, [50, 90, 99])
    return Stats(float(p50), float(p90), float(p99), float(us.mean()), int(t.size))


def is_stable(times_ns, rel: float) -> bool:
    """True when the medians of the first and second half agree within `rel`."""
    t = np.asarray(times_ns, dtype=np.float64)
    if t.size < 4:
        return False
    half = t.size // 2
    a, b = np.median(t[:half]), np.median(t[half:])
    return abs(a - b) <= rel * max((a + b) / 2, 1e-12)


def enough(times_ns, elapsed_s: float, config: LatencyConfig) -> bool:
    """The stopping rule, separated from the loop so it can be tested without a clock."""
    n = len(times_ns)
    if n >= config.max_reps:
        return True
    if n < config.min_reps:  # a floor even for slow calls: p90 of 2 samples means nothing
        return False
    if elapsed_s >= config.max_seconds:
        return True
    return elapsed_s >= config.min_seconds and is_stable(times_ns, config.stable_rel)


def measure(fn: Callable[[], object], config: LatencyConfig = LatencyConfig(),
            clock: Callable[[], int] = time.perf_counter_ns) -> Stats:
    """Time `fn()` repeatedly after warming up; one call per sample."""
    start = clock()
    for i in range(10**9):
        if i >= config.warmup_reps and (clock() - start) / 1e9 >= config.warmup_seconds:
            break
        fn()
    times: list[int] = []
    start = clock()
    check_every = 1
    while True:
        t0 = clock()
        fn()
        t1 = clock()
        times.append(t1 - t0)
        # Checking stability costs a median over all samples; do it less often as n grows.
        if len(times) % check_every == 0:
            if enough(times, (t1 - start) / 1e9, config):
                break
            check_every = max(1, len(times) // 20)
    return summarize(times)


RATIO_KEY = ("source", "framework", "method", "format", "variant", "runtime", "threads", "batch")


def ratio_vs_dense(rows: list[Mapping]) -> list[float | None]:
    """dense p50 / row p50 against the k00 row of the same key and run (>1 = faster).

    None where either row has no ok p50."""
    ref: dict[tuple, float] = {}
    for r in rows:
        if _ok(r) and float(r["sparsity"]) == 0.0:
            ref[tuple(r[k] for k in RATIO_KEY)] = float(r["p50_us"])
    out = []
    for r in rows:
        base = ref.get(tuple(r[k] for k in RATIO_KEY))
        out.append(base / float(r["p50_us"]) if base is not None and _ok(r) else None)
    return out


def _ok(row: Mapping) -> bool:
    return row.get("status") == "ok" and row.get("p50_us") not in (None, "") and float(row["p50_us"]) > 0
