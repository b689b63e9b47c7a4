"""Export and verify every format of one k-dir (`<root>/<model>/<method>/k<NN>/model.npz`).

`export_kdir` writes each applicable file kind next to model.npz, verifies it in its runtimes and
returns the k-dir's record (one manifest entry per file). A failing format becomes a failed entry
with its reason; `strict` re-raises instead (tests). `stamp_key` is what a re-run compares to skip
the k-dir (export/work.py runs this anywhere and the driver writes the files).
"""
from __future__ import annotations

import time
import traceback
from pathlib import Path

import numpy as np

from export import formats as F
from export.manifest import file_entry, library_versions
from export.verify import EvalData, verify_file
from pipeline.checks import PRECISION
from pipeline.errors import PrunedgeError
from pipeline.fileio import sha256_bytes, sha256_file, write_json
from pipeline.model_io import load

RESULTS = "export.json"
STAMP = ".export.stage.json"  # the prune stage owns .stage.json in the same directory


def _reason(error: Exception) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, PrunedgeError) else f"{type(error).__name__}: {text}"[:400]


def stamp_key(kdir: Path, formats, options: F.ExportOptions, data: EvalData, model=None) -> dict:
    calibration = options.calibration
    extra = {}
    if any(f.reads_timings for f in formats):  # the timing rows this model's auto choice reads
        from export.tflite_auto import timings_for
        extra["layer_timings"] = timings_for(model if model is not None else load(Path(kdir) / "model.npz"),
                                             options.layer_timings)
    return {
        **extra,
        "stage": "export", "model": sha256_file(Path(kdir) / "model.npz"),
        "formats": [f.name for f in formats], "opset": options.opset,
        "calibration": None if calibration is None else sha256_bytes(np.ascontiguousarray(calibration).tobytes()),
        "data": data.sha256, "n_check": len(data.x_check), "n_test": len(data.x_test),
        "tolerances": {name: t.describe() for name, t in PRECISION.items()},
        "versions": library_versions(),
    }


def export_kdir(kdir: Path, *, root: Path, formats, options: F.ExportOptions, data: EvalData,
                threads=None, strict: bool = False, reexport: bool = True) -> dict:
    """Write (unless `reexport` is False) and verify each applicable format; returns the k-dir record."""
    kdir, root = Path(kdir), Path(root)
    start = time.perf_counter()
    model = load(kdir / "model.npz")
    reference = model.forward(data.x_check).astype(np.float64)
    entries = []
    for fmt in [F.REFERENCE] + F.for_model(model, formats):
        entries.append(_one(kdir, root, fmt, model, reference, options, data, threads, strict, reexport))
    record = {"kdir": kdir.relative_to(root).as_posix(), "seconds": round(time.perf_counter() - start, 3),
              "files": entries}
    if reexport:  # a verify-only pass leaves the stamped results alone; it updates the manifest
        write_json(kdir / RESULTS, record)
    return record


def _one(kdir, root, fmt, model, reference, options, data, threads, strict, reexport) -> dict:
    path = kdir / fmt.suffix
    common = dict(name=fmt.name, format=fmt.format, variant=fmt.variant, runtime=fmt.runtimes[0], meta=model.meta,
                  precision=fmt.precision, check=fmt.check)
    export_seconds = None
    if fmt.export is not None and reexport:
        for old in F.files_of(fmt, path):  # never leave an older file behind a failed export
            old.unlink(missing_ok=True)
        t0 = time.perf_counter()
        try:
            fmt.export(model, path, options)
        except Exception as e:
            if strict:
                raise
            failed = {"status": "failed", "max_abs_diff": None, "rel_l2": None, "top1_agreement": None, "n": 0,
                      "reason": f"export failed: {_reason(e)}"}
            return file_entry(root, path, **common, verify=failed, detail=traceback.format_exc(limit=3)[-800:])
        export_seconds = round(time.perf_counter() - t0, 3)
    if not all(p.is_file() for p in F.files_of(fmt, path)):
        missing = {"status": "failed", "max_abs_diff": None, "rel_l2": None, "top1_agreement": None, "n": 0,
                   "reason": "file not found"}
        return file_entry(root, path if path.is_file() else kdir / ".missing", **common, verify=missing)
    if fmt.companions:
        common["companions"] = [{"path": p.relative_to(root).as_posix(), "sha256": sha256_file(p),
                                 "bytes": p.stat().st_size} for p in fmt.companions(path)]
    try:
        ops, runs_sparse = F.INSPECT[fmt.format](path)
        details = fmt.details(path) if fmt.details else {}
        outcome = verify_file(path, fmt, reference, data, threads=threads)
    except Exception as e:
        if strict:
            raise
        failed = {"status": "failed", "max_abs_diff": None, "rel_l2": None, "top1_agreement": None, "n": 0,
                  "reason": _reason(e)}
        return file_entry(root, path, **common, verify=failed, export_seconds=export_seconds)
    if strict and outcome.verify["status"] != "passed":
        raise PrunedgeError(f"{path}: verification failed: {outcome.verify['reason']}")
    common["runtime"] = outcome.runtime
    return file_entry(root, path, **common, verify=outcome.verify,
                      accuracy=outcome.accuracy, ops=ops, runs_sparse=runs_sparse,
                      export_seconds=export_seconds, verify_seconds=round(outcome.seconds, 3), **details)
