"""Backend operations: the portable Array API code, as methods of an object.

``Ops`` holds the portable implementation of every operation the layers, losses and optimizers
share. A backend that can do better subclasses it (``NumpyOps``, ``CupyOps`` in ``nnx.backends``)
and overrides the methods it speeds up, calling ``super()`` for the cases it does not handle.
Fast paths are chosen by the *class* of the activation or loss (``type(act) in fast``), never by its
name, so a user's subclass runs its own code.

Ownership: a parameter documented as *consumed* is a fresh array the caller hands over, which the
method may overwrite (the pre-activation ``z`` a matmul just produced, the gradient ``g`` an
optimizer applies). Every other argument is read-only.

>>> ops = nnx.get_backend().ops
>>> y, saved = ops.bias_activation(x @ w, b, nnx.activations.get("relu"))
"""
from __future__ import annotations

import contextvars
import operator
from typing import Any

from . import activations as _act
from .conv_ops import ConvOps


def clip(xp: Any, x: Any, low: float | None, high: float | None) -> Any:
    """``x`` limited to ``[low, high]`` (either may be None), NaN kept, with two elementwise
    passes: ``array_api_compat``'s ``clip`` for CuPy writes through boolean masks, which reads
    their counts back to the host on every call.

    >>> clip(xp, p, 1e-7, 1.0 - 1e-7)
    """
    if low is not None:
        x = xp.maximum(x, low)
    if high is not None:
        x = xp.minimum(x, high)
    return x


#: true while a layer's backward may give its kernel's gradient as a ``DeferredMatmul``: set by the
#: model, layer by layer, within ``fit``'s step; a context variable, so each thread has its own
DEFERRING: contextvars.ContextVar[bool] = contextvars.ContextVar("nnx_deferring", default=False)


class DeferredMatmul(tuple):
    """A weight gradient kept as the product ``a.T @ b`` it equals (a Dense kernel's ``x.T @ dz``),
    for an update that writes the product into the weight directly: NumPy's SGD step
    ``w -= lr * x.T @ dz`` is then one BLAS ``gemm`` into ``w``, with no gradient array made and
    no second pass over the weight (where ``gemm`` cannot take the arrays as they are, the update
    makes the product first). Only ``weight_gradient`` of a backend that consumes them
    (``Ops.defers_matmuls``) makes one, and only inside ``fit``'s step; ``Ops.materialize`` turns
    it into the array. (A tuple ``(a, b)``: made without a Python call, as the step makes one per
    kernel.)

    >>> g = DeferredMatmul(x, dz); g.shape   # (x.shape[1], dz.shape[1])
    """

    __slots__ = ()

    def __new__(cls, a: Any, b: Any) -> "DeferredMatmul":
        return tuple.__new__(cls, (a, b))

    a = property(operator.itemgetter(0), doc="The left factor (``x``), transposed in the product.")
    b = property(operator.itemgetter(1), doc="The right factor (``dz``).")

    @property
    def shape(self) -> tuple[int, int]:
        return (self[0].shape[1], self[1].shape[1])

    @property
    def dtype(self) -> Any:
        return self[0].dtype


class Ops(ConvOps):
    """Portable operations over an Array API namespace ``xp`` on ``device`` (the convolution and
    pooling ones are in ``nnx.conv_ops``)."""

    name = "portable"
    #: activation classes with a backend kernel; see ``fast_activation``
    fast_activations: frozenset = frozenset()
    #: whether ``sgd_update`` and ``sgd_updates`` take a ``DeferredMatmul`` gradient (a subclass
    #: that fuses the product into the update sets it)
    defers_matmuls = False

    def __init__(self, xp: Any, device: Any):
        self.xp = xp
        self.device = device

    def has_fast_path(self, obj: Any) -> bool:
        """True when this backend has a kernel for exactly ``type(obj)``."""
        return type(obj) in self.fast_activations

    # -- products ---------------------------------------------------------------------------
    def matmul(self, a: Any, b: Any) -> Any:
        """``a @ b``, a fresh array the caller owns (``b`` is 2-D; ``a`` may have leading batch
        axes). Layers multiply through here so that a backend can route the product (CuPy sends
        it straight to cuBLAS while a training step is being captured as a CUDA graph)."""
        return a @ b

    def weight_gradient(self, x: Any, dz: Any) -> Any:
        """A kernel's gradient ``x.T @ dz`` (``x`` (n, d), ``dz`` (n, units)): the array, or, on a
        backend that ``defers_matmuls`` while ``DEFERRING`` is true (the model's backward sets it
        for the layers ``fit``'s step lets defer), a ``DeferredMatmul`` its update adds into the
        kernel (the caller keeps ``x`` and ``dz`` unchanged until then)."""
        return self.matmul(x.T, dz)

    def materialize(self, g: Any) -> Any:
        """``g`` as an array: a ``DeferredMatmul``'s product, any other gradient as it is."""
        return self.matmul(g.a.T, g.b) if type(g) is DeferredMatmul else g

    # -- activations -----------------------------------------------------------------------
    @staticmethod
    def _saved(act: _act.ActivationFunction, x: Any, y: Any) -> Any:
        return y if act.saves == "y" else x if act.saves == "x" else None

    def bias_activation(self, z: Any, b: Any | None, act: _act.ActivationFunction) -> tuple[Any, Any]:
        """``y = act(z + b)`` and what ``act.backward`` needs. ``z`` is consumed; ``b`` may be None."""
        if b is not None:
            z = z + b
        return self.activation(act, z)

    def activation(self, act: _act.ActivationFunction, x: Any) -> tuple[Any, Any]:
        """``y = act(x)`` and what ``act.backward`` needs; ``x`` is read-only."""
        y = act.forward(self.xp, x)
        return y, self._saved(act, x, y)

    def activation_backward(self, act: _act.ActivationFunction, dy: Any, saved: Any) -> Any:
        """``dx`` from ``dy`` (read-only) and the forward's saved array."""
        return act.backward(self.xp, dy, saved)

    # -- reductions and losses -------------------------------------------------------------
    def sum_rows(self, a: Any) -> Any:
        """``a.sum(axis=0)`` (the bias gradient)."""
        return self.xp.sum(a, axis=0)

    def sparse_crossentropy(self, p: Any, labels: Any, eps: float) -> tuple[Any, Any]:
        """Softmax outputs ``p`` (n, k) and integer labels (n,) -> (mean cross-entropy, gradient of
        the logits ``(p - onehot) / n``)."""
        xp = self.xp
        n = p.shape[0]
        picked = xp.take_along_axis(p, xp.reshape(labels, (-1, 1)), axis=-1)
        loss = -xp.sum(xp.log(clip(xp, picked, eps, 1.0 - eps))) * (1.0 / n)
        classes = xp.arange(p.shape[-1], dtype=labels.dtype, device=self.device)
        onehot = xp.astype(xp.reshape(labels, (-1, 1)) == classes, p.dtype)
        return loss, (p - onehot) * (1.0 / n)

    # -- gathers and scatters ---------------------------------------------------------------
    #: one-hot entries the portable ``unsorted_segment_sum`` builds at a time
    segment_chunk_elements = 1 << 22

    def unsorted_segment_sum(self, rows: Any, ids: Any, num_segments: int) -> Any:
        """``out[k] = sum of rows[i] where ids[i] == k``: (num_segments, d) from rows (n, d) and
        integer ids (n,) in [0, num_segments) (an Embedding's gradient; repeated ids add up).

        The Array API has no scatter-add: this is ``onehot(ids).T @ rows``, a block of rows at a
        time so the one-hot matrix stays small. Backends override it with a real scatter-add."""
        xp = self.xp
        n, d = int(rows.shape[0]), int(rows.shape[1])
        out = xp.zeros((num_segments, d), dtype=rows.dtype, device=self.device)
        segments = xp.arange(num_segments, dtype=ids.dtype, device=self.device)
        step = max(1, self.segment_chunk_elements // max(num_segments, 1))
        for start in range(0, n, step):  # blocks of rows, not samples: one block for a usual batch
            stop = min(n, start + step)
            onehot = xp.astype(xp.reshape(ids[start:stop], (-1, 1)) == segments, rows.dtype)
            out = out + onehot.T @ rows[start:stop, ...]
        return out

    # -- optimizer updates (``g`` is consumed) -----------------------------------------------
    def sgd_update(self, w: Any, g: Any, velocity: Any | None, lr: float, momentum: float, nesterov: bool) -> None:
        """w -= lr g; with momentum: v = m v - lr g; w += v (Nesterov: w += m v - lr g)."""
        step = lr * g
        if velocity is None:
            w -= step
            return
        velocity *= momentum
        velocity -= step
        if nesterov:
            w += momentum * velocity - step
        else:
            w += velocity

    def sgd_updates(self, updates: Any, lr: float, momentum: float, nesterov: bool) -> None:
        """``sgd_update`` for each ``(w, g, velocity)`` of ``updates`` (each ``g`` consumed): one
        call per step for all the weights, which a backend may run as one loop of its own."""
        for w, g, velocity in updates:
            self.sgd_update(w, g, velocity, lr, momentum, nesterov)

    def adam_update(self, w: Any, g: Any, m: Any, v: Any, step_size: float, beta_1: float, beta_2: float,
                    epsilon: float) -> None:
        """m += (1-b1)(g - m); v += (1-b2)(g^2 - v); w -= step_size m / (sqrt(v) + eps)."""
        m += (1.0 - beta_1) * (g - m)
        v += (1.0 - beta_2) * (g * g - v)
        w -= step_size * m / (self.xp.sqrt(v) + epsilon)

    def rmsprop_update(self, w: Any, g: Any, v: Any, lr: float, rho: float, epsilon: float) -> None:
        """v = rho v + (1 - rho) g^2; w -= lr g / sqrt(v + eps)."""
        v *= rho
        v += (1.0 - rho) * (g * g)
        w -= lr * g / self.xp.sqrt(v + epsilon)

    def adamw_update(self, w: Any, g: Any, m: Any, v: Any, step_size: float, decay: float, beta_1: float,
                     beta_2: float, epsilon: float) -> None:
        """Keras's decoupled weight decay, then Adam: w -= w * decay (decay = lr * weight_decay);
        m += (1-b1)(g - m); v += (1-b2)(g^2 - v); w -= step_size m / (sqrt(v) + eps)."""
        w -= w * decay
        self.adam_update(w, g, m, v, step_size, beta_1, beta_2, epsilon)

    def adagrad_update(self, w: Any, g: Any, accumulator: Any, lr: float, epsilon: float) -> None:
        """accumulator += g^2; w -= lr g / sqrt(accumulator + eps)."""
        accumulator += g * g
        w -= lr * g / self.xp.sqrt(accumulator + epsilon)

    # -- capabilities ----------------------------------------------------------------------
    def fits_in_memory(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more fit comfortably on the device (always true on the host)."""
        return True
