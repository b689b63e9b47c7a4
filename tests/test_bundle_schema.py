"""Bundle hardening: a tampered manifest.json, a path trick or a link out of the bundle gives one
`error:` line and status 2 from predict.py and bench_device.py, never a traceback.

A property-based test (hypothesis) mutates a valid manifest (deleted keys, swapped JSON types,
path tricks, long names, huge numbers, NaN, links, broken JSON) and runs the bundle's own scripts
in-process (fast); a few cases run as subprocesses, as on a device.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundle import build as B
from bundle.template import TEMPLATE_DIR
from export import formats as F
from pipeline.model import random_model
from pipeline.model_io import save

sys.path.insert(0, str(TEMPLATE_DIR))
import bench_device  # noqa: E402  (the bundle's own scripts, imported as on a device)
import predict  # noqa: E402

N = 8  # images per run: the checks, not the model, are under test
PATH_TRICKS = ["../x", "../../etc/passwd", "/etc/passwd", "a/b", "x" * 300, "\u00e9" * 200, ".", "..", "",
               ".hidden", "manifest.json", "predict.py", "classes.txt", "selftest.npy", "README.md",
               "model.onnx", "model.tflite", "nul\x00", "new\nline", "\ud800", "..\\x", "C:\\x", "link-out"]
HUGE = [2 ** 31, 2 ** 63, 2 ** 64 + 1, 10 ** 30, 10 ** 300, -(10 ** 300), 1e308, -1e308]
LINKS = ["outside-copy", "etc-passwd", "directory", "inside", "loop", "dangling"]
RAW = ["truncate", "deep", "big-int", "inf", "not-utf8", "empty", "list"]
JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70), st.sampled_from(HUGE),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                      st.sampled_from(PATH_TRICKS))
JSON = st.recursive(JSON_LEAF, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                      st.dictionaries(st.text(max_size=6), kids, max_size=3)),
                    max_leaves=6)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Valid ONNX and TFLite MLP bundles, plus images and labels outside them."""
    root = tmp_path_factory.mktemp("export")
    kdir = root / "torch" / "dense" / "k00"
    kdir.mkdir(parents=True)
    model = random_model([784, 32, 10], seed=7, method="dense", sparsity=0.0, physical="dense")
    save(model.with_layers(model.layers, framework="torch"), kdir / "model.npz")
    out, data = tmp_path_factory.mktemp("bundles"), tmp_path_factory.mktemp("data")
    bundles = {}
    for fmt in ("onnx", "tflite"):
        F.FORMATS[fmt].export(model, kdir / F.FORMATS[fmt].suffix, F.ExportOptions())
        bundles[fmt] = B.make_bundle(kdir, fmt=fmt, out_root=out, export_root=root, bench_root=out / "nb")
    np.save(data / "x.npy", np.random.default_rng(0).integers(0, 256, (N, 28, 28), dtype=np.uint8))
    np.save(data / "y.npy", np.arange(N) % 10)
    (data / "outside").mkdir()
    return bundles, data


def commands(data: Path, scratch: Path) -> list[tuple]:
    x, y = str(data / "x.npy"), str(data / "y.npy")
    return [(predict, ["--verify-only"]), (predict, ["--selftest"]), (predict, [x, "--labels", y, "--json"]),
            (predict, [x, "--out", str(scratch / "p.npy"), "--logits", str(scratch / "l.npy")]),
            (bench_device, ["--reps", "2", "--warmup", "0", "--threads", "1", "--batch", "1,3",
                            "--out", str(scratch / "d.csv"), "--images", x, "--labels", y])]


def run_in_process(script, argv: list, bundle_dir: Path) -> tuple[int, str]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = script.main(argv, bundle_dir)
    return rc, err.getvalue()


def assert_ok_or_one_line(rc: int, err: str, *words) -> None:
    if rc == 0 and not words:
        return
    assert rc == 2, (rc, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], lines[0]


# ---------------------------------------------------------------- mutations

def json_paths(node, prefix=()):
    """Every key path of the manifest (lists: first and last item only)."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from json_paths(value, prefix + (key,))
    elif isinstance(node, list) and node:
        for i in sorted({0, len(node) - 1}):
            yield from json_paths(node[i], prefix + (i,))


def _parent(doc, path):
    for key in path[:-1]:
        doc = doc[key]
    return doc


def mutate(doc, op: tuple, bundle_dir: Path, outside: Path):
    """Apply one mutation to the parsed manifest `doc` (or to the bundle's files); returns the doc,
    or raw bytes to write as manifest.json."""
    kind = op[0]
    if kind in ("delete", "set") and not isinstance(doc, (dict, list)):
        return doc  # an earlier mutation replaced the whole manifest
    if kind in ("delete", "set") and not op[1]:
        return op[2] if kind == "set" else doc
    if kind in ("delete", "set"):
        with contextlib.suppress(KeyError, IndexError, TypeError):  # an earlier mutation moved the path
            parent = _parent(doc, op[1])
            if kind == "delete":
                del parent[op[1][-1]]
            else:
                parent[op[1][-1]] = op[2]
    elif kind == "rename" and isinstance(doc, dict) and isinstance(doc.get("files"), dict) and op[1] in doc["files"]:
        doc["files"][op[2]] = doc["files"].pop(op[1])
    elif kind == "symlink":
        link(bundle_dir / op[1], op[2], bundle_dir, outside)
    elif kind == "raw":
        return raw_manifest(json.dumps(doc), op[1])
    return doc


def link(path: Path, how: str, bundle_dir: Path, outside: Path) -> None:
    """Replace a bundle file by a symlink: out of the bundle (even to identical bytes), to a
    directory, to another bundle file, in a loop, or to nothing."""
    copy_out = outside / f"copy-{path.name}"
    if path.is_file() and not path.is_symlink():
        shutil.copyfile(path, copy_out)
    targets = {"outside-copy": copy_out, "etc-passwd": Path("/etc/passwd"), "directory": outside,
               "inside": bundle_dir / "README.md", "loop": path, "dangling": bundle_dir / "nothing-here"}
    path.unlink(missing_ok=True)
    path.symlink_to(targets[how])


def raw_manifest(text: str, how: str) -> bytes:
    return {"truncate": text[: len(text) // 2].encode(), "deep": b"[" * 100_000 + b"]" * 100_000,
            "big-int": text.replace('"bytes": ', '"bytes": ' + "9" * 5000, 1).encode(),
            "inf": text.replace('"tolerance": ', '"tolerance": Infinity, "x": ', 1).encode(),
            "not-utf8": b"\xff\xfe" + text.encode(), "empty": b"", "list": b"[]"}[how]


def apply(bundle: Path, work: Path, ops: list) -> Path:
    """A copy of `bundle` in `work` with the mutations applied; returns its directory."""
    target, outside = work / "b", work / "outside"
    shutil.copytree(bundle, target)
    outside.mkdir()
    doc = json.loads((target / "manifest.json").read_text())
    for op in ops:
        doc = doc if isinstance(doc, bytes) else mutate(doc, op, target, outside)
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    (target / "manifest.json").write_bytes(raw)
    return target


def mutations(manifest: dict):
    paths = list(json_paths(manifest))
    names = sorted(manifest["files"])
    name_fields = [p for p in paths if p[-1:] in (("file",), ("classes_file",)) or p[:2] == ("model", "files")]
    return st.one_of(
        st.tuples(st.just("delete"), st.sampled_from(paths)),
        st.tuples(st.just("set"), st.sampled_from(paths), JSON),
        st.tuples(st.just("set"), st.sampled_from(name_fields), st.sampled_from(PATH_TRICKS)),
        st.tuples(st.just("set"), st.sampled_from(paths), st.sampled_from(HUGE)),
        st.tuples(st.just("rename"), st.sampled_from(names), st.sampled_from(PATH_TRICKS)),
        st.tuples(st.just("symlink"), st.sampled_from(names), st.sampled_from(LINKS)),
        st.tuples(st.just("raw"), st.sampled_from(RAW)))


# ---------------------------------------------------------------- the property

@pytest.mark.parametrize("fmt,examples", [("onnx", 300), ("tflite", 60)])
def test_any_tampered_manifest_runs_or_gives_one_error_line(made, fmt, examples):
    bundles, data = made
    bundle = bundles[fmt]
    manifest = json.loads((bundle / "manifest.json").read_text())

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.data())
    def check(draw):
        ops = draw.draw(st.lists(mutations(manifest), min_size=1, max_size=3), label="mutations")
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            target = apply(bundle, work, ops)
            script, argv = draw.draw(st.sampled_from(commands(data, work)), label="command")
            rc, err = run_in_process(script, argv, target)
            assert_ok_or_one_line(rc, err)
    check()


def test_untampered_bundle_passes_every_command(made, tmp_path):
    """The property above is not vacuous: the valid bundle runs every command."""
    bundles, data = made
    for bundle in bundles.values():
        for script, argv in commands(data, tmp_path):
            rc, err = run_in_process(script, argv, bundle)
            assert rc == 0, err


# ---------------------------------------------------------------- targeted cases

def tampered(made, tmp_path, ops, fmt="onnx") -> Path:
    return apply(made[0][fmt], tmp_path, ops)


@pytest.mark.parametrize("field", [("model", "files", 0), ("selftest", "file"), ("output", "classes_file")])
@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/b", "x" * 300, ".hidden", ""])
def test_file_fields_must_be_plain_names(made, tmp_path, field, name):
    target = tampered(made, tmp_path, [("set", field, name)])
    rc, err = run_in_process(predict, ["--selftest"], target)
    assert_ok_or_one_line(rc, err, ".".join(map(str, field[:2])), "plain file name")


@pytest.mark.parametrize("how", ["outside-copy", "etc-passwd", "directory"])
@pytest.mark.parametrize("name", ["model.onnx", "selftest.npy", "classes.txt", "README.md"])
def test_links_out_of_the_bundle_are_refused(made, tmp_path, how, name):
    """Even a link to a byte-identical copy outside the bundle: its sha256 matches, its place does not."""
    target = tampered(made, tmp_path, [("symlink", name, how)])
    for script, argv in commands(made[1], tmp_path)[1:3] + commands(made[1], tmp_path)[4:]:
        rc, err = run_in_process(script, argv, target)
        assert_ok_or_one_line(rc, err, name, "leads out of the bundle")


def test_manifest_linked_from_outside_is_refused(made, tmp_path):
    target = tampered(made, tmp_path, [("symlink", "manifest.json", "outside-copy")])
    assert_ok_or_one_line(*run_in_process(predict, ["--verify-only"], target), "manifest.json", "leads out")


def test_link_inside_the_bundle_is_checked_like_a_file(made, tmp_path):
    target = tampered(made, tmp_path, [("symlink", "classes.txt", "inside")])  # -> README.md: wrong hash
    assert_ok_or_one_line(*run_in_process(predict, ["--verify-only"], target), "classes.txt", "size")
    same = tampered(made, tmp_path / "same", [])
    (same / "names").write_bytes((same / "classes.txt").read_bytes())
    (same / "classes.txt").unlink()
    (same / "classes.txt").symlink_to(same / "names")
    assert run_in_process(predict, ["--verify-only"], same)[0] == 0


@pytest.mark.parametrize("field", ["model", "selftest", "classes"])
def test_every_file_read_is_listed_with_a_hash(made, tmp_path, field):
    name = {"model": "model.onnx", "selftest": "selftest.npy", "classes": "classes.txt"}[field]
    target = tampered(made, tmp_path, [("delete", ("files", name))])
    assert_ok_or_one_line(*run_in_process(predict, ["--selftest"], target), name, "not listed in files")


@pytest.mark.parametrize("path,value,words", [
    (("schema",), "prunedge-bundle/1", ["schema", "prunedge-bundle/2"]),
    (("model", "runner"), "tensorrt", ["model.runner", "'onnx'", "'ncnn'"]),
    (("model", "runner"), "ncnn", ["model.files must be 2 file(s)", ".param, .bin"]),
    (("model", "delegate"), "gpu", ["model.delegate"]),
    (("model", "delegate"), "xnnpack", ["delegate 'xnnpack'", "runner 'onnx'"]),
    (("model", "files"), "model.onnx", ["model.files", "list"]),
    (("input", "layout"), "nhwc", ["layout 'nhwc'"]),
    (("input", "sample_shape"), [28, 28, 1], ["sample_shape", "do not agree"]),
    (("input", "sample_shape"), [10 ** 30], ["input.sample_shape[0]", "integer"]),
    (("input", "accepts"), [[783]], ["do not agree"]),
    (("output", "n_classes"), 3, ["selftest", "3 classes"]),
    (("output", "n_classes"), True, ["output.n_classes", "integer"]),
    (("selftest", "tolerance"), -1, ["selftest.tolerance"]),
    (("selftest", "classes", 0), 10, ["selftest"]),
    (("files", "model.onnx", "bytes"), 2 ** 63, ["bytes", "integer"]),
    (("files", "model.onnx", "sha256"), "F" * 64, ["sha256"]),
    (("provenance", "sparsity"), "90", ["provenance.sparsity", "number"]),
    (("name",), "a\nb", ["name", "printable"]),
])
def test_wrong_field_names_the_field(made, tmp_path, path, value, words):
    target = tampered(made, tmp_path, [("set", path, value)])
    assert_ok_or_one_line(*run_in_process(predict, ["--selftest"], target), "manifest.json", *words)


@pytest.mark.parametrize("key", ["schema", "name", "model", "provenance", "input", "output", "selftest", "files"])
def test_missing_keys_are_named(made, tmp_path, key):
    target = tampered(made, tmp_path, [("delete", (key,))])
    assert_ok_or_one_line(*run_in_process(bench_device, ["--reps", "1", "--out", str(tmp_path / "d.csv")], target),
                          f"{key} is missing")


@pytest.mark.parametrize("labels", [[0, 1, 2, 3, 4, 5, 6, 10], [-1, 1, 2, 3, 4, 5, 6, 7]])
def test_labels_outside_the_classes_are_refused(made, tmp_path, labels):
    bundles, data = made
    np.save(tmp_path / "y.npy", np.array(labels))
    x, y = str(data / "x.npy"), str(tmp_path / "y.npy")
    bad = str(labels[0] if labels[0] < 0 else labels[-1])
    assert_ok_or_one_line(*run_in_process(predict, [x, "--labels", y], bundles["onnx"]), f"label {bad}", "0..9")
    assert_ok_or_one_line(*run_in_process(bench_device, ["--images", x, "--labels", y, "--reps", "1", "--out",
                                                         str(tmp_path / "d.csv")], bundles["onnx"]), f"label {bad}")


@pytest.mark.parametrize("ops,words", [
    ([("set", ("model", "files", 0), "../../etc/passwd")], ["model.files[0]"]),
    ([("delete", ("model", "runner"))], ["model.runner is missing"]),
    ([("raw", "deep")], ["unreadable manifest"]),
    ([("raw", "inf")], ["selftest.tolerance"]),
    ([("symlink", "model.onnx", "outside-copy")], ["leads out of the bundle"]),
])
@pytest.mark.parametrize("script", ["predict.py", "bench_device.py"])
def test_subprocess_gives_one_line_and_status_2(made, tmp_path, ops, words, script):
    target = tampered(made, tmp_path, ops)
    args = ["--selftest"] if script == "predict.py" else ["--reps", "1", "--out", str(tmp_path / "d.csv")]
    proc = subprocess.run([sys.executable, str(target / script), *args], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert_ok_or_one_line(proc.returncode, proc.stderr, *words)


def test_schema_types_are_strict():
    """bool is not an int, NaN/inf and ints too large for a float are not numbers, copies are checked."""
    assert not predict.Int(0, 10).ok(True) and predict.Int(0, 10 ** 400).ok(10 ** 300)
    assert not predict.Num().ok(float("nan")) and not predict.Num().ok(float("inf")) and not predict.Num().ok(10 ** 400)
    assert predict.FileName().ok("model.onnx") and not predict.FileName().ok("\u00e9" * 200)  # 400 bytes
    m = copy.deepcopy({"a": 1})
    with pytest.raises(predict.BundleError, match="b is missing"):
        predict.Obj({"b": predict.Int(0, 1)}).check(m, "")
