"""Per-layer format choice: fastest correct candidate, applied without changing outputs."""
import numpy as np
import pytest
import scipy.sparse as sp

from helpers import SMALL_WIDTHS, real_test_slice
from pipeline.autoformat import Timing, apply, autoformat, candidates, choose
from pipeline.errors import PrunedgeError
from pipeline.model import random_model
from pipeline.methods import prune


def T(layer, fmt, us, status="ok"):
    return Timing(layer=layer, format=fmt, p50_us=us, status=status)


def test_choose_fastest_correct_and_ties_prefer_dense():
    timings = [T(0, "dense", 10), T(0, "csr", 5),
               T(1, "dense", 3), T(1, "csr", 1, status="wrong"),  # wrong output never wins
               T(2, "dense", 4), T(2, "csr", 4)]  # tie -> dense
    assert choose(timings, 3, candidates("numpy")) == ["csr", "dense", "dense"]


def test_int8_only_when_allowed():
    timings = [T(0, "dense", 10), T(0, "block", 6), T(0, "int8", 2), T(0, "int8-block", 1)]
    assert choose(timings, 1, candidates("litert")) == ["block"]
    assert choose(timings, 1, candidates("litert", allow_int8=True)) == ["int8-block"]


def test_layer_without_correct_candidate_is_an_error():
    with pytest.raises(PrunedgeError, match="layer 1"):
        choose([T(0, "dense", 1), T(1, "dense", 1, status="failed")], 2, candidates("numpy"))
    with pytest.raises(PrunedgeError, match="runtime"):
        candidates("tvm")


def test_apply_numpy_mix_keeps_outputs():
    m = prune(random_model(SMALL_WIDTHS, seed=0), "weight", 90)
    out = autoformat(m, "numpy", [T(i, f, 1.0 if f == "csr" and i % 2 == 0 else 2.0)
                                  for i in range(len(m.layers)) for f in ("dense", "csr")])
    assert out.meta["layer_formats"] == ["csr", "dense", "csr", "dense"]
    assert [sp.issparse(l.weight) for l in out.layers] == [True, False, True, False]
    assert out.meta["layer_p50_us"] == [1.0, 2.0, 1.0, 2.0] and out.meta["physical"] == "mixed"
    x = real_test_slice(100)
    np.testing.assert_allclose(out.forward(x), m.forward(x), rtol=0, atol=1e-5)


def test_apply_rejects_foreign_format():
    m = random_model(SMALL_WIDTHS)
    with pytest.raises(PrunedgeError, match="not a numpy format"):
        apply(m, "numpy", ["int8"] * len(m.layers))
    with pytest.raises(PrunedgeError, match="formats for"):
        apply(m, "numpy", ["dense"])


def test_measure_numpy_end_to_end():
    from export.layer_timing import measure
    m = prune(random_model(SMALL_WIDTHS, seed=1), "block", 95)
    timings = measure(m, "numpy", real_test_slice(32), rounds=1, slice_s=0.002)
    assert {(t.layer, t.format) for t in timings} == {(i, f) for i in range(4) for f in ("dense", "csr")}
    assert all(t.status == "ok" and t.p50_us > 0 for t in timings)
    out = autoformat(m, "numpy", timings)
    assert len(out.meta["layer_formats"]) == 4


def test_measure_litert_marks_unstructured_unavailable():
    pytest.importorskip("ai_edge_litert")
    from export.layer_timing import measure
    m = prune(random_model([784, 64, 10], seed=2), "weight", 90)  # random sparsity: DENSIFY
    timings = measure(m, "litert", real_test_slice(16), rounds=1, slice_s=0.002)
    by = {(t.layer, t.format): t for t in timings}
    assert by[(0, "block")].status == "unavailable" and "DENSIFY" in by[(0, "block")].reason
    assert by[(0, "dense")].status == "ok"
    assert autoformat(m, "litert", timings).meta["layer_formats"] == ["dense", "dense"]
