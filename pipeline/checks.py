"""The one pass/fail check of outputs against the numpy reference, with one tolerance type.

Every verification (exported files, per-layer candidates, kernel experiments, bundles) compares
with `compare(reference, outputs, tolerance)` and records the same numbers: max |diff|, relative
L2 error and top-1 agreement, whichever the tolerance judges by.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, kw_only=True)
class Tolerance:
    """What passes: every bound that is set must hold."""
    max_abs: float | None = None  # max |output - reference|
    max_rel_l2: float | None = None  # ||output - reference|| / ||reference||
    min_top1: float | None = None  # share of rows whose argmax agrees with the reference's

    def describe(self) -> str:
        parts = [f"max |diff| <= {self.max_abs:g}" if self.max_abs is not None else "",
                 f"relative L2 error <= {self.max_rel_l2:g}" if self.max_rel_l2 is not None else "",
                 f"top-1 agreement >= {self.min_top1:g}" if self.min_top1 is not None else ""]
        return ", ".join(p for p in parts if p)


# float32 kernels differ from numpy only in summation order: ~1e-6 on these logits (MLP and CNN,
# measured in every runtime), so 1e-4 leaves room and still catches a wrong weight or layout.
FP32 = Tolerance(max_abs=1e-4)
# fp16 / int8 files may flip near-ties, not more than 1 image in 100.
REDUCED = Tolerance(min_top1=0.99)
# one int8 layer alone (per-layer format choice): dynamic-range int8 is ~1-2% off in L2; a broken
# kernel is >> 1.
INT8_LAYER = Tolerance(max_rel_l2=0.05)
# a whole int8 file checked on random (untrained) weights, whose logits are near-tied.
INT8_RANDOM = Tolerance(max_rel_l2=0.05, min_top1=0.9)
PRECISION = {"fp32": FP32, "reduced": REDUCED}  # export table precision -> tolerance


def compare(reference: np.ndarray, outputs: np.ndarray, tolerance: Tolerance) -> dict:
    """{"status": "passed"|"failed", "max_abs_diff", "rel_l2", "top1_agreement", "n", "reason"}."""
    n = len(reference)
    outputs = np.asarray(outputs)
    if outputs.shape != reference.shape:
        return {"status": "failed", "max_abs_diff": None, "rel_l2": None, "top1_agreement": None, "n": n,
                "reason": f"output shape {list(outputs.shape)} != reference {list(reference.shape)}"}
    ref, out = reference.astype(np.float64), outputs.astype(np.float64)
    diff = float(np.max(np.abs(out - ref))) if n else 0.0
    rel = float(np.linalg.norm(out - ref) / max(float(np.linalg.norm(ref)), 1e-12))
    agree = float(np.mean(out.argmax(axis=1) == ref.argmax(axis=1))) if n else 1.0
    failures = []
    if not np.all(np.isfinite(out)):
        failures.append("non-finite outputs")
    if tolerance.max_abs is not None and not diff <= tolerance.max_abs:
        failures.append(f"max |diff| {diff:.3g} > {tolerance.max_abs:g}")
    if tolerance.max_rel_l2 is not None and not rel <= tolerance.max_rel_l2:
        failures.append(f"relative L2 error {rel:.3g} > {tolerance.max_rel_l2:g}")
    if tolerance.min_top1 is not None and not agree >= tolerance.min_top1:
        failures.append(f"top-1 agreement {agree:.4f} < {tolerance.min_top1:g}")
    return {"status": "failed" if failures else "passed", "max_abs_diff": diff, "rel_l2": rel,
            "top1_agreement": agree, "n": n, "reason": "; ".join(failures) or None}


def passed(record: dict) -> bool:
    return record.get("status") == "passed"
