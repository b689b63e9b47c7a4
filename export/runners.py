"""Load an exported file once, call it many times: the sessions verify, bench and bundle share.

`open_session(path, runtime, delegate=..., threads=...)` returns a callable `session(x) -> logits`
(float32 [batch, out]) that resizes for new batch sizes and hides int8 input/output
quantization. A file that is missing, truncated or corrupt raises PrunedgeError naming it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import fail
from pipeline.model import check_input

DELEGATES = ("xnnpack", "none")  # LiteRT: default XNNPACK delegate, or builtin kernels only


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split())  # runtime messages span lines; ours must not
    return text[:300] or type(error).__name__


def _check_file(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise fail(path, "file not found")
    if path.stat().st_size == 0:
        raise fail(path, "empty file")
    return path


class OnnxSession:
    """onnxruntime CPU execution provider; threads=None lets it use every core."""
    runtime = "onnxruntime"

    def __init__(self, path, *, threads: int | None = None, delegate=None):
        import onnxruntime as ort

        if delegate not in (None, "none"):
            raise fail("delegate", f"onnxruntime has no delegate {delegate!r} (CPU execution provider only)")
        self.path, self.delegate, self.threads = _check_file(path), None, threads
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's exceptions (InvalidProtobuf, Fail, ...) derive from Exception
            raise fail(self.path, f"onnxruntime cannot load it: {_one_line(e)}") from None
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise fail(self.path, f"expected one input, got {len(inputs)}")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        dims = list(inputs[0].shape[1:])
        if not dims or not all(isinstance(d, int) and d > 0 for d in dims) or len(dims) not in (1, 3):
            raise fail(self.path, f"input shape {inputs[0].shape} is neither [batch, features] nor NCHW images")
        # NCHW file, channels-last description: (c, h, w) -> (h, w, c)
        self.input_shape = tuple(dims) if len(dims) == 1 else (dims[1], dims[2], dims[0])
        self.input_dim = int(np.prod(dims))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = check_input(x, self.input_shape, name=str(self.path))
        if x.ndim == 4:
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        try:
            return self._session.run([self.output_name], {self.input_name: x})[0]
        except Exception as e:
            raise fail(self.path, f"onnxruntime failed to run it: {_one_line(e)}") from None


def litert_interpreter(*, delegate: str, threads: int | None, path=None, content: bytes | None = None):
    """A LiteRT Interpreter of a file or of bytes: delegate "xnnpack" = the default delegate
    (OpResolverType.AUTO), "none" = BUILTIN_WITHOUT_DEFAULT_DELEGATES (LiteRT's own kernels)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolvers = {"xnnpack": OpResolverType.AUTO, "none": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    if delegate not in resolvers:
        raise fail("delegate", f"unknown LiteRT delegate {delegate!r} (choose from {', '.join(DELEGATES)})")
    source = {"model_content": content} if content is not None else {"model_path": str(path)}
    return Interpreter(**source, num_threads=threads, experimental_op_resolver_type=resolvers[delegate])


class TfliteSession:
    """LiteRT interpreter; delegate "xnnpack" (the default delegate) or "none" (builtin kernels)."""
    runtime = "litert"

    def __init__(self, path, *, delegate: str = "xnnpack", threads: int | None = None):
        if delegate not in DELEGATES:
            raise fail("delegate", f"unknown LiteRT delegate {delegate!r} (choose from {', '.join(DELEGATES)})")
        self.path, self.delegate, self.threads = _check_file(path), delegate, threads
        try:
            self._it = litert_interpreter(path=self.path, delegate=delegate, threads=threads)
        except (ValueError, RuntimeError) as e:
            raise fail(self.path, f"LiteRT cannot load it: {_one_line(e)}") from None
        inputs, outputs = self._it.get_input_details(), self._it.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise fail(self.path, f"expected one input and one output, got {len(inputs)} and {len(outputs)}")
        self._in, self._out = inputs[0], outputs[0]
        self.input_shape = tuple(int(d) for d in self._in["shape"][1:])
        if len(self.input_shape) not in (1, 3) or min(self.input_shape, default=0) < 1:
            raise fail(self.path, f"input shape {list(self._in['shape'])} is neither [batch, features] nor NHWC images")
        self.input_dim = int(np.prod(self.input_shape))
        self._batch = None
        self._resize(1)

    def _resize(self, batch: int) -> None:
        try:
            self._it.resize_tensor_input(self._in["index"], [batch, *self.input_shape])
            self._it.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise fail(self.path, f"LiteRT ({self.delegate}) cannot prepare it: {_one_line(e)}") from None
        self._batch = batch

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = check_input(x, self.input_shape, name=str(self.path))
        if x.shape[0] != self._batch:
            self._resize(x.shape[0])
        self._it.set_tensor(self._in["index"], quantize(x, self._in))
        try:
            self._it.invoke()
        except (ValueError, RuntimeError) as e:
            raise fail(self.path, f"LiteRT ({self.delegate}) failed to run it: {_one_line(e)}") from None
        return dequantize(self._it.get_tensor(self._out["index"]), self._out)


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """float32 -> the input tensor's dtype (int8 full-integer models use scale/zero point)."""
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return x
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    if y.dtype == np.float32:
        return y.copy()  # the interpreter reuses its buffer on the next invoke
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - np.float32(zero)) * np.float32(scale)).astype(np.float32)


def run_onnx(path, x, threads: int | None = None) -> np.ndarray:
    return OnnxSession(path, threads=threads)(x)


def run_tflite(path, x, delegate: str = "xnnpack", threads: int | None = None) -> np.ndarray:
    return TfliteSession(path, delegate=delegate, threads=threads)(x)


def predict(session, x: np.ndarray, batch: int = 1000) -> np.ndarray:
    """Logits for a large array in fixed-size chunks (bounded memory, one resize)."""
    return np.concatenate([session(x[i:i + batch]) for i in range(0, len(x), batch)])

