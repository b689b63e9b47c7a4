"""Answers to the challenge's questions, computed from measured rows and trained weights.

Pure functions: rows in (dicts as read from seeds.csv / results.csv, accuracy in
percent), numbers out. The report only formats what these return, so every figure
in REPORT.md traces back to a CSV/JSON cell or a weight matrix.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from report.facts import FP32, REFERENCE, precision

TOLERANCE = 1.0  # accuracy points below dense that still count as "no loss" (the challenge's Q2)
CLIFF_POINTS = 5.0  # a drop this large below dense is unmistakably a cliff, not seed noise
NO_SPEEDUP_BAND = 1.25  # best weight-pruned speedup below this = "sparsity gives no speedup"
HIGH_SPARSITY = 90.0  # levels from here on are where a sparse kernel should pay off


# ---------------------------------------------------------------- accuracy curves

@dataclass(frozen=True)
class CurvePoint:
    sparsity: float
    mean: float  # accuracy in percent, mean over seeds
    std: float
    lo: float
    hi: float
    n: int  # number of seeds


def curves(rows) -> dict[tuple[str, str], list[CurvePoint]]:
    """(framework, method) -> points sorted by sparsity, aggregated over seeds.

    Dense rows (method "dense" or sparsity 0) are shared by every method of the framework,
    so each curve starts at the same baseline."""
    by_key: dict[tuple[str, str], dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    dense: dict[str, dict[tuple, float]] = defaultdict(dict)
    for r in rows:
        if r.get("accuracy") is None:
            continue
        fw, method, k = r["framework"], r["method"], float(r["sparsity"])
        if method == "dense" or k == 0:
            dense[fw][(r.get("seed"), method)] = r["accuracy"]
        if method != "dense":
            by_key[(fw, method)][k].append(r["accuracy"])
    for (fw, method), levels in by_key.items():
        if 0.0 not in levels and dense.get(fw):
            per_seed: dict = {}
            for (seed, _), acc in dense[fw].items():
                per_seed.setdefault(seed, acc)
            levels[0.0] = list(per_seed.values())
    return {key: [_point(k, accs) for k, accs in sorted(levels.items())]
            for key, levels in sorted(by_key.items())}


def _point(k: float, accs) -> CurvePoint:
    a = np.asarray(accs, dtype=float)
    return CurvePoint(k, float(a.mean()), float(a.std()), float(a.min()), float(a.max()), int(a.size))


def dense_point(curve: list[CurvePoint]) -> CurvePoint | None:
    return next((p for p in curve if p.sparsity == 0.0), None)


def highest_within(curve: list[CurvePoint], tolerance: float = TOLERANCE) -> CurvePoint | None:
    """The highest sparsity whose mean accuracy is at most `tolerance` points below dense (Q2)."""
    dense = dense_point(curve)
    if dense is None:
        return None
    ok = [p for p in curve if p.mean >= dense.mean - tolerance]
    return max(ok, key=lambda p: p.sparsity)


def first_below(curve: list[CurvePoint], drop: float) -> CurvePoint | None:
    """The lowest sparsity whose mean accuracy is more than `drop` points below dense."""
    dense = dense_point(curve)
    if dense is None:
        return None
    return next((p for p in curve if p.mean < dense.mean - drop), None)


def largest_step(curve: list[CurvePoint]) -> tuple[CurvePoint, CurvePoint, float] | None:
    """The consecutive pair of levels with the largest accuracy loss: where the curve falls off."""
    steps = [(a, b, a.mean - b.mean) for a, b in zip(curve, curve[1:])]
    return max(steps, key=lambda s: s[2]) if steps else None


def gap_at(curves_by_key, framework: str, a: str, b: str) -> list[tuple[float, float]]:
    """(sparsity, accuracy of method a minus method b) at the levels both methods share."""
    pa = {p.sparsity: p.mean for p in curves_by_key.get((framework, a), [])}
    pb = {p.sparsity: p.mean for p in curves_by_key.get((framework, b), [])}
    return [(k, pa[k] - pb[k]) for k in sorted(pa.keys() & pb.keys())]


# ---------------------------------------------------------------- weights (Q3, Q4)

def weight_fraction_removed(dense_shapes, pruned_nnz) -> float:
    """1 - weights left / weights of the dense model (biases excluded)."""
    total = sum(a * b for a, b in dense_shapes)
    return 1.0 - sum(pruned_nnz) / total


def top_weight_energy(w: np.ndarray, fraction: float) -> float:
    """Share of the Frobenius energy sum(w^2) held by the largest `fraction` of weights by |w|."""
    sq = np.sort(np.square(np.ravel(w).astype(np.float64)))[::-1]
    n = max(1, int(math.ceil(fraction * sq.size)))
    return float(sq[:n].sum() / sq.sum())


def near_zero_fraction(w: np.ndarray, relative: float) -> float:
    """Share of weights with |w| below `relative` x the largest |w| of the layer."""
    a = np.abs(np.ravel(w))
    return float(np.mean(a < relative * a.max()))


def excess_kurtosis(w: np.ndarray) -> float:
    """0 for a Gaussian; > 0 means more weights near zero and heavier tails than a Gaussian."""
    a = np.ravel(w).astype(np.float64)
    a = a - a.mean()
    return float(np.mean(a ** 4) / np.mean(a ** 2) ** 2 - 3.0)


def gaussian_top_energy(fraction: float) -> float:
    """The share top_weight_energy would give for Gaussian weights: the no-structure baseline."""
    from scipy.stats import norm
    c = norm.isf(fraction / 2)
    return float(2 * (c * norm.pdf(c) + norm.sf(c)))


def singular_values(w: np.ndarray) -> np.ndarray:
    return np.linalg.svd(np.asarray(w, dtype=np.float64), compute_uv=False)


def cumulative_energy(s: np.ndarray) -> np.ndarray:
    """Cumulative share of sum(sigma^2) held by the first r singular values, r = 1..len(s)."""
    e = np.cumsum(np.square(s))
    return e / e[-1]


def top_sv_energy(s: np.ndarray, fraction: float) -> float:
    """Share of energy in the top `fraction` of singular values (at least one)."""
    r = max(1, int(math.ceil(fraction * s.size)))
    return float(cumulative_energy(s)[r - 1])


def rank_for_energy(s: np.ndarray, share: float) -> int:
    """Fewest singular values holding `share` of the energy."""
    return int(np.searchsorted(cumulative_energy(s), share - 1e-12) + 1)


# ---------------------------------------------------------------- bench rows

def ok_rows(rows, *, batch: int | None = 1, threads: int | None = 1, source: str | None = "host"):
    """Rows that ran, filtered to one batch size / thread count / source (None = any)."""
    return [r for r in rows if r.get("status") == "ok" and r.get("p50_us") is not None
            and (batch is None or r.get("batch") == batch)
            and (threads is None or r.get("threads") == threads)
            and (source is None or r.get("source", "host") == source)]


def dense_accuracy_by_framework(rows) -> dict[str, float]:
    """Each framework's dense fp32 accuracy: mean over its k00 fp32 rows (any runtime)."""
    acc: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r.get("status") == "ok" and r.get("accuracy") is not None and float(r["sparsity"]) == 0:
            if precision(r) == FP32:
                acc[r["framework"]].append(r["accuracy"])
    return {fw: float(np.mean(v)) for fw, v in acc.items()}


def within_dense(rows, dense_acc: dict[str, float], tolerance: float = TOLERANCE):
    return [r for r in rows if r.get("accuracy") is not None and r["framework"] in dense_acc
            and r["accuracy"] >= dense_acc[r["framework"]] - tolerance]


def recommend(rows, tolerance: float = TOLERANCE) -> dict[str, dict[str, dict]]:
    """runtime -> {"smallest": row, "fastest": row} among artifacts within `tolerance` of dense.

    Rows should already be filtered (e.g. host, batch 1, 1 thread). Ties break on the other
    criterion, then on the artifact path, so the pick is deterministic."""
    dense = dense_accuracy_by_framework(rows)
    picks: dict[str, dict[str, dict]] = {}
    by_runtime: dict[str, list[dict]] = defaultdict(list)
    for r in within_dense(rows, dense, tolerance):
        by_runtime[r["runtime"]].append(r)
    for runtime, rs in sorted(by_runtime.items()):
        sized = [r for r in rs if r.get("bytes") is not None]
        picks[runtime] = {
            "smallest": min(sized, key=lambda r: (r["bytes"], r["p50_us"], r["artifact"])) if sized else None,
            "fastest": min(rs, key=lambda r: (r["p50_us"], r.get("bytes") or 0, r["artifact"])),
        }
    return picks


def pareto_front(points) -> list[int]:
    """Indices of (latency, accuracy) points no other point beats: none both at least as fast
    and at least as accurate while strictly better in one. Sorted by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def front_rows(rows: list[dict]) -> list[dict]:
    """The rows on the accuracy/latency Pareto front, fastest first (the numbers on the plot)."""
    return [rows[i] for i in pareto_front([(r["p50_us"], r["accuracy"]) for r in rows])]


def _match(rows, **want):
    return [r for r in rows if all(_eq(r.get(k), v) for k, v in want.items())]


def _eq(a, b) -> bool:
    if isinstance(b, (int, float)) and a is not None and not isinstance(a, str):
        return float(a) == float(b)
    return a == b


def dense_reference(row, rows) -> dict | None:
    """The dense k00 row `row` is compared with: same runtime, format, framework, batch, threads and
    source; same variant if it has a k00 (a "sparse" variant has none, so fp32), same method first."""
    same = [r for r in rows if r.get("status") == "ok" and r.get("p50_us") and float(r["sparsity"]) == 0
            and all(r.get(k) == row.get(k) for k in ("runtime", "format", "framework", "batch", "threads"))
            and r.get("source", "host") == row.get("source", "host")]
    for variant in (row.get("variant"), REFERENCE.variant):
        match = sorted((r for r in same if r.get("variant") == variant),
                       key=lambda r: (r["method"] != row.get("method"), r["artifact"]))
        if match:
            return match[0]
    return None


def ratio(row, rows) -> float | None:
    """The row's ratio_vs_dense, or dense p50 / row p50 against `dense_reference` when empty."""
    if row.get("ratio_vs_dense") is not None:
        return row["ratio_vs_dense"]
    dense = dense_reference(row, rows)
    return dense["p50_us"] / row["p50_us"] if dense and row.get("p50_us") else None


def speedups(rows, *, method: str, sparsity: float, runtime: str, fmt: str, variant: str = REFERENCE.variant):
    """framework -> (ratio_vs_dense, row) for one method/level in one runtime and format."""
    out = {}
    for r in _match(rows, method=method, sparsity=sparsity, runtime=runtime, format=fmt, variant=variant):
        value = ratio(r, rows)
        if value is not None:
            out[r["framework"]] = (value, r)
    return out


def csr_crossover(rows, *, batch: int, sparse_runtime: str = "scipy-csr",
                  dense_runtime: str = "numpy", method: str = "weight") -> dict[str, dict]:
    """framework -> {"level": lowest sparsity from which CSR beats dense numpy k00 at every higher
    level (None = never), "dense_us", "points": [(sparsity, csr p50, ratio)]}. Rows of one thread count."""
    out = {}
    dense_rows = [r for r in rows if r["runtime"] == dense_runtime and float(r["sparsity"]) == 0
                  and r["batch"] == batch]
    for fw in sorted({r["framework"] for r in dense_rows}):
        dense_us = float(np.median([r["p50_us"] for r in dense_rows if r["framework"] == fw]))
        sparse = sorted((float(r["sparsity"]), r["p50_us"]) for r in rows
                        if r["runtime"] == sparse_runtime and r["framework"] == fw
                        and r["method"] == method and r["batch"] == batch and float(r["sparsity"]) > 0)
        if not sparse:
            continue
        level = None
        for k, us in reversed(sparse):
            if us >= dense_us:
                break
            level = k
        out[fw] = {"level": level, "dense_us": dense_us,
                   "points": [(k, us, dense_us / us) for k, us in sparse]}
    return out


def unique_artifacts(rows) -> list[dict]:
    """One row per artifact path (sizes do not depend on runtime, batch or threads)."""
    seen = {}
    for r in rows:
        if r.get("bytes") is not None:
            seen.setdefault(r["artifact"], r)
    return list(seen.values())


def dense_counterpart(row, artifacts) -> dict | None:
    """The k00 artifact of the same framework and format, same variant when there is one, else fp32
    (same method directory first: weight/k00 and unit/k00 hold the same dense model)."""
    same = [a for a in artifacts if a["framework"] == row["framework"] and a["format"] == row["format"]
            and float(a["sparsity"]) == 0]
    for variant in (row.get("variant"), REFERENCE.variant):
        match = [a for a in same if a.get("variant") == variant]
        if match:
            return min(match, key=lambda a: (a["method"] != row["method"], a["artifact"]))
    return min(same, key=lambda a: a["artifact"]) if same else None


def smallest_at(rows, *, method: str, sparsity: float) -> tuple[dict, dict] | None:
    """(smallest artifact by gzip size at this method/level, its dense counterpart)."""
    arts = unique_artifacts(rows)
    cands = [a for a in arts if a["method"] == method and float(a["sparsity"]) == sparsity
             and a.get("gzip_bytes") is not None]
    cands = [(a, dense_counterpart(a, arts)) for a in cands]
    cands = [(a, d) for a, d in cands if d is not None and d.get("gzip_bytes")]
    return min(cands, key=lambda ad: (ad[0]["gzip_bytes"], ad[0]["artifact"])) if cands else None


def no_speedup_runtimes(rows, *, method: str = "weight", min_sparsity: float = HIGH_SPARSITY,
                        band: float = NO_SPEEDUP_BAND) -> dict[tuple[str, str, str | None], float]:
    """(runtime, format, variant) -> best ratio_vs_dense at >= min_sparsity, for those whose best
    speedup stays below `band` (the zeros are still multiplied). Rows of one batch/thread count."""
    best: dict[tuple[str, str, str | None], float] = {}
    for r in rows:
        if r["method"] != method or float(r["sparsity"]) < min_sparsity:
            continue
        value = ratio(r, rows)
        if value is not None:
            key = (r["runtime"], r["format"], r.get("variant"))
            best[key] = max(best.get(key, 0.0), value)
    return {k: v for k, v in sorted(best.items(), key=lambda kv: tuple(map(str, kv[0]))) if v < band}


def best_speedup(rows, *, runtime: str, method: str, min_sparsity: float = HIGH_SPARSITY) -> float | None:
    """Largest ratio_vs_dense of `method` at >= min_sparsity in one runtime (None if no rows)."""
    values = [ratio(r, rows) for r in rows if r["runtime"] == runtime and r["method"] == method
              and float(r["sparsity"]) >= min_sparsity]
    values = [v for v in values if v is not None]
    return max(values) if values else None
