"""Same seed, same bytes: two independent runs of the real CLIs (separate processes) write identical files.

Training (torch and Keras) on a few hundred real images, pruning, and exporting to ONNX and every
TFLite variant are all byte-for-byte reproducible, so a file's sha256 identifies how it was made; the
manifest records what is needed to make it again (config, seed, versions, data hash, provenance).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import REPO

from pipeline import data
from pipeline.fileio import sha256_file
from pipeline.model_io import load
from pipeline.train import TrainConfig

N_TRAIN = data.VAL_SIZE + 300  # the loader keeps 5000 for validation: 300 images to train on
N_TEST = 200
TIMING_KEYS = {"export_seconds", "verify_seconds", "seconds"}  # the only fields allowed to differ


def run_together(*commands, timeout: float = 600) -> None:
    """Run `python <args>` commands side by side (they share the cores: determinism must not care)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    procs = [subprocess.Popen([sys.executable, *map(str, args)], cwd=REPO, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for args in commands]
    for proc in procs:
        _, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err[-3000:]


def files(root: Path, pattern: str = "model*") -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob(pattern)) if p.is_file()}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A small Fashion-MNIST directory: the first N_TRAIN / N_TEST real images (noise if not installed)."""
    d = tmp_path_factory.mktemp("fashion")
    src = data.DEFAULT_DATA_DIR
    rng = np.random.default_rng(0)
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        images, labels = data.FILES[split]
        if (src / images).is_file():
            x = data.read_idx(src / images, data.IMAGE_MAGIC)[:n]
            y = data.read_idx(src / labels, data.LABEL_MAGIC)[:n]
        else:
            x, y = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n) % 10
        data.write_idx_gz(d / images, x)
        data.write_idx_gz(d / labels, y)
    return d


# The train stage (what `python -m pipeline train` runs) with a tiny network: 784-64-32-10.
TRAIN = """
import sys
from pathlib import Path
from pipeline.stages import train_stage
from pipeline.train import TrainConfig
config = TrainConfig(hidden=(64, 32), epochs=2, batch_size=64)
for framework in ("torch", "tf"):
    train_stage(framework, seed=0, data_dir=sys.argv[1], config=config, root=Path(sys.argv[2]))
"""


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory) -> tuple[Path, Path]:
    """Two artifact roots, each from its own processes: train torch and Keras (seed 0), then
    `python -m pipeline prune` at three levels with both methods."""
    roots = [tmp_path_factory.mktemp(name) for name in ("a", "b")]
    run_together(*(["-c", TRAIN, data_dir, root] for root in roots))
    run_together(*(["-m", "pipeline", "prune", "--levels", "0,50,90", "--root", root] for root in roots))
    return roots[0], roots[1]


@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_training_twice_with_one_seed_gives_identical_weights(runs, framework):
    a, b = (root / "train" / framework / "s0" for root in runs)
    assert sha256_file(a / "model.npz") == sha256_file(b / "model.npz")
    for la, lb in zip(load(a / "model.npz").layers, load(b / "model.npz").layers):
        np.testing.assert_array_equal(la.weight, lb.weight)
        np.testing.assert_array_equal(la.bias, lb.bias)
    assert (a / "curves.json").read_bytes() == (b / "curves.json").read_bytes()
    summary_a, summary_b = (json.loads((d / "train.json").read_text()) for d in (a, b))
    summary_a.pop("wall_time_s"), summary_b.pop("wall_time_s")
    assert summary_a == summary_b


def test_trained_model_records_how_it_was_made(runs, data_dir):
    for framework in ("torch", "tf"):
        out = runs[0] / "train" / framework / "s0"
        meta = load(out / "model.npz").meta
        assert meta["seed"] == 0 and meta["framework"] == framework
        assert meta["train"] == TrainConfig(hidden=(64, 32), epochs=2, batch_size=64).to_dict()
        assert meta["data_sha256"] == data.files_sha256(data_dir)
        summary = json.loads((out / "train.json").read_text())
        assert {"config", "seed", "data_sha256", "versions"} <= summary.keys()
        assert summary["versions"], framework


def test_pruned_models_are_byte_identical(runs):
    a, b = (files(root / "export", "model.npz") for root in runs)
    assert len(a) == 2 * 2 * 3  # framework x method x level
    assert a == b
    for path in a:  # and each remembers the training run it came from
        meta = load(runs[0] / "export" / path).meta
        assert meta["seed"] == 0 and "train" in meta and "data_sha256" in meta


# ------------------------------------------------------------------ every TFLite variant

@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> tuple[Path, Path]:
    """`export run` of one small network twice, every format (block16 also makes the block-sparse
    TFLite files)."""
    from export import onnx_format
    from export.formats import ExportOptions
    from pipeline.model import random_model

    base = tmp_path_factory.mktemp("exports")
    source = onnx_format.export_dense(random_model([784, 64, 32, 10], seed=4), base / "net.onnx", ExportOptions())
    # The auto files follow measured layer timings; given the same table they must repeat byte for byte.
    from export import tflite_auto
    from pipeline.fileio import write_json
    from pipeline.methods import prune
    from pipeline.methods import physical
    pruned = physical(prune(random_model([784, 64, 32, 10], seed=4), "block16", 90))
    table = tflite_auto.empty_table()
    for i, layer in enumerate(pruned.layers):  # fastest: layer 0 int8-block, layer 1 block, output dense
        fastest = ("int8-block", "block", "dense")[i]
        table["layers"][tflite_auto.layer_key(layer)] = [
            {"format": f, "p50_us": 1.0 if f == fastest else 2.0, "status": "ok", "reason": ""}
            for f in ("dense", "block", "int8", "int8-block")]
    table["models"][tflite_auto.model_key(pruned)] = [  # whole files timed: nothing left to measure
        {"formats": ["int8-block", "block", "dense"], "p50_us": 1.0, "status": "ok", "reason": ""},
        {"formats": ["dense", "block", "dense"], "p50_us": 2.0, "status": "ok", "reason": ""}]
    for name in ("a", "b"):
        write_json(base / name / "export" / tflite_auto.TIMINGS_FILE, table)
    run_together(*(["-m", "export", "run", "--model", source, "--methods", "weight,unit,block16",
                    "--levels", "90", "--root", base / name, "--jobs", "1"] for name in ("a", "b")))
    return base / "a" / "export", base / "b" / "export"


def test_every_exported_format_is_byte_identical(exports):
    from export.formats import FORMATS
    a, b = files(exports[0]), files(exports[1])
    suffixes = {Path(p).name for p in a}
    assert {f.suffix for f in FORMATS.values()} <= suffixes  # every format, TFLite int8 included
    assert a == b
    auto = json.loads((exports[0] / "manifest.json").read_text())["files"]
    assert {tuple(e["layer_formats"]) for e in auto if e.get("layer_formats")} == \
        {("dense", "block", "dense"), ("int8-block", "block", "dense")}  # float32 file: a tie goes to dense
    manifests = [json.loads((root / "manifest.json").read_text()) for root in exports]
    assert [(e["path"], e["sha256"]) for e in manifests[0]["files"]] == \
           [(e["path"], e["sha256"]) for e in manifests[1]["files"]]


def test_export_manifest_records_what_reproduces_each_file(exports):
    a, b = (json.loads((root / "manifest.json").read_text()) for root in exports)
    assert {"config", "versions", "files"} <= a.keys()
    config = a["config"]
    assert {"seed", "opset", "data", "data_sha256", "n_check", "n_calibration", "formats", "methods",
            "levels", "tolerances"} <= config.keys()
    assert config["data_sha256"] == data.files_sha256(data.data_dir())
    assert {"python", "numpy", "onnx", "onnxruntime", "ai-edge-litert"} <= a["versions"].keys()
    assert {"tensorflow", "tensorflow-cpu"} & a["versions"].keys()
    source = sha256_file(exports[0].parent.parent / "net.onnx")
    for entry in a["files"]:
        assert entry["sha256"] == sha256_file(exports[0] / entry["path"]), entry["path"]
        assert entry["provenance"]["source_sha256"] == source, entry["path"]
    strip = lambda m: [{k: v for k, v in e.items() if k not in TIMING_KEYS} for e in m["files"]]
    assert strip(a) == strip(b)
    assert a["config"] == b["config"] and a["versions"] == b["versions"]
