"""TFLite files whose pruned weights stay sparse at run time (EXPERIMENTAL_SPARSITY, no DENSIFY).

LiteRT only runs a sparse FULLY_CONNECTED weight natively when it is block-sparse in the kernel's
block shape: 1x4 for float32, 1x16 for int8 (dynamic range). Any other pattern makes the converter
insert DENSIFY, which rebuilds the dense matrix and is no faster, so `export` refuses such files.
Measured on LiteRT 2.3: XNNPACK returns WRONG outputs for int8 sparse weights (it reads them as
dense); marking those ops with the sparse-float op version makes XNNPACK decline them, so the files
are correct under the default delegate too. Every file is verified under both delegates.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.runners import DELEGATES, litert_interpreter
from pipeline.checks import FP32, INT8_RANDOM, compare
from pipeline.errors import fail
from pipeline.fileio import write_bytes
from pipeline.model import Model

QUANTIZE = ("none", "dynamic")  # float32 weights | int8 weights, float activations (hybrid kernels)
KERNEL_BLOCK = {"none": 4, "dynamic": 16}
SPARSE_FC_VERSION = 8  # FULLY_CONNECTED version the converter gives sparse float weights


@dataclass(frozen=True, kw_only=True)
class SparseTfliteOptions:
    quantize: str = "none"
    verify_rows: int = 256
    seed: int = 0
    xnnpack_safe: bool = True  # mark sparse FC ops so XNNPACK declines them (see _mark_sparse_versions)


def check_options(options) -> SparseTfliteOptions:
    options = options or SparseTfliteOptions()
    if options.quantize not in QUANTIZE:
        raise fail("quantize", f"must be one of {', '.join(QUANTIZE)}, got {options.quantize!r}")
    return options


# (quantize, sparse) -> the recipe of the one converter (export.tflite_format.convert)
CONVERT_RECIPES = {("none", False): "fp32", ("none", True): "sparse", ("dynamic", False): "int8-dynamic",
                   ("dynamic", True): "block-int8"}


def convert(model: Model, *, quantize: str = "none", sparse: bool = True) -> bytes:
    """TFLite flatbuffer of the model (block-sparse weights stay sparse when `sparse`)."""
    from export.tflite_format import convert as tflite_convert
    return tflite_convert(model, CONVERT_RECIPES[(quantize, sparse)])


def describe(buf: bytes) -> dict:
    """Op names in execution order and, per FULLY_CONNECTED, whether its weight is stored sparse."""
    from tensorflow.lite.python import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(buf, 0))
    g = m.subgraphs[0]
    ops, fc_sparse = [], []
    for op in g.operators:
        code = m.operatorCodes[op.opcodeIndex]
        name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), str(code.builtinCode))
        ops.append(name)
        if name == "FULLY_CONNECTED":
            fc_sparse.append(g.tensors[op.inputs[1]].sparsity is not None)
    return {"ops": ops, "fc_sparse": fc_sparse, "runs_sparse": any(fc_sparse) and "DENSIFY" not in ops}


def run(buf: bytes, x: np.ndarray, *, delegate: str = "xnnpack", threads: int = 1):
    """Outputs of the file in LiteRT for batch x; delegate "none" = BUILTIN_WITHOUT_DEFAULT_DELEGATES."""
    return make_runner(buf, x.shape[0], delegate=delegate, threads=threads)(x)


def make_runner(buf: bytes, batch: int, *, delegate: str = "xnnpack", threads: int = 1):
    """A callable x -> y bound to one allocated interpreter, with nothing else on the call path
    (timing loops of single layers; `export.runners.TfliteSession` is the checked session)."""
    it = litert_interpreter(content=buf, delegate=delegate, threads=threads)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(inp["index"], [batch, inp["shape"][1]])
    it.allocate_tensors()

    def call(x):
        it.set_tensor(inp["index"], x)
        it.invoke()
        return it.get_tensor(out["index"])
    return call


def tolerance(quantize: str):
    """float32 files: checks.FP32; int8 (checked here on any inputs, random ones giving near-tied
    logits): relative L2 error and a lenient top-1 (checks.INT8_RANDOM)."""
    return FP32 if quantize == "none" else INT8_RANDOM


def check_outputs(y: np.ndarray, ref: np.ndarray, *, quantize: str, options=None) -> dict:
    return compare(ref, y, tolerance(quantize))


def verify(buf: bytes, model: Model, x: np.ndarray, *, quantize: str, options=None) -> dict:
    """{delegate: check_outputs(...)} for every delegate; a crash is a failed row with its reason."""
    options = check_options(options)
    ref = model.forward(x)
    result = {}
    for delegate in DELEGATES:
        try:
            result[delegate] = check_outputs(run(buf, x, delegate=delegate), ref, quantize=quantize, options=options)
        except (RuntimeError, ValueError) as e:
            result[delegate] = {"status": "failed", "reason": f"{type(e).__name__}: {str(e).splitlines()[0]}"}
    return result


def verify_inputs(model: Model, options: SparseTfliteOptions) -> np.ndarray:
    """Real-looking inputs in [0, 1] (pixel range) for verification, deterministic."""
    return np.random.default_rng(options.seed).random((options.verify_rows, model.input_dim), dtype=np.float32)


def export(model: Model, out_path: Path, options=None) -> Path:
    """Write a block-sparse TFLite file; refuse a file with DENSIFY or one failing verification
    under every delegate. The per-delegate verification is returned by `export_with_report`."""
    return export_with_report(model, out_path, options)[0]


def export_with_report(model: Model, out_path: Path, options=None) -> tuple[Path, dict]:
    options = check_options(options)
    buf = convert(model, quantize=options.quantize)
    if options.xnnpack_safe:
        buf = xnnpack_safe(buf)
    info = describe(buf)
    if "DENSIFY" in info["ops"]:
        block = KERNEL_BLOCK[options.quantize]
        raise fail(out_path, f"converter inserted DENSIFY: the weights are not 1x{block}-block sparse "
                             f"(prune with method {'block' if block == 4 else 'block16'} for quantize={options.quantize})")
    checks = verify(buf, model, verify_inputs(model, options), quantize=options.quantize, options=options)
    if not any(c["status"] == "passed" for c in checks.values()):
        raise fail(out_path, "verification failed under every delegate: " +
                   "; ".join(f"{d}: {c['reason']}" for d, c in checks.items()))
    write_bytes(out_path, buf)
    passed = [d for d in DELEGATES if checks[d]["status"] == "passed"]
    return Path(out_path), {**info, "verify": checks, "delegate": passed[0], "bytes": len(buf)}


# ---------------------------------------------------------------- per-layer mixed files
# A LiteRT file can mix weight formats per FULLY_CONNECTED: each op reads its own weight tensor,
# and float / int8 (hybrid) and dense / sparse are decided per tensor. The converter can't be told
# per layer, so each layer is converted alone in its format and its weight tensor is spliced in.

LAYER_FORMATS = {  # name -> (quantize, sparse) for `convert`
    "dense": ("none", False),
    "block": ("none", True),
    "int8": ("dynamic", False),
    "int8-block": ("dynamic", True),
}


def layer_file(model: Model, index: int, fmt: str) -> bytes:
    """Single-layer TFLite file of layer `index` in format `fmt` (a LAYER_FORMATS name)."""
    if fmt not in LAYER_FORMATS:
        raise fail("layer format", f"unknown {fmt!r} (choose from {', '.join(LAYER_FORMATS)})")
    quantize, sparse = LAYER_FORMATS[fmt]
    return convert(model.with_layers([model.layers[index]]), quantize=quantize, sparse=sparse)


def _fc_ops(m):
    from tensorflow.lite.python import schema_py_generated as schema
    g = m.subgraphs[0]
    return [op for op in g.operators
            if max(m.operatorCodes[op.opcodeIndex].builtinCode,
                   m.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode) == schema.BuiltinOperator.FULLY_CONNECTED]


def _opcode(m, code) -> int:
    """Index of an operator code equal to `code` (builtin + version) in m, appended if missing."""
    key = lambda c: (c.builtinCode, c.deprecatedBuiltinCode, c.customCode, c.version)  # noqa: E731
    for i, c in enumerate(m.operatorCodes):
        if key(c) == key(code):
            return i
    m.operatorCodes.append(code)
    return len(m.operatorCodes) - 1


def splice(base: bytes, donors: dict[int, bytes]) -> bytes:
    """`base` with the weight tensor (type, quantization, sparsity, data) and the quantisation
    option of its i-th FULLY_CONNECTED replaced by those of the single-FC file donors[i]."""
    from tensorflow.lite.python import schema_py_generated as schema

    load = lambda b: schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(b, 0))  # noqa: E731
    m = load(base)
    ops, tensors = _fc_ops(m), m.subgraphs[0].tensors
    for i, donor_buf in donors.items():
        d = load(donor_buf)
        (d_op,), d_tensors = _fc_ops(d), d.subgraphs[0].tensors
        if "DENSIFY" in describe(donor_buf)["ops"]:
            raise fail(f"layer {i}", "its format needs a DENSIFY op (weights not block-structured)")
        src, dst = d_tensors[d_op.inputs[1]], tensors[ops[i].inputs[1]]
        if list(src.shape) != list(dst.shape):
            raise fail(f"layer {i}", f"donor weight shape {list(src.shape)} != {list(dst.shape)}")
        old = dst.buffer
        m.buffers.append(d.buffers[src.buffer])
        dst.buffer = len(m.buffers) - 1
        if not any(t.buffer == old for t in tensors):
            m.buffers[old].data = None  # the dense weights are gone; keep indices stable
        dst.type, dst.quantization, dst.sparsity = src.type, src.quantization, src.sparsity
        if d_op.builtinOptions is not None and ops[i].builtinOptions is not None:
            ops[i].builtinOptions.asymmetricQuantizeInputs = d_op.builtinOptions.asymmetricQuantizeInputs
        # The op version tells kernels and delegates what the op uses (a sparse or hybrid weight):
        # without it XNNPACK takes a sparse weight for dense and computes garbage.
        ops[i].opcodeIndex = _opcode(m, d.operatorCodes[d_op.opcodeIndex])
    _mark_sparse_versions(m)
    return _pack(m)


def _pack(m) -> bytes:
    import flatbuffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _mark_sparse_versions(m) -> None:
    """Give FULLY_CONNECTED ops the op version of sparse float FC (8), which XNNPACK declines, so
    they run on LiteRT's own kernels even under the default delegate. Measured on LiteRT 2.3:
    XNNPACK takes int8 (hybrid, version 12) sparse weights for dense ones and returns garbage;
    the builtin kernels ignore the version. Sparse weights are always marked; in a file with an
    int8 sparse weight *every* FC is, because XNNPACK running a lone int8 layer between builtin ones
    cost ~30 us per call here (more than the whole 95%-sparse network)."""
    import copy
    from tensorflow.lite.python import schema_py_generated as schema
    tensors = m.subgraphs[0].tensors
    ops = _fc_ops(m)
    int8_sparse = any(tensors[op.inputs[1]].sparsity is not None and tensors[op.inputs[1]].type == schema.TensorType.INT8
                      for op in ops)
    for op in ops:
        if int8_sparse or tensors[op.inputs[1]].sparsity is not None:
            code = copy.copy(m.operatorCodes[op.opcodeIndex])
            code.version = SPARSE_FC_VERSION
            op.opcodeIndex = _opcode(m, code)


def xnnpack_safe(buf: bytes) -> bytes:
    """The file with sparse-weight FULLY_CONNECTED ops marked so XNNPACK leaves them alone."""
    from tensorflow.lite.python import schema_py_generated as schema
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(buf, 0))
    _mark_sparse_versions(m)
    return _pack(m)


def mixed(model: Model, formats: list[str]) -> bytes:
    """One file, layer i stored as formats[i] (LAYER_FORMATS names)."""
    if len(formats) != len(model.layers):
        raise fail("layer_formats", f"{len(formats)} formats for {len(model.layers)} layers")
    base = convert(model, quantize="none", sparse=False)
    return splice(base, {i: layer_file(model, i, f) for i, f in enumerate(formats) if f != "dense"})


def export_mixed(model: Model, out_path: Path, options=None) -> Path:
    """Write the per-layer mix recorded in model.meta["layer_formats"] (see pipeline.autoformat),
    verified under model.meta["delegate"]: float32 layers only -> max |diff| <= fp32_atol."""
    options = check_options(options)
    formats = model.meta.get("layer_formats")
    if not formats:
        raise fail("layer_formats", "model.meta has no layer_formats (run pipeline.autoformat first)")
    buf = mixed(model, list(formats))
    quantize = "dynamic" if any(f.startswith("int8") for f in formats) else "none"
    delegate = model.meta.get("delegate", "none")
    x = verify_inputs(model, options)
    check = check_outputs(run(buf, x, delegate=delegate), model.forward(x), quantize=quantize, options=options)
    if check["status"] != "passed":
        raise fail(out_path, f"mixed file fails verification under {delegate}: {check['reason']}")
    return write_bytes(out_path, buf)


# ---------------------------------------------------------------- rows of export.formats.FORMATS

def is_block_layer(weight: np.ndarray, size: int) -> bool:
    """True when every group of `size` consecutive input weights of an output unit is all zero or
    all nonzero (the last group may be short): the pattern LiteRT's 1x`size` kernel keeps sparse."""
    pad = (-weight.shape[0]) % size
    nz = np.pad(weight != 0, ((0, pad), (0, 0))).reshape(-1, size, weight.shape[1])
    present = np.pad(np.ones(weight.shape, bool), ((0, pad), (0, 0))).reshape(-1, size, weight.shape[1])
    return bool(np.array_equal(nz.any(1), (nz | ~present).all(1)))


def is_block_structured(model: Model, size: int) -> bool:
    """True when every pruned hidden layer is 1x`size`-block sparse (method block/block16 or any
    model whose zero pattern happens to be), i.e. the converter keeps it sparse without DENSIFY."""
    if not all(is_block_layer(layer.dense_weight(), size) for layer in model.layers[:-1]):
        return False
    return any(layer.nnz < np.prod(layer.shape) for layer in model.layers)


def export_block_fp32(model: Model, out_path: Path, options=None) -> Path:
    """Table adapter: float32 1x4 block-sparse file (the table's ExportOptions are not needed)."""
    return export(model, out_path, SparseTfliteOptions(quantize="none"))


def export_block_int8(model: Model, out_path: Path, options=None) -> Path:
    """Table adapter: int8 (dynamic range) 1x16 block-sparse file, safe under XNNPACK."""
    return export(model, out_path, SparseTfliteOptions(quantize="dynamic"))
