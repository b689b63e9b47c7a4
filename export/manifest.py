"""`artifacts/export/manifest.json`: every exported file with its hash, verification and accuracy.

Schema in docs/CONTRACTS.md. Paths are relative to the export root so the tree can be moved.
`check_manifest(root)` re-hashes every listed file, for bundle and bad-input checks.
"""
from __future__ import annotations

import json
import platform
from pathlib import Path

from pipeline.errors import fail
from pipeline.fileio import sha256_file, write_json

MANIFEST = "manifest.json"
# Distribution names whose versions decide what the files contain and how they run.
LIBRARIES = ("numpy", "scipy", "onnx", "onnxruntime", "tensorflow-cpu", "tensorflow", "keras",
             "ai-edge-litert", "torch", "protobuf", "flatbuffers")
# model.npz meta keys that, with the manifest's config and versions, say how to remake a file.
PROVENANCE = ("seed", "train", "data_sha256", "include_output", "source", "source_format", "source_sha256")


def library_versions() -> dict:
    from pipeline.versions import installed
    return {"python": platform.python_version(), **installed(LIBRARIES)}


def file_entry(root: Path, path: Path, *, name: str, format: str, variant: str, runtime: str, meta: dict,
               verify=None, accuracy=None, ops=(), runs_sparse=False, gzip_level: int = 6, **extra) -> dict:
    """One manifest row; sha256/bytes/gzip_bytes are None when the file could not be written.
    gzip_bytes (also on each companion) is the file gzipped in memory at `gzip_level`: -6, gzip's
    default, costs a fraction of -9 per file; the bench reuses it when its own level
    (bench.size.GZIP_LEVEL) is the same."""
    import gzip

    def gzipped(p: Path) -> int:
        return len(gzip.compress(p.read_bytes(), compresslevel=gzip_level, mtime=0))

    path = Path(path)
    exists = path.is_file()
    if extra.get("companions"):
        extra["companions"] = [{**c, "gzip_bytes": gzipped(Path(root) / c["path"])} for c in extra["companions"]]
    return {
        "path": path.relative_to(root).as_posix(),
        "sha256": sha256_file(path) if exists else None,
        "bytes": path.stat().st_size if exists else None,
        "gzip_bytes": gzipped(path) if exists else None, "gzip_level": gzip_level,
        "name": name, "format": format, "variant": variant,
        "framework": meta.get("framework"), "method": meta.get("method", "dense"),
        "sparsity": float(meta.get("sparsity", 0.0)), "physical": meta.get("physical"),
        "runtime": runtime, "verify": verify, "accuracy": accuracy,
        "ops": list(ops), "runs_sparse": bool(runs_sparse),
        "provenance": {k: meta[k] for k in PROVENANCE if k in meta}, **extra,
    }


def write_manifest(root: Path, files: list[dict], *, config: dict) -> Path:
    files = sorted(files, key=lambda e: e["path"])
    return write_json(Path(root) / MANIFEST, {"config": config, "versions": library_versions(), "files": files})


def load_manifest(root: Path) -> dict:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise fail(path, "manifest not found (run `python -m export run` first)")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise fail(path, f"not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise fail(path, "not an export manifest (no 'files' list)")
    for i, entry in enumerate(manifest["files"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise fail(path, f"files[{i}] has no 'path'")
        if Path(entry["path"]).is_absolute() or ".." in Path(entry["path"]).parts:
            raise fail(path, f"files[{i}] path {entry['path']!r} leaves the export root")
    return manifest


def check_manifest(root: Path) -> list[str]:
    """One line per problem: a listed file that is missing, resized or re-hashed. Empty = all good.
    Files recorded as not written (sha256 None) are skipped."""
    root = Path(root)
    problems = []
    for entry in load_manifest(root)["files"]:
        if entry.get("sha256") is None:
            continue
        for record in [entry, *entry.get("companions", [])]:  # e.g. NCNN's .bin beside its .param
            path = root / record["path"]
            if not path.is_file():
                problems.append(f"{path}: listed in the manifest but missing")
            elif path.stat().st_size != record.get("bytes"):
                problems.append(f"{path}: {path.stat().st_size} bytes, manifest says {record.get('bytes')}")
            elif sha256_file(path) != record["sha256"]:
                problems.append(f"{path}: sha256 differs from the manifest")
    return problems


def passed(entry: dict) -> bool:
    return (entry.get("verify") or {}).get("status") == "passed"
