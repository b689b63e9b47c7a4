"""The export stage as tasks: one k-dir in, its files and record out, as bytes.

A task (`export_task`) rebuilds the k-dir in a private temporary directory, runs export_kdir there
and returns every file it wrote; the driver (`run_kdirs`) decides what is stale from the stamps,
sends the tasks to an executor (this process, local processes or a Dask cluster), then writes each
returned file atomically under the real root, with the k-dir's export.json and stamp. So the
files are the same bytes wherever they were made, and only the driver touches the artifacts root.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from export import formats as F
from export.kdir import RESULTS, STAMP, export_kdir, stamp_key
from export.manifest import library_versions
from pipeline.errors import fail
from pipeline.fileio import write_bytes, write_json
from pipeline.model_io import load
from pipeline.stages import fresh, mark


def export_task(item: dict, shared: dict) -> dict:
    """item: {"rel", "model" (model.npz bytes), "formats", "reexport", "existing" ({name: bytes}, verify-only)};
    shared: {"options", "data", "threads", "strict"}. Returns {"rel", "record", "files", "versions"}."""
    with tempfile.TemporaryDirectory(prefix="prunedge-kdir-") as tmp:
        root = Path(tmp)
        kdir = root / item["rel"]
        kdir.mkdir(parents=True)
        (kdir / "model.npz").write_bytes(item["model"])
        for name, data in item.get("existing", {}).items():
            (kdir / name).write_bytes(data)
        record = export_kdir(kdir, root=root, formats=F.select(item["formats"]), options=shared["options"],
                             data=shared["data"], threads=shared["threads"], strict=shared["strict"],
                             reexport=item["reexport"])
        files = {Path(r["path"]).name: (root / r["path"]).read_bytes() for e in record["files"]
                 if e["sha256"] is not None and e["name"] != F.REFERENCE.name for r in [e, *e.get("companions", [])]}
    return {"rel": item["rel"], "record": record, "files": files, "versions": library_versions()}


def _task(root: Path, kdir: Path, formats: list[str], reexport: bool) -> dict:
    item = {"rel": kdir.relative_to(root).as_posix(), "model": (kdir / "model.npz").read_bytes(),
            "formats": formats, "reexport": reexport}
    if not reexport:  # verify-only: the files as they are on disk
        names = {f.suffix for f in F.select(formats)}
        item["existing"] = {p.name: p.read_bytes() for p in kdir.iterdir() if p.name in names}
    return item


def _apply(root: Path, result: dict, keys: dict, reexport: bool) -> dict:
    """Write a task's files under the real root, then its record and stamp (driver side)."""
    if result["versions"] != library_versions():
        raise fail("--cluster", f"a worker built {result['rel']} with other library versions "
                                f"({result['versions']}); files would not be reproducible")
    kdir = root / result["rel"]
    if reexport:
        produced = set(result["files"])
        for f in F.FORMATS.values():  # never leave an older file behind a failed or dropped export
            if f.suffix not in produced and any(Path(e["path"]).name == f.suffix for e in result["record"]["files"]):
                for old in F.files_of(f, kdir / f.suffix):
                    old.unlink(missing_ok=True)
        for name, data in result["files"].items():
            write_bytes(kdir / name, data)
        write_json(kdir / RESULTS, result["record"])
        written = [root / r["path"] for e in result["record"]["files"] if e["sha256"] is not None
                   for r in [e, *e.get("companions", [])]]
        mark(kdir / STAMP, keys[result["rel"]], written + [kdir / RESULTS])
    return {**result["record"], "skipped": False}


def run_kdirs(kdirs: list[Path], *, root: Path, formats: list[str], options, data, executor, strict: bool,
              reexport: bool = True, progress=None) -> list[dict]:
    """Export (or only re-verify) every k-dir whose stamp is stale; records of all of them."""
    root = Path(root)
    records, keys, todo = [], {}, []
    for kdir in kdirs:
        rel = kdir.relative_to(root).as_posix()
        if reexport:
            model = load(kdir / "model.npz")
            keys[rel] = stamp_key(kdir, F.for_model(model, F.select(formats)), options, data, model)
            if fresh(kdir / STAMP, keys[rel]):
                records.append(_done(progress, {**json.loads((kdir / RESULTS).read_text()), "skipped": True}))
                continue
        todo.append(_task(root, kdir, formats, reexport))
    shared = {"options": options, "data": data, "threads": 1 if executor.workers > 1 else None, "strict": strict}
    for result in executor.map(export_task, todo, shared=shared):
        records.append(_done(progress, _apply(root, result, keys, reexport)))
    return records


def _done(progress, record: dict) -> dict:
    if progress is not None:
        progress(record)
    return record
