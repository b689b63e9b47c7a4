"""The same sweep on a Dask LocalCluster (two worker processes) writes byte-identical files.

Workers get model bytes and return file bytes; this process writes them. The manifest, export.json
and the export stamp (which hashes export.json) differ only in timings, so every other file under
the export root (models, exported files, prune stamps) is compared byte for byte.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import REPO, real_test_slice
from pipeline.model import random_model
from export import onnx_format
from export.formats import ExportOptions

TIMED = {"manifest.json", "export.json", ".export.stage.json"}


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()
            and p.name not in TIMED}


def _run(root, model, data, *extra):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-m", "export", "run", "--model", str(model), "--data", str(data),
                           "--methods", "unit,block-ft", "--levels", "0,90",
                           "--formats", "onnx,ncnn", "--root", str(root), *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "export"


@pytest.mark.slow
def test_local_cluster_writes_the_same_bytes_as_local_processes(tmp_path):
    distributed = pytest.importorskip("distributed")
    x = real_test_slice(600)
    y = (np.arange(600) % 10).astype(np.int64)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    model = onnx_format.export_dense(random_model([784, 48, 24, 10], seed=5), tmp_path / "net.onnx", ExportOptions())
    local = _run(tmp_path / "local", model, tmp_path / "data.npz", "--jobs", "2")
    os.environ["PYTHONPATH"] = str(REPO)  # the workers import the project like the driver does
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl:
        remote = _run(tmp_path / "remote", model, tmp_path / "data.npz", "--cluster", cl.scheduler_address)
        workers_saw = cl.scheduler.tasks  # the tasks ran there, not in the driver
    a, b = _files(local), _files(remote)
    assert a.keys() == b.keys() and len(a) > 10
    assert [k for k in a if a[k] != b[k]] == []
    assert workers_saw is not None
