"""What the report knows about file kinds, runtimes, methods and networks: read from the tables
(export.formats, export.runtimes, pipeline.methods, pipeline.checks, pipeline.stages), never listed
here a second time. A name none of the tables holds (a runtime or file kind added later, a device
runtime) still gets an answer: its own name as engine or precision, so it shows up in every table
as a group of its own instead of disappearing."""
from __future__ import annotations

from pathlib import Path

from export.formats import FORMATS, REFERENCE, ExportFormat
from export.runtimes import RUNTIMES
from pipeline.checks import PRECISION as CHECKS
from pipeline.methods import METHODS, base_name

FP32 = REFERENCE.precision  # the precision every other one is compared with
_ROWS = (REFERENCE, *FORMATS.values())
_BY_FORMAT_VARIANT = {(f.format, f.variant): f for f in _ROWS}


def kind(fmt: str | None, variant: str | None) -> ExportFormat | None:
    """The file-kind row of a (format, variant) pair as results.csv and the manifest carry it."""
    return _BY_FORMAT_VARIANT.get((fmt, variant or REFERENCE.variant))


def precision(row: dict) -> str:
    """The weight precision a file is compared within: the manifest's own field, else its row's,
    else (a kind no table holds) its variant."""
    if row.get("precision"):
        return row["precision"]
    found = kind(row.get("format"), row.get("variant"))
    return found.precision if found else (row.get("variant") or FP32)


def engine(runtime: str) -> str:
    """The library a runtime name runs on (litert-xnnpack and litert-builtin are both "litert")."""
    return RUNTIMES[runtime].engine if runtime in RUNTIMES else runtime


def runtime_label(runtime: str) -> str:
    return runtime if engine(runtime) == runtime else f"{runtime} ({engine(runtime)})"


def check_rule(row: dict) -> str:
    """The verification rule a file kind passes (pipeline.checks), in words."""
    found = kind(row.get("format"), row.get("variant"))
    tolerance = CHECKS.get(row.get("check") or (found.check if found else ""))
    return tolerance.describe() if tolerance else "its own check"


def family(method: str) -> str:
    """The report family of a method name (tuning suffix ignored); unknown methods are their own."""
    base = base_name(method)
    return METHODS[base].family if base in METHODS else base


def stores_sparse(method: str) -> bool:
    """Weight pruning: individual weights (or blocks) removed, stored sparse (weight, block, ...)."""
    base = base_name(method)
    return base in METHODS and METHODS[base].runs_sparse


def removes_units(method: str) -> bool:
    """Filter / unit pruning: whole units removed, the layers shrunk."""
    base = base_name(method)
    return base in METHODS and METHODS[base].physical == "shrunk"


def sparse_kernel_variants(fmt: str) -> set[str]:
    """Variants of a format built to run their pruned weights sparse (e.g. LiteRT block-sparse)."""
    return {f.variant for f in FORMATS.values() if f.format == fmt and f.sparse_kernel}


def plain_kind(fmt: str, precision_: str) -> ExportFormat | None:
    """The row written for every model (dense, shrunk or CSR) in `fmt` at one precision: e.g. the
    float32 model.tflite or the full-int8 one."""
    return next((f for f in FORMATS.values() if f.format == fmt and f.precision == precision_
                 and f.kinds is None and not f.sparse_kernel), None)


def folder(path: str | None, fallback: str | None = None) -> str | None:
    """The model folder of a path relative to the export root: torch, tf, cnn-torch, an import's name."""
    return path.split("/", 1)[0] if path and "/" in path else fallback


def built_in_folders() -> dict[str, tuple[str, str]]:
    """Model folder -> (framework, network) of the built-in models (pipeline.stages.model_name)."""
    from pipeline.stages import model_name
    from pipeline.train import FRAMEWORKS, NETS
    return {model_name(fw, net): (fw, net) for net in NETS for fw in FRAMEWORKS}


def network_of(name: str, root: Path | None = None) -> str:
    """"mlp" or "cnn" for a model folder: by name for the built-in ones, else from a stored model."""
    built_in = built_in_folders()
    if name in built_in:
        return built_in[name][1]
    if root is not None:
        from pipeline.model_io import load
        for path in sorted(Path(root).glob(f"train/{name}/s*/model.npz")) + sorted(
                Path(root).glob(f"export/{name}/*/k00/model.npz")):
            model = load(path)
            return str(model.meta.get("net") or ("mlp" if model.is_mlp else "cnn"))
    return "mlp"


def framework_of(name: str) -> str:
    """The training framework of a model folder (cnn-tf -> tf); other folders are their own."""
    return built_in_folders().get(name, (name, None))[0]


def is_x86(machine: dict) -> bool:
    """An x86 host (with AVX when the machine record lists CPU flags)."""
    arch = str(machine.get("arch") or machine.get("machine") or "").lower()
    flags = machine.get("cpu_flags") or machine.get("flags")
    x86 = arch in {"x86_64", "amd64", "x86", "i686", "i386"}
    return x86 and (flags is None or "avx" in str(flags).lower())
