"""Block-sparse TFLite export: stays sparse (no DENSIFY), matches the numpy reference in LiteRT."""
import numpy as np
import pytest

from helpers import real_test_slice
from pipeline.errors import PrunedgeError
from pipeline.model import random_model
from pipeline.prune import prune

tb = pytest.importorskip("export.tflite_block")
WIDTHS = [784, 128, 64, 10]


def test_fp32_block_sparse_file_is_sparse_and_exact(tmp_path):
    p = prune(random_model(WIDTHS, seed=0), "block", 90)
    path, report = tb.export_with_report(p, tmp_path / "m.tflite")
    assert path.is_file() and "DENSIFY" not in report["ops"]
    assert report["fc_sparse"] == [True, True, False]  # hidden layers sparse, output layer dense
    x = real_test_slice(64)
    for delegate in tb.DELEGATES:
        np.testing.assert_allclose(tb.run(path.read_bytes(), x, delegate=delegate), p.forward(x), rtol=0, atol=1e-4)


def test_int8_block16_verified_without_default_delegates(tmp_path):
    p = prune(random_model(WIDTHS, seed=1), "block16", 90)
    _, report = tb.export_with_report(p, tmp_path / "m.tflite", tb.SparseTfliteOptions(quantize="dynamic"))
    assert report["runs_sparse"] and report["verify"]["none"]["status"] == "passed"
    assert report["delegate"] == "none" or report["verify"]["xnnpack"]["status"] == "passed"


def test_unstructured_sparsity_is_refused(tmp_path):
    p = prune(random_model(WIDTHS, seed=2), "weight", 90)
    with pytest.raises(PrunedgeError, match="DENSIFY"):
        tb.export(p, tmp_path / "m.tflite")
    assert not (tmp_path / "m.tflite").exists()


def test_bad_quantize_option():
    with pytest.raises(PrunedgeError, match="quantize"):
        tb.check_options(tb.SparseTfliteOptions(quantize="int4"))
