"""Every row of the runtime table runs every file kind of its formats like the numpy reference.

Generated from export/runtimes.py x export/formats.py, so a new runtime or file kind is checked
without a new test. float32 files within checks.FP32 (1e-4; kernels only reorder sums, ~1e-6 here),
reduced-precision ones by top-1 agreement on these random-weight models (near-ties: >= 0.8).
"""
import numpy as np
import pytest

from export import formats as F
from export.runtimes import RUNTIMES, open_session, runs
from helpers import SMALL_WIDTHS, real_test_slice
from pipeline.checks import FP32, Tolerance, compare
from pipeline.methods import physical, prune
from pipeline.model import random_model
from pipeline.model_io import save
from pipeline.nets import Block, CnnSpec, cnn

SPEC = CnnSpec(stem=8, blocks=(Block(expand=16, out=8), Block(expand=16, out=16, stride=2)), head=16)
RANDOM_REDUCED = Tolerance(min_top1=0.8)  # untrained nets: near-tied logits; a broken kernel agrees ~0.1


def _models():
    mlp = random_model(SMALL_WIDTHS, seed=2).with_layers(random_model(SMALL_WIDTHS, seed=2).layers,
                                                         method="weight", sparsity=0.0)
    from pipeline.fold import fold_batchnorm
    net = fold_batchnorm(cnn(0, SPEC))
    net = net.with_layers(net.layers, method="weight", sparsity=0.0)
    return {"mlp": mlp, "mlp-csr": physical(prune(mlp, "weight", 90)), "cnn": net,
            "cnn-unit": physical(prune(net, "unit", 50))}


CASES = [(kind, fmt.name, rt.name) for kind, m in _models().items() for fmt in [F.REFERENCE, *F.for_model(m)]
         for rt in RUNTIMES.values() if runs(rt, fmt=fmt.format, method="weight" if "csr" in kind else "unit")
         and rt.name != "keras"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    x = real_test_slice(64)
    out, made = tmp_path_factory.mktemp("runtimes"), {}
    for kind, model in _models().items():
        kdir = out / kind
        made[kind, "npz"] = save(model, kdir / "model.npz")
        for fmt in F.for_model(model):
            made[kind, fmt.name] = fmt.export(model, kdir / fmt.suffix, F.ExportOptions(calibration=x[:32]))
    return made


def test_every_runtime_runs_some_file_kind():
    ran = {rt for _, _, rt in CASES}
    assert set(RUNTIMES) - {"keras"} <= ran, set(RUNTIMES) - ran


@pytest.mark.parametrize("kind,fmt,runtime", CASES)
def test_runtime_matches_the_reference(kind, fmt, runtime, files):
    x = real_test_slice(64)
    model = _models()[kind]
    session = open_session(files[kind, fmt], runtime, threads=1)
    row = F.REFERENCE if fmt == "npz" else F.FORMATS[fmt]
    for batch in (1, 64):  # sessions resize between batch sizes
        got = np.concatenate([session(x[i:i + batch]) for i in range(0, 64, batch)])
        record = compare(model.forward(x), got, FP32 if row.check == "fp32" else RANDOM_REDUCED)
        assert record["status"] == "passed", (runtime, fmt, record)


@pytest.mark.slow
def test_keras_runtime_matches_the_reference(files):
    x = real_test_slice(16)
    for kind in ("mlp", "cnn"):
        got = open_session(files[kind, "npz"], "keras", threads=1)(x)
        assert compare(_models()[kind].forward(x), got, FP32)["status"] == "passed"
