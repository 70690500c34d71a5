"""Losses: a per-sample value ``per_sample(xp, y, p)`` (shape (n,)), its mean over the batch
``forward(xp, y, p)`` and the gradient of that mean, ``backward``.

Sample weights follow Keras 3's default reduction ("sum_over_batch_size"): each sample's loss is
multiplied by its weight, and the products are summed and divided by the number of samples in the
batch (not by the sum of the weights). The gradient of a weighted loss is the unweighted gradient
with each row scaled by its sample's weight.

Cross-entropies paired with the matching output activation (softmax or sigmoid, matched by class)
skip that activation's backward: ``logits_value_and_gradient`` returns the loss and the gradient of
the logits in one step.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

from .ops import clip as _clip
from .registry import Registry

EPSILON = 1e-7  # probabilities are clipped to [EPSILON, 1 - EPSILON], as Keras does


def _count(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _rows(xp: Any, g: Any, w: Any | None) -> Any:
    """``g`` with each row (axis 0) multiplied by the sample weight ``w`` (n,); ``g`` when None."""
    if w is None:
        return g
    return g * xp.reshape(w, (-1,) + (1,) * (g.ndim - 1))


def _reduce(xp: Any, v: Any, w: Any | None) -> Any:
    """Keras's "sum_over_batch_size": sum(v * w) / n for per-sample values ``v`` (n,)."""
    return xp.sum(v if w is None else v * w) * (1.0 / v.shape[0])


def _mean_rest(xp: Any, v: Any) -> Any:
    """Per-sample mean over every axis but the first."""
    return xp.mean(v, axis=tuple(range(1, v.ndim))) if v.ndim > 1 else v


def _per_position(xp: Any, v: Any) -> Any:
    """Per-sample losses from per-class terms ``v`` (n, ..., classes): the sum over the class axis,
    then the mean over the axes between (a sequence's steps), as Keras reduces them."""
    return _mean_rest(xp, xp.sum(v, axis=-1))


def _sum_rest(xp: Any, v: Any) -> Any:
    """Per-sample sum over every axis but the first."""
    return xp.sum(v, axis=tuple(range(1, v.ndim))) if v.ndim > 1 else v


class Loss:
    """Base class: ``per_sample(xp, y, p)`` is each sample's loss (shape (n,)); ``forward(xp, y, p,
    sample_weight=None)`` the batch loss (a 0-d array: the mean of the per-sample losses, or with
    weights ``sum(w * loss) / n``, Keras's default reduction); ``backward(xp, y, p,
    sample_weight=None)`` its gradient with respect to the predictions ``p``.
    ``loss(y_true, y_pred, sample_weight=None)`` computes it on the current backend.

    A loss that ``fuses_with`` the model's output activation also gives the gradient of that
    activation's input in one step (``logits_value_and_gradient``), e.g. softmax + cross-entropy.

    A subclass defines ``per_sample`` and ``backward``; ``forward`` follows from ``per_sample``.

    >>> nnx.losses.MeanSquaredError()(y_true, y_pred)
    >>> nnx.losses.MeanSquaredError()(y_true, y_pred, sample_weight=w)   # sum(w * loss) / n
    """

    name = ""
    sparse_labels = False  # True: y holds integer class indices

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        """The loss of a batch, on the current backend.

        Args:
            y_true: the targets, an array of the current backend (integer labels for the sparse
                cross-entropy).
            y_pred: the predictions, an array of the current backend.
            sample_weight: optional weights, one per sample (n,): the loss is then
                ``sum(sample_weight * per_sample) / n``, Keras's default reduction.

        Returns:
            A 0-d array.

        >>> float(nnx.losses.MeanSquaredError()(nnx.asarray([[1.0]]), nnx.asarray([[3.0]])))   # 4.0
        """
        from .backend import get_backend

        xp = get_backend().xp
        if sample_weight is None:
            return self.forward(xp, y_true, y_pred)
        w = xp.asarray(sample_weight, dtype=y_pred.dtype, device=y_pred.device)
        return self.forward(xp, y_true, y_pred, sample_weight=xp.reshape(w, (-1,)))

    def per_sample(self, xp: Any, y: Any, p: Any) -> Any:
        """Each sample's loss.

        Args:
            xp: the Array API namespace of ``y`` and ``p``.
            y: the targets.
            p: the predictions (probabilities, or logits with ``from_logits=True``).

        Returns:
            An array of shape (n,) and ``p``'s dtype.

        >>> per = nnx.losses.get("mse").per_sample(backend.xp, y, p)   # mean over each row
        """
        raise NotImplementedError

    def forward(self, xp: Any, y: Any, p: Any, sample_weight: Any = None) -> Any:
        """The loss of a batch, reduced as Keras does: the mean over the batch of the per-sample
        losses (mse, mae and huber also average over the output axis), or with weights
        ``sum(sample_weight * per_sample) / n`` ("sum_over_batch_size").

        Args:
            xp: the Array API namespace of ``y`` and ``p``.
            y: the targets.
            p: the predictions (probabilities, or logits with ``from_logits=True``).
            sample_weight: None, or one weight per sample, shape (n,), of ``p``'s dtype.

        Returns:
            A 0-d array of ``p``'s dtype.

        >>> loss = nnx.losses.get("mse").forward(backend.xp, y, p, sample_weight=w)
        """
        return _reduce(xp, self.per_sample(xp, y, p), sample_weight)

    def backward(self, xp: Any, y: Any, p: Any, sample_weight: Any = None) -> Any:
        """The gradient of ``forward`` with respect to the predictions (with weights: each row
        of the unweighted gradient times its sample's weight).

        Args:
            xp: the Array API namespace of ``y`` and ``p``.
            y: the targets.
            p: the predictions.
            sample_weight: None, or one weight per sample, shape (n,).

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

    def logits_value_and_gradient(self, ops: Any, y: Any, p: Any, sample_weight: Any = None) -> tuple[Any, Any]:
        """The loss and the gradient of the output activation's input, in one step, for outputs
        ``p`` of an activation this loss ``fuses_with`` (e.g. ``(p - y) / n`` for softmax).

        Args:
            ops: the backend's operations object (``backend.ops``).
            y: the targets.
            p: the activation's outputs (probabilities).
            sample_weight: None, or one weight per sample (n,): the loss is weighted as in
                ``forward`` and each row of the gradient scaled by its weight.

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
    key = (type(p), p.dtype)  # the array type first: dtypes of different libraries never get compared
    eps = _EPS_BY_DTYPE.get(key)
    if eps is None:
        eps = _EPS_BY_DTYPE[key] = max(EPSILON, float(xp.finfo(p.dtype).eps))
    return eps


class MeanSquaredError(Loss):
    """mean((p - y)^2) over the batch and the output axis.

    >>> nnx.losses.MeanSquaredError()  # or loss="mse"
    """

    name = "mean_squared_error"

    def per_sample(self, xp, y, p):
        r = p - y
        return _mean_rest(xp, r * r)

    def forward(self, xp, y, p, sample_weight=None):
        if sample_weight is not None:
            return super().forward(xp, y, p, sample_weight)
        r = p - y
        return xp.mean(r * r)

    def backward(self, xp, y, p, sample_weight=None):
        return _rows(xp, (p - y) * (2.0 / _count(p.shape)), sample_weight)


class MeanAbsoluteError(Loss):
    """mean(|p - y|) over the batch and the output axis.

    >>> nnx.losses.MeanAbsoluteError()  # or loss="mae"
    """

    name = "mean_absolute_error"

    def per_sample(self, xp, y, p):
        return _mean_rest(xp, xp.abs(p - y))

    def forward(self, xp, y, p, sample_weight=None):
        if sample_weight is not None:
            return super().forward(xp, y, p, sample_weight)
        return xp.mean(xp.abs(p - y))

    def backward(self, xp, y, p, sample_weight=None):
        return _rows(xp, xp.sign(p - y) * (1.0 / _count(p.shape)), sample_weight)


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

    def per_sample(self, xp, y, p):
        a = xp.abs(p - y)
        q = xp.minimum(a, self.delta)
        return _mean_rest(xp, 0.5 * q * q + self.delta * (a - q))

    def forward(self, xp, y, p, sample_weight=None):
        if sample_weight is not None:
            return super().forward(xp, y, p, sample_weight)
        a = xp.abs(p - y)
        q = xp.minimum(a, self.delta)
        return xp.mean(0.5 * q * q + self.delta * (a - q))

    def backward(self, xp, y, p, sample_weight=None):
        r = p - y
        return _rows(xp, _clip(xp, r, -self.delta, self.delta) * (1.0 / _count(p.shape)), sample_weight)

    def get_config(self):
        return {"class_name": "Huber", "config": {"delta": self.delta}}


class LogCosh(Loss):
    """log(cosh(p - y)), mean over the output axis and the batch, as Keras's ``log_cosh``.

    Computed as ``|r| + log1p(exp(-2 |r|)) - log 2``, which neither overflows nor loses the small
    values; its gradient is ``tanh(r)`` over the number of entries.

    >>> nnx.losses.LogCosh()  # or loss="log_cosh"
    """

    name = "log_cosh"

    @staticmethod
    def _log_cosh(xp, r):
        a = xp.abs(r)
        return a + xp.log1p(xp.exp(-2.0 * a)) - math.log(2.0)

    def per_sample(self, xp, y, p):
        return _mean_rest(xp, self._log_cosh(xp, p - y))

    def forward(self, xp, y, p, sample_weight=None):
        if sample_weight is not None:
            return super().forward(xp, y, p, sample_weight)
        return xp.mean(self._log_cosh(xp, p - y))

    def backward(self, xp, y, p, sample_weight=None):
        return _rows(xp, xp.tanh(p - y) * (1.0 / _count(p.shape)), sample_weight)


class MeanAbsolutePercentageError(Loss):
    """100 * mean(|y - p| / max(|y|, 1e-7)) over the output axis and the batch, as Keras.

    >>> nnx.losses.MeanAbsolutePercentageError()  # or loss="mape"
    """

    name = "mean_absolute_percentage_error"

    def per_sample(self, xp, y, p):
        return _mean_rest(xp, xp.abs(p - y) / xp.maximum(xp.abs(y), EPSILON)) * 100.0

    def backward(self, xp, y, p, sample_weight=None):
        g = xp.sign(p - y) / xp.maximum(xp.abs(y), EPSILON)
        return _rows(xp, g * (100.0 / _count(p.shape)), sample_weight)


class KLDivergence(Loss):
    """Kullback-Leibler divergence ``sum(y log(y / p))`` over the last axis, mean over the batch,
    with ``y`` and ``p`` clipped to [1e-7, 1] as Keras does.

    The targets and predictions are probability distributions (rows summing to 1); the clip
    passes no gradient where ``p`` lies outside [1e-7, 1].

    >>> nnx.losses.KLDivergence()  # or loss="kl_divergence"
    """

    name = "kl_divergence"

    def per_sample(self, xp, y, p):
        t = _clip(xp, y, EPSILON, 1.0)
        q = _clip(xp, p, EPSILON, 1.0)
        v = xp.sum(t * xp.log(t / q), axis=-1)
        return _mean_rest(xp, v)

    def backward(self, xp, y, p, sample_weight=None):
        t = _clip(xp, y, EPSILON, 1.0)
        inside = (p >= EPSILON) & (p <= 1.0)
        g = xp.where(inside, -t / _clip(xp, p, EPSILON, 1.0), 0.0)
        return _rows(xp, g * (1.0 / _count(p.shape[:-1])), sample_weight)


def _hinge_targets(xp: Any, y: Any) -> Any:
    """Keras's ``convert_binary_labels_to_hinge``: labels that are all 0 or 1 become -1 or 1;
    any other labels (already -1/1) are used as they are. Decided per batch, on the device."""
    binary = xp.all((y == 0.0) | (y == 1.0))
    return xp.where(binary, 2.0 * y - 1.0, y)


class Hinge(Loss):
    """mean(max(1 - y p, 0)) over the output axis and the batch, as Keras's ``hinge``: targets
    are -1/1, or 0/1 (converted to -1/1 when every target of the batch is 0 or 1).

    >>> nnx.losses.Hinge()  # or loss="hinge"
    """

    name = "hinge"

    def per_sample(self, xp, y, p):
        t = _hinge_targets(xp, y)
        return _mean_rest(xp, xp.maximum(1.0 - t * p, 0.0))

    def backward(self, xp, y, p, sample_weight=None):
        t = _hinge_targets(xp, y)
        g = xp.where(1.0 - t * p > 0.0, -t, 0.0)
        return _rows(xp, g * (1.0 / _count(p.shape)), sample_weight)


def _label_smoothing(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"label_smoothing must be a float in [0, 1]; received {value!r}.")
    return float(value)


class _CrossEntropy(Loss):
    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0):
        self.from_logits = bool(from_logits)
        self.label_smoothing = _label_smoothing(label_smoothing)

    def get_config(self):
        return {"class_name": type(self).__name__,
                "config": {"from_logits": self.from_logits, "label_smoothing": self.label_smoothing}}


def _clip_probabilities(xp, p, eps=EPSILON):
    return _clip(xp, p, eps, 1.0 - eps)


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
        label_smoothing: in [0, 1]; the targets become ``y (1 - label_smoothing) +
            label_smoothing / num_classes``, as Keras.

    >>> nnx.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)
    """

    name = "categorical_crossentropy"

    def _targets(self, xp, y, p):
        if self.label_smoothing:
            return y * (1.0 - self.label_smoothing) + self.label_smoothing / p.shape[-1]
        return y

    def fuses_with(self, activation):
        from .activations import Softmax

        return not self.from_logits and type(activation) is Softmax

    def per_sample(self, xp, y, p):
        t = self._targets(xp, y, p)
        if self.from_logits:
            logq = _log_softmax(xp, p)
        else:
            logq = xp.log(_clip_probabilities(xp, p / xp.sum(p, axis=-1, keepdims=True), _eps(xp, p)))
        return -_per_position(xp, t * logq)

    def forward(self, xp, y, p, sample_weight=None):
        if sample_weight is not None:
            return super().forward(xp, y, p, sample_weight)
        t = self._targets(xp, y, p)
        if self.from_logits:
            logq = _log_softmax(xp, p)
        else:
            logq = xp.log(_clip_probabilities(xp, p / xp.sum(p, axis=-1, keepdims=True), _eps(xp, p)))
        return -xp.sum(t * logq) * (1.0 / _count(p.shape[:-1]))  # the mean over samples and positions

    def backward(self, xp, y, p, sample_weight=None):
        t = self._targets(xp, y, p)
        n = _count(p.shape[:-1])  # samples times positions: the loss is their mean
        if self.from_logits:  # d/dz of -sum(t log softmax z) = softmax(z) sum(t) - t
            g = (_softmax(xp, p) * xp.sum(t, axis=-1, keepdims=True) - t) * (1.0 / n)
            return _rows(xp, g, sample_weight)
        eps = _eps(xp, p)
        s = xp.sum(p, axis=-1, keepdims=True)
        q = p / s
        inside = (q >= eps) & (q <= 1.0 - eps)  # the clip passes no gradient outside
        g = xp.where(inside, -t / _clip_probabilities(xp, q, eps), 0.0)
        return _rows(xp, (g - xp.sum(g * q, axis=-1, keepdims=True)) / s * (1.0 / n), sample_weight)

    def logits_value_and_gradient(self, ops, y, p, sample_weight=None):
        xp = ops.xp
        t = self._targets(xp, y, p)
        n = _count(p.shape[:-1])  # samples times positions: the loss is their mean
        v = t * xp.log(_clip_probabilities(xp, p, _eps(xp, p)))
        if sample_weight is None:
            loss = -xp.sum(v) * (1.0 / n)
        else:
            loss = _reduce(xp, -_per_position(xp, v), sample_weight)
        return loss, _rows(xp, (p * xp.sum(t, axis=-1, keepdims=True) - t) * (1.0 / n), sample_weight)


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Categorical cross-entropy with integer class labels y of shape (n,).

    Args:
        from_logits: whether the predictions are logits rather than probabilities.

    >>> nnx.losses.SparseCategoricalCrossentropy(from_logits=False)
    """

    name = "sparse_categorical_crossentropy"
    sparse_labels = True

    def __init__(self, from_logits: bool = False):
        super().__init__(from_logits=from_logits)

    @staticmethod
    def _flat_labels(y):
        return y[:, 0] if y.ndim == 2 else y

    def _targets(self, xp, y, p):
        return one_hot(xp, self._flat_labels(y), p.shape[-1], p.dtype)

    def logits_value_and_gradient(self, ops, y, p, sample_weight=None):
        labels = self._flat_labels(y)
        eps = _eps(ops.xp, p)
        loss, dz = ops.sparse_crossentropy(p, labels, eps)
        if sample_weight is None:
            return loss, dz
        xp = ops.xp
        picked = xp.take_along_axis(p, xp.reshape(labels, (-1, 1)), axis=-1)[:, 0]
        loss = _reduce(xp, -xp.log(_clip(xp, picked, eps, 1.0 - eps)), sample_weight)
        return loss, _rows(xp, dz, sample_weight)

    def get_config(self):
        return {"class_name": type(self).__name__, "config": {"from_logits": self.from_logits}}


class BinaryCrossentropy(_CrossEntropy):
    """-(y log p + (1 - y) log(1 - p)), mean over all entries, with p clipped to [eps, 1 - eps]
    (eps is Keras's 1e-7, or the dtype's resolution where that is coarser: about 1e-3 in float16).
    Targets must lie in [0, 1].

    Args:
        from_logits: whether the predictions are logits rather than probabilities (then the
            loss is computed stably from the logits). Defaults to False.
        label_smoothing: in [0, 1]; the targets become ``y (1 - label_smoothing) +
            0.5 label_smoothing``, as Keras. Defaults to 0.

    >>> nnx.losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.1)
    """

    name = "binary_crossentropy"
    target_range = (0.0, 1.0)  # checked on the data before training

    def _targets(self, y):
        if self.label_smoothing:
            return y * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        return y

    def fuses_with(self, activation):
        from .activations import Sigmoid

        return not self.from_logits and type(activation) is Sigmoid

    def _entries(self, xp, y, p):
        y = self._targets(y)
        if self.from_logits:  # max(z, 0) - z y + log(1 + e^-|z|)
            return xp.maximum(p, 0.0) - p * y + xp.log1p(xp.exp(-xp.abs(p)))
        q = _clip_probabilities(xp, p, _eps(xp, p))
        return -(y * xp.log(q) + (1.0 - y) * xp.log(1.0 - q))

    def per_sample(self, xp, y, p):
        return _mean_rest(xp, self._entries(xp, y, p))

    def forward(self, xp, y, p, sample_weight=None):
        if sample_weight is not None:
            return super().forward(xp, y, p, sample_weight)
        return xp.mean(self._entries(xp, y, p))

    def backward(self, xp, y, p, sample_weight=None):
        y = self._targets(y)
        scale = 1.0 / _count(p.shape)
        if self.from_logits:
            return _rows(xp, (0.5 * xp.tanh(0.5 * p) + 0.5 - y) * scale, sample_weight)
        eps = _eps(xp, p)
        q = _clip_probabilities(xp, p, eps)
        inside = (p >= eps) & (p <= 1.0 - eps)
        return _rows(xp, xp.where(inside, (q - y) / (q * (1.0 - q)), 0.0) * scale, sample_weight)

    def logits_value_and_gradient(self, ops, y, p, sample_weight=None):
        xp = ops.xp
        return (self.forward(xp, y, p, sample_weight),
                _rows(xp, (p - self._targets(y)) * (1.0 / _count(p.shape)), sample_weight))


registry = Registry("loss", Loss)
registry.add(MeanSquaredError, "mean_squared_error", "mse")
registry.add(MeanAbsoluteError, "mean_absolute_error", "mae")
registry.add(Huber, "huber", "huber_loss")
registry.add(BinaryCrossentropy, "binary_crossentropy")
registry.add(CategoricalCrossentropy, "categorical_crossentropy")
registry.add(SparseCategoricalCrossentropy, "sparse_categorical_crossentropy")
registry.add(KLDivergence, "kl_divergence", "kld", "kullback_leibler_divergence")
registry.add(Hinge, "hinge")
registry.add(LogCosh, "log_cosh", "logcosh")
registry.add(MeanAbsolutePercentageError, "mean_absolute_percentage_error", "mape")


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
