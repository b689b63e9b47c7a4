"""Stage stamps: skip when unchanged, redo when inputs, config or outputs change."""
import numpy as np

from helpers import SMALL_WIDTHS, real_test_slice
from pipeline import model as m
from pipeline import model_io as m_io
from pipeline.fileio import sha256_file
from pipeline.methods import prune
from pipeline.shrink import shrink
from pipeline.prune_stage import prune_stage
from pipeline.stages import fresh, level_dir, mark


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
    trained = m_io.save(m.random_model(SMALL_WIDTHS, seed=9, method="dense"), tmp_path / "trained.npz")
    paths = prune_stage(trained, framework="torch", levels=(0, 50, 90), out_root=tmp_path / "export")
    assert len(paths) == 6
    unit90 = m_io.load(tmp_path / "export/torch/unit/k90/model.npz")
    weight90 = m_io.load(tmp_path / "export/torch/weight/k90/model.npz")
    dense = m_io.load(tmp_path / "export/torch/weight/k00/model.npz")
    assert unit90.widths == [784, 6, 5, 3, 10] and unit90.meta["physical"] == "shrunk"
    assert all(l.is_sparse for l in weight90.layers[:-1]) and weight90.meta["physical"] == "csr"
    assert not any(l.is_sparse for l in dense.layers) and dense.meta["sparsity"] == 0
    x = real_test_slice(100)
    np.testing.assert_allclose(unit90.forward(x), prune(m_io.load(trained), "unit", 90).forward(x), atol=1e-5)
    mtimes = [p.stat().st_mtime_ns for p in paths]
    prune_stage(trained, framework="torch", levels=(0, 50, 90), out_root=tmp_path / "export")
    assert [p.stat().st_mtime_ns for p in paths] == mtimes
    paths[0].write_bytes(b"half-written")
    prune_stage(trained, framework="torch", levels=(0, 50, 90), out_root=tmp_path / "export")
    assert m_io.load(paths[0]).widths == SMALL_WIDTHS


def test_fine_tuned_methods_keep_their_pattern(tmp_path):
    from helpers import small_dataset
    trained = m_io.save(m.random_model([784, 32, 16, 10], seed=3, method="dense"), tmp_path / "t.npz")
    ds = small_dataset(n_train=300, n_val=100, n_test=100)
    paths = prune_stage(trained, framework="torch", methods=("weight", "weight-ft", "unit-ft"),
                        levels=(0, 80), out_root=tmp_path / "export", dataset=ds, ft_epochs=1)
    one_shot, tuned = m_io.load(paths[1]), m_io.load(paths[3])
    assert tuned.meta["method"] == "weight-ft" and tuned.meta["finetune"]["epochs"] == 1
    assert [l.nnz for l in tuned.layers] == [l.nnz for l in one_shot.layers]
    assert not np.array_equal(tuned.layers[0].dense_weight(), one_shot.layers[0].dense_weight())
    assert m_io.load(paths[5]).widths == [784, 6, 3, 10]  # unit-ft at 80% is shrunk like unit


def test_gradual_methods_chain_through_the_ladder(tmp_path):
    """A gradual level starts from the previous level's fine-tuned model: its pattern contains the
    previous level's, it differs from one-shot + fine-tune, and the levels below are filled in."""
    from helpers import small_dataset
    trained = m_io.save(m.random_model([784, 32, 16, 10], seed=3, method="dense"), tmp_path / "t.npz")
    ds = small_dataset(n_train=300, n_val=100, n_test=100)
    paths = prune_stage(trained, framework="torch", methods=("weight-gp", "weight-ft"), levels=(0, 95),
                        out_root=tmp_path / "export", dataset=ds, ft_epochs=1)
    gp = [p for p in paths if "weight-gp" in str(p)]
    assert [p.parent.name for p in gp] == ["k00", "k25", "k50", "k60", "k70", "k80", "k90", "k95"]
    assert len(paths) == len(gp) + 2  # -ft stays at the levels asked for
    k90, k95 = (m_io.load(p.parent / ".masked.npz") for p in gp[-2:])
    assert k95.meta["gradual_from"] == 90.0 and k95.meta["method"] == "weight-gp"
    for a, b in zip(k90.layers[:-1], k95.layers[:-1]):
        assert not np.any(b.weight[a.weight == 0]), "a weight pruned at 90% came back at 95%"
    assert [l.nnz for l in m_io.load(gp[-1]).layers] == [l.nnz for l in m_io.load(paths[-1]).layers]
    assert not np.array_equal(m_io.load(gp[-1]).layers[0].dense_weight(), m_io.load(paths[-1]).layers[0].dense_weight())
    mtimes = [p.stat().st_mtime_ns for p in gp]  # a re-run redoes nothing ...
    prune_stage(trained, framework="torch", methods=("weight-gp",), levels=(0, 95),
                out_root=tmp_path / "export", dataset=ds, ft_epochs=1)
    assert [p.stat().st_mtime_ns for p in gp] == mtimes
    masked90 = gp[-2].parent / ".masked.npz"
    good = masked90.read_bytes()
    masked90.write_bytes(b"x")  # a tampered level is redone, byte for byte, so 95% stays valid
    prune_stage(trained, framework="torch", methods=("weight-gp",), levels=(0, 95),
                out_root=tmp_path / "export", dataset=ds, ft_epochs=1)
    assert [p.stat().st_mtime_ns != t for p, t in zip(gp, mtimes)] == [False] * 6 + [True, False]
    assert masked90.read_bytes() == good
    stamp95 = gp[-1].parent / ".stage.json"
    stamp95.write_text(stamp95.read_text().replace(sha256_file(masked90), "0" * 64))
    prune_stage(trained, framework="torch", methods=("weight-gp",), levels=(0, 95),
                out_root=tmp_path / "export", dataset=ds, ft_epochs=1)
    assert gp[-1].stat().st_mtime_ns != mtimes[-1]  # a level whose start differs is redone


def test_unknown_method_is_refused(tmp_path):
    import pytest
    from pipeline.errors import PrunedgeError
    trained = m_io.save(m.random_model([784, 8, 10], seed=3), tmp_path / "t.npz")
    with pytest.raises(PrunedgeError, match="method: unknown method 'bogus-ft'"):
        prune_stage(trained, framework="torch", methods=("bogus-ft",), out_root=tmp_path / "e")
    with pytest.raises(PrunedgeError, match="lowrank cannot be applied gradually"):
        prune_stage(trained, framework="torch", methods=("lowrank-gp",), out_root=tmp_path / "e")
