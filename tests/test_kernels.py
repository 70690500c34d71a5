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


@pytest.mark.parametrize("label_shape", ["flat", "column"])
def test_sparse_crossentropy(fused, label_shape):
    """The one-pass loss-and-gradient kernel against the portable forward and fused_backward,
    with probabilities at the clip limits (0 and 1) among the picked ones."""
    xp = fused.xp
    p = np.random.default_rng(4).dirichlet(np.ones(5), size=12).astype("float32")
    labels = np.random.default_rng(5).integers(0, 5, size=12)
    p[0] = 0.0
    p[0, 1] = 1.0
    labels[0], labels[1] = 3, int(np.argmax(p[1]))  # a zero and a large picked probability
    y = labels if label_shape == "flat" else labels[:, None]
    loss = nnx.losses.SparseCategoricalCrossentropy()
    pd, yd = nnx.asarray(p), nnx.asarray(y)
    expected = loss.forward(xp, yd, pd), loss.fused_backward(xp, yd, pd, 0.1)
    result = loss.fused_value_and_gradient(fused, yd, pd, 0.1)
    assert fused.kernels.get("sparse_crossentropy") is not None
    np.testing.assert_allclose(float(result[0]), float(expected[0]), rtol=1e-6)
    np.testing.assert_allclose(nnx.to_numpy(result[1]), nnx.to_numpy(expected[1]), rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(nnx.to_numpy(pd), p)  # the predictions are left as they were
    # hand check of one row: -log(p[label]) / n, and (p - onehot) * 0.1 / n
    assert float(result[0]) * 12 == pytest.approx(-np.log(np.clip(p[np.arange(12), labels], 1e-7, 1 - 1e-7)).sum(), rel=1e-5)


def test_sum_rows(fused):
    a = _arrays((64, 7), 6)
    expected = nnx.to_numpy(fused.xp.sum(nnx.asarray(a), axis=0))
    np.testing.assert_allclose(nnx.to_numpy(fused.kernels["sum_rows"](nnx.asarray(a))), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(expected, a.astype(np.float64).sum(axis=0), rtol=1e-5, atol=1e-5)
