"""NCNN files written directly from the description: `model.ncnn.param` (text) + `model.ncnn.bin`.

No pnnx or torch: measured here, pnnx writes the same graph and byte-identical fp32 weights but
needs torch (its pip package pulls a CUDA build) and segfaults on sparse ONNX. NCNN blobs are
[c, h, w] per sample (a 2-D blob [batch, features] runs InnerProduct as one GEMM); its Flatten is
channels-first, so the Dense after a channels_last Flatten gets its rows permuted. A blob read by
two layers goes through a Split (without it a residual block is silently wrong under lightmode).
Weights are stored float32 (tag 0): ncnn's defaults use fp16 on ARMv8.2 (error 0.15 on the CNN on
a Pi 5), so the session turns every fp16/bf16 option off. CSR weights are written densified.
Input blob `in0`, output blob `out0`.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from pipeline.errors import fail
from pipeline.fileio import write_bytes
from pipeline.layers import (LEAKY_RELU_ALPHA, Add, Conv2D, Dense, DepthwiseConv2D, Flatten, GlobalAvgPool,
                             Pool2D)
from pipeline.model import Model, validate

MAGIC = 7767517
TAG_FP32 = 0
BIN_SUFFIX = ".bin"  # model.ncnn.param -> model.ncnn.bin
INPUT, OUTPUT = "in0", "out0"
# activation -> (fused activation_type (param 9), its params, or a separate layer type)
ACTIVATIONS = {"identity": (0, [], None), "relu": (1, [], None), "leaky_relu": (2, [LEAKY_RELU_ALPHA], None),
               "relu6": (3, [0.0, 6.0], None), "sigmoid": (4, [], None), "tanh": (0, [], "TanH")}
STANDALONE = {"relu": ("ReLU", {}), "leaky_relu": ("ReLU", {0: LEAKY_RELU_ALPHA}),
              "relu6": ("Clip", {0: 0.0, 1: 6.0}), "sigmoid": ("Sigmoid", {}), "tanh": ("TanH", {})}


def bin_path(param_path: Path) -> Path:
    return Path(param_path).with_suffix(BIN_SUFFIX)


def _fmt(v) -> str:
    """ints plain; floats as %.8e (round-trips float32 and fits ncnn's 15-character field)."""
    return str(int(v)) if isinstance(v, (int, np.integer)) else "%.8e" % float(np.float32(v))


class Graph:
    """Layers in order: (type, name, bottoms, tops, params, weights [(array, tagged)])."""

    def __init__(self):
        self.layers: list[list] = []

    def add(self, kind: str, bottoms: list[str], top: str, params=None, weights=()) -> str:
        self.layers.append([kind, f"{kind.lower()}_{len(self.layers)}", list(bottoms), [top], dict(params or {}),
                            list(weights)])
        return top

    def activated(self, kind: str, bottoms, top: str, params: dict, weights, activation: str) -> str:
        """A weighted layer with its activation fused, or followed by a separate layer (tanh)."""
        act, act_params, extra = ACTIVATIONS[activation]
        if act:
            params[9] = act
            if act_params:
                params[-23310] = act_params
        if extra is None:
            return self.add(kind, bottoms, top, params, weights)
        return self.add(extra, [self.add(kind, bottoms, f"{top}_z", params, weights)], top)

    def serialize(self) -> tuple[bytes, bytes]:
        layers = _with_splits(self.layers)
        blobs = {t for layer in layers for t in layer[3]}
        lines, binary = [str(MAGIC), f"{len(layers)} {len(blobs)}"], bytearray()
        for kind, name, bottoms, tops, params, weights in layers:
            fields = [kind, name, str(len(bottoms)), str(len(tops)), *bottoms, *tops]
            for k, v in params.items():
                fields.append(f"{k}={len(v)}," + ",".join(_fmt(float(e)) for e in v) if isinstance(v, list)
                              else f"{k}={_fmt(v)}")
            lines.append(" ".join(fields))
            for array, tagged in weights:
                binary += (struct.pack("<I", TAG_FP32) if tagged else b"") + \
                    np.ascontiguousarray(array, dtype="<f4").tobytes()
        return ("\n".join(lines) + "\n").encode(), bytes(binary)


def _with_splits(layers: list[list]) -> list[list]:
    """A Split after every blob more than one layer reads (ncnn frees a blob after its reader)."""
    readers: dict[str, list[tuple[int, int]]] = {}
    for li, layer in enumerate(layers):
        for bi, blob in enumerate(layer[2]):
            readers.setdefault(blob, []).append((li, bi))
    layers = [[k, n, list(b), list(t), p, w] for k, n, b, t, p, w in layers]
    out = []
    for layer in layers:
        out.append(layer)
        for blob in layer[3]:
            uses = readers.get(blob, [])
            if len(uses) > 1:
                tops = [f"{blob}_split{k}" for k in range(len(uses))]
                out.append(["Split", f"split_{blob}", [blob], tops, {}, []])
                for k, (li, bi) in enumerate(uses):
                    layers[li][2][bi] = tops[k]
    return out


def _conv_params(layer, out: int, size: int, group: int = 0) -> dict:
    kh, kw = layer.kernel
    top, bottom, left, right = layer.pads
    params = {0: out, 1: kw, 11: kh, 2: 1, 12: 1, 3: layer.stride[1], 13: layer.stride[0],
              4: left, 15: right, 14: top, 16: bottom, 5: 1, 6: size}
    return {**params, 7: group} if group else params


def _dense(g, layer, xs, top, ctx):
    w = layer.dense_weight()
    rows = ctx.get("rows", {}).get(ctx["src"])
    w = w[rows] if rows is not None else w  # channels_last features, ncnn flattens channels-first
    params = {0: w.shape[1], 1: 1, 2: w.size}
    return g.activated("InnerProduct", xs, top, params, [(w.T, True), (layer.bias, False)], layer.activation)


def _conv(g, layer, xs, top, ctx):
    w = layer.dense_weight()
    group = w.shape[0] if isinstance(layer, DepthwiseConv2D) else 0
    kind = "ConvolutionDepthWise" if group else "Convolution"
    return g.activated(kind, xs, top, _conv_params(layer, w.shape[0], w.size, group),
                       [(w, True), (layer.bias, False)], layer.activation)


def _pool(g, layer, xs, top, ctx):
    (kh, kw), (sh, sw) = layer.size, layer.stride
    t, b, l, r = layer.pads
    return g.add("Pooling", xs, top, {0: {"max": 0, "avg": 1}[layer.op], 1: kw, 11: kh, 2: sw, 12: sh,
                                       3: l, 14: r, 13: t, 15: b, 5: 1, 6: 0})


def _flatten(g, layer, xs, top, ctx):
    h, w, c = ctx["shape"]
    if layer.layout == "channels_last":  # ncnn's order is (c, h, w): the reader's rows follow it
        ctx.setdefault("rows", {})[ctx["index"]] = np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1).ravel()
    return g.add("Flatten", xs, top)


def _add(g, layer, xs, top, ctx):
    if layer.activation == "identity":
        return g.add("BinaryOp", xs, top, {0: 0})
    kind, params = STANDALONE[layer.activation]
    return g.add(kind, [g.add("BinaryOp", xs, f"{top}_sum", {0: 0})], top, params)


EMITTERS = {Dense: _dense, Conv2D: _conv, DepthwiseConv2D: _conv, Pool2D: _pool, Flatten: _flatten, Add: _add,
            GlobalAvgPool: lambda g, layer, xs, top, ctx: g.add("Pooling", xs, top, {0: 1, 4: 1})}


def build(model: Model) -> tuple[bytes, bytes]:
    """(param text, bin bytes) of the description; BatchNorm must be folded first."""
    validate(model)
    g, shapes = Graph(), model.shapes()
    shape = model.input_shape
    hints = {0: shape[0]} if len(shape) == 1 else {0: shape[1], 1: shape[0], 2: shape[2]}
    g.add("Input", [], INPUT, hints)
    names, ctx, last = {-1: INPUT}, {}, len(model.layers) - 1
    for i, layer in enumerate(model.layers):
        if type(layer) not in EMITTERS:
            raise fail(f"layer {i} ({layer.kind})", "has no NCNN layer (fold BatchNorm first)")
        src = model.sources(i)
        ctx.update(index=i, src=src[0], shape=model.input_shape if src[0] < 0 else shapes[src[0]])
        names[i] = EMITTERS[type(layer)](g, layer, [names[j] for j in src], OUTPUT if i == last else f"b{i}", ctx)
    return g.serialize()


def export(model: Model, out_path: Path, options=None) -> Path:
    """Write model.ncnn.param and, beside it, model.ncnn.bin."""
    param, binary = build(model)
    write_bytes(bin_path(out_path), binary)
    return write_bytes(out_path, param)


def inspect(path: Path) -> tuple[list[str], bool]:
    """(sorted layer types, runs_sparse=False: NCNN has no sparse layers) read from the .param."""
    try:
        lines = Path(path).read_text(encoding="ascii").splitlines()
        if not lines or lines[0].strip() != str(MAGIC):
            raise ValueError("no 7767517 magic")
        ops = sorted({line.split()[0] for line in lines[2:] if line.strip()})
    except (OSError, ValueError, UnicodeDecodeError, IndexError) as e:
        raise fail(path, f"not an NCNN param file ({e})") from None
    return ops, False
