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
