"""ReLU, LeakyReLU, Softmax and Reshape layers: values by hand, gradients by finite differences."""
from __future__ import annotations

import numpy as np
import pytest

import nnx
from nnx.layers import LeakyReLU, ReLU, Reshape, Softmax

from helpers import check_weight_gradients


def _fd_check(model, x, y):
    check_weight_gradients(model, x, y, training=False, atol=1e-7)


@pytest.mark.parametrize("layer", [ReLU, lambda: LeakyReLU(0.2), Softmax, lambda: Softmax(axis=1)],
                         ids=["relu", "leaky", "softmax", "softmax-axis1"])
def test_activation_layers_first_and_middle_gradients(backend64, layer):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4))
    y = rng.normal(size=(6, 2))
    for model in (nnx.Sequential([nnx.Input(4), nnx.Dense(5), layer(), nnx.Dense(2)]),
                  nnx.Sequential([nnx.Input(4), layer(), nnx.Dense(2)])):
        model.compile("sgd", "mse")
        _fd_check(model, x, y)


def test_reshape_gradient_and_values(backend64):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 12))
    model = nnx.Sequential([nnx.Input(12), Reshape((3, -1)), nnx.Dense(2), nnx.Flatten(), nnx.Dense(1)])
    model.compile("sgd", "mse")
    assert model.layers[0].output_shape == (3, 4)
    _fd_check(model, x, rng.normal(size=(5, 1)))
    first = nnx.Sequential([nnx.Input(12), Reshape((3, 4))])
    np.testing.assert_array_equal(nnx.to_numpy(first.predict(x)), x.reshape(5, 3, 4))


def test_values_by_hand(backend):
    x = np.array([[-2.0, -0.5, 0.0, 3.0]], dtype="float32")
    relu = nnx.Sequential([nnx.Input(4), ReLU()]).predict(x)
    leaky = nnx.Sequential([nnx.Input(4), LeakyReLU()]).predict(x)  # Keras's default slope 0.3
    soft = nnx.Sequential([nnx.Input(4), Softmax()]).predict(x)
    np.testing.assert_allclose(nnx.to_numpy(relu), [[0, 0, 0, 3]])
    np.testing.assert_allclose(nnx.to_numpy(leaky), [[-0.6, -0.15, 0, 3]], rtol=1e-6)
    e = np.exp(x - x.max())
    np.testing.assert_allclose(nnx.to_numpy(soft), e / e.sum(), rtol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="target_shape"):
        Reshape((2, -1, -1))
    with pytest.raises(ValueError, match="Cannot reshape"):
        nnx.Sequential([nnx.Input(10), Reshape((3, 4))])
    with pytest.raises(ValueError, match="negative_slope"):
        LeakyReLU(-1)
    with pytest.raises(ValueError, match="batch axis"):
        Softmax(axis=0)


def test_config_roundtrip(backend):
    model = nnx.Sequential([nnx.Input(12), Reshape((3, 4)), LeakyReLU(0.1), Softmax(axis=1), nnx.Flatten(), ReLU()])
    clone = nnx.Sequential.from_config(model.get_config())
    assert [type(l) for l in clone.layers] == [type(l) for l in model.layers]
    assert clone.layers[1].negative_slope == 0.1 and clone.layers[2].axis == 1


def test_reshape_and_flatten_in_the_middle_gradients(backend64):
    """Reshape and Flatten below a layer with weights: their backward must restore the input shape."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 12))
    model = nnx.Sequential([nnx.Input(12), nnx.Dense(12, activation="tanh"), Reshape((3, 4)), nnx.Dense(2),
                            nnx.Flatten(), nnx.Dense(1)])
    model.compile("sgd", "mse")
    _fd_check(model, x, rng.normal(size=(5, 1)))


def test_softmax_over_a_middle_axis_gradients(backend64):
    """Softmax(axis=1) on (batch, 3, 4) samples normalises over the 3, not the last axis."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4, 3, 4))
    model = nnx.Sequential([nnx.Input((3, 4)), nnx.Dense(4), Softmax(axis=1), nnx.Flatten(), nnx.Dense(2)])
    model.compile("sgd", "mse")
    _fd_check(model, x, rng.normal(size=(4, 2)))
    p = nnx.to_numpy(nnx.Sequential([nnx.Input((3, 4)), Softmax(axis=1)]).predict(x))
    np.testing.assert_allclose(p.sum(axis=1), np.ones((4, 4)), rtol=1e-6)
