"""Every backward pass against central finite differences, in float64, on every backend."""
from __future__ import annotations

import numpy as np
import pytest

import nnx
from helpers import numeric_grad, on_device

ACTIVATIONS = ["linear", "relu", "leaky_relu", "sigmoid", "tanh", "softmax", "elu", "selu", "gelu", "softplus", "silu"]


def _points(shape, seed=1):
    x = np.random.default_rng(seed).normal(0.0, 1.5, size=shape)
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the kinks of relu-like functions
    return x


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_gradient(backend64, name):
    xp = backend64.xp
    act = nnx.activations.get(name)
    x = _points((4, 5))
    r = np.random.default_rng(2).normal(size=(4, 5))  # loss = sum(act(x) * r), so dL/dy = r

    def loss(xh):
        return float(np.sum(nnx.to_numpy(act.forward(xp, on_device(xh))) * r))

    xd = on_device(x)
    y = act.forward(xp, xd)
    saved = {"y": y, "x": xd, None: None}[act.saves]  # exactly what the activation declares
    dx = nnx.to_numpy(act.backward(xp, on_device(r.copy()), saved))
    expected = numeric_grad(loss, x.copy())
    np.testing.assert_allclose(dx, expected, rtol=1e-6, atol=1e-8)
    # the backend's path (a kernel where it has one) from what its own forward saved
    _, saved = backend64.ops.activation(act, xd)
    dx = nnx.to_numpy(backend64.ops.activation_backward(act, on_device(r.copy()), saved))
    np.testing.assert_allclose(dx, expected, rtol=1e-6, atol=1e-8)


def _loss_case(name):
    rng = np.random.default_rng(3)
    if name in ("binary_crossentropy",):
        return rng.integers(0, 2, size=(6, 3)).astype(float), rng.uniform(0.05, 0.95, size=(6, 3))
    if name == "categorical_crossentropy":
        y = np.eye(4)[rng.integers(0, 4, size=6)]
        return y, rng.uniform(0.05, 0.95, size=(6, 4))
    if name == "sparse_categorical_crossentropy":
        return rng.integers(0, 4, size=6), rng.uniform(0.05, 0.95, size=(6, 4))
    y = rng.normal(size=(6, 3))
    p = y + rng.choice([-1, 1], size=(6, 3)) * rng.uniform(0.1, 2.5, size=(6, 3))
    if name == "huber":  # stay clear of the switch at |r| = delta
        p[np.abs(np.abs(p - y) - 1.0) < 0.05] += 0.2
    return y, p


LOSSES = ["mse", "mae", "huber", "binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy"]


@pytest.mark.parametrize("name,from_logits", [(name, False) for name in LOSSES]
                         + [(name, True) for name in LOSSES if "crossentropy" in name])
def test_loss_gradient(backend64, name, from_logits):
    xp = backend64.xp
    loss = nnx.losses.get(name)
    if from_logits:
        loss = type(loss)(from_logits=True)
    y, p = _loss_case(name)
    if from_logits:
        p = np.log(p / (1 - p))
    yd = on_device(y)

    def value(ph):
        return float(loss.forward(xp, yd, on_device(ph)))

    g = nnx.to_numpy(loss.backward(xp, yd, on_device(p)))
    np.testing.assert_allclose(g, numeric_grad(value, p.copy()), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name,activation", [
    ("categorical_crossentropy", "softmax"), ("sparse_categorical_crossentropy", "softmax"),
    ("binary_crossentropy", "sigmoid"),
])
def test_fused_output_gradient(backend64, name, activation):
    """(p - y) / n is the exact gradient of loss(activation(z)) with respect to the logits z."""
    xp = backend64.xp
    loss, act = nnx.losses.get(name), nnx.activations.get(activation)
    y, _ = _loss_case(name)
    z = np.random.default_rng(4).normal(size=(6, 4 if "categorical" in name else 3))
    yd = on_device(y)

    def value(zh):
        return float(loss.forward(xp, yd, act.forward(xp, on_device(zh))))

    assert loss.fuses_with(act)
    p = act.forward(xp, on_device(z))
    value_fused, g = loss.logits_value_and_gradient(backend64.ops, yd, p)
    np.testing.assert_allclose(float(value_fused), value(z), rtol=1e-12)
    np.testing.assert_allclose(nnx.to_numpy(g), numeric_grad(value, z.copy()), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("activation", ["linear", "tanh", "relu"])
def test_dense_gradient(backend64, activation):
    xp = backend64.xp
    layer = nnx.Dense(3, activation=activation, kernel_regularizer=nnx.regularizers.L2(0.0))
    x = _points((5, 4))
    layer.build((4,))
    layer.set_weights([np.random.default_rng(5).normal(size=(4, 3)), np.random.default_rng(6).normal(size=3)])
    r = np.random.default_rng(7).normal(size=(5, 3))
    kernel, bias = layer.get_weights()

    def loss_of(x_, k_, b_):
        probe = nnx.Dense(3, activation=activation)
        probe.build((4,))
        probe.set_weights([k_, b_])
        return float(np.sum(nnx.to_numpy(probe(on_device(x_))) * r))

    _, saved = layer.forward(on_device(x), training=True)
    dy = on_device(r.copy())
    dx, grads = layer.backward(saved, dy)
    np.testing.assert_array_equal(nnx.to_numpy(dy), r)  # dy is read-only
    dx = nnx.to_numpy(dx)
    d_kernel, d_bias = nnx.to_numpy(grads[layer.kernel]), nnx.to_numpy(grads[layer.bias])
    np.testing.assert_allclose(dx, numeric_grad(lambda v: loss_of(v, kernel, bias), x.copy()), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(d_kernel, numeric_grad(lambda v: loss_of(x, v, bias), kernel.copy()), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(d_bias, numeric_grad(lambda v: loss_of(x, kernel, v), bias.copy()), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("loss,last", [("sparse_categorical_crossentropy", "softmax"), ("mse", "linear"),
                                       ("binary_crossentropy", "sigmoid")])
def test_three_layer_model_gradient(backend64, loss, last):
    """Every weight gradient of a 3-layer model (fused output where it applies) vs finite differences."""
    units = 3 if loss != "binary_crossentropy" else 1
    model = nnx.Sequential([nnx.Input((4,)), nnx.Dense(5, activation="tanh"), nnx.Dense(4, activation="gelu"),
                            nnx.Dense(units, activation=last, kernel_regularizer=nnx.regularizers.L2(0.01))])
    model.compile(optimizer="sgd", loss=loss)
    rng = np.random.default_rng(8)
    x = rng.normal(size=(6, 4))
    y = rng.integers(0, units, size=6) if loss.startswith("sparse") else rng.normal(size=(6, units))
    if loss == "binary_crossentropy":
        y = rng.integers(0, 2, size=(6, 1)).astype(float)
    xd, yd = on_device(x), on_device(y)
    grads = model.compute_gradients(xd, yd).grads
    records = model.weights
    assert set(grads) == set(records)
    weights = model.get_weights()

    for i, w in enumerate(weights):
        def value(v, i=i):
            trial = [*weights[:i], v, *weights[i + 1:]]
            model.set_weights(trial)
            loss_value = float(model.compute_gradients(xd, yd).loss)
            return loss_value

        expected = numeric_grad(value, w.copy())
        model.set_weights(weights)
        np.testing.assert_allclose(nnx.to_numpy(grads[records[i]]), expected, rtol=1e-5, atol=1e-8)


def test_dense_on_sequences_and_flatten_gradient(backend64):
    """Dense on (batch, steps, features) acts on the last axis; Flatten reshapes; gradients match."""
    model = nnx.Sequential([nnx.Input((3, 4)), nnx.Dense(5, activation="tanh"), nnx.Flatten(),
                            nnx.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    assert model.layers[0].output_shape == (3, 5) and model.layers[1].output_shape == (15,)
    rng = np.random.default_rng(9)
    xd, yd = on_device(rng.normal(size=(6, 3, 4))), on_device(np.eye(2)[rng.integers(0, 2, size=6)])
    grads = model.compute_gradients(xd, yd).grads
    records = model.weights
    weights = model.get_weights()
    for i, w in enumerate(weights):
        def value(v, i=i):
            model.set_weights([*weights[:i], v, *weights[i + 1:]])
            return float(model.compute_gradients(xd, yd).loss)

        expected = numeric_grad(value, w.copy())
        model.set_weights(weights)
        np.testing.assert_allclose(nnx.to_numpy(grads[records[i]]), expected, rtol=1e-5, atol=1e-8)
