"""Time each layer of a model in each candidate LiteRT (or numpy) format, checked first.

The per-layer format choice of the auto files (`export.tflite_auto`, `pipeline.autoformat`) reads
these timings. Every candidate is checked against the numpy layer on real activations before it
is timed (`pipeline.checks`), and all candidates are timed in interleaved rounds (median of
per-round medians, so a neighbour's burst on the shared cores hits every candidate alike).
"""
from __future__ import annotations

import time

import numpy as np

from pipeline.autoformat import INT8_FORMATS, Timing, apply, candidates
from pipeline.checks import FP32, INT8_LAYER, compare
from pipeline.errors import PrunedgeError
from pipeline.model import Model


def time_rounds(calls: list, rounds: int, slice_s: float) -> list[tuple[float, float]]:
    """Per (fn, x) call: (median of per-round medians, p90 of all samples), in ns. Rounds interleave
    all calls and the order rotates each round."""
    per_round = [[] for _ in calls]
    samples = [[] for _ in calls]
    for r in range(rounds):
        order = list(range(len(calls)))
        order = order[r % len(order):] + order[:r % len(order)]
        for i in order:
            fn, x = calls[i]
            fn(x)  # warm
            t_end, ts = time.perf_counter() + slice_s, []
            while time.perf_counter() < t_end or len(ts) < 5:
                t0 = time.perf_counter_ns()
                fn(x)
                ts.append(time.perf_counter_ns() - t0)
            per_round[i].append(np.median(ts))
            samples[i].extend(ts)
    return [(float(np.median(pr)), float(np.percentile(s, 90))) for pr, s in zip(per_round, samples)]


def layer_inputs(model: Model, x: np.ndarray) -> list[np.ndarray]:
    """The activations entering each layer of an MLP for input batch x (real inputs give realistic int8 ranges)."""
    acts = [x]
    for layer in model.layers[:-1]:
        acts.append(layer(acts[-1]))
    return acts


class _Unavailable(Exception):
    pass


def _numpy_layer(model, i, fmt, batch, delegate):
    return apply(model.with_layers([model.layers[i]]), "numpy", [fmt]).layers[0]


def _litert_layer(model, i, fmt, batch, delegate):
    from export import tflite_block as tb
    buf = tb.xnnpack_safe(tb.layer_file(model, i, fmt))
    info = tb.describe(buf)
    if "DENSIFY" in info["ops"]:
        raise _Unavailable("not block-structured for this kernel (converter inserts DENSIFY)")
    if fmt.endswith("block") and not info["runs_sparse"]:
        raise _Unavailable("converter kept the weight dense (too few zeros)")
    return tb.make_runner(buf, batch, delegate=delegate)


LAYER_RUNNERS = {"numpy": _numpy_layer, "litert": _litert_layer}


def measure(model: Model, engine: str, x: np.ndarray, *, batch: int = 1, delegate: str = "xnnpack",
            allow_int8: bool = False, rounds: int = 5, slice_s: float = 0.03) -> list[Timing]:
    """One Timing per (layer, candidate format): checked on x's activations, then timed at `batch`."""
    acts = layer_inputs(model, x)
    pending, timings = [], []
    for i, layer in enumerate(model.layers):
        ref = layer(acts[i])
        for fmt in candidates(engine, allow_int8=allow_int8):
            try:
                call = LAYER_RUNNERS[engine](model, i, fmt, batch, delegate)
                n = len(acts[i]) - len(acts[i]) % batch
                y = np.concatenate([np.array(call(acts[i][j:j + batch]), copy=True) for j in range(0, n, batch)])
                check = compare(ref[:n], y, INT8_LAYER if fmt in INT8_FORMATS else FP32)
                status, reason = ("ok", "") if check["status"] == "passed" else ("wrong", check["reason"])
            except _Unavailable as e:
                timings.append(Timing(layer=i, format=fmt, status="unavailable", reason=str(e)))
                continue
            except (RuntimeError, ValueError, PrunedgeError) as e:
                timings.append(Timing(layer=i, format=fmt, status="failed", reason=f"{type(e).__name__}: {e}"[:200]))
                continue
            pending.append((Timing(layer=i, format=fmt, status=status, reason=reason), call,
                            np.ascontiguousarray(acts[i][:batch])))
    for (t, _, _), (p50, _) in zip(pending, time_rounds([(c, xb) for _, c, xb in pending], rounds, slice_s)):
        timings.append(Timing(layer=t.layer, format=t.format, p50_us=p50 / 1e3, status=t.status, reason=t.reason))
    return sorted(timings, key=lambda t: (t.layer, candidates(engine, allow_int8=True).index(t.format)))
