"""A backend's fused kernels give the same results as the portable Array API code they replace."""
from __future__ import annotations

import numpy as np
import pytest

import nnx


@pytest.fixture
def fused(backend):
    if not backend.kernels:
        pytest.skip(f"the {backend.name} backend has no fused kernels (portable code only)")
    return backend


def _arrays(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.parametrize("name", ["linear", "relu", "tanh", "sigmoid", "softmax", "gelu"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_bias_activation(fused, name, use_bias):
    xp = fused.xp
    z, b = _arrays((16, 8), 0), _arrays((8,), 1)
    act = nnx.activations.get(name)
    expected = act.forward(xp, nnx.asarray(z + b if use_bias else z))
    result = fused.kernels["bias_activation"](nnx.asarray(z), nnx.asarray(b) if use_bias else None, name)
    if result is None:
        assert name in ("gelu", "softmax"), f"{name} should have a fused kernel"
        return
    np.testing.assert_allclose(nnx.to_numpy(result), nnx.to_numpy(expected), rtol=2e-6, atol=2e-7)


@pytest.mark.parametrize("name", ["linear", "relu", "tanh", "sigmoid", "elu"])
def test_activation_backward(fused, name):
    xp = fused.xp
    act = nnx.activations.get(name)
    x = nnx.asarray(_arrays((16, 8), 2))
    y = act.forward(xp, x)
    dy = _arrays((16, 8), 3)
    expected = act.backward(xp, nnx.asarray(dy), x, y)
    result = fused.kernels["activation_backward"](name, nnx.asarray(dy.copy()), x, y)
    if result is None:
        assert name == "elu"
        return
    np.testing.assert_allclose(nnx.to_numpy(result), nnx.to_numpy(expected), rtol=2e-6, atol=2e-7)


@pytest.mark.parametrize("make", [
    lambda: nnx.optimizers.SGD(0.1), lambda: nnx.optimizers.SGD(0.1, momentum=0.9),
    lambda: nnx.optimizers.SGD(0.1, momentum=0.9, nesterov=True), lambda: nnx.optimizers.Adam(0.01),
    lambda: nnx.optimizers.RMSprop(0.01)], ids=["sgd", "momentum", "nesterov", "adam", "rmsprop"])
def test_optimizer_updates(fused, monkeypatch, make):
    grads = [_arrays((5, 3), s) for s in range(3)]

    def run():
        w = nnx.asarray(_arrays((5, 3), 9))
        opt = make()
        for g in grads:
            opt.apply([w], [nnx.asarray(g.copy())], fused)
        return nnx.to_numpy(w)

    with_kernels = run()
    monkeypatch.setattr(fused, "kernels", {})
    np.testing.assert_allclose(with_kernels, run(), rtol=1e-6, atol=1e-7)


def test_training_with_and_without_kernels(fused, monkeypatch):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 6)).astype("float32"), rng.integers(0, 4, size=64)

    def train():
        nnx.seed(1)
        model = nnx.Sequential([nnx.Input(6), nnx.Dense(16, activation="relu"), nnx.Dense(8, activation="tanh"),
                                nnx.Dense(4, activation="softmax")])
        model.compile(nnx.optimizers.SGD(0.1, momentum=0.9), "sparse_categorical_crossentropy", metrics=["accuracy"])
        history = model.fit(x, y, epochs=3, batch_size=16, verbose=0)
        return model.get_weights(), history.history["loss"]

    w_fused, loss_fused = train()
    monkeypatch.setattr(fused, "kernels", {})
    w_portable, loss_portable = train()
    np.testing.assert_allclose(loss_fused, loss_portable, rtol=1e-5)
    for a, b in zip(w_fused, w_portable):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
