"""Stage stamps: skip when unchanged, redo when inputs, config or outputs change."""
import numpy as np

from helpers import SMALL_WIDTHS, real_test_slice
from pipeline import model as m
from pipeline.prune import prune
from pipeline.shrink import shrink
from pipeline.stages import fresh, level_dir, mark, prune_stage


def test_fresh_and_mark(tmp_path):
    out = tmp_path / "a.bin"
    out.write_bytes(b"x")
    key = {"config": {"epochs": 3}}
    assert not fresh(tmp_path / ".stage.json", key)
    mark(tmp_path / ".stage.json", key, [out])
    assert fresh(tmp_path / ".stage.json", key)
    assert not fresh(tmp_path / ".stage.json", {"config": {"epochs": 4}})
    out.write_bytes(b"tampered")
    assert not fresh(tmp_path / ".stage.json", key)


def test_level_dir_names():
    assert level_dir("r", "torch", "unit", 0).as_posix() == "r/torch/unit/k00"
    assert level_dir("r", "tf", "weight", 95).as_posix() == "r/tf/weight/k95"
    assert level_dir("r", "tf", "weight", 12.5).as_posix() == "r/tf/weight/k12p50"


def test_prune_stage_writes_physical_models_and_skips_reruns(tmp_path):
    trained = m.save(m.random_model(SMALL_WIDTHS, seed=9, method="dense"), tmp_path / "trained.npz")
    paths = prune_stage(trained, framework="torch", levels=(0, 50, 90), out_root=tmp_path / "export")
    assert len(paths) == 6
    unit90 = m.load(tmp_path / "export/torch/unit/k90/model.npz")
    weight90 = m.load(tmp_path / "export/torch/weight/k90/model.npz")
    dense = m.load(tmp_path / "export/torch/weight/k00/model.npz")
    assert unit90.widths == [784, 6, 5, 3, 10] and unit90.meta["physical"] == "shrunk"
    assert all(l.is_sparse for l in weight90.layers[:-1]) and weight90.meta["physical"] == "csr"
    assert not any(l.is_sparse for l in dense.layers) and dense.meta["sparsity"] == 0
    x = real_test_slice(100)
    np.testing.assert_allclose(unit90.forward(x), prune(m.load(trained), "unit", 90).forward(x), atol=1e-5)
    mtimes = [p.stat().st_mtime_ns for p in paths]
    prune_stage(trained, framework="torch", levels=(0, 50, 90), out_root=tmp_path / "export")
    assert [p.stat().st_mtime_ns for p in paths] == mtimes
    paths[0].write_bytes(b"half-written")
    prune_stage(trained, framework="torch", levels=(0, 50, 90), out_root=tmp_path / "export")
    assert m.load(paths[0]).widths == SMALL_WIDTHS


def test_fine_tuned_methods_keep_their_pattern(tmp_path):
    from helpers import small_dataset
    from pipeline.stages import split_method
    trained = m.save(m.random_model([784, 32, 16, 10], seed=3, method="dense"), tmp_path / "t.npz")
    ds = small_dataset(n_train=300, n_val=100, n_test=100)
    paths = prune_stage(trained, framework="torch", methods=("weight", "weight-ft", "unit-ft"),
                        levels=(0, 80), out_root=tmp_path / "export", dataset=ds, ft_epochs=1)
    one_shot, tuned = m.load(paths[1]), m.load(paths[3])
    assert tuned.meta["method"] == "weight-ft" and tuned.meta["finetune"]["epochs"] == 1
    assert [l.nnz for l in tuned.layers] == [l.nnz for l in one_shot.layers]
    assert not np.array_equal(tuned.layers[0].dense_weight(), one_shot.layers[0].dense_weight())
    assert m.load(paths[5]).widths == [784, 6, 3, 10]  # unit-ft at 80% is shrunk like unit
    assert split_method("block-ft") == ("block", True)


def test_unknown_method_is_refused(tmp_path):
    import pytest
    from pipeline.errors import PrunedgeError
    trained = m.save(m.random_model([784, 8, 10], seed=3), tmp_path / "t.npz")
    with pytest.raises(PrunedgeError, match="method: unknown method 'bogus-ft'"):
        prune_stage(trained, framework="torch", methods=("bogus-ft",), out_root=tmp_path / "e")
