"""Float TFLite -> layers, read straight from the flatbuffer (no interpreter needed).

The interpreter's op details do not expose fused activations (CONV_2D with RELU6 built in),
so we parse the schema that ai_edge_litert ships (TensorFlow's copy as a fallback). Weights are
float32 constants, or float16 constants behind a DEQUANTIZE (fp16 files); int8/quantized
weights and sparse tensors are refused. The op table is `tflite_ops.HANDLERS`; BatchNorm does
not exist in TFLite (the converter folds it into the convolution before).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import fail
from pipeline.importers.chain import Chain
from pipeline.importers.tflite_ops import HANDLERS

# Ops computing shapes: tolerated while they do not read the layer data (SHAPE may: it reads
# only the size). SQUEEZE also has a handler, for [1, 1, c] after a global pool.
SHAPE_OPS = {"SHAPE", "STRIDED_SLICE", "PACK", "CONCATENATION", "GATHER", "SLICE", "SQUEEZE",
             "EXPAND_DIMS", "CAST"}
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


def parse(raw: bytes, source: str):
    """`chain.Described` from TFLite flatbuffer bytes."""
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
    chain = Chain(source, int(inputs[0]), *_input_shape(graph, int(inputs[0])))
    for i, (op, name) in enumerate(zip(ops, names)):
        where = f"{name} (op {i})"
        if name == "DEQUANTIZE":
            _dequantize(graph, op, where)
            continue
        if name == "SHAPE" or not any(chain.has(int(t)) for t in op.inputs if t >= 0):
            if name not in SHAPE_OPS:
                raise fail(source, f"{where}: does not read the layer data (no constant folding is done here)")
            continue
        if name not in HANDLERS:
            raise fail(source, f"{where}: {name} on the layer data is not supported")
        HANDLERS[name](graph, op, chain, where)
    return chain.result(int(outputs[0]))


def _input_shape(graph: _Graph, index: int):
    """(per-sample shape, the same for messages); a -1 in the shape signature is unknown (None)."""
    t = graph.tensors[index]
    dims = t.shapeSignature if t.shapeSignature is not None and len(t.shapeSignature) else t.shape
    per_sample = [None if int(d) < 0 else int(d) for d in (dims if dims is not None else [])][1:]
    return (tuple(per_sample), per_sample) if per_sample else (None, None)


def _dequantize(graph: _Graph, op, where: str) -> None:
    """fp16 weights: DEQUANTIZE of a float16 constant is just a float32 constant."""
    src = graph.tensors[op.inputs[0]]
    if src.type != 1:
        raise fail(graph.source, f"{where}: quantized weights (type {src.type}) are not supported: "
                                 "import the float model")
    graph.values[int(op.outputs[0])] = graph.constant(op.inputs[0], where).astype(np.float32)


def load(path: Path, arch=None):
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise fail(path, f"cannot read file ({e.strerror})") from None
    return parse(raw, str(path))
