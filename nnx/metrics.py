"""Metrics, accumulated on the device as per-sample sums and read once per epoch.

``"accuracy"`` resolves to binary, categorical or sparse accuracy from the loss and output shape.
"""
from __future__ import annotations

from typing import Any

from . import losses as _losses


class Metric:
    """``batch_total(xp, y, p)`` returns the sum of the per-sample metric over a batch (0-d array).

    >>> model.compile("adam", "mse", metrics=["mae"])
    """

    name = ""

    def batch_total(self, xp: Any, y: Any, p: Any) -> Any:
        raise NotImplementedError

    def __call__(self, y_true: Any, y_pred: Any) -> float:
        """The metric over one batch, as a float (host side; for interactive use)."""
        from .backend import get_backend

        xp = get_backend().xp
        return float(self.batch_total(xp, y_true, y_pred)) / int(y_pred.shape[0])


def _per_sample_mean(xp, v):
    return xp.mean(v, axis=tuple(range(1, v.ndim))) if v.ndim > 1 else v


class MeanAbsoluteError(Metric):
    """Mean absolute error per sample, averaged over the epoch.

    >>> model.compile("adam", "mse", metrics=["mae"])
    """
    name = "mae"

    def batch_total(self, xp, y, p):
        return xp.sum(_per_sample_mean(xp, xp.abs(p - y)))


class MeanSquaredError(Metric):
    """Mean squared error per sample, averaged over the epoch.

    >>> model.compile("adam", "mae", metrics=["mse"])
    """
    name = "mse"

    def batch_total(self, xp, y, p):
        r = p - y
        return xp.sum(_per_sample_mean(xp, r * r))


class BinaryAccuracy(Metric):
    """Share of outputs on the right side of ``threshold``.

    >>> nnx.metrics.BinaryAccuracy(threshold=0.5)
    """
    name = "accuracy"

    def __init__(self, threshold: float = 0.5):
        self.threshold = threshold

    def batch_total(self, xp, y, p):
        hit = xp.astype((p > self.threshold) == (y > 0.5), p.dtype)
        return xp.sum(_per_sample_mean(xp, hit))


class CategoricalAccuracy(Metric):
    """Share of rows whose argmax matches the one-hot target's.

    >>> nnx.metrics.CategoricalAccuracy()
    """
    name = "accuracy"

    def batch_total(self, xp, y, p):
        return xp.sum(xp.astype(xp.argmax(p, axis=-1) == xp.argmax(y, axis=-1), p.dtype))


class SparseCategoricalAccuracy(Metric):
    """Share of rows whose argmax equals the integer label.

    >>> nnx.metrics.SparseCategoricalAccuracy()
    """
    name = "accuracy"

    def batch_total(self, xp, y, p):
        labels = y[:, 0] if y.ndim == 2 else y
        return xp.sum(xp.astype(xp.argmax(p, axis=-1) == xp.astype(labels, xp.int64), p.dtype))


_NAMED = {"mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
          "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
          "binary_accuracy": BinaryAccuracy, "categorical_accuracy": CategoricalAccuracy,
          "sparse_categorical_accuracy": SparseCategoricalAccuracy}


def get(identifier: str | Metric, loss: _losses.Loss, output_units: int | None) -> Metric:
    """A metric from its name; ``"accuracy"``/``"acc"`` picks the variant as Keras does."""
    if isinstance(identifier, Metric):
        return identifier
    key = str(identifier).lower()
    if key in ("accuracy", "acc"):
        if loss.sparse_labels:
            metric = SparseCategoricalAccuracy()
        elif isinstance(loss, _losses.BinaryCrossentropy) or output_units == 1:
            metric = BinaryAccuracy()
        else:
            metric = CategoricalAccuracy()
        metric.name = key
        return metric
    if key in _NAMED:
        metric = _NAMED[key]()
        metric.name = key
        return metric
    raise ValueError(f"Unknown metric {identifier!r}; expected one of: accuracy, {', '.join(sorted(_NAMED))}.")
