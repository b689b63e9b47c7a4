"""Keras conversion: same function as the numpy reference and as torch, lossless round trip."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from helpers import real_test_slice
from pipeline.errors import PrunedgeError
from pipeline.keras_net import build, from_keras, to_keras
from pipeline.model import ACTIVATIONS, random_model
from pipeline.prune import unit_prune
from pipeline.shrink import shrink
from pipeline.torch_net import to_torch

WIDTHS = [784, 24, 16, 10]
TOL = dict(rtol=1e-5, atol=1e-5)  # float32 matmuls in a different summation order


def keras_forward(net, x):
    return np.asarray(net(x, training=False))


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_forward_matches_numpy_and_torch_for_each_activation(activation):
    model = random_model(WIDTHS, seed=1, activations=[activation, activation, "identity"])
    x = real_test_slice(64)
    ours = keras_forward(to_keras(model), x)
    np.testing.assert_allclose(ours, model.forward(x), **TOL)
    with torch.no_grad():
        np.testing.assert_allclose(ours, to_torch(model)(torch.from_numpy(x)).numpy(), **TOL)


@pytest.mark.parametrize("seed", range(3))
def test_round_trip_is_exact(seed):
    model = random_model([13, 9, 7, 4], seed=seed, activations=["tanh", "leaky_relu", "sigmoid"])
    back = from_keras(to_keras(model), {"framework": "tf"})
    assert back.meta == {"framework": "tf"}
    for a, b in zip(model.layers, back.layers):
        np.testing.assert_array_equal(a.weight, b.weight)
        np.testing.assert_array_equal(a.bias, b.bias)
        assert a.activation == b.activation


def test_shrunk_model_converts():
    model = shrink(unit_prune(random_model(WIDTHS, seed=3), 50))
    assert model.widths == [784, 12, 8, 10]
    x = real_test_slice(32)
    np.testing.assert_allclose(keras_forward(to_keras(model), x), model.forward(x), **TOL)


def test_from_keras_accepts_activation_layers_and_no_bias():
    net = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, use_bias=False),
                            keras.layers.ReLU(), keras.layers.Dense(3), keras.layers.Activation("tanh"),
                            keras.layers.Dropout(0.5), keras.layers.Dense(2)])
    model = from_keras(net)
    assert [l.activation for l in model.layers] == ["relu", "tanh", "identity"]
    x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    np.testing.assert_allclose(keras_forward(net, x), model.forward(x), **TOL)


@pytest.mark.parametrize("layers, message", [
    (lambda L: [L.Dense(3, activation="gelu")], "unsupported activation 'gelu'"),
    (lambda L: [L.Dense(3), L.LeakyReLU(negative_slope=0.2)], "slope 0.2"),
    (lambda L: [L.Dense(3, activation="relu"), L.Activation("tanh")], "must follow a linear Dense"),
    (lambda L: [L.Dense(3), L.BatchNormalization()], "unsupported layer BatchNormalization"),
])
def test_from_keras_rejects_what_it_cannot_describe(layers, message):
    net = keras.Sequential([keras.Input((4,)), *layers(keras.layers)])
    with pytest.raises(PrunedgeError, match=message):
        from_keras(net)


def test_build_rejects_unknown_activation():
    with pytest.raises(PrunedgeError, match="unknown activation 'gelu'"):
        build([4, 3], ["gelu"])
