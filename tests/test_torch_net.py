"""PyTorch conversion: same function as the numpy reference, lossless round trip."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers import real_test_slice
from pipeline.errors import PrunedgeError
from pipeline.model import ACTIVATIONS, LEAKY_RELU_ALPHA, random_model
from pipeline.prune import weight_prune
from pipeline.sparse import to_csr
from pipeline.torch_net import build, from_torch, to_torch

WIDTHS = [784, 24, 16, 10]
TOL = dict(rtol=1e-5, atol=1e-5)  # float32 matmuls in a different summation order


def torch_forward(net, x):
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_forward_matches_numpy_for_each_activation(activation):
    model = random_model(WIDTHS, seed=1, activations=[activation, activation, "identity"])
    x = real_test_slice(64)
    np.testing.assert_allclose(torch_forward(to_torch(model), x), model.forward(x), **TOL)


@pytest.mark.parametrize("seed", range(3))
def test_round_trip_is_exact(seed):
    acts = ["tanh", "leaky_relu", "sigmoid"]
    model = random_model([13, 9, 7, 4], seed=seed, activations=acts)
    back = from_torch(to_torch(model), {"framework": "torch"})
    assert back.meta == {"framework": "torch"}
    for a, b in zip(model.layers, back.layers):
        np.testing.assert_array_equal(a.weight, b.weight)
        np.testing.assert_array_equal(a.bias, b.bias)
        assert a.activation == b.activation


def test_csr_layers_run_dense_in_torch():
    model = to_csr(weight_prune(random_model(WIDTHS, seed=2), 90))
    assert model.layers[0].is_sparse
    x = real_test_slice(32)
    np.testing.assert_allclose(torch_forward(to_torch(model), x), model.forward(x), **TOL)


def test_linear_weight_is_out_by_in():
    net = to_torch(random_model([5, 3], seed=0))
    assert tuple(net[0].weight.shape) == (3, 5)


def test_from_torch_accepts_nested_sequential_without_bias():
    nn = torch.nn
    net = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(6, 4, bias=False), nn.ReLU()),
                        nn.Linear(4, 2), nn.Identity())
    model = from_torch(net)
    assert [l.activation for l in model.layers] == ["relu", "identity"]
    assert not model.layers[0].bias.any()
    x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    np.testing.assert_allclose(torch_forward(net, x), model.forward(x), **TOL)


@pytest.mark.parametrize("net, message", [
    (lambda nn: nn.Sequential(nn.Linear(4, 3), nn.GELU()), "unsupported layer GELU"),
    (lambda nn: nn.Sequential(nn.Linear(4, 3), nn.LeakyReLU(0.2)), "slope 0.2"),
    (lambda nn: nn.Sequential(nn.ReLU(), nn.Linear(4, 3)), "must directly follow a Linear"),
    (lambda nn: nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Tanh()), "must directly follow a Linear"),
    (lambda nn: nn.Linear(4, 3), "expected nn.Sequential"),
    (lambda nn: nn.Sequential(), "no Linear layers"),
])
def test_from_torch_rejects_what_it_cannot_describe(net, message):
    with pytest.raises(PrunedgeError, match=message):
        from_torch(net(torch.nn))


def test_build_rejects_unknown_activation():
    with pytest.raises(PrunedgeError, match="unknown activation 'gelu'"):
        build([4, 3], ["gelu"])


def test_leaky_relu_uses_project_slope():
    net = to_torch(random_model([4, 3, 2], seed=0, activations=["leaky_relu", "identity"]))
    assert net[1].negative_slope == LEAKY_RELU_ALPHA
