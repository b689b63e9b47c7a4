"""Per-layer representation choice from measured timings: the fastest *correct* format per layer.

Which format wins depends on the layer, not just the sparsity: at batch 1 a 95%-sparse 500x200
layer is 4x slower as SciPy CSR than dense while a 95%-sparse 1000x1000 one is faster. The
timings come from `bench/layer_timing.py` (measured on this machine, each candidate verified
against the numpy layer first); this module only chooses and applies, so it is pure and testable.

Formats per runtime (a LiteRT file can mix them per FULLY_CONNECTED, see export.tflite_block.mixed):
  numpy:  dense | csr
  litert: dense | block (1x4 fp32 sparse) | int8 (dynamic range) | int8-block (1x16 int8 sparse)
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from pipeline.errors import fail
from pipeline.model import Model, validate

RUNTIME_FORMATS = {
    "numpy": ("dense", "csr"),
    "litert": ("dense", "block", "int8", "int8-block"),
}
INT8_FORMATS = frozenset({"int8", "int8-block"})
STATUSES = ("ok", "wrong", "failed", "unavailable")


@dataclass(frozen=True, kw_only=True)
class Timing:
    """One measured candidate: layer index, format, median latency and whether it was correct."""
    layer: int
    format: str
    p50_us: float = float("nan")
    status: str = "ok"
    reason: str = ""


def candidates(runtime: str, *, allow_int8: bool = False) -> tuple[str, ...]:
    if runtime not in RUNTIME_FORMATS:
        raise fail("runtime", f"unknown runtime {runtime!r} (choose from {', '.join(RUNTIME_FORMATS)})")
    return tuple(f for f in RUNTIME_FORMATS[runtime] if allow_int8 or f not in INT8_FORMATS)


def choose(timings: list[Timing], n_layers: int, formats: tuple[str, ...]) -> list[str]:
    """Per layer, the allowed format with the smallest p50 among correct ("ok") measurements;
    ties go to the earlier format in `formats` (dense first), so a tie never adds sparsity."""
    chosen = []
    for i in range(n_layers):
        ok = [t for t in timings if t.layer == i and t.format in formats and t.status == "ok"
              and np.isfinite(t.p50_us)]
        if not ok:
            raise fail(f"layer {i}", f"no correct measured candidate among {', '.join(formats)}")
        chosen.append(min(ok, key=lambda t: (t.p50_us, formats.index(t.format))).format)
    return chosen


def apply(model: Model, runtime: str, formats: list[str]) -> Model:
    """The description in the chosen per-layer forms: numpy stores csr/dense weights; LiteRT
    keeps dense arrays (the exporter builds each layer in its format from meta["layer_formats"])."""
    if len(formats) != len(model.layers):
        raise fail("layer_formats", f"{len(formats)} formats for {len(model.layers)} layers")
    bad = [f for f in formats if f not in RUNTIME_FORMATS[runtime]]
    if bad:
        raise fail("layer_formats", f"{bad[0]!r} is not a {runtime} format")
    layers = []
    for layer, f in zip(model.layers, formats):
        if runtime == "numpy" and f == "csr":
            import scipy.sparse as sp
            w = sp.csr_array(layer.dense_weight())
            w.sort_indices()
            layers.append(replace(layer, weight=w))
        else:
            layers.append(replace(layer, weight=layer.dense_weight()))
    physical = "mixed" if len(set(formats)) > 1 else formats[0]
    return validate(model.with_layers(layers, layer_formats=list(formats), format_runtime=runtime,
                                      physical=physical))


def autoformat(model: Model, runtime: str, timings: list[Timing], *, allow_int8: bool = False,
               delegate: str | None = None) -> Model:
    """Choose per layer from `timings` and return the combined description, with the choice in
    meta["layer_formats"], the measured p50 per chosen layer in meta["layer_p50_us"] and, for
    LiteRT, the delegate the timings were taken under in meta["delegate"]."""
    formats = candidates(runtime, allow_int8=allow_int8)
    chosen = choose(timings, len(model.layers), formats)
    p50 = [next(t.p50_us for t in timings if t.layer == i and t.format == f and t.status == "ok")
           for i, f in enumerate(chosen)]
    out = apply(model, runtime, chosen)
    extra = {"layer_p50_us": [round(float(v), 3) for v in p50]}
    if delegate is not None:
        extra["delegate"] = delegate
    return out.with_layers(out.layers, **extra)
