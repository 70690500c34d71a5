"""CuPy operations: one fused GPU kernel where the portable code would launch several.

Only arrays the signature marks as consumed are overwritten (``z`` from a matmul, an optimizer's
``g``); ``dy`` and every other argument are read-only.
"""
from __future__ import annotations

import functools
import numbers

from ..activations import Linear, ReLU, Sigmoid, Tanh
from ..ops import Ops
from . import cupy_graph


def _scalar(v, dtype):
    """A kernel's scalar argument in ``dtype``: a Python number, or a 0-d device array (the
    learning rate or step size of a captured step, read on the device at each replay)."""
    return dtype.type(v) if isinstance(v, numbers.Real) else v.astype(dtype, copy=False)


_BIAS_ACT = {
    Linear: "z = z + b",
    ReLU: "T t = z + b; z = t > (T)0 ? t : (T)0",
    Tanh: "z = tanh(z + b)",
    Sigmoid: "z = (T)0.5 * tanh((T)0.5 * (z + b)) + (T)0.5",
}
_ACT = {
    ReLU: "z = z > (T)0 ? z : (T)0",
    Tanh: "z = tanh(z)",
    Sigmoid: "z = (T)0.5 * tanh((T)0.5 * z) + (T)0.5",
}
_BACKWARD = {
    ReLU: "dx = y > (T)0 ? dy : (T)0",
    Tanh: "dx = dy * ((T)1 - y * y)",
    Sigmoid: "dx = dy * y * ((T)1 - y)",
}


@functools.lru_cache(maxsize=None)
def _kernels():
    import cupy as cp

    def name(cls):
        return cls.__name__.lower()

    return {
        "bias_act": {c: cp.ElementwiseKernel("T b", "T z", s, f"nnx_bias_{name(c)}") for c, s in _BIAS_ACT.items()},
        "act": {c: cp.ElementwiseKernel("", "T z", s, f"nnx_act_{name(c)}") for c, s in _ACT.items()},
        "backward": {c: cp.ElementwiseKernel("T dy, T y", "T dx", s, f"nnx_bwd_{name(c)}") for c, s in _BACKWARD.items()},
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
        "adamw": cp.ElementwiseKernel(
            "T g, T b1, T b2, T eps, T step, T decay", "T w, T m, T v",
            "w -= w * decay; m += ((T)1 - b1) * (g - m); v += ((T)1 - b2) * (g * g - v); "
            "w -= step * m / (sqrt(v) + eps)",
            "nnx_adamw"),
        "adagrad": cp.ElementwiseKernel(
            "T g, T lr, T eps", "T w, T acc",
            "acc += g * g; w -= lr * g / sqrt(acc + eps)", "nnx_adagrad"),
        # one thread per output element sums its segment's rows in index order: deterministic,
        # and the same additions in the same order as NumPy's add.at (atomics would reorder them)
        "segment_sum": cp.ElementwiseKernel(
            "raw T rows, raw int64 order, raw int64 bounds, int64 d", "T out",
            "const long long s = i / d, c = i % d; T acc = (T)0; "
            "for (long long j = bounds[s]; j < bounds[s + 1]; ++j) acc += rows[order[j] * d + c]; "
            "out = acc", "nnx_segment_sum"),
        "xent_grad": cp.ElementwiseKernel(
            "T p, int64 label, T c, int64 k", "T dz",
            "dz = (i % k == label) ? (p - (T)1) * c : p * c", "nnx_xent_grad"),
    }


class CupyOps(Ops):
    """Fused elementwise CUDA kernels for bias + activation, activation backward, sparse
    cross-entropy's gradient and the optimizer updates; a deterministic segment sum for the
    Embedding gradient (rows summed in index order, no atomics: resuming is bit-exact)."""

    name = "cupy"
    fast_activations = frozenset(_BIAS_ACT)

    def matmul(self, a, b):
        if cupy_graph.capturing():
            return cupy_graph.gemm(a, b)
        return a @ b

    def bias_activation(self, z, b, act):
        k = _kernels()
        cls = type(act)
        if cls not in _BIAS_ACT:
            return super().bias_activation(z, b, act)
        if b is not None:
            k["bias_act"][cls](b, z)
        elif cls in _ACT:
            k["act"][cls](z)
        return z, self._saved(act, None, z)

    def activation_backward(self, act, dy, saved):
        cls = type(act)
        if cls is Linear:
            return dy
        kernel = _kernels()["backward"].get(cls)
        if kernel is None:
            return super().activation_backward(act, dy, saved)
        return kernel(dy, saved)

    def sum_rows(self, a):
        return a.sum(axis=0)

    def sparse_crossentropy(self, p, labels, eps):
        import cupy as cp

        n, k = p.shape
        labels = labels.astype(cp.int64, copy=False)
        picked = cp.log(cp.clip(p[cp.arange(n), labels], eps, 1.0 - eps))
        c = p.dtype.type(1.0 / n)
        dz = _kernels()["xent_grad"](p, labels[:, None], c, k)
        return picked.sum() * -c, dz

    def unsorted_segment_sum(self, rows, ids, num_segments):
        import cupy as cp

        n, d = int(rows.shape[0]), int(rows.shape[1])
        with rows.device:
            out = cp.empty((num_segments, d), dtype=rows.dtype)
            if n == 0 or d == 0:
                out.fill(0)
                return out
            ids = ids.astype(cp.int64, copy=False)
            order = cp.argsort(ids)  # CUB's radix sort: stable, so equal ids keep their order
            bounds = cp.searchsorted(ids[order], cp.arange(num_segments + 1, dtype=cp.int64))
            _kernels()["segment_sum"](cp.ascontiguousarray(rows), order, bounds, d, out)
        return out

    def sgd_update(self, w, g, velocity, lr, momentum, nesterov):
        k, t = _kernels(), w.dtype
        if velocity is None:
            k["sgd"](g, _scalar(lr, t), w)
        else:
            k["sgd_momentum"](g, _scalar(lr, t), t.type(momentum), bool(nesterov), w, velocity)

    def adam_update(self, w, g, m, v, step_size, beta_1, beta_2, epsilon):
        t = w.dtype
        _kernels()["adam"](g, t.type(beta_1), t.type(beta_2), t.type(epsilon), _scalar(step_size, t), w, m, v)

    def rmsprop_update(self, w, g, v, lr, rho, epsilon):
        t = w.dtype
        _kernels()["rmsprop"](g, _scalar(lr, t), t.type(rho), t.type(epsilon), w, v)

    def adamw_update(self, w, g, m, v, step_size, decay, beta_1, beta_2, epsilon):
        t = w.dtype
        _kernels()["adamw"](g, t.type(beta_1), t.type(beta_2), t.type(epsilon), _scalar(step_size, t),
                            _scalar(decay, t), w, m, v)

    def adagrad_update(self, w, g, accumulator, lr, epsilon):
        t = w.dtype
        _kernels()["adagrad"](g, _scalar(lr, t), t.type(epsilon), w, accumulator)

    def fits_in_memory(self, nbytes):
        import cupy as cp

        free, _total = cp.cuda.runtime.memGetInfo()
        return nbytes <= 0.5 * (free + cp.get_default_memory_pool().free_bytes())
