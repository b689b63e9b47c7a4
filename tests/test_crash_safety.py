"""A killed run never leaves silent damage: SIGKILL real runs at random points, re-run, check everything.

After the completing re-run: it exits 0, every output loads (and runs like its model.npz), every
stamp and manifest entry matches the bytes on disk (sha256), the files equal what an uninterrupted
run writes, and no temp file is left. The kill points come from a fixed seed, so every run of the
suite kills at the same points; PRUNEDGE_CRASH_SEED=<seed> tries others.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.fileio import sha256_file
from pipeline.model import random_model
from pipeline.model_io import load, save
from helpers import REPO
SEED = int(os.environ.get("PRUNEDGE_CRASH_SEED") or 20261201)
STAMPS = (".stage.json", ".export.stage.json")


def popen(args, log: Path) -> subprocess.Popen:
    """`python -m <args>` in its own process group (so a kill also takes any workers)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    with open(log, "ab") as f:
        return subprocess.Popen([sys.executable, "-m", *map(str, args)], cwd=REPO, env=env,
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def kill(proc: subprocess.Popen) -> bool:
    """SIGKILL the run (and its group); False if it had already finished."""
    if proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def kill_after(args, delay: float, log: Path) -> bool:
    proc = popen(args, log)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        return kill(proc)


def kill_when(args, ready, delay: float, log: Path, timeout: float = 120) -> bool:
    """Start the run, wait until `ready()` says it is in the middle of its work, then kill it
    after `delay` more seconds."""
    proc = popen(args, log)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(delay)
    return kill(proc)


def complete(args, log: Path) -> None:
    proc = popen(args, log)
    assert proc.wait(timeout=300) == 0, f"re-run failed (seed {SEED}):\n{log.read_text()[-3000:]}"


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp" in p.name or p.name.startswith(".") and p.is_dir()]


def check_stamps(root: Path) -> int:
    """Every stamp's outputs exist with the recorded sha256; returns how many stamps there were."""
    stamps = [p for name in STAMPS for p in root.rglob(name)]
    for stamp in stamps:
        outputs = json.loads(stamp.read_text())["outputs"]
        assert outputs, stamp
        for rel, digest in outputs.items():
            assert sha256_file(stamp.parent / rel) == digest, f"{stamp.parent / rel} != its stamp (seed {SEED})"
    return len(stamps)


# ------------------------------------------------------------------ python -m pipeline prune

WIDTHS = [784, 512, 512, 256, 10]  # big enough that writes take a while, small enough to prune in seconds


def trained_root(root: Path) -> Path:
    model = random_model(WIDTHS, seed=0)
    model = model.with_layers(model.layers, framework="torch", method="dense", sparsity=0.0, physical="dense")
    save(model, root / "train" / "torch" / "s0" / "model.npz")
    return root


def test_prune_killed_at_random_points_then_completed(tmp_path):
    rng = random.Random(SEED)
    reference, crashed = trained_root(tmp_path / "reference"), trained_root(tmp_path / "crashed")
    args = ["pipeline", "prune", "--framework", "torch", "--methods", "weight,unit"]
    start = time.monotonic()
    complete([*args, "--root", reference], tmp_path / "reference.log")
    duration = time.monotonic() - start

    log = tmp_path / "crashed.log"
    delays = sorted(rng.uniform(0.1, 0.9) * duration for _ in range(4))
    killed = [kill_after([*args, "--root", crashed], d, log) for d in delays]
    assert any(killed), f"no run was killed before it finished (delays {delays}, seed {SEED})"
    complete([*args, "--root", crashed], log)

    assert not temp_files(crashed), f"temp files left after the re-run: {temp_files(crashed)} (seed {SEED})"
    assert check_stamps(crashed) == 20
    want = {p.relative_to(reference): sha256_file(p) for p in reference.rglob("model.npz")}
    got = {p.relative_to(crashed): sha256_file(p) for p in crashed.rglob("model.npz")}
    assert got == want, f"killed + re-run differs from an uninterrupted run (delays {delays}, seed {SEED})"
    for path in crashed.rglob("model.npz"):
        load(path)


# ------------------------------------------------------------------ python -m export run

EXPORT_WIDTHS = [784, 128, 64, 10]
LEVELS = "0,50,90,99"


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    from helpers import real_test_slice
    return real_test_slice(200)


def test_export_run_killed_at_random_points_then_completed(tmp_path, images):
    from export import onnx_format
    from export.formats import ExportOptions
    from export.manifest import check_manifest, load_manifest
    from export.runtimes import open_session

    rng = random.Random(SEED + 1)
    source = tmp_path / "net.onnx"
    onnx_format.export_dense(random_model(EXPORT_WIDTHS, seed=2), source, ExportOptions())
    root = tmp_path / "artifacts"
    args = ["export", "run", "--root", root, "--model", source, "--methods", "weight,unit", "--levels", LEVELS,
            "--formats", "onnx,tflite,tflite-fp16", "--jobs", "1"]
    log = tmp_path / "export.log"
    records = lambda: sorted((root / "export").rglob("export.json")) if (root / "export").is_dir() else []

    killed = [kill_after(args, rng.uniform(0.5, 4.0), log)]  # during start-up, import or pruning
    for _ in range(2):  # in the middle of exporting: after a k-dir finished, a random moment later
        seen = len(records())
        killed.append(kill_when(args, lambda: len(records()) > seen, rng.uniform(0.0, 1.5), log))
    assert any(killed), f"no run was killed before it finished (seed {SEED})"
    complete(args, log)

    export_root = root / "export"
    assert not temp_files(root), f"temp files left after the re-run: {temp_files(root)} (seed {SEED})"
    assert check_stamps(export_root) == 2 * 8  # prune + export stamp in each of 8 k-dirs
    assert check_manifest(export_root) == [], f"manifest does not match the files (seed {SEED})"
    entries = load_manifest(export_root)["files"]
    assert len(entries) == 8 * 4  # npz, onnx, tflite, tflite-fp16 in each k-dir
    assert all(e["verify"]["status"] == "passed" for e in entries), [e for e in entries
                                                                     if e["verify"]["status"] != "passed"]
    for entry in entries:
        path = export_root / entry["path"]
        reference = load(path.parent / "model.npz")
        if entry["format"] == "npz":
            continue
        if entry["name"] == "onnx":  # the same bytes an uninterrupted export writes
            fresh = onnx_format.export_dense(reference, tmp_path / "fresh.onnx", ExportOptions())
            assert fresh.read_bytes() == path.read_bytes(), path
        logits = open_session(path, entry["runtime"])(images)
        atol = 1e-4 if entry["variant"] == "fp32" else 0.05 * float(np.abs(reference.forward(images)).max())
        np.testing.assert_allclose(logits, reference.forward(images), atol=atol, err_msg=str(path))
