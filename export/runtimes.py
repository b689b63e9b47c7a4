"""The table of runtimes: one row per way of running a file, with its one name everywhere.

A row says which file formats it runs, how to load a file once and call it many times
(`load(path, threads) -> session`, `session(x) -> float32 logits [batch, classes]`, any batch
size, the description's input layout), what it imports (memory baseline), how its thread count
is set, and what a deploy bundle needs for it (pip package and predict.py runner). The names in
this table are the names in the manifest, results.csv, bundles and the report.

Heavy libraries are imported inside the loaders, so a bench child imports only the one it measures.
TensorFlow fixes its thread pools when it initialises, so keras is `threads_in_process=False`:
the bench starts one process per thread count and `configure(threads)` runs before the import.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.errors import fail

Session = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True, kw_only=True)
class Runtime:
    name: str
    engine: str  # the library: rows that differ only in settings share it ("litert")
    formats: tuple[str, ...]  # file formats it runs ("npz", "onnx", "tflite", "ncnn")
    load: Callable[[Path, int | None], Session]
    imports: tuple[str, ...]  # everything `load` imports, so baseline -> peak is the model alone
    package: str | None  # pip distribution a bundle installs for it; None: not shipped in bundles
    runner: str | None  # bundle_template/predict.py RUNNERS key; None: not shipped in bundles
    delegate: str | None = None  # LiteRT delegate setting this row runs with
    threads_in_process: bool = True  # False: one process per thread count (see configure)
    configure: Callable[[int], None] | None = None  # runs at process start, before `imports`
    note: str = ""


# ---------------------------------------------------------------- loaders

def _blas_threads(threads: int | None) -> None:
    """Limit numpy/SciPy BLAS in this process (threadpoolctl); stays in effect for the process."""
    if threads:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=threads)


def _load_numpy(path: Path, threads: int | None) -> Session:
    """Dense numpy forward of the model.npz; CSR layers densified (the masked-dense baseline)."""
    from pipeline.model_io import load
    _blas_threads(threads)
    return load(path).densified().forward


def _load_scipy_csr(path: Path, threads: int | None) -> Session:
    from export.csr_forward import CsrForward
    from pipeline.model_io import load
    _blas_threads(threads)
    return CsrForward(load(path))


def _load_torch(path: Path, threads: int | None) -> Session:
    """PyTorch eager from the description (CSR densified), under inference_mode."""
    import torch

    from pipeline.model_io import load
    from pipeline.torch_net import to_torch
    if threads:
        torch.set_num_threads(threads)
    net = to_torch(load(path).densified())

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()
    return run


def _configure_tf(threads: int) -> None:
    """Must run before TensorFlow initialises: its thread pools are fixed at start-up."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def _load_keras(path: Path, threads: int | None) -> Session:
    """Keras 3 / TensorFlow from the description, the call traced once by tf.function
    (model.predict adds ~ms of per-call overhead that is not the model's)."""
    import tensorflow as tf

    from pipeline.keras_net import to_keras
    from pipeline.model_io import load
    model = load(path).densified()
    net = to_keras(model)
    fn = tf.function(lambda x: net(x, training=False), reduce_retracing=True,
                     input_signature=[tf.TensorSpec([None, model.input_dim], tf.float32)])
    return lambda x: fn(np.ascontiguousarray(x, dtype=np.float32).reshape(len(x), -1)).numpy()


def _load_onnxruntime(path: Path, threads: int | None) -> Session:
    from export.runners import OnnxSession
    return OnnxSession(path, threads=threads)


def _load_openvino(path: Path, threads: int | None) -> Session:
    from export.runners import OpenVinoSession
    return OpenVinoSession(path, threads=threads)


def _load_ncnn(path: Path, threads: int | None) -> Session:
    from export.runners import NcnnSession
    return NcnnSession(path, threads=threads)


def _litert(delegate: str) -> Callable[[Path, int | None], Session]:
    def load(path: Path, threads: int | None) -> Session:
        from export.runners import TfliteSession
        return TfliteSession(path, delegate=delegate, threads=threads)
    return load


# ---------------------------------------------------------------- the table

_ROWS = (
    Runtime(name="numpy", engine="numpy", formats=("npz",), load=_load_numpy, package=None, runner=None,
            imports=("pipeline.model_io", "threadpoolctl"), note="dense numpy forward (CSR densified); BLAS threads via threadpoolctl"),
    Runtime(name="scipy-csr", engine="scipy", formats=("npz",), load=_load_scipy_csr, package=None, runner=None,
            imports=("pipeline.model_io", "export.csr_forward", "threadpoolctl"),
            note="SciPy CSR forward of models stored as CSR; single-threaded sparse kernels"),
    Runtime(name="torch", engine="torch", formats=("npz",), load=_load_torch, package=None, runner=None,
            imports=("torch", "pipeline.torch_net", "pipeline.model_io"), note="PyTorch eager, weights densified; torch.set_num_threads"),
    Runtime(name="keras", engine="keras", formats=("npz",), load=_load_keras, package=None, runner=None,
            imports=("tensorflow", "keras", "pipeline.keras_net", "pipeline.model_io"), threads_in_process=False,
            configure=_configure_tf, note="Keras 3 on TensorFlow, tf.function; TF threads fixed per process"),
    Runtime(name="onnxruntime", engine="onnxruntime", formats=("onnx",), load=_load_onnxruntime,
            package="onnxruntime", runner="onnx", imports=("onnxruntime", "export.runners"),
            note="CPUExecutionProvider, intra_op_num_threads, all graph optimisations"),
    Runtime(name="openvino", engine="openvino", formats=("onnx",), load=_load_openvino, package="openvino",
            runner="openvino", imports=("openvino", "export.runners"),
            note="OpenVINO CPU plugin on the ONNX files: f32 forced, 1 stream, latency hint, no pinning"),
    Runtime(name="ncnn", engine="ncnn", formats=("ncnn",), load=_load_ncnn, package="ncnn", runner="ncnn",
            imports=("ncnn", "export.runners"),
            note="ncnn, fp16/bf16 storage and arithmetic off (exact float32), no Vulkan, num_threads"),
    Runtime(name="litert-xnnpack", engine="litert", formats=("tflite",), load=_litert("xnnpack"), delegate="xnnpack",
            package="ai-edge-litert", runner="tflite", imports=("ai_edge_litert.interpreter", "export.runners"),
            note="LiteRT with its default delegate (XNNPACK), num_threads"),
    Runtime(name="litert-builtin", engine="litert", formats=("tflite",), load=_litert("none"), delegate="none",
            package="ai-edge-litert", runner="tflite", imports=("ai_edge_litert.interpreter", "export.runners"),
            note="LiteRT's builtin kernels, no delegate (runs block-sparse and int8-sparse kernels), num_threads"),
)
RUNTIMES: dict[str, Runtime] = {r.name: r for r in _ROWS}


def runtime(name: str, subject: str = "runtime") -> Runtime:
    if name not in RUNTIMES:
        raise fail(subject, f"unknown runtime {name!r} (choose from {', '.join(RUNTIMES)})")
    return RUNTIMES[name]


def open_session(path, name: str, *, threads: int | None = None) -> Session:
    """Load `path` in runtime `name` (a RUNTIMES key)."""
    return runtime(name).load(Path(path), threads)


def for_format(fmt: str) -> list[Runtime]:
    return [r for r in RUNTIMES.values() if fmt in r.formats]


def runs(row: Runtime, *, fmt: str, method: str) -> bool:
    """Whether the bench times a file of format `fmt` from pruning method `method` in `row`:
    every runtime of its format; for a model.npz, the runtimes its method's row names."""
    if fmt not in row.formats:
        return False
    if fmt != "npz":
        return True
    from pipeline.methods import METHODS, NPZ_RUNTIMES, base_name
    base = base_name(method)
    return row.name in (METHODS[base].timed_by if base in METHODS else NPZ_RUNTIMES)


THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def thread_env(row: Runtime, threads: int) -> dict[str, str]:
    """Environment for a child process that measures `row`: for runtimes that cannot change threads
    in-process the library pools are pinned here, before anything is imported."""
    return {} if row.threads_in_process else {name: str(threads) for name in THREAD_ENV}
