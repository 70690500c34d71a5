"""Losses: a value ``forward(xp, y, p)`` (mean over the batch) and its gradient ``backward``.

Cross-entropies paired with the matching output activation (softmax or sigmoid, matched by class)
skip that activation's backward: ``logits_value_and_gradient`` returns the loss and the gradient of
the logits in one step.
"""
from __future__ import annotations

from typing import Any

from .registry import Registry

EPSILON = 1e-7  # probabilities are clipped to [EPSILON, 1 - EPSILON], as Keras does


def _count(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


class Loss:
    """Base class: ``forward(xp, y, p)`` is the mean loss (a 0-d array), ``backward(xp, y, p)`` its
    gradient with respect to the predictions ``p``. ``loss(y_true, y_pred)`` computes it on the
    current backend.

    A loss that ``fuses_with`` the model's output activation also gives the gradient of that
    activation's input in one step (``logits_value_and_gradient``), e.g. softmax + cross-entropy.

    >>> nnx.losses.MeanSquaredError()(y_true, y_pred)
    """

    name = ""
    sparse_labels = False  # True: y holds integer class indices

    def __call__(self, y_true: Any, y_pred: Any) -> Any:
        """The mean loss of a batch, on the current backend.

        Args:
            y_true: the targets, an array of the current backend (integer labels for the sparse
                cross-entropy).
            y_pred: the predictions, an array of the current backend.

        Returns:
            A 0-d array.

        >>> float(nnx.losses.MeanSquaredError()(nnx.asarray([[1.0]]), nnx.asarray([[3.0]])))   # 4.0
        """
        from .backend import get_backend

        return self.forward(get_backend().xp, y_true, y_pred)

    def forward(self, xp: Any, y: Any, p: Any) -> Any:
        """The loss of a batch, reduced as Keras does (mean over the batch; mse, mae and huber
        also over the output axis).

        Args:
            xp: the Array API namespace of ``y`` and ``p``.
            y: the targets.
            p: the predictions (probabilities, or logits with ``from_logits=True``).

        Returns:
            A 0-d array of ``p``'s dtype.

        >>> loss = nnx.losses.get("mse").forward(backend.xp, y, p)
        """
        raise NotImplementedError

    def backward(self, xp: Any, y: Any, p: Any) -> Any:
        """The gradient of ``forward`` with respect to the predictions.

        Args:
            xp: the Array API namespace of ``y`` and ``p``.
            y: the targets.
            p: the predictions.

        Returns:
            An array of ``p``'s shape and dtype.

        >>> dp = nnx.losses.get("mse").backward(backend.xp, y, p)
        """
        raise NotImplementedError

    def fuses_with(self, activation: Any) -> bool:
        """Whether ``logits_value_and_gradient`` is exact for outputs of ``activation`` (softmax
        with categorical cross-entropy, sigmoid with binary cross-entropy).

        Args:
            activation: the model's output activation (an ``ActivationFunction``).

        Returns:
            A bool; the model then skips that activation's backward.

        >>> nnx.losses.CategoricalCrossentropy().fuses_with(nnx.activations.get("softmax"))   # True
        """
        return False

    def logits_value_and_gradient(self, ops: Any, y: Any, p: Any) -> tuple[Any, Any]:
        """The loss and the gradient of the output activation's input, in one step, for outputs
        ``p`` of an activation this loss ``fuses_with`` (e.g. ``(p - y) / n`` for softmax).

        Args:
            ops: the backend's operations object (``backend.ops``).
            y: the targets.
            p: the activation's outputs (probabilities).

        Returns:
            ``(loss, dz)``: a 0-d array and an array of ``p``'s shape.

        >>> loss, dz = loss_fn.logits_value_and_gradient(backend.ops, y, p)
        """
        raise NotImplementedError

    def get_config(self) -> dict:
        """The loss as ``{"class_name": ..., "config": {constructor arguments}}``, which
        ``nnx.losses.get`` reads back.

        Returns:
            A JSON-able dict.

        >>> nnx.losses.get(nnx.losses.Huber(delta=2.0).get_config())
        """
        return {"class_name": type(self).__name__, "config": {}}


_EPS_BY_DTYPE: dict = {}


def _eps(xp: Any, p: Any) -> float:
    """The probability clip: Keras's 1e-7, or the dtype's resolution where that is coarser
    (``1 - 1e-7`` rounds to 1 in float16)."""
    eps = _EPS_BY_DTYPE.get(p.dtype)
    if eps is None:
        eps = _EPS_BY_DTYPE[p.dtype] = max(EPSILON, float(xp.finfo(p.dtype).eps))
    return eps


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
    """0.5 r^2 where |r| <= delta, else delta (|r| - 0.5 delta), with r = p - y; mean over all
    entries.

    Args:
        delta: where the loss turns from quadratic to linear, a float. Defaults to 1.0.

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

    def get_config(self):
        return {"class_name": type(self).__name__, "config": {"from_logits": self.from_logits}}


def _clip_probabilities(xp, p, eps=EPSILON):
    return xp.minimum(xp.maximum(p, eps), 1.0 - eps)


def _log_softmax(xp, z):
    s = z - xp.max(z, axis=-1, keepdims=True)
    return s - xp.log(xp.sum(xp.exp(s), axis=-1, keepdims=True))


def _softmax(xp, z):
    e = xp.exp(z - xp.max(z, axis=-1, keepdims=True))
    return e / xp.sum(e, axis=-1, keepdims=True)


def one_hot(xp: Any, labels: Any, depth: int, dtype: Any) -> Any:
    """Integer labels (n,) as (n, depth) one-hot rows of ``dtype`` on the labels' device.

    Args:
        xp: the Array API namespace of ``labels``.
        labels: integer class indices, shape (n,).
        depth: the number of classes.
        dtype: the dtype of the rows (a dtype of ``xp``).

    Returns:
        An array of shape (n, depth).

    >>> one_hot(xp, labels, 10, xp.float32)
    """
    classes = xp.arange(depth, dtype=labels.dtype, device=labels.device)
    return xp.astype(xp.reshape(labels, (-1, 1)) == classes, dtype)


class CategoricalCrossentropy(_CrossEntropy):
    """-sum(y log q) over classes, mean over the batch, where q is each row of the predictions
    divided by its sum (as Keras: rows that do not sum to 1 are normalised) and clipped to
    [1e-7, 1 - 1e-7]. With ``from_logits=True`` the predictions are logits.

    Args:
        from_logits: whether the predictions are logits rather than probabilities.

    >>> nnx.losses.CategoricalCrossentropy(from_logits=True)
    """

    name = "categorical_crossentropy"

    def _targets(self, xp, y, p):
        return y

    def fuses_with(self, activation):
        from .activations import Softmax

        return not self.from_logits and type(activation) is Softmax

    def forward(self, xp, y, p):
        t = self._targets(xp, y, p)
        if self.from_logits:
            logq = _log_softmax(xp, p)
        else:
            logq = xp.log(_clip_probabilities(xp, p / xp.sum(p, axis=-1, keepdims=True), _eps(xp, p)))
        return -xp.sum(t * logq) * (1.0 / p.shape[0])

    def backward(self, xp, y, p):
        t = self._targets(xp, y, p)
        n = p.shape[0]
        if self.from_logits:  # d/dz of -sum(t log softmax z) = softmax(z) sum(t) - t
            return (_softmax(xp, p) * xp.sum(t, axis=-1, keepdims=True) - t) * (1.0 / n)
        eps = _eps(xp, p)
        s = xp.sum(p, axis=-1, keepdims=True)
        q = p / s
        inside = (q >= eps) & (q <= 1.0 - eps)  # the clip passes no gradient outside
        g = xp.where(inside, -t / _clip_probabilities(xp, q, eps), 0.0)
        return (g - xp.sum(g * q, axis=-1, keepdims=True)) / s * (1.0 / n)

    def logits_value_and_gradient(self, ops, y, p):
        xp = ops.xp
        t = self._targets(xp, y, p)
        n = p.shape[0]
        loss = -xp.sum(t * xp.log(_clip_probabilities(xp, p, _eps(xp, p)))) * (1.0 / n)
        return loss, (p * xp.sum(t, axis=-1, keepdims=True) - t) * (1.0 / n)


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Categorical cross-entropy with integer class labels y of shape (n,).

    Args:
        from_logits: whether the predictions are logits rather than probabilities.

    >>> nnx.losses.SparseCategoricalCrossentropy(from_logits=False)
    """

    name = "sparse_categorical_crossentropy"
    sparse_labels = True

    @staticmethod
    def _flat_labels(y):
        return y[:, 0] if y.ndim == 2 else y

    def _targets(self, xp, y, p):
        return one_hot(xp, self._flat_labels(y), p.shape[-1], p.dtype)

    def logits_value_and_gradient(self, ops, y, p):
        return ops.sparse_crossentropy(p, self._flat_labels(y), _eps(ops.xp, p))


class BinaryCrossentropy(_CrossEntropy):
    """-(y log p + (1 - y) log(1 - p)), mean over all entries, with p clipped to [eps, 1 - eps]
    (eps is Keras's 1e-7, or the dtype's resolution where that is coarser: about 1e-3 in float16).
    Targets must lie in [0, 1].

    Args:
        from_logits: whether the predictions are logits rather than probabilities (then the
            loss is computed stably from the logits). Defaults to False.

    >>> nnx.losses.BinaryCrossentropy(from_logits=True)
    """

    name = "binary_crossentropy"
    target_range = (0.0, 1.0)  # checked on the data before training

    def fuses_with(self, activation):
        from .activations import Sigmoid

        return not self.from_logits and type(activation) is Sigmoid

    def forward(self, xp, y, p):
        if self.from_logits:  # max(z, 0) - z y + log(1 + e^-|z|)
            return xp.mean(xp.maximum(p, 0.0) - p * y + xp.log1p(xp.exp(-xp.abs(p))))
        q = _clip_probabilities(xp, p, _eps(xp, p))
        return -xp.mean(y * xp.log(q) + (1.0 - y) * xp.log(1.0 - q))

    def backward(self, xp, y, p):
        scale = 1.0 / _count(p.shape)
        if self.from_logits:
            return (0.5 * xp.tanh(0.5 * p) + 0.5 - y) * scale
        eps = _eps(xp, p)
        q = _clip_probabilities(xp, p, eps)
        inside = (p >= eps) & (p <= 1.0 - eps)
        return xp.where(inside, (q - y) / (q * (1.0 - q)), 0.0) * scale

    def logits_value_and_gradient(self, ops, y, p):
        return self.forward(ops.xp, y, p), (p - y) * (1.0 / _count(p.shape))


registry = Registry("loss", Loss)
registry.add(MeanSquaredError, "mean_squared_error", "mse")
registry.add(MeanAbsoluteError, "mean_absolute_error", "mae")
registry.add(Huber, "huber", "huber_loss")
registry.add(BinaryCrossentropy, "binary_crossentropy")
registry.add(CategoricalCrossentropy, "categorical_crossentropy")
registry.add(SparseCategoricalCrossentropy, "sparse_categorical_crossentropy")


def get(identifier: str | dict | Loss) -> Loss:
    """A loss from its name, its config dict, or an instance.

    Args:
        identifier: a name (``"mse"``, ``"sparse_categorical_crossentropy"``, or the Keras class
            name ``"SparseCategoricalCrossentropy"``), a ``get_config()`` dict, or a ``Loss``
            (returned as is).

    Returns:
        A ``Loss``.

    Raises:
        ValueError: an unknown name (the message lists the valid ones) or config.

    >>> nnx.losses.get("SparseCategoricalCrossentropy")
    """
    return registry.get(identifier)
