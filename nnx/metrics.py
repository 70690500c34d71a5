"""Metrics, accumulated on the device as per-sample sums and read once per epoch.

``"accuracy"`` resolves to binary, categorical or sparse accuracy from the loss and output shape.
"""
from __future__ import annotations

import copy
from typing import Any

from .registry import Registry

from . import losses as _losses


class Metric:
    """Base class: ``batch_total(xp, y, p)`` returns the sum of the per-sample metric over a
    batch (a 0-d array on the device); the training loop sums it over the epoch and divides by
    the number of samples once per epoch. ``name`` is the key in the logs and the History.

    >>> model.compile("adam", "mse", metrics=["mae"])
    """

    name = ""

    def batch_total(self, xp: Any, y: Any, p: Any) -> Any:
        """The sum over the batch of the per-sample metric.

        Args:
            xp: the Array API namespace of ``y`` and ``p``.
            y: the batch's targets (integer labels for the sparse accuracy).
            p: the batch's predictions.

        Returns:
            A 0-d array (kept on the device).

        >>> total = nnx.metrics.BinaryAccuracy().batch_total(backend.xp, y, p)
        """
        raise NotImplementedError

    def __call__(self, y_true: Any, y_pred: Any) -> float:
        """The metric over one batch, as a float (host side; for interactive use).

        Args:
            y_true: the targets, an array of the current backend.
            y_pred: the predictions, an array of the current backend.

        Returns:
            The mean over the batch's samples, a float.

        >>> nnx.metrics.BinaryAccuracy()(nnx.asarray([[1.0]]), nnx.asarray([[0.8]]))   # 1.0
        """
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
    """Share of outputs on the right side of ``threshold`` (a target above 0.5 counts as 1).

    Args:
        threshold: predictions above it count as 1. Defaults to 0.5.

    >>> nnx.metrics.BinaryAccuracy(threshold=0.5)
    """
    name = "binary_accuracy"

    def __init__(self, threshold: float = 0.5):
        self.threshold = threshold

    def batch_total(self, xp, y, p):
        hit = xp.astype((p > self.threshold) == (y > 0.5), p.dtype)
        return xp.sum(_per_sample_mean(xp, hit))


class CategoricalAccuracy(Metric):
    """Share of rows whose argmax matches the one-hot target's.

    >>> nnx.metrics.CategoricalAccuracy()
    """
    name = "categorical_accuracy"

    def batch_total(self, xp, y, p):
        return xp.sum(xp.astype(xp.argmax(p, axis=-1) == xp.argmax(y, axis=-1), p.dtype))


class SparseCategoricalAccuracy(Metric):
    """Share of rows whose argmax equals the integer label.

    >>> nnx.metrics.SparseCategoricalAccuracy()
    """
    name = "sparse_categorical_accuracy"

    def batch_total(self, xp, y, p):
        labels = y[:, 0] if y.ndim == 2 else y
        return xp.sum(xp.astype(xp.argmax(p, axis=-1) == xp.astype(labels, xp.int64), p.dtype))


def unique_names(metrics: list[Metric]) -> list[Metric]:
    """Give repeated names Keras's suffixes: ``binary_accuracy``, ``binary_accuracy_1``, …

    Args:
        metrics: the metrics, in order; renamed in place.

    Returns:
        ``metrics``.

    >>> [m.name for m in unique_names([BinaryAccuracy(), BinaryAccuracy()])]
    """
    seen: dict[str, int] = {}
    for m in metrics:
        base = m.name
        if base in seen:
            seen[base] += 1
            m.name = f"{base}_{seen[base]}"
        else:
            seen[base] = 0
    return metrics


registry = Registry("metric", Metric)
registry.add(MeanAbsoluteError, "mae", "mean_absolute_error")
registry.add(MeanSquaredError, "mse", "mean_squared_error")
registry.add(BinaryAccuracy, "binary_accuracy")
registry.add(CategoricalAccuracy, "categorical_accuracy")
registry.add(SparseCategoricalAccuracy, "sparse_categorical_accuracy")


def get(identifier: str | Metric, loss: _losses.Loss, output_units: int | None) -> Metric:
    """A metric from its name or an instance (copied), named as given.

    Args:
        identifier: a name (``"accuracy"`` / ``"acc"``, ``"mae"``, ``"mse"``,
            ``"binary_accuracy"``, …) or a ``Metric`` (copied).
        loss: the compiled loss: ``"accuracy"`` picks sparse categorical accuracy for a sparse
            loss, binary accuracy for binary cross-entropy or one output unit, else categorical
            accuracy, as Keras does.
        output_units: the width of the model's output, or None when not known yet.

    Returns:
        A ``Metric``.

    Raises:
        ValueError: an unknown name (the message lists the valid ones).

    >>> nnx.metrics.get("accuracy", nnx.losses.get("sparse_categorical_crossentropy"), 10)
    """
    if isinstance(identifier, Metric):
        return copy.copy(identifier)
    if isinstance(identifier, str) and identifier.lower() in ("accuracy", "acc"):
        if loss.sparse_labels:
            metric = SparseCategoricalAccuracy()
        elif isinstance(loss, _losses.BinaryCrossentropy) or output_units == 1:
            metric = BinaryAccuracy()
        else:
            metric = CategoricalAccuracy()
    else:
        try:
            metric = registry.get(identifier)
        except ValueError:
            raise ValueError(f"Unknown metric {identifier!r}; expected one of: accuracy, "
                             f"{', '.join(registry.names())} (or a Metric instance).") from None
    metric.name = identifier.lower() if isinstance(identifier, str) else metric.name
    return metric
