"""Which files the bench measures: from artifacts/export/manifest.json, else from the layout.

An Artifact is one model file kind in one k-dir: the file a runtime's `load` opens plus, for
kinds whose model is several files (NCNN: .param + .bin), its other parts. Formats are the ones
some row of `export.runtimes.RUNTIMES` runs, so a new runtime row brings its file kind with it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from export.runtimes import RUNTIMES
from pipeline.errors import fail

QUICK_LEVELS = (0.0, 90.0)


@dataclass(frozen=True, kw_only=True)
class Artifact:
    path: Path  # what the runtime's load() opens
    rel: str  # relative to the export root, as in the manifest
    format: str
    variant: str
    framework: str
    method: str
    sparsity: float
    parts: tuple[Path, ...] = ()  # every file of the model, `path` first (NCNN: .param, .bin); () = `path` alone
    manifest: dict | None = None  # its manifest entry (sha256, gzip_bytes, companions, runtime, accuracy, data_sha256)

    @property
    def files(self) -> tuple[Path, ...]:
        return self.parts or (self.path,)


def runtime_formats() -> set[str]:
    return {fmt for row in RUNTIMES.values() for fmt in row.formats}


def discover(root: Path) -> list[Artifact]:
    """Artifacts listed in root/manifest.json, else found by the directory layout."""
    root = Path(root)
    manifest = root / "manifest.json"
    if manifest.is_file():
        return _from_manifest(manifest, root)
    return _from_layout(root)


def _row_parts(path: Path) -> tuple[Path, ...]:
    """The file and its companions when its file-kind row writes several (`ExportFormat.companions`,
    e.g. NCNN's .bin beside the .param); () for a one-file kind."""
    from export.formats import by_file
    companions = getattr(by_file(path.name), "companions", None)
    return (path, *companions(path)) if companions else ()


def _from_manifest(manifest: Path, root: Path) -> list[Artifact]:
    known = runtime_formats()
    try:
        doc = json.loads(manifest.read_text())
        data_sha = (doc.get("config") or {}).get("data_sha256")
        out = []
        for f in doc["files"]:
            if f["format"] not in known:
                continue
            path = root / f["path"]
            companions = tuple(root / c["path"] for c in f.get("companions") or ())
            parts = (path, *companions) if companions else ()
            out.append(Artifact(path=path, rel=f["path"], format=f["format"],
                                variant=f.get("variant") or "fp32", framework=f["framework"],
                                method=f["method"], sparsity=float(f["sparsity"]), parts=parts,
                                manifest={**f, "data_sha256": data_sha}))
        return out
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise fail(manifest, f"unreadable manifest ({type(e).__name__}: {e})") from None


def _layout_kind(path: Path, known: set[str]) -> tuple[str, str] | None:
    """(format, variant) of a file named like `model[.<variant>].<ext>`: its file-kind row, else its
    extension when that is a runtime's format."""
    from export.formats import by_file
    row = by_file(path.name)
    if row is not None:
        return (row.format, row.variant) if row.format in known else None
    parts = path.name.split(".")
    if len(parts) < 2 or parts[-1] not in known:
        return None
    return parts[-1], ".".join(parts[1:-1]) or "fp32"


def _from_layout(root: Path) -> list[Artifact]:
    known, out, companions = runtime_formats(), [], set()
    candidates = sorted(root.glob("*/*/k*/model*"))
    for path in candidates:
        companions.update(_row_parts(path)[1:])
    for path in candidates:
        k = path.parent.name[1:]
        kind = _layout_kind(path, known)
        if kind is None or not k.isdigit() or path in companions:
            continue
        out.append(Artifact(path=path, rel=path.relative_to(root).as_posix(), format=kind[0],
                            variant=kind[1], framework=path.parents[2].name, method=path.parents[1].name,
                            sparsity=float(k), parts=_row_parts(path)))
    return out


def select(artifacts: list[Artifact], *, frameworks=None, methods=None, levels=None,
           quick: bool = False) -> list[Artifact]:
    levels = levels if levels is not None else (QUICK_LEVELS if quick else None)
    keep = [a for a in artifacts
            if (frameworks is None or a.framework in frameworks)
            and (methods is None or a.method in methods)
            and (levels is None or a.sparsity in levels)]
    return sorted(keep, key=lambda a: (a.framework, a.method, a.sparsity, a.format, a.variant))
