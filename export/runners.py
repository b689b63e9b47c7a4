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



class NcnnSession:
    """ncnn `.param` + `.bin` (beside it), float32 exactly: every fp16/bf16 option off (ncnn turns them
    on by default where the CPU has fp16, e.g. a Pi 5), no Vulkan. A batch of feature vectors runs as
    one 2-D Mat; images run one [c, h, w] Mat at a time."""
    runtime = "ncnn"

    def __init__(self, path, *, threads: int | None = None):
        import ncnn

        from export.ncnn_format import INPUT, OUTPUT, bin_path
        self.path, self.threads, self._ncnn = _check_file(path), threads, ncnn
        weights = _check_file(bin_path(self.path))
        self.net = ncnn.Net()
        opt = self.net.opt  # options must be set before loading
        opt.num_threads = threads or 1
        opt.use_vulkan_compute = False
        opt.use_fp16_storage = opt.use_fp16_packed = opt.use_fp16_arithmetic = False
        opt.use_bf16_storage = False
        if self.net.load_param(str(self.path)) != 0 or self.net.load_model(str(weights)) != 0:
            raise fail(self.path, "ncnn cannot load it (or its .bin)")
        self.input_shape = _ncnn_input_shape(self.path)
        self.input_dim = int(np.prod(self.input_shape))
        self._blobs = (INPUT, OUTPUT)

    def _run(self, mat):
        ex = self.net.create_extractor()
        ex.input(self._blobs[0], mat)
        ret, out = ex.extract(self._blobs[1])
        if ret != 0:
            raise fail(self.path, f"ncnn failed to run it (status {ret})")
        return np.array(out, dtype=np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = check_input(x, self.input_shape, name=str(self.path))
        if x.ndim == 2:
            return self._run(self._ncnn.Mat(np.ascontiguousarray(x))).reshape(len(x), -1)
        return np.stack([self._run(self._ncnn.Mat(np.ascontiguousarray(img.transpose(2, 0, 1)))).ravel()
                         for img in x])


def _ncnn_input_shape(path: Path) -> tuple:
    """The description's input shape from the Input layer's hints (0=w 1=h 2=c) of a .param file."""
    line = next((l for l in Path(path).read_text(encoding="ascii").splitlines() if l.startswith("Input")), "")
    hints = dict(kv.split("=") for kv in line.split()[5:] if "=" in kv)
    w, h, c = (int(hints.get(k, 0)) for k in ("0", "1", "2"))
    if w < 1 or (h and c < 1):
        raise fail(path, "its Input layer does not declare the input shape")
    return (h, w, c) if h else (w,)


class OpenVinoSession:
    """An ONNX file on OpenVINO's CPU plugin: f32 forced (it picks f16 on ARMv8.2 such as a Pi 5 and
    bf16 on AVX-512), one stream, `threads` fixed when compiling, CPU pinning off (it hurt on a
    shared machine), dynamic batch. Its telemetry (a forked process posting to Google Analytics on
    import) is kept out by hiding the openvino_telemetry module."""
    runtime = "openvino"

    def __init__(self, path, *, threads: int | None = None):
        import sys
        sys.modules.setdefault("openvino_telemetry", None)
        import openvino as ov

        self.path, self.threads = _check_file(path), threads
        try:
            compiled = ov.Core().compile_model(str(self.path), "CPU", {
                "INFERENCE_NUM_THREADS": threads or 0, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_PRECISION_HINT": "f32", "ENABLE_CPU_PINNING": False})
        except Exception as e:  # openvino raises RuntimeError subclasses with long multi-line messages
            raise fail(self.path, f"OpenVINO cannot load it: {_one_line(e)}") from None
        dims = [d.get_length() for d in compiled.inputs[0].get_partial_shape()[1:]]
        self.input_shape = tuple(dims) if len(dims) == 1 else (dims[1], dims[2], dims[0])
        self.input_dim = int(np.prod(dims))
        self._request, self._tensor = compiled.create_infer_request(), ov.Tensor

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = check_input(x, self.input_shape, name=str(self.path))
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2) if x.ndim == 4 else x)
        try:  # set_input_tensor + infer: ~50 us less per call than infer({0: x})
            self._request.set_input_tensor(self._tensor(x, shared_memory=True))
            self._request.infer()
        except Exception as e:
            raise fail(self.path, f"OpenVINO failed to run it: {_one_line(e)}") from None
        return self._request.get_output_tensor(0).data.copy()
