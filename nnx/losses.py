"""Losses: a value ``forward(xp, y, p)`` (mean over the batch) and its gradient ``backward``.

Cross-entropies paired with the matching output activation (softmax or sigmoid) skip that
activation's backward: ``fused_backward`` returns the gradient of the logits, ``(p - y) / n``
(times ``scale``, a factor the optimizer folds in).
"""
from __future__ import annotations

from typing import Any

EPSILON = 1e-7  # probabilities are clipped to [EPSILON, 1 - EPSILON], as Keras does


def _count(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


class Loss:
    """Base class. ``loss(y_true, y_pred)`` returns the mean loss as a 0-d array.

    >>> nnx.losses.MeanSquaredError()(y_true, y_pred)
    """

    name = ""
    fuses_with: str | None = None  # the output activation whose backward this loss can absorb
    sparse_labels = False  # True: y holds integer class indices

    def __call__(self, y_true: Any, y_pred: Any) -> Any:
        from .backend import get_backend

        xp = get_backend().xp
        return self.forward(xp, y_true, y_pred)

    def forward(self, xp: Any, y: Any, p: Any) -> Any:
        raise NotImplementedError

    def backward(self, xp: Any, y: Any, p: Any) -> Any:
        raise NotImplementedError

    def fused_backward(self, xp: Any, y: Any, p: Any, scale: float = 1.0) -> Any:
        """Gradient w.r.t. the logits (times ``scale``) when the output activation is ``fuses_with``."""
        raise NotImplementedError

    def fused_value_and_gradient(self, backend: Any, y: Any, p: Any, scale: float = 1.0) -> tuple[Any, Any]:
        """(loss, ``fused_backward``) in one call, so a backend kernel can do both in one pass."""
        xp = backend.xp
        return self.forward(xp, y, p), self.fused_backward(xp, y, p, scale)

    def get_config(self) -> dict:
        return {"class_name": type(self).__name__, "config": {}}


class MeanSquaredError(Loss):
    """mean((p - y)^2) over the batch and the output axis.

    >>> nnx.losses.MeanSquaredError()  # or loss="mse"
    """

    name = "mean_squared_error"

    def forward(self, xp, y, p):
        r = p - y
        return xp.mean(r * r)

    def backward(self, xp, y, p):
        return (p - y) * (2.0 / _count(p.shape))


class MeanAbsoluteError(Loss):
    """mean(|p - y|) over the batch and the output axis.

    >>> nnx.losses.MeanAbsoluteError()  # or loss="mae"
    """

    name = "mean_absolute_error"

    def forward(self, xp, y, p):
        return xp.mean(xp.abs(p - y))

    def backward(self, xp, y, p):
        return xp.sign(p - y) * (1.0 / _count(p.shape))


class Huber(Loss):
    """0.5 r^2 where |r| <= delta, else delta (|r| - 0.5 delta); mean over all entries.

    >>> nnx.losses.Huber(delta=1.0)  # or loss="huber"
    """

    name = "huber"

    def __init__(self, delta: float = 1.0):
        self.delta = float(delta)

    def forward(self, xp, y, p):
        a = xp.abs(p - y)
        q = xp.minimum(a, self.delta)
        return xp.mean(0.5 * q * q + self.delta * (a - q))

    def backward(self, xp, y, p):
        r = p - y
        return xp.clip(r, -self.delta, self.delta) * (1.0 / _count(p.shape))

    def get_config(self):
        return {"class_name": "Huber", "config": {"delta": self.delta}}


class _CrossEntropy(Loss):
    def __init__(self, from_logits: bool = False):
        self.from_logits = bool(from_logits)
        if self.from_logits:
            self.fuses_with = None

    def get_config(self):
        return {"class_name": type(self).__name__, "config": {"from_logits": self.from_logits}}


def _clip_probabilities(xp, p):
    return xp.minimum(xp.maximum(p, EPSILON), 1.0 - EPSILON)


def _log_softmax(xp, z):
    s = z - xp.max(z, axis=-1, keepdims=True)
    return s - xp.log(xp.sum(xp.exp(s), axis=-1, keepdims=True))


def _softmax(xp, z):
    e = xp.exp(z - xp.max(z, axis=-1, keepdims=True))
    return e / xp.sum(e, axis=-1, keepdims=True)


def one_hot(xp: Any, labels: Any, depth: int, dtype: Any) -> Any:
    """Integer labels (n,) -> (n, depth) one-hot rows of ``dtype`` on the labels' device."""
    classes = xp.arange(depth, dtype=labels.dtype, device=labels.device)
    return xp.astype(labels[:, None] == classes, dtype)


class CategoricalCrossentropy(_CrossEntropy):
    """-sum(y log p) over classes, mean over the batch; y one-hot (or soft) rows.

    >>> nnx.losses.CategoricalCrossentropy(from_logits=True)
    """

    name = "categorical_crossentropy"
    fuses_with = "softmax"

    def _targets(self, xp, y, p):
        return y

    def forward(self, xp, y, p):
        t = self._targets(xp, y, p)
        logp = _log_softmax(xp, p) if self.from_logits else xp.log(_clip_probabilities(xp, p))
        return -xp.sum(t * logp) * (1.0 / p.shape[0])

    def backward(self, xp, y, p):
        t = self._targets(xp, y, p)
        if self.from_logits:
            return (_softmax(xp, p) - t) * (1.0 / p.shape[0])
        return -t / _clip_probabilities(xp, p) * (1.0 / p.shape[0])

    def fused_backward(self, xp, y, p, scale=1.0):
        return (p - self._targets(xp, y, p)) * (scale / p.shape[0])


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Categorical cross-entropy with integer class labels y of shape (n,).

    >>> nnx.losses.SparseCategoricalCrossentropy(from_logits=False)
    """

    name = "sparse_categorical_crossentropy"
    sparse_labels = True

    def forward(self, xp, y, p):
        labels = y[:, None] if y.ndim == 1 else y
        if self.from_logits:
            picked = xp.take_along_axis(_log_softmax(xp, p), labels, axis=-1)
        else:
            picked = xp.log(_clip_probabilities(xp, xp.take_along_axis(p, labels, axis=-1)))
        return -xp.sum(picked) * (1.0 / p.shape[0])

    @staticmethod
    def _flat_labels(y):
        return y[:, 0] if y.ndim == 2 else y

    def _targets(self, xp, y, p):
        return one_hot(xp, self._flat_labels(y), p.shape[-1], p.dtype)

    def fused_value_and_gradient(self, backend, y, p, scale=1.0):
        kernel = None if self.from_logits else backend.kernels.get("sparse_crossentropy")
        if kernel is None:
            return super().fused_value_and_gradient(backend, y, p, scale)
        return kernel(p, self._flat_labels(y), scale, EPSILON)


class BinaryCrossentropy(_CrossEntropy):
    """-(y log p + (1 - y) log(1 - p)), mean over all entries.

    >>> nnx.losses.BinaryCrossentropy(from_logits=True)
    """

    name = "binary_crossentropy"
    fuses_with = "sigmoid"

    def forward(self, xp, y, p):
        if self.from_logits:  # max(z, 0) - z y + log(1 + e^-|z|)
            return xp.mean(xp.maximum(p, 0.0) - p * y + xp.log1p(xp.exp(-xp.abs(p))))
        q = _clip_probabilities(xp, p)
        return -xp.mean(y * xp.log(q) + (1.0 - y) * xp.log(1.0 - q))

    def backward(self, xp, y, p):
        scale = 1.0 / _count(p.shape)
        if self.from_logits:
            return (0.5 * xp.tanh(0.5 * p) + 0.5 - y) * scale
        q = _clip_probabilities(xp, p)
        return (q - y) / (q * (1.0 - q)) * scale

    def fused_backward(self, xp, y, p, scale=1.0):
        return (p - y) * (scale / _count(p.shape))


_REGISTRY = {
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
    "huber": Huber, "huber_loss": Huber,
    "binary_crossentropy": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
}
_CLASSES = {cls.__name__: cls for cls in set(_REGISTRY.values())}


def get(identifier: str | dict | Loss) -> Loss:
    """A loss from its name, its config dict, or an instance."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _REGISTRY:
        return _REGISTRY[identifier.lower()]()
    if isinstance(identifier, dict) and identifier.get("class_name") in _CLASSES:
        return _CLASSES[identifier["class_name"]](**identifier.get("config", {}))
    raise ValueError(f"Unknown loss {identifier!r}; expected one of: {', '.join(sorted(_REGISTRY))}.")
