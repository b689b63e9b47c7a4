"""TFLite export through TensorFlow's converter, from a concrete function built from the arrays.

No SavedModel on disk and no Keras model: a tf.function closes over the description's
weights as constants, which converts in well under a second per file. The signature is
`serving_default` with input `x` [batch, in] and output `logits`. Ops are listed by parsing
the flatbuffer with LiteRT's generated schema (no TensorFlow needed to inspect a file).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import fail
from pipeline.fileio import write_bytes
from pipeline.model import Model, validate

if TYPE_CHECKING:
    from export.formats import ExportOptions


@dataclass(frozen=True, kw_only=True)
class Recipe:
    optimizations: tuple[str, ...] = ()  # names in tf.lite.Optimize
    float16: bool = False  # store weights as float16 (DEQUANTIZE'd to float32 at load)
    int8_full: bool = False  # int8 weights (per channel), activations and input; needs calibration images
    # int8_full: the op that writes the logits runs in float32 on its dequantized int8 input, and the
    # output is float32. An int8 output has one scale for the whole logit range: 0.69 on the trained
    # MLP's [-95, 82], more than the top-2 margin of 6% of test images, so quantized logits alone
    # cost 1.2-1.4 points of top-1 agreement and failed the 99% check on 130 of 180 files. Every
    # other op stays int8; the float op is the 200x10 classifier (~0.1% of the MACs).
    float_logits: bool = False


RECIPES: dict[str, Recipe] = {
    "fp32": Recipe(),
    "sparse": Recipe(optimizations=("EXPERIMENTAL_SPARSITY",)),
    "fp16": Recipe(optimizations=("DEFAULT",), float16=True),
    "int8-dynamic": Recipe(optimizations=("DEFAULT",)),
    "int8-full": Recipe(optimizations=("DEFAULT",), int8_full=True, float_logits=True),
    "block-int8": Recipe(optimizations=("DEFAULT", "EXPERIMENTAL_SPARSITY")),  # hybrid int8 1x16-block kernels
}


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    return tf


def concrete_function(model: Model):
    """(concrete function, module owning it) computing the model's logits from `x`
    ([batch, features], or [batch, h, w, c] images)."""
    tf = _tf()
    from export.tflite_graph import forward
    validate(model)

    @tf.function(input_signature=[tf.TensorSpec([None, *model.input_shape], tf.float32, name="x")])
    def serve(x):
        return {"logits": forward(tf, model, x)}

    module = tf.Module()
    module.serve = serve
    return serve.get_concrete_function(), module


def convert(model: Model, recipe: Recipe | str, options: "ExportOptions | None" = None,
            source: Path | str = "tflite") -> bytes:
    """The one TF -> TFLite conversion: every TFLite file (and each layer of a per-layer mix) comes
    from here. `options` carries calibration images (int8-full) and whether to hush the converter."""
    tf = _tf()
    recipe = RECIPES[recipe] if isinstance(recipe, str) else recipe
    quiet = True if options is None else options.quiet
    function, module = concrete_function(model)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], module)
    converter.optimizations = [getattr(tf.lite.Optimize, name) for name in recipe.optimizations]
    if recipe.float16:
        converter.target_spec.supported_types = [tf.float16]
    if recipe.int8_full:
        _set_int8_full(tf, converter, model, options, source)
    with _captured_output(quiet) as log:
        try:
            return _float_logits(tf, converter) if recipe.int8_full and recipe.float_logits else converter.convert()
        except Exception as e:  # the converter raises ConverterError, ValueError, RuntimeError ...
            detail = str(e).strip().splitlines()[-1:] or log.tail()
            raise fail(source, f"TFLite conversion failed: {' '.join(detail)[:300]}") from None


def _set_int8_full(tf, converter, model: Model, options, source) -> None:
    """Integer-only ops (TFLITE_BUILTINS_INT8), int8 input and output, ranges from the calibration images."""
    calibration = None if options is None else options.calibration
    if calibration is None or len(calibration) == 0:
        raise fail("calibration", f"{source}: full int8 needs calibration images (ExportOptions.calibration)")
    from pipeline.model import check_input
    calibration = check_input(calibration, model.input_shape, name="calibration")
    converter.representative_dataset = lambda: ([calibration[i:i + 1]] for i in range(len(calibration)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8


def _float_logits(tf, converter) -> bytes:
    """Calibrate, then quantize with TF's own quantizer (the call `convert()` makes itself) with the op
    writing the model's output on its denylist: that op stays float32 behind a DEQUANTIZE, and the
    output is float32. inference_output_type=float32 alone would not do: it appends a DEQUANTIZE
    after the int8 logits, which keeps their rounding (measured: the same 98.3% agreement)."""
    from tensorflow.lite.python.convert import mlir_quantize
    converter._experimental_calibrate_only = True  # the float model with the calibrated min/max ranges
    calibrated = converter.convert()
    return mlir_quantize(
        calibrated, input_data_type=tf.int8, output_data_type=tf.float32,
        denylisted_nodes=[_output_name(calibrated)],
        disable_per_channel=converter._experimental_disable_per_channel,
        disable_per_channel_for_dense_layers=converter._experimental_disable_per_channel_quantization_for_dense_layers)


def _output_name(content: bytes) -> str:
    """Name of the first subgraph's output tensor (how the quantizer's denylist names the op writing it)."""
    from ai_edge_litert import schema_py_generated as schema
    graph = schema.Model.GetRootAs(content, 0).Subgraphs(0)
    return graph.Tensors(graph.Outputs(0)).Name().decode()


def export(model: Model, out_path: Path, options: "ExportOptions", *, recipe: str) -> Path:
    return write_bytes(out_path, convert(model, RECIPES[recipe], options, Path(out_path)))


class _Log:
    def __init__(self, path: Path | None):
        self.path = path

    def tail(self) -> list[str]:
        if self.path is None or not self.path.exists():
            return []
        lines = [l for l in self.path.read_text(errors="replace").splitlines() if l.strip()]
        return lines[-1:]


@contextlib.contextmanager
def _captured_output(quiet: bool):
    """Send the converter's C++ stdout/stderr to a temp file (it prints on every call)."""
    if not quiet:
        yield _Log(None)
        return
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "convert.log"
        saved = [os.dup(1), os.dup(2)]
        with open(log, "wb") as f:
            os.dup2(f.fileno(), 1)
            os.dup2(f.fileno(), 2)
        try:
            yield _Log(log)
        finally:
            for fd, copy in zip((1, 2), saved):
                os.dup2(copy, fd)
                os.close(copy)


# ------------------------------------------------------------------ inspection

def inspect(path: Path) -> tuple[list[str], bool]:
    """(sorted builtin op names, runs_sparse) read from the flatbuffer.

    runs_sparse: some op other than DENSIFY consumes a tensor stored sparse (e.g. FULLY_CONNECTED
    on 1x4 block-sparse weights). Random sparsity gets DENSIFY in front, i.e. dense compute."""
    from ai_edge_litert import schema_py_generated as schema

    data = Path(path).read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise fail(path, "not a TFLite flatbuffer (missing TFL3 identifier)")
    try:
        model = schema.Model.GetRootAs(data, 0)
        names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        codes = []
        for i in range(model.OperatorCodesLength()):
            code = model.OperatorCodes(i)
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            custom = code.CustomCode()
            codes.append(custom.decode() if custom else names.get(builtin, f"BUILTIN_{builtin}"))
        ops, runs_sparse = set(), False
        for s in range(model.SubgraphsLength()):
            graph = model.Subgraphs(s)
            for i in range(graph.OperatorsLength()):
                op = graph.Operators(i)
                name = codes[op.OpcodeIndex()]
                ops.add(name)
                if name != "DENSIFY":
                    inputs = [op.Inputs(j) for j in range(op.InputsLength())]
                    runs_sparse |= any(t >= 0 and graph.Tensors(t).Sparsity() is not None for t in inputs)
    except (IndexError, ValueError, TypeError, UnicodeDecodeError) as e:
        raise fail(path, f"corrupt TFLite flatbuffer ({type(e).__name__})") from None
    return sorted(ops), runs_sparse
