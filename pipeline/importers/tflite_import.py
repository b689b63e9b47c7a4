"""Float TFLite -> layers, read straight from the flatbuffer (no interpreter needed).

The interpreter's op details do not expose fused activations (FULLY_CONNECTED with
RELU/TANH built in), so we parse the schema that ai_edge_litert ships (TensorFlow's copy
as a fallback). Weights are float32 constants, or float16 constants behind a DEQUANTIZE
(fp16 files); int8/quantized weights and sparse tensors are refused.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import fail
from pipeline.importers.chain import Chain, check_leaky_alpha

SHAPE_OPS = {"SHAPE", "STRIDED_SLICE", "PACK", "CONCATENATION", "GATHER", "SLICE", "SQUEEZE",
             "EXPAND_DIMS", "CAST"}
FUSED = {0: "identity", 1: "relu", 4: "tanh"}  # ActivationFunctionType -> our name
FUSED_NAMES = {2: "RELU_N1_TO_1", 3: "RELU6", 5: "SIGN_BIT"}
DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8,
          10: np.float64, 7: np.int16}


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # hosts with TensorFlow but without LiteRT
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


class _Graph:
    """The main subgraph of a parsed model: ops, tensors and constant values."""

    def __init__(self, raw: bytes, source: str):
        schema = _schema()
        self.source = source
        if len(raw) < 8 or raw[4:8] != b"TFL3":
            raise fail(source, "not a TFLite file (no TFL3 identifier)")
        try:
            model = schema.ModelT.InitFromPackedBuf(bytearray(raw), 0)
            self.subgraph = model.subgraphs[0]
            op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
            self.op_names = [op_names.get(max(c.builtinCode, c.deprecatedBuiltinCode), f"op{c.builtinCode}")
                             if not c.customCode else f"CUSTOM({c.customCode.decode(errors='replace')})"
                             for c in model.operatorCodes]
            self.buffers = model.buffers
            self.tensors = self.subgraph.tensors
            _ = [(op.opcodeIndex, op.inputs, op.outputs) for op in self.subgraph.operators]
        except Exception as e:  # a truncated flatbuffer fails anywhere inside the generated code
            raise fail(source, f"corrupt or truncated TFLite file ({type(e).__name__}: {e})") from None
        self.raw = raw
        self.values: dict[int, np.ndarray] = {}

    def op_name(self, op) -> str:
        return self.op_names[op.opcodeIndex]

    def constant(self, index: int, where: str) -> np.ndarray:
        """Value of a constant tensor, or a PrunedgeError if it is computed at run time."""
        if index in self.values:
            return self.values[index]
        t = self.tensors[index]
        buf = self.buffers[t.buffer]
        data = buf.data if buf.data is not None and len(buf.data) else None
        if data is None and buf.offset > 1:  # >2 GB models keep buffers after the flatbuffer
            data = np.frombuffer(self.raw, np.uint8, count=buf.size, offset=buf.offset)
        if data is None:
            raise fail(self.source, f"{where}: tensor {index} '{_name(t)}' is not a constant in the file")
        if t.sparsity is not None:
            raise fail(self.source, f"{where}: sparse-encoded tensor '{_name(t)}' is not supported")
        if t.type not in DTYPES:
            raise fail(self.source, f"{where}: tensor '{_name(t)}' has unsupported type {t.type}")
        shape = [int(s) for s in (t.shape if t.shape is not None else [])]
        try:
            value = np.frombuffer(bytes(np.asarray(data, np.uint8)), DTYPES[t.type]).reshape(shape)
        except ValueError as e:
            raise fail(self.source, f"{where}: tensor '{_name(t)}' data does not match its shape ({e})") from None
        self.values[index] = value
        return value

    def shape(self, index: int) -> list[int]:
        t = self.tensors[index]
        return [int(s) for s in (t.shape if t.shape is not None else [])]


def _name(t) -> str:
    return t.name.decode(errors="replace") if isinstance(t.name, bytes) else str(t.name)


def _fused(graph: _Graph, op, chain: Chain, where: str) -> None:
    code = getattr(op.builtinOptions, "fusedActivationFunction", 0) if op.builtinOptions else 0
    if code not in FUSED:
        raise fail(graph.source, f"{where}: fused activation {FUSED_NAMES.get(code, code)} is not supported")
    chain.activation(FUSED[code], where)


def _fully_connected(graph, op, chain, where):
    opts = op.builtinOptions
    if opts is not None and getattr(opts, "weightsFormat", 0) != 0:
        raise fail(graph.source, f"{where}: shuffled/packed weight format is not supported")
    weights = graph.constant(op.inputs[1], where)  # [out, in]
    if weights.ndim != 2:
        raise fail(graph.source, f"{where}: weights must be 2-D, got {list(weights.shape)}")
    bias = graph.constant(op.inputs[2], where) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    chain.linear(weights.T, bias, where)
    _fused(graph, op, chain, where)


def _add(graph, op, chain, where):
    chain.add_bias(graph.constant(op.inputs[1], where), where)
    _fused(graph, op, chain, where)


def _leaky(graph, op, chain, where):
    chain.activation(check_leaky_alpha(op.builtinOptions.alpha, graph.source, where), where)


def _softmax(graph, op, chain, where):
    if op.builtinOptions is not None and float(op.builtinOptions.beta) != 1.0:
        raise fail(graph.source, f"{where}: SOFTMAX with beta {op.builtinOptions.beta} is not supported")
    chain.output("softmax", where)


def _reshape(graph, op, chain, where):
    out = graph.shape(op.outputs[0])
    if len(out) != 2:
        raise fail(graph.source, f"{where}: RESHAPE to {out} is not supported (only to [batch, features] at the input)")
    chain.flatten(where)


def _activation(name):
    return lambda graph, op, chain, where: chain.activation(name, where)


# builtin op name -> handler(graph, op, chain, where); op.inputs[0] is the chain's tensor.
HANDLERS = {
    "FULLY_CONNECTED": _fully_connected, "ADD": _add,
    "RELU": _activation("relu"), "TANH": _activation("tanh"), "LOGISTIC": _activation("sigmoid"),
    "LEAKY_RELU": _leaky, "SOFTMAX": _softmax,
    "LOG_SOFTMAX": lambda graph, op, chain, where: chain.output("log_softmax", where),
    "RESHAPE": _reshape,
}


def parse(raw: bytes, source: str):
    """(weights, biases, activations, meta) from TFLite flatbuffer bytes."""
    graph = _Graph(raw, source)
    ops = list(graph.subgraph.operators)
    names = [graph.op_name(op) for op in ops]
    unsupported = [f"{n} (op {i})" for i, n in enumerate(names)
                   if n not in HANDLERS and n not in SHAPE_OPS and n != "DEQUANTIZE"]
    if unsupported:
        raise fail(source, f"unsupported ops: {', '.join(unsupported)}")
    inputs, outputs = list(graph.subgraph.inputs), list(graph.subgraph.outputs)
    if len(inputs) != 1 or len(outputs) != 1:
        raise fail(source, f"expected one input and one output, got {len(inputs)} and {len(outputs)}")
    chain = Chain(source)
    current = int(inputs[0])
    on_chain = {current}  # every activation tensor so far: only `current` may be read again
    for i, (op, name) in enumerate(zip(ops, names)):
        where = f"{name} (op {i})"
        op_inputs = [int(x) for x in op.inputs]
        if name == "DEQUANTIZE":
            _dequantize(graph, op, where)
            continue
        if name in SHAPE_OPS:
            if on_chain.intersection(op_inputs) and not (name == "SHAPE" and current == int(inputs[0])):
                raise fail(source, f"{where}: {name} on the layer data is not supported")
            continue
        if name == "ADD" and len(op_inputs) == 2 and op_inputs[1] == current:
            op.inputs = [op_inputs[1], op_inputs[0]]
            op_inputs = op_inputs[::-1]
        if not op_inputs or op_inputs[0] != current or on_chain.intersection(op_inputs[1:]):
            raise fail(source, f"{where}: does not continue the single chain from the input "
                               "(branches and skip connections are not supported)")
        HANDLERS[name](graph, op, chain, where)
        current = int(op.outputs[0])
        on_chain.add(current)
    if current != int(outputs[0]):
        raise fail(source, "the model output is not the end of the layer chain")
    _check_input_width(graph, int(inputs[0]), chain)
    return chain.result()


def _dequantize(graph: _Graph, op, where: str) -> None:
    """fp16 weights: DEQUANTIZE of a float16 constant is just a float32 constant."""
    src = graph.tensors[op.inputs[0]]
    if src.type != 1:
        raise fail(graph.source, f"{where}: quantized weights (type {src.type}) are not supported: "
                                 "import the float model")
    graph.values[int(op.outputs[0])] = graph.constant(op.inputs[0], where).astype(np.float32)


def _check_input_width(graph: _Graph, index: int, chain: Chain) -> None:
    dims = graph.shape(index)[1:]
    if not dims:
        return
    if len(dims) > 1 and not chain.flattened:
        raise fail(graph.source, f"input has shape {dims} per example but no RESHAPE before the first layer")
    width = int(np.prod(dims))
    if width != chain.weights[0].shape[0]:
        raise fail(graph.source, f"input has {width} features but the first layer takes {chain.weights[0].shape[0]}")


def load(path: Path, arch=None):
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise fail(path, f"cannot read file ({e.strerror})") from None
    return parse(raw, str(path))
