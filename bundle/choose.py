"""Which exported file a bundle ships, and in which runtime.

The file names and default runtimes come from the export table (`export.formats`: the fp32 row
of each format names its file and lists its runtimes, verification order first) and the runtime
table (`export.runtimes`); nothing here is a second list of them. Without --model the default is
the fastest artifact (batch 1, 1 thread) within 1 point of dense accuracy in the bench results.
"""
from __future__ import annotations

import csv
from pathlib import Path

from bundle.template import load_template_predict
from export.runtimes import RUNTIMES, Runtime
from pipeline.errors import fail

EXPORT_ROOT = Path("artifacts/export")
BENCH_ROOT = Path("artifacts/bench")
DENSE_DIRS = ("dense", "weight", "unit")  # where an export tree keeps the torch k00 (dense) model
ACCURACY_TOLERANCE_POINTS = 1.0  # default choice: fastest artifact within 1 point of dense accuracy


def _export_rows():
    from export.formats import FORMATS
    return FORMATS.values()


def shippable_runtimes() -> dict[str, Runtime]:
    """The runtime rows a bundle can ship: a pip package and a runner bundle_template/predict.py has."""
    runners = load_template_predict().RUNNERS
    return {r.name: r for r in RUNTIMES.values() if r.package and r.runner in runners}


def bundle_formats() -> dict:
    """format -> its fp32 export row, for every format some shippable runtime runs."""
    shippable = {f for r in shippable_runtimes().values() for f in r.formats}
    return {f.format: f for f in _export_rows() if f.variant == "fp32" and f.format in shippable}


def _suffix(fmt: str) -> str:
    """The file name ending of a format: '.onnx' for model.onnx."""
    return "." + bundle_formats()[fmt].suffix.rsplit(".", 1)[1]


def bundle_runtime(name: str | None, fmt: str) -> Runtime:
    """The runtime row a bundle of `fmt` ships with: the recorded one, else the first the export verifies with."""
    rows = shippable_runtimes()
    row = rows.get(name or bundle_formats()[fmt].runtimes[0])
    if row is None or fmt not in row.formats:
        why = "has no bundle runner yet" if name in RUNTIMES and fmt in RUNTIMES[name].formats else \
            f"cannot run a {fmt} bundle"
        raise fail("--runtime", f"{name!r} {why} (choose from "
                                f"{', '.join(r.name for r in rows.values() if fmt in r.formats)})")
    return row


def model_file_name(fmt: str, variant: str) -> str:
    """The export table's name; else the layout's rule: model.<ext> for fp32, model.<variant>.<ext>."""
    names = {(f.format, f.variant): f.suffix for f in _export_rows()}
    suffix = _suffix(fmt)
    return names.get((fmt, variant)) or (f"model{suffix}" if variant == "fp32" else f"model.{variant}{suffix}")


def variant_of(path: Path, fmt: str) -> str:
    for f in _export_rows():
        if f.format == fmt and f.suffix == path.name:
            return f.variant
    parts = path.name[: -len(_suffix(fmt))].split(".", 1)
    return parts[1] if len(parts) == 2 else "fp32"


def resolve_model_file(model: Path, fmt: str, variant: str | None) -> Path:
    """The model file of an export k-dir (picked by format and variant) or the file itself, checked."""
    model = Path(model)
    if model.is_dir():
        path = model / model_file_name(fmt, variant or "fp32")
        if not path.is_file():
            found = sorted(p.name for p in model.glob(f"*{_suffix(fmt)}"))
            raise fail(path, f"model file not found (this directory has: {', '.join(found) or 'no ' + fmt + ' files'})")
        return path
    if not model.is_file():
        raise fail(model, "model file or directory not found")
    if not model.name.endswith(_suffix(fmt)):
        raise fail(model, f"not a {fmt} file (expected a name ending in {_suffix(fmt)}); check --format")
    if variant and variant_of(model, fmt) != variant:
        raise fail(model, f"file is variant {variant_of(model, fmt)!r}, not {variant!r}")
    return model


def read_bench_rows(bench_root: Path) -> list[dict]:
    path = Path(bench_root) / "results.csv"
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise fail(path, f"unreadable bench results ({e})") from None


def _num(text) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _timed_rows(fmt: str, bench_root: Path) -> list[dict]:
    """Host rows of `fmt` that ran fine at batch 1, 1 thread, with a latency and an accuracy."""
    return [r for r in read_bench_rows(bench_root)
            if r.get("source", "host") == "host" and r.get("format") == fmt and r.get("status") == "ok"
            and fmt in getattr(RUNTIMES.get(r.get("runtime")), "formats", ()) and r.get("batch") == "1"
            and r.get("threads") == "1" and _num(r.get("p50_us")) is not None and _num(r.get("accuracy")) is not None]


def _fastest_near_dense(rows: list[dict], export_root: Path) -> dict | None:
    """The fastest row within ACCURACY_TOLERANCE_POINTS of the dense fp32 file of its framework and runtime."""
    dense = {}
    for r in rows:
        if _num(r["sparsity"]) == 0 and r.get("variant") == "fp32":
            key = (r["framework"], r["runtime"])
            dense[key] = max(dense.get(key, 0.0), _num(r["accuracy"]))
    if not rows:
        return None
    scale = 1.0 if max(_num(r["accuracy"]) for r in rows) > 1.0 else 100.0  # fraction or percent
    ok = [r for r in rows if (r["framework"], r["runtime"]) in dense
          and (dense[(r["framework"], r["runtime"])] - _num(r["accuracy"])) * scale <= ACCURACY_TOLERANCE_POINTS
          and (Path(export_root) / r["artifact"]).is_file()]
    return min(ok, key=lambda r: (_num(r["p50_us"]), r["artifact"])) if ok else None


def choose_default(fmt: str, *, export_root: Path = EXPORT_ROOT, bench_root: Path = BENCH_ROOT) -> tuple[Path, str | None]:
    """The fastest artifact (batch 1, 1 thread) within 1 point of dense accuracy, else k00 torch dense.

    Returns the model path and the bench runtime it was timed with (None for the fallback).
    """
    best = _fastest_near_dense(_timed_rows(fmt, bench_root), export_root)
    if best is not None:
        return Path(export_root) / best["artifact"], best["runtime"]
    for method in DENSE_DIRS:  # k00 of any method is the unpruned network
        fallback = Path(export_root) / "torch" / method / "k00" / model_file_name(fmt, "fp32")
        if fallback.is_file():
            return fallback, None
    raise fail(Path(export_root) / "torch" / "*" / "k00", f"no model given and no default {fmt} artifact found "
               "(run `make export` first or pass --model)")


def latency_rows(bench_rows: list[dict], artifact: str) -> list[dict]:
    """The host bench rows of this artifact, for the manifest's `measured.latency`."""
    keep = ("runtime", "threads", "batch", "status", "p50_us", "p90_us", "p99_us", "mean_us", "reps", "accuracy")
    return [{k: r.get(k) for k in keep} for r in bench_rows
            if r.get("artifact") == artifact and r.get("source", "host") == "host"]
