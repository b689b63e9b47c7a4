"""Keras `.keras`/`.h5` files and TensorFlow SavedModel directories -> layers.

Keras files are loaded with `safe_mode=True` (no Lambda bytecode) and walked layer by layer in
data-flow order: a Sequential as a chain, a Functional model through its graph of nodes, so a
residual `Add` joins two earlier tensors. Nested models are walked recursively. The layer table
is `keras_layers.HANDLERS`; a layer called twice (shared weights) is refused.
A SavedModel holds graphs, not layers, so it is converted to TFLite in memory (fp32, no
optimisation: the weights are copied bit for bit) and read by the TFLite importer.
"""
from __future__ import annotations

import os
from pathlib import Path

from pipeline.errors import fail
from pipeline.importers.chain import Chain
from pipeline.importers.keras_layers import HANDLERS

INPUT = "input"


def _quiet_tf() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _is_model(layer) -> bool:
    import keras
    return isinstance(layer, keras.Model)


def _leaves(model, prefix=""):
    """(position, layer) of every leaf layer, nested models expanded, in model.layers order."""
    out = []
    for i, layer in enumerate(model.layers):
        pos = f"{prefix}{i}"
        out.extend(_leaves(layer, f"{pos}.") if _is_model(layer) else [(pos, layer)])
    return out


def _where(pos: str, layer) -> str:
    return f"{type(layer).__name__} (layer {pos} '{layer.name}')"


def _call(layer, pos, chain, srcs, out):
    """Walk one layer (or nested model) reading tensors `srcs`; its output is named `out`."""
    if _is_model(layer):
        if len(srcs) != 1:
            raise fail(chain.source, f"{_where(pos, layer)}: a nested model with {len(srcs)} inputs")
        chain.alias(_walk(layer, chain, srcs[0], f"{pos}."), out, _where(pos, layer))
    else:
        HANDLERS[type(layer).__name__](layer, chain, _where(pos, layer), srcs, out)


def _walk(model, chain, src, prefix: str):
    """Walk `model` reading tensor `src`; returns the name of its output tensor."""
    import keras
    if isinstance(model, keras.Sequential):
        seen = set()
        for i, layer in enumerate(model.layers):
            if id(layer) in seen:
                raise fail(chain.source, f"{_where(f'{prefix}{i}', layer)}: shared layers are not supported")
            seen.add(id(layer))
            out = (id(model), i)
            _call(layer, f"{prefix}{i}", chain, [src], out)
            src = out
        return src
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise fail(chain.source, f"expected one input and one output, got {len(model.inputs)} and {len(model.outputs)}")
    chain.alias(src, id(model.inputs[0]), f"model '{model.name}'")
    positions = {id(layer): f"{prefix}{i}" for i, layer in enumerate(model.layers)}
    called = set()
    for depth in sorted(model._nodes_by_depth, reverse=True):  # Keras' own execution order
        for node in model._nodes_by_depth[depth]:
            layer = node.operation
            if node.is_input or type(layer).__name__ == "InputLayer":
                continue
            pos = positions.get(id(layer), "?")
            if id(layer) in called or len(node.outputs) != 1:
                raise fail(chain.source, f"{_where(pos, layer)}: shared layers and multiple outputs are not supported")
            called.add(id(layer))
            _call(layer, pos, chain, [id(t) for t in node.input_tensors], id(node.outputs[0]))
    return id(model.outputs[0])


def describe(model, source: str):
    """`chain.Described` from a loaded Keras model."""
    unsupported = [_where(pos, l) for pos, l in _leaves(model) if type(l).__name__ not in HANDLERS]
    if unsupported:
        raise fail(source, f"unsupported layers: {', '.join(unsupported)}")
    try:
        shape = tuple(model.inputs[0].shape[1:])
    except (AttributeError, ValueError, IndexError, TypeError):  # a Sequential never built on an Input
        shape = None
    chain = Chain(source, INPUT, shape, list(shape) if shape is not None else None)
    return chain.result(_walk(model, chain, INPUT, ""))


def load(path: Path, arch=None):
    """`chain.Described` from a .keras (or legacy .h5) file."""
    _quiet_tf()
    import keras
    try:
        model = keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except Exception as e:  # zip/h5/deserialisation errors come in many types
        raise fail(path, f"corrupt or unreadable Keras file ({type(e).__name__}: "
                         f"{(str(e).splitlines() or [''])[0][:200]})") from None
    return describe(model, str(path))


def load_saved_model(path: Path, arch=None):
    """`chain.Described` from a SavedModel dir, via an in-memory TFLite."""
    _quiet_tf()
    import tensorflow as tf
    from pipeline.importers import tflite_import
    try:
        flatbuffer = tf.lite.TFLiteConverter.from_saved_model(str(path)).convert()
    except Exception as e:  # the converter raises ConverterError, OSError, ValueError...
        raise fail(path, f"cannot read SavedModel ({type(e).__name__}: "
                         f"{(str(e).splitlines() or [''])[0][:200]})") from None
    return tflite_import.parse(bytes(flatbuffer), str(path))
