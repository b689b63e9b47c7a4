"""Import trained networks we did not train: ONNX, Keras/SavedModel, PyTorch, TFLite -> `Model`.

`import_model(path, arch=None)` picks the importer from the file's magic bytes (zip
contents, flatbuffer identifier, HDF5 signature, SavedModel directory), falling back to
the suffix, through the one FORMATS table below. Each importer walks its file through a
`chain.Chain` and returns the layers; provenance, validation, BatchNorm folding and the
optional arch cross-check happen here, once.

MLPs (a chain of dense layers) take the flattened (row-major) input, e.g. [batch, 784] for
28x28 images, whatever Flatten/Reshape the source had at its input. CNNs take images
channels-last, input_shape (h, w, c), whatever layout the source used (ONNX and PyTorch are
NCHW: their kernels keep [out, in, kh, kw] and a Flatten after convolutions is recorded as
channels-first). A final Softmax/LogSoftmax is not made a layer: it is recorded as
meta["output_transform"] (argmax is unchanged). BatchNorm is folded into the layer before it
(meta["batchnorm_folded"]).
"""
from __future__ import annotations

import hashlib
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipeline.errors import PrunedgeError, fail
from pipeline.fold import fold_batchnorm
from pipeline.importers.arch import check_against, parse_arch
from pipeline.importers.common import apply_output_transform
from pipeline.model import Model, validate

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
TFLITE_ID = b"TFL3"  # flatbuffer file identifier, bytes 4..8


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return []


def _is_keras_zip(path: Path, head: bytes) -> bool:
    return head.startswith(b"PK") and "config.json" in _zip_names(path)


def _is_torchscript(path: Path, head: bytes) -> bool:
    names = _zip_names(path) if head.startswith(b"PK") else []
    return any("/code/" in n or n.endswith("/constants.pkl") for n in names)


def _is_torch_state(path: Path, head: bytes) -> bool:
    if head.startswith(b"\x80") and path.suffix in (".pt", ".pth", ".bin"):
        return True  # legacy (pre-zip) torch.save pickle stream
    names = _zip_names(path) if head.startswith(b"PK") else []
    return any(n.endswith("/data.pkl") for n in names) and not _is_torchscript(path, head)


def _is_torch_export(path: Path, head: bytes) -> bool:
    """torch.export.save's PT2 archive: a JSON graph and raw weight bytes."""
    names = _zip_names(path) if head.startswith(b"PK") else []
    return any(n.endswith("/models/model.json") or n.endswith("serialized_exported_program.json") for n in names)


def _lazy(module: str, func: str) -> Callable:
    """Import the heavy framework module only when its format is actually used."""
    def load(path: Path, arch):
        import importlib
        return getattr(importlib.import_module(f"pipeline.importers.{module}"), func)(path, arch)
    load.__name__ = f"{module}.{func}"
    return load


@dataclass(frozen=True)
class Format:
    name: str
    label: str  # for messages
    suffixes: tuple[str, ...]
    sniff: Callable[[Path, bytes], bool] | None  # content check, beats the suffix
    load: Callable  # (path, arch: Arch | ImageArch | None) -> chain.Described
    directory: bool = False


# The one table: format name -> how to recognise it and which importer reads it.
FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("onnx", "ONNX", (".onnx",), None, _lazy("onnx_import", "load")),
    Format("keras", "Keras", (".keras", ".h5", ".hdf5"),
           lambda p, h: _is_keras_zip(p, h) or h.startswith(HDF5_MAGIC), _lazy("keras_import", "load")),
    Format("savedmodel", "TensorFlow SavedModel", (), lambda p, h: (p / "saved_model.pb").is_file(),
           _lazy("keras_import", "load_saved_model"), directory=True),
    Format("torchscript", "TorchScript", (".pt", ".pth", ".ts"), _is_torchscript, _lazy("torch_import", "load_torchscript")),
    Format("torch-state", "PyTorch state_dict", (".pt", ".pth", ".bin"), _is_torch_state, _lazy("torch_import", "load_state_dict")),
    Format("torch-export", "torch.export program", (".pt2",), _is_torch_export, _lazy("pt2_import", "load")),
    Format("tflite", "TFLite", (".tflite",), lambda p, h: h[4:8] == TFLITE_ID, _lazy("tflite_import", "load")),
)}


def detect_format(path: str | os.PathLike) -> str:
    """Name of the FORMATS row for `path`: content sniffing first, then the suffix."""
    path = Path(path)
    if path.is_dir():
        for f in FORMATS.values():
            if f.directory and f.sniff(path, b""):
                return f.name
        raise fail(path, "directory is not a TensorFlow SavedModel (no saved_model.pb)")
    if not path.is_file():
        raise fail(path, "model file not found")
    with open(path, "rb") as fh:
        head = fh.read(16)
    if not head:
        raise fail(path, "empty file")
    for f in FORMATS.values():
        if not f.directory and f.sniff is not None and f.sniff(path, head):
            return f.name
    by_suffix = [f for f in FORMATS.values() if path.suffix.lower() in f.suffixes]
    if any(f.sniff is None for f in by_suffix):
        return next(f.name for f in by_suffix if f.sniff is None)  # no magic: its parser judges
    if by_suffix:
        raise fail(path, f"corrupt or truncated file: content is not a valid "
                         f"{' or '.join(f.label for f in by_suffix)} file")
    raise fail(path, "unknown model format (expected .onnx, .keras/.h5, .pt/.pth state_dict or "
                     "TorchScript, .pt2 torch.export program, .tflite, or a SavedModel directory)")


def _check_zip_crc(path: Path) -> None:
    """Zip-based formats (.keras, torch) carry CRCs; torch's reader never checks them."""
    if path.is_file() and zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as e:
            raise fail(path, f"corrupt or truncated archive ({type(e).__name__}: {e})") from None
        if bad is not None:
            raise fail(path, f"corrupt archive: checksum mismatch in member {bad!r}")


def source_sha256(path: Path) -> str:
    """sha256 of the file, or of every file (relative name + bytes) in a directory."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        if path.is_dir():
            h.update(str(p.relative_to(path)).encode() + b"\0")
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


# What the parsers (protobuf, flatbuffers, zip, numpy reshapes of declared dims) raise on damaged bytes.
MALFORMED = (ValueError, IndexError, KeyError, TypeError, AttributeError, RuntimeError, OverflowError,
             NotImplementedError, struct.error, UnicodeDecodeError, EOFError)  # NotImplementedError: zip features


def import_model(path: str | os.PathLike, *, arch: str | None = None) -> Model:
    """A validated `Model` from a foreign file, BatchNorm folded, with provenance in meta.

    `arch` is required for PyTorch state_dicts (`784-300-100-10:relu`: they hold no
    activations) and for TorchScript CNNs (`28x28x1`, HxWxC: TorchScript keeps no input size);
    for every other file it is checked against what the file contains. Raises PrunedgeError
    (one line naming the file) for unsupported ops/layers, corrupt files and mismatches."""
    path = Path(path)
    spec = parse_arch(arch) if arch is not None else None
    fmt = "unrecognised"
    try:
        fmt = detect_format(path)
        _check_zip_crc(path)
        described = FORMATS[fmt].load(path, spec)
    except PrunedgeError:
        raise
    except MALFORMED as e:  # a parser tripping over a damaged file (found by make fuzz): still one line
        raise fail(path, f"malformed {fmt} file ({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
    meta = {"framework": "imported", "source_format": fmt, "source": path.name,
            "source_sha256": source_sha256(path), "method": "dense", "sparsity": 0.0, "physical": "dense",
            **described.meta}
    model = fold_batchnorm(Model(described.layers, meta, described.input_shape))
    model = validate(model, str(path))
    if spec is not None:
        check_against(model, spec, path)
    return model


__all__ = ["FORMATS", "apply_output_transform", "detect_format", "import_model", "parse_arch"]
