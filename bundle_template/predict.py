#!/usr/bin/env python3
"""Classify images with the model in this bundle.

Checks manifest.json against its schema, then every file against it (sha256 + size), before
loading anything, and refuses to run on any mismatch. Imports only numpy, the bundle's one
runtime and the standard library, so it runs on a bare device after
`pip install -r requirements.txt`.

Input: .npy arrays or IDX image files (raw or .gz) in a shape manifest.json `input.accepts`
lists (e.g. [n, 28, 28], [n, 28, 28, 1] or [n, 784]), uint8 0-255 or float 0-1.
Bad input or a changed bundle -> one line `error: ...` on stderr, exit status 2.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import math
import os
import re
import struct
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

HERE = Path(__file__).resolve().parent
SCHEMA = "prunedge-bundle/2"
IDX_IMAGE_MAGIC, IDX_LABEL_MAGIC = 2051, 2049
DEFAULT_CHUNK = 256  # images per runtime call: bounds memory on small devices
MAX_MANIFEST_BYTES = 16 << 20  # a real manifest is a few kB; refuse to parse a huge one
MAX_CLASSES = 100_000
MAX_THREADS = 1024
NAME_MAX = 255  # longest file name Linux file systems allow


class BundleError(Exception):
    """A user-facing problem: printed as one line, exit status 2."""


def _show(value) -> str:
    """A manifest value for an error message: repr (escapes newlines), cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------- manifest schema

def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


class Spec:
    """One manifest field's type and limits: check(value, where) returns it or raises BundleError."""
    what = "valid"

    def ok(self, value) -> bool:
        raise NotImplementedError

    def check(self, value, where: str):
        if not self.ok(value):
            raise BundleError(f"{where} must be {self.what}, got {_show(value)}")
        return value


class Int(Spec):
    def __init__(self, lo: int, hi: int):
        self.lo, self.hi, self.what = lo, hi, f"an integer in [{lo}, {hi}]"

    def ok(self, v):
        return isinstance(v, int) and not isinstance(v, bool) and self.lo <= v <= self.hi


class Num(Spec):
    def __init__(self, lo: float = -1e30, hi: float = 1e30):
        self.lo, self.hi, self.what = lo, hi, f"a finite number in [{lo:g}, {hi:g}]"

    def ok(self, v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        return (math.isfinite(v) if isinstance(v, float) else True) and self.lo <= v <= self.hi


class Str(Spec):
    """Printable text (no newlines, control characters or lone surrogates); optionally one of `choices`."""

    def __init__(self, max_len: int = 200, choices: tuple | None = None, pattern: str | None = None):
        self.max_len, self.choices, self.pattern = max_len, choices, pattern
        self.what = (f"one of {', '.join(map(repr, choices))}" if choices else
                     f"text matching {pattern}" if pattern else f"printable text of 1-{max_len} characters")

    def ok(self, v):
        if not isinstance(v, str) or not 0 < len(v) <= self.max_len or not v.isprintable():
            return False
        return (self.choices is None or v in self.choices) and (self.pattern is None or re.fullmatch(self.pattern, v))


class FileName(Str):
    """A plain file name directly inside the bundle directory: no '/', '\\', '..' or hidden names."""

    def __init__(self):
        super().__init__(max_len=NAME_MAX)
        self.what = "a plain file name inside the bundle (no '/', '..' or leading '.')"

    def ok(self, v):
        return super().ok(v) and "/" not in v and "\\" not in v and not v.startswith(".") \
            and len(v.encode("utf-8")) <= NAME_MAX


class Choice(Spec):
    """Exactly one of `values` (None allowed when listed)."""

    def __init__(self, values: tuple):
        self.values, self.what = values, f"one of {', '.join(map(repr, values))}"

    def ok(self, v):
        return any(v is c or (isinstance(v, str) and v == c) for c in self.values)


class List(Spec):
    def __init__(self, item: Spec, lo: int, hi: int):
        self.item, self.lo, self.hi, self.what = item, lo, hi, f"a list of {lo}-{hi} items"

    def check(self, v, where):
        if not isinstance(v, list) or not self.lo <= len(v) <= self.hi:
            raise BundleError(f"{where} must be {self.what}, got {_show(v)}")
        return [self.item.check(x, f"{where}[{i}]") for i, x in enumerate(v)]


class Obj(Spec):
    """A JSON object with `required` and `optional` keys; other keys are kept but never read."""

    def __init__(self, required: dict, optional: dict | None = None, nullable: bool = False):
        self.required, self.optional, self.nullable = required, optional or {}, nullable

    def check(self, v, where):
        if v is None and self.nullable:
            return None
        if not isinstance(v, dict):
            raise BundleError(f"{where or 'the manifest'} must be an object, got {_show(v)}")
        for key, spec in self.required.items():
            if key not in v:
                raise BundleError(f"{_at(where, key)} is missing")
            spec.check(v[key], _at(where, key))
        for key, spec in self.optional.items():
            if key in v:
                spec.check(v[key], _at(where, key))
        return v


class Files(Spec):
    """The `files` table: plain name -> {sha256, bytes}."""
    ENTRY = Obj({"sha256": Str(pattern="[0-9a-f]{64}"), "bytes": Int(0, 1 << 40)})

    def check(self, v, where):
        if not isinstance(v, dict) or not 0 < len(v) <= 64:
            raise BundleError(f"{where} must be an object of 1-64 files, got {_show(v)}")
        for name, entry in v.items():
            FileName().check(name, f"{where} name")
            self.ENTRY.check(entry, f"{where}[{name!r}]")
        return v


# ---------------------------------------------------------------- runtimes

def one_line(e: Exception) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return x.astype(np.float32, copy=False)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    if np.dtype(detail["dtype"]) == np.float32:
        return y.astype(np.float32, copy=True)  # the interpreter reuses its buffer
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


ONNX_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8",
               "tensor(uint8)": "uint8", "tensor(int64)": "int64"}


class OnnxSession:
    """onnxruntime, CPU execution provider; fed the verified bytes, never a path."""
    runtime = "onnxruntime"

    def __init__(self, blobs: list, threads: int | None, delegate: str | None):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(blobs[0], sess_options=opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]
        self.output = self.session.get_outputs()[0]

    def io_spec(self) -> dict:
        def spec(t):
            return {"name": t.name, "dtype": ONNX_DTYPES.get(t.type, t.type),
                    "shape": [d if isinstance(d, int) else None for d in t.shape]}
        return {"input": spec(self.input), "output": spec(self.output)}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output.name], {self.input.name: x.astype(np.float32, copy=False)})[0]


class TfliteSession:
    """LiteRT interpreter, with the delegate setting the file was verified with."""

    def __init__(self, blobs: list, threads: int | None, delegate: str | None):
        from ai_edge_litert import interpreter as litert
        kwargs = {"num_threads": threads} if threads else {}
        if delegate == "none":  # verified without XNNPACK: keep it that way
            kwargs["experimental_op_resolver_type"] = litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.runtime = "litert-builtin" if delegate == "none" else "litert-xnnpack"
        self.blob = blobs[0]  # the interpreter reads this buffer for its whole life
        self.interp = litert.Interpreter(model_content=self.blob, **kwargs)
        self.interp.allocate_tensors()
        self.input = self.interp.get_input_details()[0]
        self.output = self.interp.get_output_details()[0]
        self.batch = None

    def io_spec(self) -> dict:
        def spec(d):
            sig = d.get("shape_signature", d["shape"])
            return {"name": d["name"], "dtype": np.dtype(d["dtype"]).name,
                    "shape": [int(s) if s >= 0 else None for s in sig]}
        spec_in = spec(self.input)
        spec_in["shape"][0] = None  # every file is resized to the batch it is given
        return {"input": spec_in, "output": spec(self.output)}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.batch != len(x):
            self.interp.resize_tensor_input(self.input["index"], [len(x), *self.input["shape"][1:]], strict=False)
            self.interp.allocate_tensors()
            self.input = self.interp.get_input_details()[0]
            self.output = self.interp.get_output_details()[0]
            self.batch = len(x)
        self.interp.set_tensor(self.input["index"], _quantize(x, self.input))
        self.interp.invoke()
        return _dequantize(self.interp.get_tensor(self.output["index"]), self.output)


class OpenvinoSession:
    """OpenVINO's CPU plugin on an ONNX file, set up as the export verified it: f32 forced (it would
    pick f16 or bf16 on some CPUs), one stream, no CPU pinning; its telemetry module is kept out."""
    runtime = "openvino"

    def __init__(self, blobs: list, threads: int | None, delegate: str | None):
        sys.modules.setdefault("openvino_telemetry", None)  # would fork a process that posts usage data
        import openvino as ov
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(blobs[0]), "CPU", {
            "INFERENCE_NUM_THREADS": threads or 0, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32", "ENABLE_CPU_PINNING": False})
        self.request, self.tensor = self.compiled.create_infer_request(), ov.Tensor

    def io_spec(self) -> dict:
        def spec(port):
            return {"name": port.get_any_name(), "dtype": np.dtype(port.get_element_type().to_dtype()).name,
                    "shape": [d.get_length() if d.is_static else None for d in port.get_partial_shape()]}
        return {"input": spec(self.compiled.inputs[0]), "output": spec(self.compiled.outputs[0])}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.request.set_input_tensor(self.tensor(np.ascontiguousarray(x, dtype=np.float32), shared_memory=True))
        self.request.infer()
        return self.request.get_output_tensor().data.copy()  # the request reuses its buffer


NCNN_MAGIC = "7767517"
# ncnn layer type -> (bias_term key, weight_data_size key): the layers whose weights fill the .bin
# (a 4-byte tag, 0 for float32, then the weights; then num_output biases if bias_term). The other
# layer types the project writes carry none; any other type is refused (its share of the .bin is unknown).
NCNN_WEIGHTED = {"InnerProduct": ("1", "2"), "Convolution": ("5", "6"), "ConvolutionDepthWise": ("5", "6")}
NCNN_UNWEIGHTED = ("Input", "Split", "Flatten", "Pooling", "BinaryOp", "ReLU", "Clip", "Sigmoid", "TanH")


def ncnn_layers(param: str) -> list:
    """(type, {key: value text}) of every layer of a .param text; ValueError when it is not one."""
    lines = [line.split() for line in param.splitlines() if line.strip()]
    if len(lines) < 3 or lines[0] != [NCNN_MAGIC] or len(lines[1]) != 2:
        raise ValueError(f"not an ncnn .param file (no {NCNN_MAGIC} magic and counts line)")
    layers = []
    for fields in lines[2:]:
        if len(fields) < 4 or not fields[2].isdigit() or not fields[3].isdigit():
            raise ValueError(f"malformed .param line {' '.join(fields)[:60]!r}")
        pairs = fields[4 + int(fields[2]) + int(fields[3]):]
        if not all("=" in p for p in pairs):
            raise ValueError(f"malformed .param line {' '.join(fields)[:60]!r}")
        layers.append((fields[0], dict(p.split("=", 1) for p in pairs)))
    return layers


def check_ncnn_weights(layers: list, weights: bytes) -> None:
    """The .bin holds exactly the float32 weights the .param declares. ncnn reads weights from
    memory without bounds and reports nothing, so a short .bin would run on whatever follows it."""
    at = 0
    for i, (kind, p) in enumerate(layers):
        if kind in NCNN_UNWEIGHTED:
            continue
        if kind not in NCNN_WEIGHTED:
            raise ValueError(f"layer {i} is an ncnn {kind}, a type this runner cannot check the weights of")
        bias_term, size = NCNN_WEIGHTED[kind]
        if weights[at:at + 4] != b"\0\0\0\0":
            raise ValueError(f"layer {i} ({kind}): weights at byte {at} are not tagged float32")
        at += 4 + 4 * int(p.get(size, "0")) + (4 * int(p.get("0", "0")) if p.get(bias_term, "0") != "0" else 0)
    if at != len(weights):
        raise ValueError(f"the .bin has {len(weights)} bytes, its .param declares {at}")


class NcnnSession:
    """ncnn on model.ncnn.param + .bin, float32 exactly as the export verified it: every fp16/bf16
    option off (ncnn turns them on where the CPU has them, e.g. a Pi 5's Cortex-A76, and they moved
    CNN logits by up to 0.15), no Vulkan. Loaded from the verified bytes (load_model_mem copies
    them). Feature vectors run as one 2-D Mat [batch, features], images one [c, h, w] Mat each.
    Threads: 1 unless told, as the export ran it; ncnn's own default (an OpenMP team of every big
    core) took 80x as long on a small CNN on a busy 2-core host, one image per call."""
    runtime = "ncnn"
    INPUT, OUTPUT = "in0", "out0"
    OFF = ("use_vulkan_compute", "use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic",
           "use_bf16_storage", "use_bf16_packed")

    def __init__(self, blobs: list, threads: int | None, delegate: str | None):
        import ncnn
        param = blobs[0].decode("ascii")
        layers = ncnn_layers(param)
        check_ncnn_weights(layers, blobs[1])
        hints = next((p for kind, p in layers if kind == "Input"), {})
        w, h, c = (int(hints.get(k, "0")) for k in ("0", "1", "2"))
        if w < 1 or (h or c) and min(h, c) < 1:
            raise ValueError("its Input layer does not declare the input shape (0=w, 1=h, 2=c)")
        self.sample = [c, h, w] if h else [w]
        self.mat, self.net = ncnn.Mat, ncnn.Net()
        opt = self.net.opt  # set before loading: layers choose their kernels as they are created
        for name in self.OFF:
            setattr(opt, name, False)  # a binding without one of them fails here, not silently
        opt.lightmode = True
        opt.num_threads = threads or 1
        if self.net.load_param_mem(param) != 0:
            raise ValueError("ncnn rejected the .param")
        self.net.load_model_mem(blobs[1])  # no status: the sizes were checked above
        self.n_out = self._run(np.zeros(self.sample if h else [1, w], np.float32)).size

    def io_spec(self) -> dict:
        return {"input": {"name": self.INPUT, "dtype": "float32", "shape": [None, *self.sample]},
                "output": {"name": self.OUTPUT, "dtype": "float32", "shape": [None, self.n_out]}}

    def _run(self, x: np.ndarray) -> np.ndarray:
        ex = self.net.create_extractor()
        ex.input(self.INPUT, self.mat(x))  # the Mat reads x in place: x outlives the call
        status, out = ex.extract(self.OUTPUT)
        if status != 0:
            raise RuntimeError(f"ncnn extract({self.OUTPUT!r}) returned status {status}")
        return np.array(out, dtype=np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim == 2:
            return self._run(x).reshape(len(x), -1)
        return np.stack([self._run(img).ravel() for img in x])


@dataclass(frozen=True)
class Runner:
    """How this script runs one kind of model file, and what manifest.json may say about it."""
    open: Callable  # (blobs: list[bytes], threads, delegate) -> session: io_spec(), __call__(x in its layout)
    suffixes: tuple  # model.files, in this order, end with these (a .param + .bin pair lists two)
    layouts: tuple  # input layouts its files use (LAYOUTS keys)
    delegates: tuple  # manifest model.delegate values it accepts
    module: str  # the library it imports (bench_device.py records its version)


# manifest model.runner -> Runner. A new runtime is one session class and one row here.
RUNNERS = {
    "onnx": Runner(OnnxSession, suffixes=(".onnx",), layouts=("features", "nchw"), delegates=(None,),
                   module="onnxruntime"),
    "tflite": Runner(TfliteSession, suffixes=(".tflite",), layouts=("features", "nhwc"),
                     delegates=("xnnpack", "none"), module="ai_edge_litert"),
    "openvino": Runner(OpenvinoSession, suffixes=(".onnx",), layouts=("features", "nchw"), delegates=(None,),
                       module="openvino"),
    "ncnn": Runner(NcnnSession, suffixes=(".param", ".bin"), layouts=("features", "nchw"), delegates=(None,),
                   module="ncnn"),
}


@dataclass(frozen=True)
class Layout:
    """How a file takes a batch given channels-last [n, *sample_shape] (the model description's layout)."""
    feed: Callable  # x [n, *sample_shape] -> what the file takes
    declared: Callable  # sample_shape -> the file's per-sample input shape
    ndim: int  # len(sample_shape)


LAYOUTS = {
    "features": Layout(lambda x: x.reshape(len(x), -1), lambda s: [int(np.prod(s))], 1),
    "nhwc": Layout(lambda x: x, lambda s: list(s), 3),
    "nchw": Layout(lambda x: np.ascontiguousarray(x.transpose(0, 3, 1, 2)), lambda s: [s[2], s[0], s[1]], 3),
}

DIM = Int(1, 1 << 16)
MANIFEST = Obj({
    "schema": Choice((SCHEMA,)),
    "name": Str(max_len=NAME_MAX),
    "model": Obj({"files": List(FileName(), 1, 8), "format": Str(max_len=32), "variant": Str(max_len=64),
                  "runtime": Str(max_len=64), "runner": Choice(tuple(RUNNERS)),
                  "delegate": Choice((None, *sorted({d for r in RUNNERS.values() for d in r.delegates} - {None}))),
                  "artifact": Str(max_len=4096)}),
    "provenance": Obj({}, {"framework": Str(max_len=64), "method": Str(max_len=64), "sparsity": Num(0, 100)}),
    "input": Obj({"sample_shape": List(DIM, 1, 3), "layout": Choice(tuple(LAYOUTS)),
                  "accepts": List(List(DIM, 1, 4), 1, 8)}),
    "output": Obj({"n_classes": Int(1, MAX_CLASSES), "classes_file": FileName()}),
    "selftest": Obj({"file": FileName(), "classes": List(Int(0, MAX_CLASSES - 1), 1, 1024),
                     "logits": List(List(Num(), 1, MAX_CLASSES), 1, 1024), "tolerance": Num(0, 1e30)},
                    nullable=True),
    "files": Files(),
})


def check_consistency(m: dict) -> None:
    """What the field types alone cannot say: every file it names is listed, and fits its runner."""
    model, inp, runner = m["model"], m["input"], RUNNERS[m["model"]["runner"]]
    named = [("model.files", n) for n in model["files"]] + [("output.classes_file", m["output"]["classes_file"])]
    named += [("selftest.file", m["selftest"]["file"])] if m["selftest"] else []
    for where, name in named:
        if name not in m["files"]:
            raise BundleError(f"{where}: {name!r} is not listed in files (no sha256 to check it against)")
    if len(model["files"]) != len(runner.suffixes) or not all(
            n.endswith(s) for n, s in zip(model["files"], runner.suffixes)):
        raise BundleError(f"model.files must be {len(runner.suffixes)} file(s) ending in "
                          f"{', '.join(runner.suffixes)} for runner {model['runner']!r}, got {_show(model['files'])}")
    for field, value, allowed in (("delegate", model["delegate"], runner.delegates),
                                  ("layout", inp["layout"], runner.layouts)):
        if value not in allowed:
            raise BundleError(f"{field} {value!r} is not one runner {model['runner']!r} takes ({_show(allowed)})")
    size = math.prod(inp["sample_shape"])
    if len(inp["sample_shape"]) != LAYOUTS[inp["layout"]].ndim or any(math.prod(s) != size for s in inp["accepts"]):
        raise BundleError(f"input: sample_shape {inp['sample_shape']}, layout {inp['layout']!r} and accepts "
                          f"{_show(inp['accepts'])} do not agree")
    st, n_classes = m["selftest"], m["output"]["n_classes"]
    if st and (len(st["logits"]) != len(st["classes"]) or any(len(r) != n_classes for r in st["logits"])
               or max(st["classes"]) >= n_classes):
        raise BundleError(f"selftest: classes and logits must describe {len(st['classes'])} images of "
                          f"{n_classes} classes")


# ---------------------------------------------------------------- bundle + integrity

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_manifest(bundle_dir: Path = HERE) -> dict:
    """manifest.json, parsed and checked against MANIFEST and check_consistency."""
    path = Path(bundle_dir) / "manifest.json"
    if Path(os.path.realpath(path)).parent != Path(os.path.realpath(bundle_dir)):
        raise BundleError(f"{path}: a link that leads out of the bundle; refusing to run")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
        if len(raw) > MAX_MANIFEST_BYTES:
            raise BundleError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes; not a prunedge bundle manifest")
        manifest = json.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path}: manifest not found (is this a prunedge bundle?)") from None
    except (OSError, ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise BundleError(f"{path}: unreadable manifest ({one_line(e)})") from None
    try:
        MANIFEST.check(manifest, "")
        check_consistency(manifest)
    except BundleError as e:
        raise BundleError(f"{path}: {e}") from None
    return manifest


class Bundle:
    """A bundle directory whose manifest passed its schema and whose files match their hashes."""

    def __init__(self, directory: Path = HERE):
        self.dir = Path(directory).resolve()
        self.manifest = load_manifest(self.dir)
        self.verify_files()

    def path(self, name: str) -> Path:
        """`name` (a schema-checked plain name) in the bundle; a link that leads out of it is refused."""
        path = self.dir / name
        try:
            real = Path(os.path.realpath(path))
        except (OSError, RuntimeError, ValueError) as e:
            raise BundleError(f"{path}: cannot resolve ({one_line(e)})") from None
        if real.parent != self.dir:
            raise BundleError(f"{path}: a link that leads out of the bundle (to {real}); refusing to run")
        if not real.is_file():
            raise BundleError(f"{path}: missing from the bundle (or not a regular file); refusing to run")
        return real

    def _check(self, path: Path, name: str, size: int, digest: str) -> None:
        entry = self.manifest["files"][name]
        if size != entry["bytes"]:
            raise BundleError(f"{path}: size {size} != {entry['bytes']} in manifest.json "
                              "(file changed or corrupt); refusing to run")
        if digest != entry["sha256"]:
            raise BundleError(f"{path}: sha256 does not match manifest.json (file changed or corrupt); "
                              "refusing to run")

    def verify_files(self) -> None:
        """Every listed file exists inside the bundle with the recorded size and sha256."""
        for name in sorted(self.manifest["files"]):
            real = self.path(name)
            try:
                self._check(self.dir / name, name, real.stat().st_size, sha256_file(real))
            except OSError as e:
                raise BundleError(f"{self.dir / name}: cannot read ({e.strerror})") from None

    def read(self, name: str) -> bytes:
        """The bytes of a listed file, checked again as read: what is checked is what is used."""
        try:
            with open(self.path(name), "rb") as f:
                data = f.read(self.manifest["files"][name]["bytes"] + 1)
        except OSError as e:
            raise BundleError(f"{self.dir / name}: cannot read ({e.strerror})") from None
        self._check(self.dir / name, name, len(data), hashlib.sha256(data).hexdigest())
        return data

    def class_names(self) -> list:
        """output.classes_file: one printable name per line, exactly output.n_classes of them."""
        name, n = self.manifest["output"]["classes_file"], self.manifest["output"]["n_classes"]
        try:
            names = self.read(name).decode("utf-8").split("\n")
        except UnicodeDecodeError:
            raise BundleError(f"{self.dir / name}: not UTF-8 text") from None
        if names and names[-1] == "":
            names.pop()
        if len(names) != n or not all(Str().ok(c) for c in names):
            raise BundleError(f"{self.dir / name}: expected {n} class names, one printable name per line")
        return names

    def open_model(self, threads: int | None = None) -> "Model":
        """The model in its runtime, with the delegate setting it was verified with."""
        m = self.manifest["model"]
        runner = RUNNERS[m["runner"]]
        blobs = [self.read(name) for name in m["files"]]
        where = self.dir / m["files"][0]
        try:
            session = runner.open(blobs, threads, m["delegate"])
        except ImportError as e:
            raise BundleError(f"{where}: runtime not installed ({e}); run pip install -r requirements.txt") from None
        except Exception as e:  # the runtime's own load errors: one line, not a traceback
            raise BundleError(f"{where}: runtime could not load the model ({one_line(e)})") from None
        return Model(session, self.manifest["input"], self.manifest["output"]["n_classes"], where)


class Model:
    """A loaded model: float32 [n, *sample_shape] (channels-last) in, float32 logits [n, classes] out."""

    def __init__(self, session, input_spec: dict, n_classes: int, where):
        self.session, self.n_classes, self.where = session, n_classes, where
        self.layout = LAYOUTS[input_spec["layout"]]
        self.runtime = getattr(session, "runtime", "")
        declared = session.io_spec()["input"]["shape"][1:]
        want = self.layout.declared(input_spec["sample_shape"])
        if list(declared) != want:
            raise BundleError(f"{where}: the file takes [n, {', '.join(map(str, declared))}] but manifest.json "
                              f"input ({input_spec['layout']}, {input_spec['sample_shape']}) gives [n, "
                              f"{', '.join(map(str, want))}]")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        logits = self.session(self.layout.feed(x))
        if logits.ndim != 2 or logits.shape != (len(x), self.n_classes):
            raise BundleError(f"{self.where}: gives outputs of shape {list(logits.shape)}, expected "
                              f"[{len(x)}, {self.n_classes}] (manifest.json output.n_classes)")
        return logits


def run_batched(model, x: np.ndarray, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    try:
        return np.concatenate([model(x[i:i + chunk]) for i in range(0, len(x), chunk)])
    except BundleError:
        raise
    except Exception as e:
        raise BundleError(f"model: runtime failed ({one_line(e)})") from None


# ---------------------------------------------------------------- inputs

def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise BundleError(f"{path}: is a directory, expected a .npy or IDX file") from None
    except OSError as e:
        raise BundleError(f"{path}: cannot read ({e.strerror})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise BundleError(f"{path}: corrupt or truncated gzip file ({e})") from None
    return raw


def read_idx(path: Path, magic: int) -> np.ndarray:
    """IDX file of unsigned bytes (raw or gzip): big-endian magic, dims, data."""
    raw = _read_bytes(path)
    ndim = 3 if magic == IDX_IMAGE_MAGIC else 1
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise BundleError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    found = struct.unpack(">I", raw[:4])[0]
    if found != magic:
        raise BundleError(f"{path}: IDX magic {found}, expected {magic}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) != header + math.prod(dims):
        raise BundleError(f"{path}: {len(raw)} bytes do not match IDX dimensions {list(dims)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_npy(path: Path, raw: bytes | None = None) -> np.ndarray:
    raw = _read_bytes(path) if raw is None else raw
    if not raw.startswith(b"\x93NUMPY"):  # np.load would also open a zip (.npz) or ask for pickle
        raise BundleError(f"{path}: not a .npy file (no NUMPY header)")
    try:
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except ValueError as e:
        raise BundleError(f"{path}: not a plain .npy array ({str(e).splitlines()[0] if str(e) else ''})") from None
    except (OSError, EOFError) as e:
        raise BundleError(f"{path}: corrupt .npy file ({one_line(e)})") from None


def to_pixels(x: np.ndarray, source, spec: dict) -> np.ndarray:
    """An accepted shape, uint8 0-255 or float 0-1 -> float32 [n, *sample_shape] in [0, 1]."""
    accepts = [list(s) for s in spec["accepts"]]
    if x.ndim < 2 or list(x.shape[1:]) not in accepts:
        expected = " or ".join(f"[n, {', '.join(map(str, s))}]" for s in accepts)
        raise BundleError(f"{source}: expected shape {expected}, got {list(x.shape)}")
    if len(x) == 0:
        raise BundleError(f"{source}: no images")
    x = x.reshape(len(x), *spec["sample_shape"])
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    if not np.issubdtype(x.dtype, np.floating):
        raise BundleError(f"{source}: expected uint8 (0-255) or float (0-1) pixels, got dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise BundleError(f"{source}: contains NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise BundleError(f"{source}: float pixels must be scaled to [0, 1], found range [{lo:g}, {hi:g}]"
                          " (pass uint8 0-255 or divide by 255)")
    return x.astype(np.float32)


def load_images(path: Path, spec: dict) -> np.ndarray:
    x = read_npy(path) if path.suffix == ".npy" else read_idx(path, IDX_IMAGE_MAGIC)
    return to_pixels(x, path, spec)


def load_labels(path: Path, n_classes: int) -> np.ndarray:
    """int labels [n], each a class of this model (0 .. n_classes-1)."""
    y = read_npy(path) if path.suffix == ".npy" else read_idx(path, IDX_LABEL_MAGIC)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise BundleError(f"{path}: labels must be a 1-D integer array, got {y.dtype} {list(y.shape)}")
    bad = (y < 0) | (y >= n_classes)
    if bad.any():
        raise BundleError(f"{path}: label {y[bad][0]} at index {int(np.argmax(bad))} is outside this model's "
                          f"classes 0..{n_classes - 1}")
    return y.astype(np.int64)


# ---------------------------------------------------------------- outputs

def save_npy(path: Path, array: np.ndarray) -> None:
    """Write via a temp file + rename so a reader never sees half a file."""
    path = Path(path)
    if path.suffix != ".npy":
        raise BundleError(f"{path}: output file must end in .npy")
    if not path.parent.is_dir():
        raise BundleError(f"{path}: directory {path.parent} does not exist")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npy", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, path)
    except OSError as e:
        raise BundleError(f"{path}: cannot write ({e.strerror})") from None
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one `error: ...` line like every other bad input."""

    def error(self, message):
        raise BundleError(f"{self.prog}: {message} (see --help)")


def threads_option(text: str) -> int:
    """--threads N: 1 .. MAX_THREADS."""
    if not text.isdigit() or not 1 <= int(text) <= MAX_THREADS:
        raise argparse.ArgumentTypeError(f"must be an integer in [1, {MAX_THREADS}], got {text!r}")
    return int(text)


def parse_args(argv):
    p = ArgumentParser(prog="predict.py", description=__doc__.split("\n\n")[0],
                       epilog="Exit status: 0 ok, 2 bad input or tampered bundle.")
    p.add_argument("inputs", nargs="*", type=Path, metavar="IMAGES",
                   help=".npy (a shape manifest.json input.accepts lists; uint8 0-255 or float 0-1) or IDX images")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text lines")
    p.add_argument("--out", type=Path, metavar="PREDS.npy", help="also write predicted class ids (int64)")
    p.add_argument("--logits", type=Path, metavar="LOGITS.npy", help="also write raw outputs (float32 [n, classes])")
    p.add_argument("--labels", type=Path, help="true labels (.npy or IDX) to report accuracy")
    p.add_argument("--threads", type=threads_option, default=None, help="runtime threads (default: runtime's choice)")
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    p.add_argument("--verify-only", action="store_true", help="check the bundle's hashes and exit")
    p.add_argument("--selftest", action="store_true",
                   help="run the bundled sample images and compare with the classes recorded at build time")
    args = p.parse_args(argv)
    if not args.inputs and not (args.verify_only or args.selftest):
        p.error("give at least one image file (or --verify-only / --selftest)")
    return args


def selftest(bundle: Bundle, model: Model) -> dict:
    st = bundle.manifest["selftest"]
    if not st:
        raise BundleError(f"{bundle.dir / 'manifest.json'}: this bundle has no self-test data")
    path = bundle.dir / st["file"]
    x = to_pixels(read_npy(path, bundle.read(st["file"])), path, bundle.manifest["input"])
    if len(x) != len(st["classes"]):
        raise BundleError(f"{path}: {len(x)} images for {len(st['classes'])} recorded classes")
    logits = run_batched(model, x)
    classes = logits.argmax(axis=1)
    expected = np.asarray(st["classes"])
    diff = float(np.abs(logits - np.asarray(st["logits"], dtype=np.float32)).max())
    if not ((classes == expected).all() and diff <= st["tolerance"]):
        raise BundleError(f"selftest: {int((classes != expected).sum())}/{len(x)} classes differ, "
                          f"max |logit diff| {diff:.3g} (tolerance {st['tolerance']})")
    return {"selftest": "passed", "n": len(x), "max_abs_diff": diff}


def report(name: str, names: list, classes: np.ndarray, accuracy, as_json: bool) -> str:
    if as_json:
        out = {"bundle": name, "n": len(classes), "classes": classes.tolist(),
               "names": [names[c] for c in classes]}
        if accuracy is not None:
            out["accuracy"] = accuracy
        return json.dumps(out) + "\n"
    lines = [f"{i}\t{c}\t{names[c]}" for i, c in enumerate(classes)]
    if accuracy is not None:
        lines.append(f"# accuracy {accuracy:.4f} on {len(classes)} images")
    return "\n".join(lines) + "\n"


def run(argv=None, bundle_dir: Path | None = None) -> int:
    args = parse_args(argv)
    bundle = Bundle(bundle_dir or HERE)  # refuse a changed bundle before reading anything else
    if args.verify_only:
        if not args.quiet:
            print(f"ok: {len(bundle.manifest['files'])} files match manifest.json")
        return 0
    if args.selftest:
        result = selftest(bundle, bundle.open_model(threads=args.threads))
        if not args.quiet:
            print(json.dumps(result) if args.json else f"selftest passed on {result['n']} images "
                  f"(max |logit diff| {result['max_abs_diff']:.2g})")
        return 0
    x = np.concatenate([load_images(path, bundle.manifest["input"]) for path in args.inputs])
    labels = load_labels(args.labels, bundle.manifest["output"]["n_classes"]) if args.labels else None
    if labels is not None and len(labels) != len(x):
        raise BundleError(f"{args.labels}: {len(labels)} labels for {len(x)} images")
    names = bundle.class_names()  # checked before the (slower) run
    logits = run_batched(bundle.open_model(threads=args.threads), x)
    classes = logits.argmax(axis=1).astype(np.int64)
    if args.out:
        save_npy(args.out, classes)
    if args.logits:
        save_npy(args.logits, logits.astype(np.float32))
    accuracy = float((classes == labels).mean()) if labels is not None else None
    if not args.quiet:
        sys.stdout.write(report(bundle.manifest["name"], names, classes, accuracy, args.json))
    return 0


def main(argv=None, bundle_dir: Path | None = None) -> int:
    try:
        return run(argv, bundle_dir)
    except BundleError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `predict.py x.npy | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
