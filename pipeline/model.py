"""The framework-neutral model description every stage reads and writes.

A model is a tuple of layers (`pipeline.layers`) in execution order, an input shape (features
`(784,)` or an image `(28, 28, 1)`, channels-last) and provenance metadata. A layer reads the
layer before it, or the layers its `inputs` name (-1 = the model input), so residual blocks are
expressible; the last layer's output, a feature vector, is the model's output (logits).
Its numpy forward pass is the reference every exported file is checked against.
Saved as one `.npz` (arrays + a UTF-8 JSON header) and loaded without pickle by `pipeline.model_io`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp

from pipeline.errors import fail
from pipeline.layers import (ACTIVATIONS, KINDS, LEAKY_RELU_ALPHA, WEIGHTED, Add, BatchNorm,  # noqa: F401
                             Conv2D, Dense, DepthwiseConv2D, Flatten, GlobalAvgPool, Layer, Pool2D)


IMAGE_CHUNK = 64  # images per forward pass of an image model


@dataclass(frozen=True)
class Model:
    layers: tuple
    meta: dict = field(default_factory=dict)
    input_shape: tuple = ()  # per sample, without the batch; () = the first Dense layer's width

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        shape = self.input_shape or ((self.layers[0].weight.shape[0],) if self.layers and
                                     isinstance(self.layers[0], Dense) else ())
        object.__setattr__(self, "input_shape", tuple(int(s) for s in shape))

    def sources(self, i: int) -> tuple[int, ...]:
        """Indices of the layers layer i reads (-1 = the model input)."""
        return tuple(self.layers[i].inputs) or (i - 1,)

    @property
    def is_chain(self) -> bool:
        """Every layer reads the one before it (no branches)."""
        return all(self.sources(i) == (i - 1,) for i in range(len(self.layers)))

    @property
    def is_mlp(self) -> bool:
        """A chain of Dense layers: what the per-layer MLP methods and formats handle."""
        return self.is_chain and all(isinstance(layer, Dense) for layer in self.layers)

    @property
    def widths(self) -> list[int]:
        """[input, hidden..., output] of an MLP, e.g. [784, 1000, 1000, 500, 200, 10]."""
        if not self.is_mlp:
            raise fail("model", "layer widths are defined for fully connected chains only")
        return [self.layers[0].shape[0]] + [layer.shape[1] for layer in self.layers]

    @property
    def input_dim(self) -> int:
        """Features per sample (28x28x1 images: 784)."""
        return int(np.prod(self.input_shape))

    @property
    def output_dim(self) -> int:
        return int(self.shapes()[-1][0])

    def weighted(self) -> list[tuple[int, Layer]]:
        """(index, layer) of every layer with a weight and a bias."""
        return [(i, layer) for i, layer in enumerate(self.layers) if isinstance(layer, WEIGHTED)]

    @property
    def n_params(self) -> int:
        return sum(layer.n_weights + layer.bias.size for _, layer in self.weighted())

    @property
    def n_nonzero(self) -> int:
        return sum(layer.nnz + int(np.count_nonzero(layer.bias)) for _, layer in self.weighted())

    def shapes(self) -> list[tuple]:
        """Output shape (without batch) of every layer."""
        out: list[tuple] = []
        for i, layer in enumerate(self.layers):
            out.append(layer.out_shape(*[self.input_shape if j < 0 else out[j] for j in self.sources(i)]))
        return out

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits (or final activations) for a float32 batch [n, *input_shape] (or flat [n, input_dim]).
        Image batches run in chunks of IMAGE_CHUNK so activations stay small (cache, and a Pi's memory)."""
        x = check_input(x, self.input_shape)
        if len(self.input_shape) == 3 and len(x) > IMAGE_CHUNK:
            return np.concatenate([self._forward(x[i:i + IMAGE_CHUNK]) for i in range(0, len(x), IMAGE_CHUNK)])
        return self._forward(x)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        last_use = {}
        for i in range(len(self.layers)):
            for j in self.sources(i):
                last_use[j] = i
        values = {-1: x}
        for i, layer in enumerate(self.layers):
            values[i] = layer(*[values[j] for j in self.sources(i)])
            for j in self.sources(i):
                if last_use[j] == i:
                    del values[j]  # keep only what a later layer still reads
        return values[len(self.layers) - 1]

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x).argmax(axis=1)

    def with_layers(self, layers, **meta) -> "Model":
        """These layers and this meta (updated); a feature-vector input follows the first Dense layer."""
        layers = tuple(layers)
        flat = len(self.input_shape) == 1 and layers and isinstance(layers[0], Dense)
        return replace(self, layers=layers, meta={**self.meta, **meta},
                       input_shape=(layers[0].weight.shape[0],) if flat else self.input_shape)

    def densified(self) -> "Model":
        return self.with_layers([replace(l, weight=l.dense_weight()) if isinstance(l, WEIGHTED) else l
                                 for l in self.layers])


def check_input(x, input_shape, name: str = "input") -> np.ndarray:
    """A float32 batch shaped [n, *input_shape], from that shape, flat [n, features], or [n, h, w] for
    one-channel images; anything else is a PrunedgeError naming the expected shape."""
    input_shape = (int(input_shape),) if np.isscalar(input_shape) else tuple(input_shape)
    try:
        x = np.asarray(x)
    except (ValueError, TypeError) as e:  # ragged nested lists and the like
        raise fail(name, f"not a numeric array ({' '.join(str(e).split())[:200]})") from None
    accepted = {input_shape, (int(np.prod(input_shape)),)}
    if len(input_shape) == 3 and input_shape[2] == 1:
        accepted.add(input_shape[:2])
    if x.ndim < 2 or tuple(x.shape[1:]) not in accepted:
        expected = " or ".join(f"[batch, {', '.join(map(str, s))}]" for s in sorted(accepted, key=len, reverse=True))
        raise fail(name, f"expected shape {expected}, got {list(x.shape)}")
    if x.shape[0] == 0:
        raise fail(name, "empty batch")
    if not np.issubdtype(x.dtype, np.floating):
        raise fail(name, f"expected float32 values, got dtype {x.dtype}")
    return x.astype(np.float32, copy=False).reshape(len(x), *input_shape)


def dense_model(weights, biases, activations=None, **meta) -> Model:
    """Build a validated MLP from lists of [in, out] weights and biases."""
    n = len(weights)
    activations = activations or ["relu"] * (n - 1) + ["identity"]
    layers = [Dense(np.ascontiguousarray(w, dtype=np.float32), np.ascontiguousarray(b, dtype=np.float32), a)
              for w, b, a in zip(weights, biases, activations)]
    return validate(Model(tuple(layers), meta))


def random_model(widths, seed: int = 0, activations=None, **meta) -> Model:
    """He-initialised MLP, for tests and benchmarks of untrained shapes."""
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0, np.sqrt(2.0 / a), (a, b)) for a, b in zip(widths[:-1], widths[1:])]
    biases = [rng.normal(0, 0.05, b) for b in widths[1:]]
    return dense_model(weights, biases, activations, seed=seed, framework="random", **meta)


def is_sparse(layer) -> bool:
    return isinstance(layer, WEIGHTED) and sp.issparse(layer.weight)




# ---------------------------------------------------------------- validation

def validate(model: Model, source: str = "model") -> Model:
    """Check kinds, wiring, shapes, dtypes, finiteness and names; a PrunedgeError names the layer."""
    if not model.layers:
        raise fail(source, "model has no layers")
    if not model.input_shape or len(model.input_shape) not in (1, 3) or min(model.input_shape) < 1:
        raise fail(source, f"input shape {list(model.input_shape)} is neither [features] nor [h, w, c] "
                           "with every size >= 1")
    shapes: list[tuple] = []
    used = set()
    for i, layer in enumerate(model.layers):
        where = f"layer {i} ({getattr(layer, 'kind', type(layer).__name__)})"
        if type(layer) not in KINDS.values():
            raise fail(source, f"{where}: not a layer kind of the description")
        srcs = model.sources(i)
        if len(srcs) != (2 if isinstance(layer, Add) else 1) or not all(-1 <= j < i for j in srcs):
            raise fail(source, f"{where}: reads {list(srcs)}; needs {2 if isinstance(layer, Add) else 1} "
                               "earlier layer(s) (-1 = the input)")
        used.update(srcs)
        ins = [model.input_shape if j < 0 else shapes[j] for j in srcs]
        _check_layer(layer, ins, source, where)
        out = tuple(int(s) for s in layer.out_shape(*ins))
        if min(out) < 1:
            raise fail(source, f"{where}: output shape {list(out)} has an empty dimension")
        shapes.append(out)
    dead = sorted(set(range(len(model.layers) - 1)) - used)
    if dead:
        raise fail(source, f"layer {dead[0]}: its output is never used")
    if len(shapes[-1]) != 1:
        raise fail(source, f"the last layer gives shape {list(shapes[-1])}; the model must end in a feature vector")
    return model


def _check_layer(layer, ins: list[tuple], source, where: str) -> None:
    shape = ins[0]
    if isinstance(layer, Dense):
        if len(shape) != 1:
            raise fail(source, f"{where}: reads shape {list(shape)}; a Dense layer needs a feature vector "
                               "(add a Flatten or GlobalAvgPool)")
    elif len(shape) != 3:
        raise fail(source, f"{where}: reads shape {list(shape)}; needs an image [h, w, c]")
    if isinstance(layer, WEIGHTED):
        _check_weights(layer, shape, source, where)
    if getattr(layer, "activation", "identity") not in ACTIVATIONS:
        raise fail(source, f"{where}: unknown activation {layer.activation!r}")
    for name in ("stride", "pads", "size", "kernel"):
        values = getattr(layer, name, None)
        low = 0 if name == "pads" else 1
        if values is not None and (len(values) != (4 if name == "pads" else 2) or min(values) < low):
            raise fail(source, f"{where}: {name} {list(values)} must be {'4' if name == 'pads' else '2'} "
                               f"integers >= {low}")
    if isinstance(layer, Pool2D):
        if layer.op not in Pool2D.OPS:
            raise fail(source, f"{where}: unknown pooling {layer.op!r} (choose from {', '.join(Pool2D.OPS)})")
        if layer.op == "avg" and any(layer.pads):
            raise fail(source, f"{where}: padded average pooling is not supported")
        if max(layer.pads[:2]) >= layer.size[0] or max(layer.pads[2:]) >= layer.size[1]:
            raise fail(source, f"{where}: padding {list(layer.pads)} not smaller than the window {list(layer.size)}")
    if isinstance(layer, Flatten) and layer.layout not in Flatten.LAYOUTS:
        raise fail(source, f"{where}: unknown layout {layer.layout!r} (choose from {', '.join(Flatten.LAYOUTS)})")
    if isinstance(layer, BatchNorm):
        arrays = (layer.gamma, layer.beta, layer.mean, layer.var)
        if any(not isinstance(a, np.ndarray) or a.shape != (shape[-1],) for a in arrays):
            raise fail(source, f"{where}: statistics must be [{shape[-1]}] arrays")
        if not all(np.isfinite(a).all() for a in arrays) or (layer.var < 0).any() or not layer.eps > 0:
            raise fail(source, f"{where}: non-finite statistics, negative variance or eps <= 0")
    if isinstance(layer, Add) and ins[0] != ins[1]:
        raise fail(source, f"{where}: adds shapes {list(ins[0])} and {list(ins[1])}")


def _check_weights(layer, shape: tuple, source, where: str) -> None:
    w, b = layer.weight, layer.bias
    if not (isinstance(w, np.ndarray) or (isinstance(w, sp.csr_array) and not isinstance(layer, DepthwiseConv2D))):
        raise fail(source, f"{where}: weight must be an ndarray{'' if isinstance(layer, DepthwiseConv2D) else ' or csr_array'}, "
                           f"got {type(w).__name__}")
    want = {Dense: 2, Conv2D: 2 if sp.issparse(w) else 4, DepthwiseConv2D: 4}[type(layer)]
    if w.ndim != want:
        raise fail(source, f"{where}: weight must be {want}-D, got shape {list(w.shape)}")
    if isinstance(layer, Conv2D) and (len(layer.kernel) != 2 or min(layer.kernel) < 1 or
                                      (sp.issparse(w) and w.shape[1] % int(np.prod(layer.kernel)))):
        raise fail(source, f"{where}: kernel {list(layer.kernel)} does not fit weight {list(w.shape)}")
    out = {Dense: lambda: w.shape[1], Conv2D: lambda: w.shape[0], DepthwiseConv2D: lambda: w.shape[0]}[type(layer)]()
    if not isinstance(b, np.ndarray) or b.ndim != 1 or b.shape[0] != out:
        raise fail(source, f"{where}: bias shape {list(np.shape(b))} does not match weight {list(w.shape)}")
    if w.dtype != np.float32 or b.dtype != np.float32:
        raise fail(source, f"{where}: must be float32, got {w.dtype}/{b.dtype}")
    values = w.data if sp.issparse(w) else w
    if not (np.isfinite(values).all() and np.isfinite(b).all()):
        raise fail(source, f"{where}: has NaN or infinite values")
    takes = {Dense: lambda: w.shape[0], Conv2D: lambda: layer.in_channels, DepthwiseConv2D: lambda: w.shape[0]}
    if takes[type(layer)]() != shape[-1] or (isinstance(layer, DepthwiseConv2D) and w.shape[1] != 1):
        raise fail(source, f"{where}: weight {list(layer.shape)} does not take the {shape[-1]} "
                           f"{'inputs' if len(shape) == 1 else 'channels'} it is given")
