"""A self-checking deploy bundle: one model file + manifest + scripts that need only numpy and one runtime.

`make_bundle` copies an exported model with `bundle_template/` (predict.py, bench_device.py,
README.md), records sha256/size of every file, the model's provenance, its input/output spec and
what was measured on this machine (accuracy, verification, latency), and packs a deterministic
`<name>.tar.gz` (sorted names, fixed mtime/owner) so equal inputs give byte-identical archives.
"""
from __future__ import annotations

import csv
import gzip
import importlib.metadata
import importlib.util
import io
import json
import shutil
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from string import Template

import numpy as np

from export.runtimes import RUNTIMES, Runtime
from pipeline.errors import PrunedgeError, fail
from pipeline.fileio import atomic_path, sha256_bytes, sha256_file, staging_dir, write_json, write_text

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "bundle_template"
TEMPLATE_FILES = ("predict.py", "bench_device.py", "README.md")
EXPORT_ROOT = Path("artifacts/export")
BENCH_ROOT = Path("artifacts/bench")
BUNDLE_ROOT = Path("artifacts/bundle")
SCHEMA = "prunedge-bundle/1"
TAR_MTIME = 946684800  # 2000-01-01: fixed so the archive's bytes depend only on its contents
SELFTEST_N = 16
DENSE_DIRS = ("dense", "weight", "unit")  # where an export tree keeps the torch k00 (dense) model
ACCURACY_TOLERANCE_POINTS = 1.0  # default choice: fastest artifact within 1 point of dense accuracy


# file format -> (file name ending, the runtime a bundle uses when nothing recorded says otherwise)
FORMATS = {"onnx": (".onnx", "onnxruntime"), "tflite": (".tflite", "litert-xnnpack")}
INPUT_SCALING = "float32 pixels = uint8 / 255, in [0, 1]; 28x28 image flattened row-major to 784"


# ---------------------------------------------------------------- choosing the model file

def _export_names() -> dict[tuple[str, str], str]:
    """(format, variant) -> file name in a k-dir, from the export table (export/formats.py)."""
    from export.formats import FORMATS as EXPORTS
    return {(f.format, f.variant): f.suffix for f in EXPORTS.values()}


def _suffix(fmt: str) -> str:
    return FORMATS[fmt][0]


def bundle_runtime(name: str | None, fmt: str) -> Runtime:
    """The runtime row a bundle of format `fmt` ships with: the recorded one, else the format's default."""
    row = RUNTIMES.get(name or FORMATS[fmt][1])
    if row is None or fmt not in row.formats or row.runner is None:
        raise fail("--runtime", f"{name!r} cannot run a {fmt} bundle (choose from "
                                f"{', '.join(r.name for r in RUNTIMES.values() if fmt in r.formats and r.runner)})")
    return row


def model_file_name(fmt: str, variant: str) -> str:
    """The export table's name; else the layout's rule: model.<ext> for fp32, model.<variant>.<ext>."""
    suffix = _suffix(fmt)
    return _export_names().get((fmt, variant)) or (f"model{suffix}" if variant == "fp32" else f"model.{variant}{suffix}")


def variant_of(path: Path, fmt: str) -> str:
    for (f, variant), name in _export_names().items():
        if f == fmt and name == path.name:
            return variant
    parts = path.name[: -len(_suffix(fmt))].split(".", 1)
    return parts[1] if len(parts) == 2 else "fp32"


def resolve_model_file(model: Path, fmt: str, variant: str | None) -> Path:
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


def choose_default(fmt: str, *, export_root: Path = EXPORT_ROOT, bench_root: Path = BENCH_ROOT) -> tuple[Path, str | None]:
    """The fastest artifact (batch 1, 1 thread) within 1 point of dense accuracy, else k00 torch dense.

    Returns the model path and the bench runtime it was timed with (None for the fallback).
    """
    rows = [r for r in read_bench_rows(bench_root)
            if r.get("source", "host") == "host" and r.get("format") == fmt and r.get("status") == "ok"
            and fmt in getattr(RUNTIMES.get(r.get("runtime")), "formats", ()) and r.get("batch") == "1"
            and r.get("threads") == "1" and _num(r.get("p50_us")) is not None and _num(r.get("accuracy")) is not None]
    dense = {}
    for r in rows:
        if _num(r["sparsity"]) == 0 and r.get("variant") == "fp32":
            key = (r["framework"], r["runtime"])
            dense[key] = max(dense.get(key, 0.0), _num(r["accuracy"]))
    if rows:
        scale = 1.0 if max(_num(r["accuracy"]) for r in rows) > 1.0 else 100.0  # fraction or percent
        ok = [r for r in rows if (r["framework"], r["runtime"]) in dense
              and (dense[(r["framework"], r["runtime"])] - _num(r["accuracy"])) * scale <= ACCURACY_TOLERANCE_POINTS]
        ok = [r for r in ok if (Path(export_root) / r["artifact"]).is_file()]
        if ok:
            best = min(ok, key=lambda r: (_num(r["p50_us"]), r["artifact"]))
            return Path(export_root) / best["artifact"], best["runtime"]
    for method in DENSE_DIRS:  # k00 of any method is the unpruned network
        fallback = Path(export_root) / "torch" / method / "k00" / model_file_name(fmt, "fp32")
        if fallback.is_file():
            return fallback, None
    raise fail(Path(export_root) / "torch" / "*" / "k00", f"no model given and no default {fmt} artifact found "
               "(run `make export` first or pass --model)")


# ---------------------------------------------------------------- what is known about the file

def export_entry(model_path: Path, export_root: Path) -> tuple[str, dict]:
    """(path relative to artifacts/export, its artifacts/export/manifest.json entry or {})."""
    try:
        rel = model_path.resolve().relative_to(Path(export_root).resolve()).as_posix()
    except ValueError:
        return model_path.name, {}
    manifest = Path(export_root) / "manifest.json"
    if not manifest.is_file():
        return rel, {}
    try:
        files = json.loads(manifest.read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError) as e:
        raise fail(manifest, f"unreadable export manifest ({e})") from None
    return rel, next((e for e in files if isinstance(e, dict) and e.get("path") == rel), {})


def check_entry(model_path: Path, entry: dict) -> None:
    """Refuse a file the export stage marked as failed, or one changed since it was recorded."""
    if not entry:
        return
    verify = entry.get("verify") or {}
    if verify.get("status") == "failed":
        raise fail(model_path, f"failed verification at export ({verify.get('reason') or 'no reason recorded'}); "
                               "not bundling it")
    if entry.get("sha256") and entry["sha256"] != sha256_file(model_path):
        raise fail(model_path, "sha256 differs from artifacts/export/manifest.json (changed since export); "
                               "re-run the export")


def provenance(model_path: Path) -> tuple[dict, object]:
    """model.npz meta beside the file (and the loaded reference model), or ({}, None)."""
    from pipeline.model_io import load
    npz = model_path.parent / "model.npz"
    if not npz.is_file():
        return {}, None
    reference = load(npz)
    return {**reference.meta, "model_npz_sha256": sha256_file(npz)}, reference


def _load_template_predict():
    """bundle_template/predict.py as a module: the bundle's own loading code measures the bundle."""
    spec = importlib.util.spec_from_file_location("prunedge_bundle_predict", TEMPLATE_DIR / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _test_images(n: int):
    """Real test images when the dataset is there (uint8 [n,28,28], labels), else seeded noise."""
    from pipeline.data import FILES, IMAGE_MAGIC, LABEL_MAGIC, data_dir, read_idx
    d = data_dir()
    try:
        x = read_idx(d / FILES["test"][0], IMAGE_MAGIC)[:n]
        y = read_idx(d / FILES["test"][1], LABEL_MAGIC)[:n].astype(np.int64)
        return np.ascontiguousarray(x), y
    except PrunedgeError:
        return np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8), None


def host_measurements(runner, pred, reference, entry: dict) -> dict:
    """Accuracy and verification from the export manifest, or measured here when it has none."""
    x_u8, y = _test_images(10000)
    x = x_u8.reshape(len(x_u8), -1).astype(np.float32) / np.float32(255)
    out = {}
    accuracy = entry.get("accuracy")
    if accuracy is None and y is not None:
        logits = pred.run_batched(runner, x)
        accuracy = round(float((logits.argmax(axis=1) == y).mean()), 6)
        out["accuracy_source"] = f"bundle.py: this file in its runtime, {len(y)} test images"
    elif accuracy is not None:
        out["accuracy_source"] = "artifacts/export/manifest.json"
    out["accuracy"] = accuracy
    if entry.get("verify"):
        out["verify"] = {**entry["verify"], "source": "artifacts/export/manifest.json"}
    elif reference is not None:
        n = min(512, len(x))
        got, want = pred.run_batched(runner, x[:n]), reference.forward(x[:n])
        out["verify"] = {"status": "measured", "max_abs_diff": float(np.abs(got - want).max()),
                         "top1_agreement": float((got.argmax(1) == want.argmax(1)).mean()), "n": n,
                         "reference": "model.npz numpy forward", "source": "bundle.py"}
    return out


def selftest_data(runner, pred, variant: str) -> tuple[np.ndarray, dict]:
    """The real images with the clearest top-1 margin (so rounding on another CPU cannot flip
    them), and the classes/logits this host gives them."""
    x_u8, _ = _test_images(256)
    logits = pred.run_batched(runner, x_u8.reshape(len(x_u8), -1).astype(np.float32) / np.float32(255))
    scale = max(1.0, float(np.abs(logits).max()))
    tol = (1e-3 if variant in ("fp32", "sparse") else 5e-2) * scale
    top2 = np.sort(logits, axis=1)[:, -2:]
    clear = np.sort(np.argsort(top2[:, 0] - top2[:, 1], kind="stable")[:SELFTEST_N])
    return x_u8[clear], {"file": "selftest.npy", "classes": logits[clear].argmax(1).tolist(),
                         "logits": np.round(logits[clear], 6).tolist(), "tolerance": tol}


def latency_rows(bench_rows: list[dict], artifact: str) -> list[dict]:
    keep = ("runtime", "threads", "batch", "status", "p50_us", "p90_us", "p99_us", "mean_us", "reps", "accuracy")
    return [{k: r.get(k) for k in keep} for r in bench_rows
            if r.get("artifact") == artifact and r.get("source", "host") == "host"]


def _machine(bench_root: Path) -> dict:
    """The bench run's machine record, else a short description of this one."""
    path = Path(bench_root) / "results.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))["machine"]
    except (OSError, ValueError, KeyError, TypeError):
        import os
        import platform
        return {"machine": platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(),
                "platform": platform.platform()}


# ---------------------------------------------------------------- writing

def requirements(row: Runtime) -> str:
    """numpy + the one runtime, pinned to the versions this bundle was checked with here."""
    pkgs = ("numpy", row.package)
    return "".join(f"{p}=={importlib.metadata.version(p)}\n" for p in pkgs)


def default_name(meta: dict, model_path: Path, fmt: str, variant: str) -> str:
    if {"framework", "method", "sparsity"} <= meta.keys():
        return f"{meta['framework']}-{meta['method']}-k{int(round(float(meta['sparsity']))):02d}-{variant}-{fmt}"
    return f"{model_path.stem.replace('.', '-')}-{fmt}"


def _readme(manifest: dict) -> str:
    prov, model = manifest["provenance"], manifest["model"]
    acc = manifest["measured"].get("accuracy")
    return Template((TEMPLATE_DIR / "README.md").read_text(encoding="utf-8")).safe_substitute(
        name=manifest["name"], model_file=model["file"], format=model["format"], variant=model["variant"],
        runtime=model["runtime"], delegate_note=f", delegate {model['delegate']}" if model.get("delegate") else "",
        framework=prov.get("framework", "?"), method=prov.get("method", "?"), sparsity=prov.get("sparsity", "?"),
        accuracy=f"{acc:.4f} on the 10k test set" if isinstance(acc, float) else "not measured",
        package=RUNTIMES[model["runtime"]].package,
        classes=", ".join(f"{i} {c}" for i, c in enumerate(manifest["output"]["classes"])))


def _mode(path: Path) -> int:
    return 0o755 if path.is_dir() or path.suffix == ".py" else 0o644


def write_tar_gz(src_dir: Path, out: Path, arcroot: str) -> Path:
    """Deterministic archive: sorted names, fixed mtime, uid/gid 0, fixed modes, gzip mtime 0."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        def add(name: str, data: bytes | None, mode: int):
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = TAR_MTIME, 0, 0, "", "", mode
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        add(arcroot, None, 0o755)
        for path in sorted(src_dir.iterdir(), key=lambda p: p.name):
            add(f"{arcroot}/{path.name}", path.read_bytes(), _mode(path))
    with atomic_path(out) as tmp:
        tmp.write_bytes(buf.getvalue())
    return out


def make_bundle(model_dir_or_file, *, fmt: str = "onnx", variant: str | None = None,
                out_root: Path = BUNDLE_ROOT, name: str | None = None, runtime: str | None = None,
                export_root: Path = EXPORT_ROOT, bench_root: Path = BENCH_ROOT) -> Path:
    """Write `<out_root>/<name>/` and `<out_root>/<name>.tar.gz`; return the bundle directory.

    `model_dir_or_file`: an export k-dir (file picked by fmt/variant) or the model file itself;
    None picks the default (see choose_default). `runtime` overrides the one the file was verified
    and shipped with (an export.runtimes name, e.g. litert-builtin).
    """
    if fmt not in FORMATS:
        raise fail("--format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")
    bench_runtime = None
    if model_dir_or_file is None:
        model_dir_or_file, bench_runtime = choose_default(fmt, export_root=export_root, bench_root=bench_root)
    model_path = resolve_model_file(Path(model_dir_or_file), fmt, variant)
    artifact, entry = export_entry(model_path, export_root)
    check_entry(model_path, entry)
    variant = variant or entry.get("variant") or variant_of(model_path, fmt)
    row = bundle_runtime(runtime or entry.get("runtime") or bench_runtime, fmt)
    delegate = row.delegate
    meta, reference = provenance(model_path)
    name = name or default_name(meta, model_path, fmt, variant)
    if not name or "/" in name or name.startswith("."):
        raise fail("--name", f"must be a plain directory name, got {name!r}")

    pred = _load_template_predict()
    try:
        runner = pred.RUNNERS[row.runner](model_path, None, delegate)
        io_spec = runner.io_spec()
        measured = host_measurements(runner, pred, reference, entry)
        selftest_x, selftest = selftest_data(runner, pred, variant)
    except pred.BundleError as e:
        raise fail(model_path, str(e)) from None
    except Exception as e:  # the runtime rejected the file
        raise fail(model_path, f"{row.package} could not run it ({type(e).__name__}: {e})") from None

    from pipeline.data import CLASS_NAMES
    bench_rows = read_bench_rows(bench_root)
    measured.update(on="host (this build machine)", latency=latency_rows(bench_rows, artifact),
                    machine=_machine(bench_root))
    out_root = Path(out_root)
    staging = staging_dir(out_root, name)  # a killed run's leftover is removed by the next one
    try:
        shutil.copyfile(model_path, staging / model_path.name)
        for f in ("predict.py", "bench_device.py"):
            shutil.copyfile(TEMPLATE_DIR / f, staging / f)
        write_text(staging / "requirements.txt", requirements(row))
        buf = io.BytesIO()
        np.save(buf, selftest_x, allow_pickle=False)
        (staging / "selftest.npy").write_bytes(buf.getvalue())
        manifest = {
            "schema": SCHEMA, "name": name,
            "model": {"file": model_path.name, "format": fmt, "variant": variant, "runtime": row.name,
                      "runner": row.runner, "delegate": delegate, "artifact": artifact,
                      "sha256": sha256_file(model_path)},
            "provenance": meta,
            "input": {**io_spec["input"], "features": 784, "image_shape": [28, 28], "scaling": INPUT_SCALING,
                      "accepts": ".npy [n,784] or [n,28,28] uint8 0-255 or float 0-1; IDX images (.gz or raw)"},
            "output": {**io_spec["output"], "kind": "logits", "classes": list(CLASS_NAMES)},
            "measured": measured,
            "requirements": requirements(row).split(),
            "selftest": selftest,
            "files": {},
        }
        write_text(staging / "README.md", _readme(manifest))
        manifest["files"] = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                             for p in sorted(staging.iterdir())}
        write_json(staging / "manifest.json", manifest)
        for p in [staging, *staging.iterdir()]:  # temp files are private; a bundle is for sharing
            p.chmod(_mode(p))
        bundle_dir = out_root / name
        if bundle_dir.exists():
            shutil.rmtree(bundle_dir)
        staging.rename(bundle_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    tar = write_tar_gz(bundle_dir, out_root / f"{name}.tar.gz", name)
    digest = write_text(out_root / f"{name}.tar.gz.sha256", f"{sha256_bytes(tar.read_bytes())}  {tar.name}\n")
    for p in (tar, digest):
        p.chmod(0o644)
    return bundle_dir
