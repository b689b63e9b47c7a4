"""The one place that turns a walk over foreign ops into prunedge layers.

Every importer walks its file in data-flow order and calls these methods with the names of the
tensors an op reads and writes (any hashable: ONNX names, TFLite indices, ...). The rules live
here once, so the formats cannot drift apart: what may follow what, which activations exist,
where a flatten, a zero padding or a softmax may sit, and which branches the description can
express (a tensor may be read by several layers; branches join only in a residual Add of two
tensors of one shape). Shapes are tracked channels-last as the description stores them;
importers hand over kernels as [out, in, kh, kw] and padding as (top, bottom, left, right).

An activation, a bias or a BatchNorm changes the layer before it, so the tensor from before the
change may not be read again; the Chain refuses that by name instead of importing a different
function. A BatchNorm becomes a layer here and is folded by `pipeline.fold` afterwards.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from pipeline.errors import fail
from pipeline.importers.common import OUTPUT_TRANSFORMS, as_bias, float_array
from pipeline.layers import (ACTIVATIONS, WEIGHTED, Add, BatchNorm, Conv2D, Dense, DepthwiseConv2D, Flatten,
                             GlobalAvgPool, Pool2D)

NO_PADS = (0, 0, 0, 0)
NON_NEGATIVE = frozenset({"relu", "relu6", "sigmoid"})  # zero padding = -inf padding for a max pool


@dataclass(frozen=True)
class _Ref:
    """What a tensor name stands for: a layer's output (-1 = the input) at one version, maybe padded."""
    layer: int
    version: int
    pads: tuple = NO_PADS


@dataclass(frozen=True)
class Described:
    """An importer's result: layers in execution order, the per-sample input shape, meta."""
    layers: tuple
    input_shape: tuple
    meta: dict


class Chain:
    """Accumulates description layers; `input_shape` is per sample, channels-last, None if unknown."""

    def __init__(self, source: str, input_name, input_shape=None, input_label=None, layout: str = "nhwc"):
        self.source, self.layout = source, layout  # layout: how the file itself takes images
        self.layers, self.shapes, self.wheres, self.versions, self.changes = [], [], [], [], []
        self.readers: dict[int, list[int]] = {-1: []}
        self.names = {input_name: _Ref(-1, 0)}
        self.input_shape = None if input_shape is None else tuple(input_shape)
        self.input_label = list(input_label if input_label is not None else (input_shape or []))
        self.input_flat = False
        self.output_transform: str | None = None
        self._bias_open: int | None = None  # a Dense just added: a bias Add may still follow

    # ------------------------------------------------------------ bookkeeping

    def _fail(self, where: str, problem: str):
        return fail(self.source, f"{where}: {problem}")

    def has(self, name) -> bool:
        """Is `name` a tensor of the layer data (not a weight, not a shape computation)?"""
        return name in self.names

    def shape(self, name, where: str, *, image: bool = False) -> tuple | None:
        """Per-sample shape of a data tensor ([h, w, c] or [features]); `image` requires an image."""
        idx, shape, _ = self._read(name, where, pads_ok=True)
        return self._image(idx, shape, where) if image else shape

    def _check_open(self, where: str, what: str) -> None:
        if self.output_transform is not None:
            raise self._fail(where, f"{what} after the final {self.output_transform} is not supported")

    def _read(self, name, where: str, *, pads_ok: bool = False) -> tuple[int, tuple, tuple]:
        """(layer index, shape, pending zero padding) of a data tensor, refusing stale or padded reads."""
        ref = self.names.get(name)
        if ref is None:
            raise self._fail(where, f"reads {name!r}, which is neither a constant in the file nor computed "
                                    "from the input by a supported op")
        if ref.layer >= 0 and ref.version != self.versions[ref.layer]:
            raise self._fail(where, f"reads the output of {self.wheres[ref.layer]} from before its "
                                    f"{self.changes[ref.layer]} (only one reader of that tensor is supported)")
        if any(ref.pads) and not pads_ok:
            raise self._fail(where, "reads zero-padded data: padding is only supported right before a convolution")
        return ref.layer, (self.input_shape if ref.layer < 0 else self.shapes[ref.layer]), ref.pads

    def _image(self, idx: int, shape, where: str) -> tuple:
        if idx < 0 and (self.input_flat or shape is None or len(shape) != 3 or None in shape):
            raise self._fail(where, f"needs an image input with a static size; the input is "
                                    f"{'flattened' if self.input_flat else self.input_label or 'of unknown shape'}")
        if len(shape) != 3:
            raise self._fail(where, f"reads a feature vector {list(shape)}; it needs an image [h, w, c]")
        return shape

    def _add_layer(self, layer, srcs: list[int], out, where: str, shape: tuple) -> int:
        idx = len(self.layers)
        inputs = () if len(srcs) == 1 and srcs[0] == idx - 1 else tuple(srcs)
        self.layers.append(replace(layer, inputs=inputs))
        self.shapes.append(tuple(int(s) for s in shape))
        self.wheres.append(where)
        self.versions.append(0)
        self.changes.append("")
        self.readers[idx] = []
        for s in srcs:
            self.readers[s].append(idx)
        self.names[out] = _Ref(idx, 0)
        self._bias_open = None
        return idx

    def _modify(self, idx: int, where: str, what: str, **changes) -> None:
        """Change layer idx in place (activation, bias); nothing may read its old output yet."""
        if self.readers[idx]:
            raise self._fail(where, f"changes the output of {self.wheres[idx]}, which "
                                    f"{self.wheres[self.readers[idx][0]]} already reads (not supported)")
        self.layers[idx] = replace(self.layers[idx], **changes)
        self._bump(idx, what)

    def _bump(self, idx: int, what: str) -> None:
        self.versions[idx] += 1
        self.changes[idx] = what

    # ------------------------------------------------------------ ops without weights

    def alias(self, src, out, where: str) -> None:
        """`out` is `src` (Identity, Dropout at inference, a flatten of a feature vector)."""
        self._read(src, where, pads_ok=True)
        self.names[out] = self.names[src]

    def flatten(self, src, out, where: str, layout: str = "channels_last") -> None:
        """To [batch, features]: a no-op on the input (it is taken flat) or a vector, else a Flatten."""
        self._check_open(where, "a reshape")
        idx, shape, _ = self._read(src, where)
        if idx < 0:
            if any(isinstance(self.layers[r], (Conv2D, DepthwiseConv2D, Pool2D, GlobalAvgPool, Add))
                   for r in self.readers[-1]):
                raise self._fail(where, "flattens the input that image layers also read")
            self.input_flat = True
            known = shape is not None and None not in shape
            self.input_shape = (int(np.prod(shape)),) if known else None
            self.names[out] = self.names[src]
        elif len(shape) == 1:
            self.names[out] = self.names[src]
        else:
            self._add_layer(Flatten(layout), [idx], out, where, (int(np.prod(shape)),))

    def zero_pad(self, src, out, pads, where: str) -> None:
        """Zero padding (top, bottom, left, right), merged into the convolution that reads it."""
        idx, shape, pending = self._read(src, where, pads_ok=True)
        self._image(idx, shape, where)
        if min(pads) < 0:
            raise self._fail(where, f"negative padding {list(pads)} (cropping) is not supported")
        ref = self.names[src]
        self.names[out] = replace(ref, pads=tuple(int(a) + int(b) for a, b in zip(pending, pads)))

    def pool(self, src, out, op: str, size, stride, pads, where: str) -> None:
        """Max or average pooling; an average pool may not pad, a max pool pads with -inf."""
        self._check_open(where, "a layer")
        idx, shape, pending = self._read(src, where, pads_ok=True)
        shape = self._image(idx, shape, where)
        non_negative = idx >= 0 and getattr(self.layers[idx], "activation", "") in NON_NEGATIVE
        if any(pending) and not (op == "max" and non_negative):
            raise self._fail(where, "pools zero-padded data (only a max pool after relu/relu6/sigmoid can)")
        pads = tuple(int(a) + int(b) for a, b in zip(pads, pending))
        if op == "avg" and any(pads):
            raise self._fail(where, f"padded average pooling (pads {list(pads)}) is not supported: "
                                    "runtimes disagree on whether the padding counts")
        layer = Pool2D(op, size, stride, pads)
        if max(pads[:2]) >= layer.size[0] or max(pads[2:]) >= layer.size[1]:
            raise self._fail(where, f"padding {list(pads)} is not smaller than the window {list(layer.size)}")
        self._add_layer(layer, [idx], out, where, self._out_shape(layer, shape, where))

    def global_pool(self, src, out, where: str) -> None:
        """Average over all positions: [h, w, c] -> [c]."""
        self._check_open(where, "a layer")
        idx, shape, _ = self._read(src, where)
        shape = self._image(idx, shape, where)
        self._add_layer(GlobalAvgPool(), [idx], out, where, (shape[2],))

    def add(self, a, b, out, where: str) -> None:
        """A residual connection: the sum of two data tensors of one image shape."""
        self._check_open(where, "a layer")
        (ia, sa, _), (ib, sb, _) = self._read(a, where), self._read(b, where)
        if sa is None or sb is None:
            self._image(-1, None, where)
        if sa != sb:
            raise self._fail(where, f"adds shapes {list(sa or [])} and {list(sb or [])}: only a residual Add "
                                    "of two tensors of one shape is supported")
        if len(sa) != 3:
            raise self._fail(where, f"a residual Add of feature vectors {list(sa)} is not supported "
                                    "(only of images [h, w, c])")
        for i in (ia, ib):
            self._image(i, sa, where)
        self._add_layer(Add(inputs=(ia, ib)), [ia, ib], out, where, sa)

    def output(self, src, out, name: str, where: str) -> None:
        """Softmax/LogSoftmax as the very last op: recorded in meta, not made a layer."""
        self._check_open(where, name)
        idx, _, _ = self._read(src, where)
        if idx < 0:
            raise self._fail(where, f"{name} before any layer is not supported")
        self.output_transform = name
        self.names[out] = self.names[src]
        self._bias_open = None

    def activation(self, src, out, name: str, where: str) -> None:
        """Put an activation on the layer that computed `src` (identity is a no-op anywhere)."""
        if name == "identity":
            return self.alias(src, out, where)
        if name in OUTPUT_TRANSFORMS:
            return self.output(src, out, name, where)
        self._check_open(where, f"activation {name}")
        if name not in ACTIVATIONS:
            raise self._fail(where, f"activation {name!r} is not supported (supported: {', '.join(ACTIVATIONS)})")
        idx, _, _ = self._read(src, where)
        if idx < 0:
            raise self._fail(where, f"activation {name} before the first layer is not supported")
        target = self._through_max_pool(idx, name, where) if isinstance(self.layers[idx], Pool2D) else idx
        if not hasattr(self.layers[target], "activation"):
            raise self._fail(where, f"activation {name} after a {self.layers[target].kind} layer is not supported")
        current = self.layers[target].activation
        if current != "identity":
            raise self._fail(where, f"two activations in a row ({current} then {name}) are not supported")
        if target == idx:
            self._modify(idx, where, f"activation {name}", activation=name)
        else:  # the pool is the only reader of target and has no reader itself (checked)
            self.layers[target] = replace(self.layers[target], activation=name)
            self._bump(target, f"activation {name}")
            self._bump(idx, f"activation {name}")
        self.names[out] = _Ref(idx, self.versions[idx])
        self._bias_open = None

    def _through_max_pool(self, idx: int, name: str, where: str) -> int:
        """act(maxpool(x)) = maxpool(act(x)) for monotone act: the layer before the pool takes it."""
        (j,) = self.layers[idx].inputs or (idx - 1,)
        if self.layers[idx].op != "max" or j < 0 or self.readers[j] != [idx] or self.readers[idx]:
            raise self._fail(where, f"activation {name} after a pool is only supported after a max pool "
                                    "that alone reads a conv, dense, BatchNorm or Add layer")
        return j

    # ------------------------------------------------------------ ops with weights

    def linear(self, src, out, weight, bias, where: str) -> None:
        """A fully connected layer; `weight` is [in, out], `bias` [out] or None."""
        self._check_open(where, "a layer")
        w = float_array(weight, self.source, where)
        if w.ndim != 2:
            raise self._fail(where, f"weight must be 2-D, got shape {list(w.shape)}")
        idx, shape, _ = self._read(src, where)
        if idx < 0:
            self._input_features(w.shape[0])
        elif len(shape) != 1:
            raise self._fail(where, f"reads an image {list(shape)}; a dense layer needs a feature vector "
                                    "(flatten or global-pool first)")
        elif shape[0] != w.shape[0]:
            raise self._fail(where, f"takes {w.shape[0]} inputs but the previous layer gives {shape[0]}")
        layer = Dense(w, as_bias(self.source, bias, w.shape[1], where), "identity")
        self._bias_open = self._add_layer(layer, [idx], out, where, (w.shape[1],))

    def _input_features(self, width: int) -> None:
        shape = self.input_shape
        if shape is not None and len(shape) > 1 and not self.input_flat:
            raise fail(self.source, f"input has shape {self.input_label} per example but no Flatten/Reshape "
                                    "before the first layer")
        if shape is not None and None not in shape and int(np.prod(shape)) != width:
            raise fail(self.source, f"input has {int(np.prod(shape))} features but the first layer takes {width}")
        self.input_shape, self.input_flat = (width,), True

    def add_bias(self, src, out, bias, where: str) -> None:
        """A separate `+ b` right after a linear op (MatMul + Add, TFLite FC + ADD)."""
        self._check_open(where, "an Add")
        idx, _, _ = self._read(src, where)
        if idx < 0 or idx != self._bias_open:
            raise self._fail(where, "an Add is only supported as the bias right after a MatMul/Gemm/fully "
                                    "connected op, or as a residual Add of two tensors of one shape")
        layer = self.layers[idx]
        self._modify(idx, where, "bias", bias=layer.bias + as_bias(self.source, bias, layer.bias.size, where))
        self.names[out] = _Ref(idx, self.versions[idx])
        self._bias_open = idx

    def conv(self, src, out, weight, bias, stride, pads, where: str, *, depthwise: bool = False) -> None:
        """A convolution, weight [out, in, kh, kw]; depthwise: [c, 1, kh, kw], one filter per channel."""
        self._check_open(where, "a layer")
        idx, shape, pending = self._read(src, where, pads_ok=True)
        h, w_, c = self._image(idx, shape, where)
        w = float_array(weight, self.source, where)
        if w.ndim != 4:
            raise self._fail(where, f"weight must be 4-D [out, in, kh, kw], got shape {list(w.shape)}")
        pads = tuple(int(a) + int(b) for a, b in zip(pads, pending))
        b = as_bias(self.source, bias, w.shape[0], where)
        if depthwise:
            if w.shape[:2] != (c, 1):
                raise self._fail(where, f"depthwise weight {list(w.shape)} does not fit the {c} channels it gets")
            layer = DepthwiseConv2D(w, b, stride, pads, "identity")
        else:
            if w.shape[1] != c:
                raise self._fail(where, f"takes {w.shape[1]} channels but gets {c}")
            layer = Conv2D(w, b, stride=stride, pads=pads, activation="identity")
        self._add_layer(layer, [idx], out, where, self._out_shape(layer, (h, w_, c), where))

    def _out_shape(self, layer, shape, where: str) -> tuple:
        out = layer.out_shape(shape)
        if min(out) < 1:
            raise self._fail(where, f"gives an empty output {list(out)} from {list(shape)}")
        return out

    def batchnorm(self, src, out, gamma, beta, mean, var, eps, where: str) -> None:
        """Inference BatchNorm over channels, folded later into the conv/dense layer it follows."""
        self._check_open(where, "a layer")
        idx, shape, _ = self._read(src, where)
        prev = self.layers[idx] if idx >= 0 else None
        if not isinstance(prev, WEIGHTED) or prev.activation != "identity" or self.readers[idx]:
            raise self._fail(where, "BatchNorm can only be folded into a conv or dense layer right before it "
                                    "with no activation and no other reader")
        arrays = [float_array(a, self.source, where).reshape(-1) for a in (gamma, beta, mean, var)]
        if any(a.shape != (shape[-1],) for a in arrays):
            raise self._fail(where, f"statistics {[list(a.shape) for a in arrays]} do not fit {shape[-1]} channels")
        if (arrays[3] < 0).any() or not float(eps) > 0:
            raise self._fail(where, "negative variance or eps <= 0")
        self._add_layer(BatchNorm(*arrays, eps=float(eps), activation="identity"), [idx], out, where, shape)
        self._bump(idx, "BatchNorm")

    # ------------------------------------------------------------ the result

    def result(self, output_name, what: str = "the model output") -> Described:
        """The layers, once the walk is over; `output_name` must be the last layer's current output."""
        if not self.layers:
            raise fail(self.source, "no dense (fully connected) or convolution layers found")
        last = len(self.layers) - 1
        ref = self.names.get(output_name)
        if ref is None or ref.layer != last or ref.version != self.versions[last] or any(ref.pads):
            raise fail(self.source, f"{what} is not the end of the layer chain")
        unused = [i for i in range(last) if not self.readers[i]]
        if unused:
            raise self._fail(self.wheres[unused[0]], "its output is never used (branches may only join in a "
                                                     "residual Add)")
        if len(self.shapes[last]) != 1:
            raise fail(self.source, f"the output has shape {list(self.shapes[last])}: the model must end in a "
                                    "feature vector (flatten or global-pool, then a dense layer)")
        meta = {"output_transform": self.output_transform} if self.output_transform else {}
        shape = self.input_shape if self.input_shape is not None else (self.layers[0].weight.shape[0],)
        if len(shape) == 3:  # the description takes (h, w, c); data laid out like the file's input differs
            meta["source_input_layout"] = self.layout
        return Described(tuple(self.layers), tuple(int(s) for s in shape), meta)
