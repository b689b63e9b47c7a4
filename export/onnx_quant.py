"""ONNX with int8 weights: onnxruntime's quantize_dynamic (QInt8 weights, activations quantized
per call). Measured here ~3x faster than fp32 at batch 1 and ~4x smaller; applies to every kind
(a CSR model is quantized densely: onnxruntime's CPU provider has no sparse Gemm)."""
from __future__ import annotations

import tempfile
from pathlib import Path

from export import onnx_format
from pipeline.errors import fail
from pipeline.fileio import write_bytes
from pipeline.model import Model


def export(model: Model, out_path: Path, options) -> Path:
    """Quantize the fp32 ONNX of `model` (per-tensor symmetric int8 weights) and write it."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    opset = getattr(options, "opset", onnx_format.OPSET)
    proto = onnx_format.build(model, opset=opset)
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "fp32.onnx", Path(d) / "int8.onnx"
        src.write_bytes(proto.SerializeToString(deterministic=True))
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # "consider pre-processing" advice: not applicable to an MLP
        try:
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        except Exception as e:  # onnxruntime raises plain Exceptions for unsupported graphs
            raise fail(out_path, f"quantize_dynamic failed: {type(e).__name__}: {e}") from None
        finally:
            root.setLevel(level)
        return write_bytes(out_path, dst.read_bytes())
