"""The table of file kinds: one row per file we write next to a k-dir's model.npz.

A row carries everything any stage needs: its file name, format and variant, the check it must
pass (`check`: fp32 logits or reduced-precision top-1, `pipeline.checks`), the weight precision
the report compares it within, the runtimes that run it (`export.runtimes` names, tried in order
by verification: the first that passes ships; the bench times it in all of them; a bundle
installs the shipped one's package), whether it is built to run sparse, and the exporter.
Every exporter has the signature `export(model, out_path, options) -> Path`. Verification, the
manifest, the table, the bench, the report and bundles loop over `FORMATS`, so adding a file kind
is one module with its exporter plus one row here.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from export import ncnn_format, onnx_format, onnx_quant, tflite_auto, tflite_block, tflite_format
from pipeline.errors import fail
from pipeline.model import Model

ALL_KINDS = None  # a row applies to every physical kind
CSR = frozenset({"csr"})  # sparse storage only pays off when weights were pruned individually
NETWORKS = frozenset({"mlp", "cnn"})
MLP = frozenset({"mlp"})
LITERT = ("litert-xnnpack", "litert-builtin")  # XNNPACK first: what a user gets by default


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    opset: int = onnx_format.OPSET  # 21: run by onnxruntime >= 1.20, so older device builds load it too
    calibration: np.ndarray | None = None  # float32 [n, in] training images for int8-full (a few hundred)
    quiet: bool = True  # swallow converter chatter on stdout/stderr (kept for error messages)
    layer_timings: dict | None = None  # export.tflite_auto's measured table (the auto rows choose from it)


@dataclass(frozen=True, kw_only=True)
class ExportFormat:
    name: str  # key on the CLI and in the manifest, e.g. "tflite-int8-full"
    suffix: str  # file name inside the k-dir
    format: str  # "onnx" | "tflite" | "npz" | ...: which runtimes can open it
    variant: str  # manifest "variant": "fp32" | "sparse" | "fp16" | "int8-dynamic" | "int8-full" | ...
    check: str  # "fp32": logits within checks.FP32; "reduced": top-1 agreement (checks.REDUCED)
    precision: str  # weight precision the report compares within: "fp32" | "fp16" | "int8-dynamic" | "int8-full"
    runtimes: tuple[str, ...]  # export.runtimes names, in verification order
    export: Callable[[Model, Path, "ExportOptions"], Path] | None
    sparse_kernel: bool = False  # built so its pruned weights run sparse (no densify at load)
    kinds: frozenset | None = ALL_KINDS  # physical kinds ("dense", "shrunk", "csr") it applies to
    networks: frozenset = NETWORKS  # "mlp" and/or "cnn"
    notes: str = ""
    when: Callable[[Model], bool] | None = None  # extra applicability test (e.g. block structure)
    details: Callable[[Path], dict] | None = None  # extra manifest fields read from the written file
    reads_timings: bool = False  # chooses from options.layer_timings (which then joins its export stamp)
    companions: Callable[[Path], list[Path]] | None = None  # further files the exporter writes (NCNN's .bin)

    def applies_to(self, model: Model) -> bool:
        return ((self.kinds is None or physical_kind(model) in self.kinds)
                and ("mlp" if model.is_mlp else "cnn") in self.networks
                and (self.when is None or self.when(model)))


_onnx = dict(format="onnx", runtimes=("onnxruntime",))
_tfl = dict(format="tflite", runtimes=LITERT)

FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat(name="onnx", suffix="model.onnx", variant="fp32", check="fp32", precision="fp32",
                 export=onnx_format.export_dense, **_onnx),
    ExportFormat(name="onnx-sparse", suffix="model.sparse.onnx", variant="sparse", check="fp32", precision="fp32",
                 export=onnx_format.export_sparse, kinds=CSR, **_onnx,
                 notes="weights stored as sparse Constant values; onnxruntime densifies them at load"),
    ExportFormat(name="tflite", suffix="model.tflite", variant="fp32", check="fp32", precision="fp32",
                 export=partial(tflite_format.export, recipe="fp32"), **_tfl),
    ExportFormat(name="tflite-sparse", suffix="model.sparse.tflite", variant="sparse", check="fp32", precision="fp32",
                 export=partial(tflite_format.export, recipe="sparse"), kinds=CSR, **_tfl,
                 notes="Optimize.EXPERIMENTAL_SPARSITY; random sparsity is stored sparse and DENSIFY'd at load"),
    ExportFormat(name="tflite-fp16", suffix="model.fp16.tflite", variant="fp16", check="reduced", precision="fp16",
                 export=partial(tflite_format.export, recipe="fp16"), **_tfl),
    ExportFormat(name="tflite-int8-dynamic", suffix="model.int8-dynamic.tflite", variant="int8-dynamic",
                 check="reduced", precision="int8-dynamic",
                 export=partial(tflite_format.export, recipe="int8-dynamic"), **_tfl),
    ExportFormat(name="tflite-int8-full", suffix="model.int8.tflite", variant="int8-full", check="reduced",
                 precision="int8-full", export=partial(tflite_format.export, recipe="int8-full"), **_tfl,
                 notes="int8 weights, activations and input (the session quantizes x); float32 logits "
                       "from a float classifier op"),
    ExportFormat(name="onnx-int8", suffix="model.int8-dynamic.onnx", variant="int8-dynamic", check="reduced",
                 precision="int8-dynamic", export=onnx_quant.export, **_onnx,
                 notes="onnxruntime quantize_dynamic, QInt8 weights"),
    ExportFormat(name="ncnn", suffix="model.ncnn.param", format="ncnn", variant="fp32", check="fp32", precision="fp32",
                 runtimes=("ncnn",), export=ncnn_format.export, companions=lambda p: [ncnn_format.bin_path(p)],
                 notes="written directly (no pnnx); .param text + .bin weights; CSR weights stored dense"),
    ExportFormat(name="tflite-block", suffix="model.block.tflite", variant="block-sparse", check="fp32",
                 precision="fp32", export=tflite_block.export_block_fp32, kinds=CSR, networks=MLP, sparse_kernel=True,
                 when=partial(tflite_block.is_block_structured, size=4), **_tfl,
                 notes="1x4 block-sparse weights run by LiteRT's sparse FC kernel (no DENSIFY)"),
    ExportFormat(name="tflite-block-int8", suffix="model.block.int8-dynamic.tflite",
                 variant="block-sparse-int8-dynamic", check="reduced", precision="int8-dynamic",
                 export=tflite_block.export_block_int8, kinds=CSR, networks=MLP, sparse_kernel=True,
                 when=partial(tflite_block.is_block_structured, size=16), **_tfl,
                 notes="1x16 block-sparse int8 weights (hybrid sparse kernel); ops marked so XNNPACK declines them"),
    ExportFormat(name="tflite-auto", suffix="model.auto.tflite", variant="auto", check="fp32", precision="fp32",
                 export=partial(tflite_auto.export, allow_int8=False), kinds=CSR, networks=MLP, sparse_kernel=True,
                 when=tflite_auto.applies, details=tflite_auto.layer_formats, reads_timings=True, **_tfl,
                 notes="per layer the fastest float32 format measured here: dense or 1x4 block-sparse"),
    ExportFormat(name="tflite-auto-int8", suffix="model.auto-int8.tflite", variant="auto-int8", check="reduced",
                 precision="int8-dynamic", export=partial(tflite_auto.export, allow_int8=True), kinds=CSR,
                 networks=MLP, sparse_kernel=True, when=tflite_auto.applies, details=tflite_auto.layer_formats,
                 reads_timings=True, **_tfl,
                 notes="per layer the fastest format measured here: dense, block-sparse, int8 or int8 block-sparse"),
)}

# The k-dir's own description: listed in the manifest and checked through the same path.
REFERENCE = ExportFormat(name="npz", suffix="model.npz", format="npz", variant="fp32", check="fp32", precision="fp32",
                         runtimes=("numpy",), export=None, notes="the reference description")


def _inspect_npz(path: Path) -> tuple[list[str], bool]:
    from pipeline.model_io import load
    return [], physical_kind(load(path)) == "csr"


# File format -> function listing (ops, runs_sparse) of a written file.
INSPECT: dict[str, Callable[[Path], tuple[list[str], bool]]] = {
    "npz": _inspect_npz,
    "onnx": onnx_format.inspect,
    "tflite": tflite_format.inspect,
    "ncnn": ncnn_format.inspect,
}


def physical_kind(model: Model) -> str:
    """"csr" if any layer is stored sparse, else the recorded physical form ("dense", "shrunk", ...)."""
    if any(getattr(layer, "is_sparse", False) for layer in model.layers):
        return "csr"
    return str(model.meta.get("physical", "dense"))


def select(names=None) -> list[ExportFormat]:
    """Rows named in `names` (comma-separated string or iterable), in table order; all if None."""
    if names is None or names == "all":
        return list(FORMATS.values())
    wanted = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
    for name in wanted:
        if name not in FORMATS:
            raise fail("--formats", f"unknown format {name!r} (choose from {', '.join(FORMATS)})")
    return [f for f in FORMATS.values() if f.name in wanted]


def for_model(model: Model, formats=None) -> list[ExportFormat]:
    """The rows (all, or those given) that apply to `model`; an empty selection stays empty."""
    return [f for f in (FORMATS.values() if formats is None else formats) if f.applies_to(model)]


def files_of(fmt: ExportFormat, path: Path) -> list[Path]:
    """The file a row writes and its companions (hashed, copied and timed together)."""
    return [Path(path)] + (fmt.companions(Path(path)) if fmt.companions else [])


def by_file(path: str) -> ExportFormat | None:
    """The row whose file name is `path`'s name (REFERENCE for model.npz)."""
    name = Path(path).name
    return next((f for f in (REFERENCE, *FORMATS.values()) if f.suffix == name), None)
