"""NumPy operations that work in place where the portable code makes temporaries.

Only arrays the signature marks as consumed are overwritten (``z`` from a matmul, an optimizer's
``g``); ``dy`` and every other argument are read-only.
"""
from __future__ import annotations

import numpy as np

from ..activations import Linear, ReLU, Sigmoid, Softmax, Tanh
from ..ops import DEFERRING, DeferredMatmul, Ops
from . import numpy_blas
from .numpy_conv import _BITS, NumpyConvOps, _select


def _relu(z):
    return np.maximum(z, 0, out=z)  # a Python 0 keeps z's dtype (and makes no NumPy scalar)


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


# activation class -> in-place forward on z (all keep y, so z's memory can hold it)
_FORWARD = {Linear: lambda z: z, ReLU: _relu, Tanh: lambda z: np.tanh(z, out=z), Sigmoid: _sigmoid, Softmax: _softmax}


def _relu_backward(dy, y):
    # dy where y > 0, else +0 (inf and NaN blocked too), branch-free: np.where branches per element,
    # about five times slower on masks as irregular as ReLU's
    if dy.itemsize not in _BITS or dy.shape != y.shape:
        return np.where(y > 0, dy, dy.dtype.type(0))
    dx = np.empty(dy.shape, dy.dtype)
    _select(np.greater(y, 0), dy, dx)
    return dx


def _tanh_backward(dy, y):
    dx = y * y
    np.subtract(1, dx, out=dx)
    dx *= dy
    return dx


def _sigmoid_backward(dy, y):
    dx = 1 - y
    dx *= y
    dx *= dy
    return dx


_BACKWARD = {Linear: lambda dy, y: dy, ReLU: _relu_backward, Tanh: _tanh_backward, Sigmoid: _sigmoid_backward}
_deferring = DEFERRING.get


class NumpyOps(NumpyConvOps, Ops):
    """In-place NumPy kernels for the common activations, the bias gradient, sparse cross-entropy,
    the optimizer updates, and a scatter-add (``np.add.at``) for the Embedding gradient;
    strided-view convolutions and pooling (``NumpyConvOps``).

    When NumPy's CBLAS is found (``blas``), SGD's update runs through it: ``axpy`` for a gradient
    array, and for a Dense kernel's gradient left as ``x.T @ dz`` (``defers_matmuls``) one ``gemm``
    that adds the product into the weight (or the momentum) itself."""

    name = "numpy"
    fast_activations = frozenset(_FORWARD)

    #: the smallest weight SGD updates through BLAS: below it NumPy's two passes cost less than
    #: the foreign call (measured on a 2-core x86-64 VM: equal near 32k float32 entries)
    blas_min_size = 1 << 15

    matmul = staticmethod(np.matmul)  # ``a @ b`` without a Python frame per product

    def __init__(self, xp, device):
        super().__init__(xp, device)
        self.blas = numpy_blas.find()  # None: SGD's update stays with NumPy's ufuncs
        # a subclass with its own SGD update gets arrays
        self.defers_matmuls = (self.blas is not None and type(self).sgd_update is NumpyOps.sgd_update
                               and type(self).sgd_updates is NumpyOps.sgd_updates)
        self._ones: dict = {}  # (length, dtype) -> a row of ones, for ``sum_rows``

    def bias_activation(self, z, b, act):
        forward = _FORWARD.get(type(act))
        if forward is None:
            return super().bias_activation(z, b, act)
        if b is not None:
            np.add(z, b, out=z)
        y = forward(z)
        return y, (y if act.saves == "y" else None)  # ``_saved`` (no x: z was consumed)

    def activation_backward(self, act, dy, saved):
        backward = _BACKWARD.get(type(act))
        if backward is None:
            return super().activation_backward(act, dy, saved)
        return backward(dy, saved)

    def weight_gradient(self, x, dz):
        # whether gemm can take the factors as they are is checked in ``sgd_updates``, for all the
        # kernels in one loop (a check between the backward pass's products runs with cold caches)
        if _deferring():
            return tuple.__new__(DeferredMatmul, (x, dz))
        return np.matmul(x.T, dz)

    def sum_rows(self, a):
        # a row of ones times ``a``: BLAS's matrix-vector product runs on every core, about three
        # times as fast as ``np.add.reduce(a, axis=0)`` for a batch of 128 (float16 stays with it)
        if a.ndim != 2 or a.dtype.type not in (np.float32, np.float64):
            return np.add.reduce(a, axis=0)
        ones = self._ones.get((a.shape[0], a.dtype))
        if ones is None:
            if len(self._ones) >= 8:  # a few batch sizes are usual: keep the cache small
                self._ones.clear()
            ones = self._ones[a.shape[0], a.dtype] = np.ones(a.shape[0], dtype=a.dtype)
        return ones @ a

    def sparse_crossentropy(self, p, labels, eps):
        n, k = p.shape
        flat = np.arange(0, n * k, k)
        flat += labels  # each row's label, as an index into the C-ordered (n, k) buffer
        # p may be any view: take through its C-ordered copy only when it is not one already
        picked = (p if p.flags.c_contiguous else np.ascontiguousarray(p)).reshape(-1).take(flat)
        np.maximum(picked, eps, out=picked)
        np.minimum(picked, 1.0 - eps, out=picked)
        np.log(picked, out=picked)
        c = p.dtype.type(1.0 / n)
        dz = np.multiply(p, c, order="C")  # a fresh C-ordered buffer: reshape(-1) is a view of it
        dz.reshape(-1)[flat] -= c
        return np.add.reduce(picked) * -c, dz

    def unsorted_segment_sum(self, rows, ids, num_segments):
        out = np.zeros((num_segments, rows.shape[1]), dtype=rows.dtype)
        np.add.at(out, ids, rows)
        return out

    @staticmethod
    def _owned(g):
        # a user layer may hand back a read-only view (np.broadcast_to); such a gradient is copied
        return g if g.flags.writeable and g.base is None else g.copy()

    def sgd_update(self, w, g, velocity, lr, momentum, nesterov):
        self._sgd_updates(((w, g, velocity),), lr, momentum, nesterov)

    def sgd_updates(self, updates, lr, momentum, nesterov):
        if type(self).sgd_update is not NumpyOps.sgd_update:  # a subclass's own update, weight by weight
            super().sgd_updates(updates, lr, momentum, nesterov)
        else:
            self._sgd_updates(updates, lr, momentum, nesterov)

    def _sgd_updates(self, updates, lr, momentum, nesterov):
        blas = self.blas
        fused = blas is not None and isinstance(lr, float)  # BLAS takes a Python rate, not a device scalar
        arrays = []
        # the deferred products first: a gradient array updated in place below may be a factor
        for w, g, velocity in updates:
            if type(g) is not DeferredMatmul:
                arrays.append((w, g, velocity))
                continue
            x, dz = g
            if fused and not nesterov and blas.gemm_usable(x, dz, w) and (velocity is None or blas.usable(w, velocity)):
                if velocity is None:  # w -= lr x.T @ dz: the product lands in w
                    blas.gemm_tn(-lr, x, dz, 1.0, w)
                else:  # v = m v - lr x.T @ dz; w += v
                    blas.gemm_tn(-lr, x, dz, momentum, velocity)
                    blas.axpy(1.0, velocity, w)
            else:
                arrays.append((w, self.materialize(g), velocity))
        for w, g, velocity in arrays:
            if fused and w.size >= self.blas_min_size and blas.usable(g, w) \
                    and (velocity is None or blas.usable(g, velocity)):
                if velocity is None:  # w -= lr g: one pass instead of scaling g, then subtracting it
                    blas.axpy(-lr, g, w)
                else:
                    blas.axpby(-lr, g, momentum, velocity)  # v = m v - lr g
                    if nesterov:  # w += m v - lr g
                        blas.axpy(momentum, velocity, w)
                        blas.axpy(-lr, g, w)
                    else:
                        blas.axpy(1.0, velocity, w)
                continue
            if not g.flags.writeable or g.base is not None:  # ``_owned``, inline: one call per weight less
                g = g.copy()
            g *= w.dtype.type(lr)
            if velocity is None:
                w -= g
                continue
            m = w.dtype.type(momentum)
            velocity *= m
            velocity -= g
            if nesterov:  # w += m v - lr g
                g *= -1
                g += m * velocity
                w += g
            else:
                w += velocity

    def adam_update(self, w, g, m, v, step_size, beta_1, beta_2, epsilon):
        g = self._owned(g)
        t = w.dtype.type
        m *= t(beta_1)
        m += t(1.0 - beta_1) * g
        v *= t(beta_2)
        g *= g
        g *= t(1.0 - beta_2)
        v += g
        np.sqrt(v, out=g)
        g += t(epsilon)
        np.divide(m, g, out=g)
        g *= t(step_size)
        w -= g

    def rmsprop_update(self, w, g, v, lr, rho, epsilon):
        g = self._owned(g)
        t = w.dtype.type
        v *= t(rho)
        v += t(1.0 - rho) * (g * g)
        g *= t(lr)
        g /= np.sqrt(v + t(epsilon))
        w -= g

    def adamw_update(self, w, g, m, v, step_size, decay, beta_1, beta_2, epsilon):
        w -= w * w.dtype.type(decay)  # the decoupled decay, before the Adam step (as Keras)
        self.adam_update(w, g, m, v, step_size, beta_1, beta_2, epsilon)

    def adagrad_update(self, w, g, accumulator, lr, epsilon):
        g = self._owned(g)
        t = w.dtype.type
        root = np.multiply(g, g)
        accumulator += root
        np.add(accumulator, t(epsilon), out=root)
        np.sqrt(root, out=root)
        g *= t(lr)
        g /= root
        w -= g
