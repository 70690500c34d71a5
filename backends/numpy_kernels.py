"""NumPy kernels that do in place what the portable Array API code does with temporaries.

Each kernel consumes (overwrites) the fresh arrays it is handed: the pre-activation ``z`` that a
matmul just produced, the incoming gradient ``dy``, the gradient ``g`` an optimizer applies.
A kernel returns ``None`` when it does not handle a case; the core then runs the portable code.
"""
from __future__ import annotations

import numpy as np


def bias_activation(z: np.ndarray, b: np.ndarray | None, name: str) -> np.ndarray | None:
    """y = activation(z + b), computed in z's memory, for activations whose backward needs only y."""
    if name not in _IN_PLACE_FORWARD:
        return None
    if b is not None:
        np.add(z, b, out=z)
    return _IN_PLACE_FORWARD[name](z)


def _relu(z):
    return np.maximum(z, z.dtype.type(0), out=z)


def _tanh(z):
    return np.tanh(z, out=z)


def _sigmoid(z):  # 0.5 tanh(z / 2) + 0.5: no overflow
    z *= z.dtype.type(0.5)
    np.tanh(z, out=z)
    z *= z.dtype.type(0.5)
    z += z.dtype.type(0.5)
    return z


def _softmax(z):  # the ufuncs' reduce directly: the array methods add Python wrappers
    z -= np.maximum.reduce(z, axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= np.add.reduce(z, axis=-1, keepdims=True)
    return z


_IN_PLACE_FORWARD = {"linear": lambda z: z, "relu": _relu, "tanh": _tanh, "sigmoid": _sigmoid, "softmax": _softmax}


def activation_backward(name: str, dy: np.ndarray, x: np.ndarray | None, y: np.ndarray) -> np.ndarray | None:
    """dx from dy, written into dy."""
    if name == "linear":
        return dy
    if name == "relu":
        return np.multiply(dy, y > 0, out=dy)
    if name == "tanh":
        dy *= 1 - y * y
        return dy
    if name == "sigmoid":
        dy *= y * (1 - y)
        return dy
    return None


def sum_rows(a: np.ndarray) -> np.ndarray:
    """a.sum(axis=0) of a 2-D array, straight to the ufunc (the bias gradient, once per layer and step)."""
    return np.add.reduce(a, axis=0)


def sparse_crossentropy(p: np.ndarray, labels: np.ndarray, scale: float, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Softmax outputs p and integer labels -> (mean cross-entropy, scale * (p - onehot) / n)."""
    n, k = p.shape
    flat = np.arange(0, n * k, k)
    flat += labels  # index of each row's label in p.ravel()
    picked = p.ravel().take(flat)
    np.maximum(picked, eps, out=picked)
    np.minimum(picked, 1.0 - eps, out=picked)
    np.log(picked, out=picked)
    c = p.dtype.type(scale / n)
    dz = p * c
    dz.ravel()[flat] -= c
    return np.add.reduce(picked) * p.dtype.type(-1.0 / n), dz


def sgd_update(opt, w: np.ndarray, g: np.ndarray, state: list, grad_scale: float) -> None:
    lr = opt.learning_rate / grad_scale
    if lr != 1.0:
        g *= w.dtype.type(lr)
    if not opt.momentum:
        w -= g
        return
    (v,) = state
    m = w.dtype.type(opt.momentum)
    v *= m
    v -= g
    if opt.nesterov:  # w += m v - lr g
        g *= -1
        g += m * v
        w += g
    else:
        w += v


def adam_update(opt, w: np.ndarray, g: np.ndarray, state: list, grad_scale: float) -> None:
    m, v = state
    one = w.dtype.type
    m *= one(opt.beta_1)
    m += one(1.0 - opt.beta_1) * g
    v *= one(opt.beta_2)
    g *= g
    g *= one(1.0 - opt.beta_2)
    v += g
    np.sqrt(v, out=g)
    g += one(opt.epsilon)
    np.divide(m, g, out=g)
    g *= one(opt.step_size())
    w -= g


def rmsprop_update(opt, w: np.ndarray, g: np.ndarray, state: list, grad_scale: float) -> None:
    (v,) = state
    one = w.dtype.type
    v *= one(opt.rho)
    v += one(1.0 - opt.rho) * (g * g)
    g *= one(opt.learning_rate)
    g /= np.sqrt(v + one(opt.epsilon))
    w -= g


KERNELS = {
    "bias_activation": bias_activation,
    "activation_backward": activation_backward,
    "sparse_crossentropy": sparse_crossentropy,
    "sum_rows": sum_rows,
    "sgd_update": sgd_update,
    "adam_update": adam_update,
    "rmsprop_update": rmsprop_update,
}
