"""Finite differences and small model builders shared by the tests."""
from __future__ import annotations

from typing import Callable

import numpy as np

import nnx


def numeric_grad(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of a scalar function of a float64 host array."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        up = f(x)
        flat[i] = old - h
        down = f(x)
        flat[i] = old
        gflat[i] = (up - down) / (2 * h)
    return g


def on_device(a: np.ndarray, dtype: str | None = None):
    return nnx.asarray(a, dtype=dtype or str(a.dtype))


def weights_snapshot(model) -> list[np.ndarray]:
    return [w.copy() for w in model.get_weights()]


def assert_weights_equal(model, snapshot) -> None:
    after = model.get_weights()
    assert len(after) == len(snapshot)
    for a, b in zip(after, snapshot):
        np.testing.assert_array_equal(a, b)


def check_weight_gradients(model, x, y, training: bool = False, atol: float = 1e-7) -> None:
    """Every trainable weight's gradient from ``model.compute_gradients`` against central
    differences (float64) of the loss plus the weight penalties, the forward run with
    ``training`` (True for batch statistics: the training forward changes no state)."""
    b = nnx.get_backend()
    xd, yd = nnx.asarray(x), nnx.asarray(y)
    step = model.compute_gradients(xd, yd)
    assert model.trainable_weights
    for w in model.trainable_weights:
        host = w.numpy()

        def loss(values, w=w):
            w.value = b.from_host(values)
            p = model.forward(xd, training=training)[0]
            return float(model.loss.forward(b.xp, yd, p)) + float(model.regularization_loss())

        expected = numeric_grad(loss, host.copy())
        w.value = b.from_host(host)
        np.testing.assert_allclose(nnx.to_numpy(step.grads[w]), expected, rtol=1e-5, atol=atol, err_msg=w.path)
