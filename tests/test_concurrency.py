"""Runs writing into one root at the same time lose nothing: every entry is in the manifest after.

Four `export run`s (one method each) start together into one root, three rounds; each round's
manifest must list every file of every run, and match the bytes on disk. Without the lock around
the manifest's read-modify-write, the last writer dropped the others' entries and all exited 0.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from export import onnx_format
from export.formats import ExportOptions
from export.manifest import check_manifest, load_manifest
from helpers import REPO, real_test_slice
from pipeline.model import random_model

METHODS = ("weight", "unit", "block", "balanced")
ROUNDS = 3


@pytest.mark.slow
def test_concurrent_exports_keep_every_manifest_entry(tmp_path):
    np.savez(tmp_path / "data.npz", x=real_test_slice(300), y=(np.arange(300) % 10).astype(np.int64))
    model = onnx_format.export_dense(random_model([784, 32, 16, 10], seed=1), tmp_path / "net.onnx", ExportOptions())
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    for round_ in range(ROUNDS):
        root = tmp_path / f"root{round_}"
        procs = [subprocess.Popen([sys.executable, "-m", "export", "run", "--model", str(model), "--data",
                                   str(tmp_path / "data.npz"), "--methods", method, "--levels", "0,50,90",
                                   "--formats", "onnx", "--jobs", "1", "--root", str(root)],
                                  cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for method in METHODS]
        for proc in procs:
            assert proc.wait(timeout=600) == 0, proc.stderr.read()[-2000:]
        files = {e["path"] for e in load_manifest(root / "export")["files"]}
        want = {f"net/{m}/k{k}/{name}" for m in METHODS for k in ("00", "50", "90")
                for name in ("model.npz", "model.onnx")}
        assert want <= files, f"round {round_}: lost {sorted(want - files)[:5]}"
        assert check_manifest(root / "export") == []


@pytest.mark.slow
def test_concurrent_bench_appends_keep_every_row(tmp_path):
    """Four `bench run --append`s (one method each) into one results file at once, three rounds:
    every method's rows are there after each round (the merge holds the results file's lock)."""
    np.savez(tmp_path / "data.npz", x=real_test_slice(300), y=(np.arange(300) % 10).astype(np.int64))
    model = onnx_format.export_dense(random_model([784, 32, 16, 10], seed=2), tmp_path / "net.onnx", ExportOptions())
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    root = tmp_path / "root"
    subprocess.run([sys.executable, "-m", "export", "run", "--model", str(model), "--data", str(tmp_path / "data.npz"),
                    "--methods", ",".join(METHODS), "--levels", "0,50", "--formats", "onnx", "--jobs", "1",
                    "--root", str(root)], cwd=REPO, env=env, check=True, capture_output=True)
    for round_ in range(ROUNDS):
        out = tmp_path / f"bench{round_}"
        procs = [subprocess.Popen([sys.executable, "-m", "bench", "run", "--root", str(root / "export"), "--out",
                                   str(out), "--methods", method, "--runtimes", "numpy", "--threads", "1",
                                   "--batch", "1", "--quick", "--levels", "0,50", "--append", "--no-progress"],
                                  cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for method in METHODS]
        for proc in procs:
            assert proc.wait(timeout=600) == 0, proc.stderr.read()[-2000:]
        import json
        rows = json.loads((out / "results.json").read_text())["rows"]
        assert {r["method"] for r in rows} == set(METHODS), f"round {round_}: lost rows"
        assert {(r["method"], float(r["sparsity"])) for r in rows} >= {(m, k) for m in METHODS for k in (0.0, 50.0)}
