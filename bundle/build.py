"""A self-checking deploy bundle: the model file(s) + manifest + scripts that need only numpy and one runtime.

`make_bundle` copies an exported model with `bundle_template/` (predict.py, bench_device.py,
README.md), records sha256/size of every file, the model's provenance, its input/output spec, its
class names (classes.txt) and what was measured on this machine (accuracy, verification,
latency), and packs a deterministic `<name>.tar.gz` (bundle.archive). Which file: bundle.choose;
what is known about it: bundle.describe; what is measured: bundle.measure.
"""
from __future__ import annotations

import importlib.metadata
import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from string import Template

import numpy as np

from bundle import describe, measure
from bundle.archive import mode, write_tar_gz
from bundle.choose import (BENCH_ROOT, EXPORT_ROOT, bundle_formats, bundle_runtime, choose_default,
                           latency_rows, read_bench_rows, resolve_model_file, variant_of)
from bundle.template import TEMPLATE_DIR, load_template_predict
from export.runtimes import RUNTIMES, Runtime
from pipeline.errors import fail
from pipeline.fileio import sha256_bytes, sha256_file, staging_dir, write_json, write_text

BUNDLE_ROOT = Path("artifacts/bundle")
CLASSES_FILE = "classes.txt"


@dataclass(frozen=True, kw_only=True)
class Source:
    """The file(s) a bundle ships and what the export tree knows about them."""
    paths: tuple  # model file(s) in the runner's order (a .param + .bin pair is two)
    fmt: str
    variant: str
    row: Runtime
    artifact: str  # path relative to the export root (or the file name)
    entry: dict  # its artifacts/export/manifest.json entry, or {}
    config: dict  # that manifest's config, or {}
    meta: dict  # model.npz provenance, or {}
    reference: object  # the model description (model.npz), or None


def model_files(path: Path, fmt: str, runner) -> tuple:
    """The file and the companions its export row writes (NCNN: model.ncnn.param + .bin), which must
    be the files, in order, that the runner takes."""
    from export.formats import by_file, files_of
    row = by_file(path) or bundle_formats().get(fmt)  # a renamed file: its format's fp32 row
    paths = tuple(files_of(row, path)) if row is not None else (path,)
    for p in paths[1:]:
        if not p.is_file():
            raise fail(p, f"missing: {path.name} comes with it")
    if len(paths) != len(runner.suffixes) or not all(p.name.endswith(s) for p, s in zip(paths, runner.suffixes)):
        raise fail(path, f"its runner takes {len(runner.suffixes)} file(s) ending in {', '.join(runner.suffixes)}, "
                         f"the export writes {', '.join(p.name for p in paths)}")
    return paths


def locate(model, *, fmt: str, variant: str | None, runtime: str | None, export_root: Path,
           bench_root: Path, pred) -> Source:
    """The model file(s), checked against the export record, with the runtime it ships in."""
    if fmt not in bundle_formats():
        raise fail("--format", f"must be one of {', '.join(bundle_formats())}, got {fmt!r}")
    bench_runtime = None
    if model is None:
        model, bench_runtime = choose_default(fmt, export_root=export_root, bench_root=bench_root)
    path = resolve_model_file(Path(model), fmt, variant)
    artifact, entry, config = describe.export_entry(path, export_root)
    describe.check_entry(path, entry)
    row = bundle_runtime(runtime or entry.get("runtime") or bench_runtime, fmt)
    meta, reference = describe.provenance(path)
    return Source(paths=model_files(path, fmt, pred.RUNNERS[row.runner]), fmt=fmt, row=row, artifact=artifact,
                  variant=variant or entry.get("variant") or variant_of(path, fmt), entry=entry, config=config,
                  meta=meta, reference=reference)


def _open(src: Source, pred):
    """(raw session, io spec) of the file in its runtime, as predict.py opens it."""
    try:
        session = pred.RUNNERS[src.row.runner].open([p.read_bytes() for p in src.paths], None, src.row.delegate)
        return session, session.io_spec()
    except Exception as e:  # the runtime rejected the file
        raise fail(src.paths[0], f"{src.row.package} could not run it ({pred.one_line(e)})") from None


def inspect(src: Source, pred, data: Path | None) -> tuple[dict, list, np.ndarray]:
    """The manifest sections learned by running the file here, the class names and the self-test images."""
    session, io_spec = _open(src, pred)
    runner = pred.RUNNERS[src.row.runner]
    inp = describe.input_spec(io_spec["input"], src.reference, runner, pred.LAYOUTS, src.paths[0])
    n_classes = io_spec["output"]["shape"][-1]
    if not isinstance(n_classes, int) or not 1 <= n_classes <= pred.MAX_CLASSES:
        raise fail(src.paths[0], f"output shape {io_spec['output']['shape']} is not [batch, classes]")
    fashion = describe.trained_on_fashion_mnist(src.meta)
    if data is not None and fashion:
        raise fail("--data", f"{src.meta['framework']} models are trained on Fashion-MNIST; --data names an "
                             "imported model's labeled set")
    if data is None and src.config.get("data") and src.meta.get("framework") == "imported":
        data = Path(src.config["data"])  # the labeled set the export checked it on
    names, names_source = describe.class_names(src.meta, n_classes, data, pred.Str().ok)
    try:
        model = pred.Model(session, inp, n_classes, src.paths[0])
        measured = measure.host_measurements(model, pred, src.reference, src.entry, inp, fashion)
        selftest_x, selftest = measure.selftest_data(model, pred, src.variant, inp)
    except pred.BundleError as e:
        raise fail(src.paths[0], str(e)) from None
    output = {**io_spec["output"], "kind": "logits", "n_classes": n_classes, "classes_file": CLASSES_FILE,
              "classes_source": names_source}
    return {"input": inp, "output": output, "measured": measured, "selftest": selftest}, names, selftest_x


def requirements(row: Runtime) -> str:
    """numpy + the one runtime, pinned to the versions this bundle was checked with here."""
    return "".join(f"{p}=={importlib.metadata.version(p)}\n" for p in ("numpy", row.package))


def default_name(meta: dict, model_path: Path, fmt: str, variant: str) -> str:
    """<model>-<method>-kNN-<variant>-<format>, the model named as its export folder is
    (torch, cnn-torch, an imported model's name); else the file's stem."""
    if {"framework", "method", "sparsity"} <= meta.keys():
        from pipeline.stages import model_name
        imported = meta["framework"] == "imported" and isinstance(meta.get("name"), str)
        model = meta["name"] if imported else model_name(str(meta["framework"]), str(meta.get("net", "mlp")))
        return f"{model}-{meta['method']}-k{int(round(float(meta['sparsity']))):02d}-{variant}-{fmt}"
    return f"{model_path.stem.replace('.', '-')}-{fmt}"


def _readme(manifest: dict, names: list) -> str:
    prov, model, out = manifest["provenance"], manifest["model"], manifest["output"]
    acc, image = manifest["measured"].get("accuracy"), manifest["input"]["layout"] != "features"
    fashion = describe.trained_on_fashion_mnist(prov)
    return Template((TEMPLATE_DIR / "README.md").read_text(encoding="utf-8")).safe_substitute(
        name=manifest["name"], model_file=", ".join(model["files"]), format=model["format"],
        variant=model["variant"], runtime=model["runtime"],
        delegate_note=f", delegate {model['delegate']}" if model.get("delegate") else "",
        task="Fashion-MNIST classifier" if fashion else f"{out['n_classes']}-class classifier",
        network="CNN" if image else "MLP", framework=prov.get("framework", "?"), method=prov.get("method", "?"),
        sparsity=prov.get("sparsity", "?"),
        accuracy=f"{acc:.4f} on its test set" if isinstance(acc, float) else "not measured",
        package=RUNTIMES[model["runtime"]].package, accepted=manifest["input"]["accepted"],
        classes=", ".join(f"{i} {c}" for i, c in enumerate(names[:20]))
        + (f", ... ({out['n_classes']} in {CLASSES_FILE})" if out["n_classes"] > 20 else ""))


def _manifest(name: str, src: Source, sections: dict, bench_root: Path, pred) -> dict:
    sections["measured"].update(on="host (this build machine)", machine=measure.machine(bench_root),
                                latency=latency_rows(read_bench_rows(bench_root), src.artifact))
    return {"schema": pred.SCHEMA, "name": name,
            "model": {"files": [p.name for p in src.paths], "format": src.fmt, "variant": src.variant,
                      "runtime": src.row.name, "runner": src.row.runner, "delegate": src.row.delegate,
                      "artifact": src.artifact},
            "provenance": src.meta, **sections, "requirements": requirements(src.row).split(), "files": {}}


def _write_staging(staging: Path, manifest: dict, src: Source, names: list, selftest_x: np.ndarray, pred) -> None:
    """Every file of the bundle, then the manifest with their sha256 and sizes, checked by the
    bundle's own predict.py as a device will check it."""
    for p in src.paths:
        shutil.copyfile(p, staging / p.name)
    for f in ("predict.py", "bench_device.py"):
        shutil.copyfile(TEMPLATE_DIR / f, staging / f)
    write_text(staging / "requirements.txt", requirements(src.row))
    write_text(staging / CLASSES_FILE, "".join(f"{c}\n" for c in names))
    buf = io.BytesIO()
    np.save(buf, selftest_x, allow_pickle=False)
    (staging / manifest["selftest"]["file"]).write_bytes(buf.getvalue())
    write_text(staging / "README.md", _readme(manifest, names))
    manifest["files"] = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                         for p in sorted(staging.iterdir())}
    write_json(staging / "manifest.json", manifest)
    try:
        pred.Bundle(staging)
    except pred.BundleError as e:
        raise fail(src.paths[0], f"the bundle would not pass its own checks ({e})") from None
    for p in [staging, *staging.iterdir()]:  # temp files are private; a bundle is for sharing
        p.chmod(mode(p))


def make_bundle(model_dir_or_file, *, fmt: str = "onnx", variant: str | None = None,
                out_root: Path = BUNDLE_ROOT, name: str | None = None, runtime: str | None = None,
                export_root: Path = EXPORT_ROOT, bench_root: Path = BENCH_ROOT, data: Path | None = None) -> Path:
    """Write `<out_root>/<name>/` and `<out_root>/<name>.tar.gz`; return the bundle directory.

    `model_dir_or_file`: an export k-dir (file picked by fmt/variant) or the model file itself;
    None picks the default (bundle.choose.choose_default). `runtime` overrides the one the file was
    verified and shipped with (an export.runtimes name, e.g. litert-builtin). `data`: an imported
    model's labeled set, for its class names (default: the export manifest's config.data).
    """
    pred = load_template_predict()
    src = locate(model_dir_or_file, fmt=fmt, variant=variant, runtime=runtime, export_root=export_root,
                 bench_root=bench_root, pred=pred)
    name = name or default_name(src.meta, src.paths[0], fmt, src.variant)
    if not pred.FileName().ok(name):
        raise fail("--name", f"must be a plain directory name, got {name!r}")
    for p in src.paths:
        if not pred.FileName().ok(p.name):
            raise fail(p, "a bundle ships files under plain names (printable, no leading '.'); rename it")
    sections, names, selftest_x = inspect(src, pred, Path(data) if data else None)
    manifest = _manifest(name, src, sections, bench_root, pred)
    out_root = Path(out_root)
    staging = staging_dir(out_root, name)  # a killed run's leftover is removed by the next one
    try:
        _write_staging(staging, manifest, src, names, selftest_x, pred)
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
