"""Fused CuPy kernels: one GPU launch where the portable code would launch several.

The same contract as the NumPy kernels: they overwrite the fresh arrays they receive (the
pre-activation ``z``, the incoming gradient ``dy``, an optimizer's gradient ``g``) and return
``None`` for cases they do not handle, so the core falls back to portable code.
"""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=None)
def _compiled():
    import cupy as cp

    bias_act = {
        "linear": "z = z + b",
        "relu": "T t = z + b; z = t > (T)0 ? t : (T)0",
        "tanh": "z = tanh(z + b)",
        "sigmoid": "z = (T)0.5 * tanh((T)0.5 * (z + b)) + (T)0.5",
    }
    act = {
        "linear": "",
        "relu": "z = z > (T)0 ? z : (T)0",
        "tanh": "z = tanh(z)",
        "sigmoid": "z = (T)0.5 * tanh((T)0.5 * z) + (T)0.5",
    }
    backward = {
        "relu": "dy = y > (T)0 ? dy : (T)0",
        "tanh": "dy = dy * ((T)1 - y * y)",
        "sigmoid": "dy = dy * y * ((T)1 - y)",
    }
    return {
        "bias_act": {k: cp.ElementwiseKernel("T b", "T z", v, f"nnx_bias_{k}") for k, v in bias_act.items()},
        "act": {k: cp.ElementwiseKernel("", "T z", v, f"nnx_act_{k}") for k, v in act.items() if v},
        "backward": {k: cp.ElementwiseKernel("T y", "T dy", v, f"nnx_bwd_{k}") for k, v in backward.items()},
        "sgd": cp.ElementwiseKernel("T g, T lr", "T w", "w -= lr * g", "nnx_sgd"),
        "sgd_momentum": cp.ElementwiseKernel(
            "T g, T lr, T mom, bool nesterov", "T w, T v",
            "v = mom * v - lr * g; w += nesterov ? mom * v - lr * g : v", "nnx_sgd_momentum"),
        "adam": cp.ElementwiseKernel(
            "T g, T b1, T b2, T eps, T step", "T w, T m, T v",
            "m += ((T)1 - b1) * (g - m); v += ((T)1 - b2) * (g * g - v); w -= step * m / (sqrt(v) + eps)",
            "nnx_adam"),
        "rmsprop": cp.ElementwiseKernel(
            "T g, T lr, T rho, T eps", "T w, T v",
            "v = rho * v + ((T)1 - rho) * g * g; w -= lr * g / sqrt(v + eps)", "nnx_rmsprop"),
    }


def bias_activation(z, b, name):
    k = _compiled()
    if b is not None and name in k["bias_act"]:
        k["bias_act"][name](b, z)
        return z
    if b is None and name in k["act"]:
        k["act"][name](z)
        return z
    if b is None and name == "linear":
        return z
    return None


def activation_backward(name, dy, x, y):
    if name == "linear":
        return dy
    kernel = _compiled()["backward"].get(name)
    if kernel is None:
        return None
    kernel(y, dy)
    return dy


def sum_rows(a):
    """a.sum(axis=0) of a 2-D array in one CuPy reduction, without the namespace wrapper."""
    return a.sum(axis=0)


def sparse_crossentropy(p, labels, scale, eps):
    """Softmax outputs p and integer labels -> (mean cross-entropy, scale * (p - onehot) / n),
    as the NumPy kernel computes it; the loss stays on the device."""
    import cupy as cp

    n = p.shape[0]
    rows = cp.arange(n)
    picked = cp.log(cp.clip(p[rows, labels], eps, 1.0 - eps))
    c = p.dtype.type(scale / n)
    dz = p * c
    dz[rows, labels] -= c
    return picked.sum() * p.dtype.type(-1.0 / n), dz


def sgd_update(opt, w, g, state, grad_scale):
    k, t = _compiled(), w.dtype.type
    lr = t(opt.learning_rate / grad_scale)
    if not opt.momentum:
        k["sgd"](g, lr, w)
    else:
        k["sgd_momentum"](g, lr, t(opt.momentum), bool(opt.nesterov), w, state[0])


def adam_update(opt, w, g, state, grad_scale):
    t = w.dtype.type
    _compiled()["adam"](g, t(opt.beta_1), t(opt.beta_2), t(opt.epsilon), t(opt.step_size()), w, state[0], state[1])


def rmsprop_update(opt, w, g, state, grad_scale):
    t = w.dtype.type
    _compiled()["rmsprop"](g, t(opt.learning_rate), t(opt.rho), t(opt.epsilon), w, state[0])


def fits_in_memory(nbytes: int) -> bool:
    """True when ``nbytes`` more fits comfortably on the current device (half of what is free)."""
    import cupy as cp

    free, _total = cp.cuda.runtime.memGetInfo()
    pool = cp.get_default_memory_pool()
    return nbytes <= 0.5 * (free + pool.free_bytes())


def kernels() -> dict:
    return {
        "bias_activation": bias_activation,
        "activation_backward": activation_backward,
        "sparse_crossentropy": sparse_crossentropy,
        "sum_rows": sum_rows,
        "sgd_update": sgd_update,
        "adam_update": adam_update,
        "rmsprop_update": rmsprop_update,
        "fits_in_memory": fits_in_memory,
    }
