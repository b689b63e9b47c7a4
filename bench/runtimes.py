"""The table of runners: which artifacts each runtime runs, how to load once and call many,
and how its thread count is set.

Every runner has the same shape: `load(path, threads) -> session`, where
`session(x: float32 [batch, features]) -> float32 logits [batch, classes]` accepts any batch
size. Heavy libraries are imported inside the loaders; a bench child imports only the one
runtime it measures.

Threads: most runtimes take the thread count per session or per call, so one process can
measure 1 thread and all cores. TensorFlow fixes its thread pools when it initialises, so
keras is `threads_in_process=False`: the sweep starts one process per thread count and
`configure(threads)` runs before TensorFlow is imported.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

Session = Callable[[np.ndarray], np.ndarray]
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True, kw_only=True)
class Runtime:
    name: str
    formats: tuple[str, ...]  # artifact formats it runs ("npz", "onnx", "tflite")
    load: Callable[[Path, int], Session]
    imports: tuple[str, ...]  # everything `load` imports, so baseline -> peak is the model alone
    methods: tuple[str, ...] | None = None  # pruning methods it applies to; None = all
    threads_in_process: bool = True  # False: one process per thread count, see configure
    configure: Callable[[int], None] | None = None  # runs at process start, before `imports`
    note: str = ""

    def runs(self, *, format: str, method: str) -> bool:
        return format in self.formats and (self.methods is None or method in self.methods)


# ------------------------------------------------------------------ numpy / scipy

def _blas_threads(threads: int) -> None:
    """Limit numpy's BLAS in this process (threadpoolctl); without it the sweep sets env vars."""
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=threads)  # stays in effect for the process


def _description(path: Path):
    from pipeline.model_io import load
    return load(path)


def _load_numpy(path: Path, threads: int) -> Session:
    """Dense numpy forward; CSR artifacts are densified (the masked-dense baseline)."""
    if _HAVE_THREADPOOLCTL:
        _blas_threads(threads)
    return _description(path).densified().forward


class CsrForward:
    """CSR forward in the orientation measured fastest for each batch shape (full-size MLP,
    1 thread, random weights; numbers in the bench report):
    - batch 1: W^T stored as CSR [out, in] times the 1-D input (`csr_matvec`): 1.7-2x faster
      than `x @ W`, whose rmatmul path transposes and wraps 2-D arrays (90%: 100 vs 166 us);
    - batch > 1: `x @ W` with W CSR [in, out], which SciPy runs as CSC mat-vecs over the
      batch; keeping activations transposed and calling W^T @ H was 7-15% slower at 50-95%.
    Dense layers (the output layer) use numpy in the same orientation."""

    def __init__(self, model):
        from pipeline.model import ACTIVATIONS
        self.layers = [(layer.weight, _transposed(layer.weight), layer.bias, ACTIVATIONS[layer.activation])
                       for layer in model.layers]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] == 1:
            v = x[0]
            for _, wt, b, act in self.layers:
                v = act(wt @ v + b)
            return v[None, :]
        for w, _, b, act in self.layers:
            x = act(np.asarray(x @ w, dtype=np.float32) + b)
        return x


def _transposed(w):
    import scipy.sparse as sp
    return w.T.tocsr() if sp.issparse(w) else np.ascontiguousarray(w.T)


def _load_scipy_csr(path: Path, threads: int) -> Session:
    """Every layer but the output is CSR; a dense k00 artifact is converted, so k00 is the
    same-runtime reference. SciPy's sparse products are single-threaded; `threads` only
    limits the dense output layer's BLAS."""
    import scipy.sparse as sp
    from dataclasses import replace as dc_replace
    if _HAVE_THREADPOOLCTL:
        _blas_threads(threads)
    model = _description(path)
    layers = list(model.layers)
    for i, layer in enumerate(layers[:-1]):
        if not layer.is_sparse:
            csr = sp.csr_array(layer.weight)
            csr.sort_indices()
            layers[i] = dc_replace(layer, weight=csr)
    return CsrForward(model.with_layers(layers))


# ------------------------------------------------------------------ torch / keras

def _load_torch(path: Path, threads: int) -> Session:
    """PyTorch eager from the description (CSR densified), under inference_mode."""
    import torch
    from pipeline.torch_net import to_torch
    torch.set_num_threads(threads)
    net = to_torch(_description(path))

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(x)).numpy()
    return run


def _configure_tf(threads: int) -> None:
    """Must run before TensorFlow initialises: its thread pools are fixed at start-up."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def _load_keras(path: Path, threads: int) -> Session:
    """Keras 3 / TensorFlow from the description, the call traced once by tf.function
    (model.predict adds ~ms of per-call overhead that is not the model's)."""
    import tensorflow as tf
    from pipeline.keras_net import to_keras
    model = _description(path)
    net = to_keras(model)
    fn = tf.function(lambda x: net(x, training=False), reduce_retracing=True,
                     input_signature=[tf.TensorSpec([None, model.input_dim], tf.float32)])
    return lambda x: fn(x).numpy()


# ------------------------------------------------------------------ onnxruntime / LiteRT

def _load_onnxruntime(path: Path, threads: int) -> Session:
    """The export stage's session (CPU provider, intra_op_num_threads, inter_op 1)."""
    from export.runners import OnnxSession
    return OnnxSession(path, threads=threads)


def _litert_loader(delegate: str) -> Callable[[Path, int], Session]:
    """The export stage's LiteRT session: "xnnpack" = default delegate (OpResolverType.AUTO),
    "none" = BUILTIN_WITHOUT_DEFAULT_DELEGATES; num_threads; int8 I/O (de)quantized."""
    def load(path: Path, threads: int) -> Session:
        from export.runners import TfliteSession
        return TfliteSession(path, delegate=delegate, threads=threads)
    return load


# ------------------------------------------------------------------ the table

_HAVE_THREADPOOLCTL = importlib.util.find_spec("threadpoolctl") is not None

_ROWS = (
    Runtime(name="torch", formats=("npz",), load=_load_torch, imports=("torch", "pipeline.torch_net"),
            note="PyTorch eager, weights densified; torch.set_num_threads"),
    Runtime(name="keras", formats=("npz",), load=_load_keras, imports=("tensorflow", "keras", "pipeline.keras_net"),
            threads_in_process=False, configure=_configure_tf,
            note="Keras 3 on TensorFlow, tf.function; TF intra/inter-op threads fixed per process"),
    Runtime(name="numpy", formats=("npz",), load=_load_numpy, imports=("pipeline.model",),
            threads_in_process=_HAVE_THREADPOOLCTL,
            note="dense numpy forward (CSR densified); BLAS threads via threadpoolctl"),
    Runtime(name="scipy-csr", formats=("npz",), load=_load_scipy_csr, methods=("weight",),
            imports=("pipeline.model",), threads_in_process=_HAVE_THREADPOOLCTL,
            note="SciPy CSR forward for weight-pruned models; single-threaded kernels"),
    Runtime(name="onnxruntime", formats=("onnx",), load=_load_onnxruntime, imports=("onnxruntime", "export.runners"),
            note="CPUExecutionProvider, intra_op_num_threads, all graph optimisations"),
    Runtime(name="litert-xnnpack", formats=("tflite",), load=_litert_loader("xnnpack"),
            imports=("ai_edge_litert.interpreter", "export.runners"), note="LiteRT default delegate (XNNPACK), num_threads"),
    Runtime(name="litert-builtin", formats=("tflite",),
            load=_litert_loader("none"),
            imports=("ai_edge_litert.interpreter", "export.runners"), note="LiteRT builtin kernels, no delegate, num_threads"),
)
RUNTIMES: dict[str, Runtime] = {r.name: r for r in _ROWS}


def thread_env(runtime: Runtime, threads: int) -> dict[str, str]:
    """Environment for a child that measures `runtime`: for runtimes that cannot change threads
    in-process the library pools are pinned here, before anything is imported."""
    if runtime.threads_in_process:
        return {}
    return {name: str(threads) for name in THREAD_ENV}


def with_load(runtime: Runtime, load: Callable[[Path, int], Session]) -> Runtime:
    """A copy with another loader (tests use it to make a runtime fail)."""
    return replace(runtime, load=load)
