"""Metrics, accumulated on the device and read once per epoch (or when a progress bar redraws).

Two kinds, one protocol (``reset()``, ``update(xp, y, p)``, ``result()``):

- mean metrics (``stateful = False``): the mean of a per-sample value. ``batch_total(xp, y, p)``
  gives a batch's sum; the training loop adds these up with the loss (``nnx.training.Sums``).
- stateful metrics (``stateful = True``: ``Precision``, ``Recall``, ``AUC``): the result is not a
  mean of per-sample values, so the metric keeps its own state across batches, a list ``state``
  of device arrays (confusion counts) that add up across batches (and across processes),
  from which ``result()`` computes the value. Nothing is read back to the host per batch.

``"accuracy"`` resolves to binary, categorical or sparse accuracy from the loss and output shape.
"""
from __future__ import annotations

import copy
import numbers
from typing import Any

from .registry import Registry

from . import losses as _losses


class Metric:
    """Base class. Every metric speaks one protocol: ``reset()``, ``update(xp, y, p)`` per batch,
    ``result()`` (a 0-d array or a float); ``name`` is the key in the logs and the History.

    Mean metrics implement ``batch_total(xp, y, p)``, the sum of the per-sample metric over a
    batch (a 0-d array on the device); the training loop sums it over the epoch and divides by
    the number of samples once per epoch, and the protocol methods follow from it. Metrics whose
    value is not a mean over samples set ``stateful = True`` and implement ``reset``, ``update``
    and ``result`` over ``state``, a list of device arrays that add up across batches.

    ``metric(y_true, y_pred)`` is the metric over that one batch, as a float (for interactive
    use); ``update_state(y_true, y_pred)``, ``result()`` and ``reset_state()`` accumulate as in
    Keras, on the current backend.

    >>> model.compile("adam", "mse", metrics=["mae"])
    >>> m = nnx.metrics.AUC(); m.update_state(y_true, y_pred); float(m.result())
    """

    name = ""
    stateful = False  # True: the training loop calls reset/update/result instead of batch_total

    def __init__(self, name: str | None = None):
        if name is not None:
            if not isinstance(name, str) or not name:
                raise ValueError(f"A metric's name must be a non-empty str; received {name!r}.")
            self.name = name

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

    # -- the accumulation protocol ------------------------------------------------------------
    def reset(self) -> None:
        """Forget every batch seen (the training loop calls it on a fresh copy each epoch).

        >>> m = nnx.metrics.Precision(); m.reset()
        """
        self.state = None

    def update(self, xp: Any, y: Any, p: Any) -> None:
        """Add one batch to the state, on the device (nothing is read back to the host).

        Args:
            xp: the Array API namespace of ``y`` and ``p``.
            y: the batch's targets.
            p: the batch's predictions.

        >>> m.update(backend.xp, y_batch, p_batch)
        """
        total = self.batch_total(xp, y, p)
        state = getattr(self, "state", None)
        self.state = [total, int(p.shape[0])] if state is None else [state[0] + total, state[1] + int(p.shape[0])]

    def result(self) -> Any:
        """The metric over every batch since ``reset``.

        Returns:
            A 0-d array on the device (``float()`` reads it), or 0.0 before the first batch.

        >>> float(m.result())
        """
        state = getattr(self, "state", None)
        return 0.0 if state is None or state[1] == 0 else state[0] / state[1]

    def fresh(self) -> "Metric":
        """A copy with the same configuration and name, and no state.

        Returns:
            A ``Metric`` of the same class.

        >>> epoch_metric = model.metrics[0].fresh()
        """
        m = copy.copy(self)
        m.reset()
        return m

    # -- Keras's spellings, on the current backend --------------------------------------------
    def reset_state(self) -> None:
        """Keras's name for ``reset``.

        >>> m.reset_state()
        """
        self.reset()

    def update_state(self, y_true: Any, y_pred: Any) -> None:
        """Keras's ``update_state``: ``update`` with the current backend's namespace.

        Args:
            y_true: the batch's targets, an array of the current backend.
            y_pred: the batch's predictions, an array of the current backend.

        >>> m = nnx.metrics.AUC(); m.update_state(nnx.asarray(y), nnx.asarray(p)); float(m.result())
        """
        from .backend import get_backend

        self.update(get_backend().xp, y_true, y_pred)

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

        m = self.fresh()
        m.update(get_backend().xp, y_true, y_pred)
        return float(m.result())

    def get_config(self) -> dict:
        """The metric as ``{"class_name": ..., "config": {constructor arguments}}`` (saved with a
        model; ``nnx.metrics.get`` reads it back).

        Returns:
            A JSON-able dict.

        >>> nnx.metrics.AUC(num_thresholds=50).get_config()
        """
        return {"class_name": type(self).__name__, "config": {}}


def _per_sample_mean(xp, v):
    return xp.mean(v, axis=tuple(range(1, v.ndim))) if v.ndim > 1 else v


class MeanAbsoluteError(Metric):
    """Mean absolute error per sample, averaged over the epoch.

    Args:
        name: the key in the logs and the History. Defaults to None: the class's name.

    >>> model.compile("adam", "mse", metrics=["mae"])
    """
    name = "mean_absolute_error"  # as Keras's class; the string "mae" keeps its own name

    def batch_total(self, xp, y, p):
        return xp.sum(_per_sample_mean(xp, xp.abs(p - y)))


class MeanSquaredError(Metric):
    """Mean squared error per sample, averaged over the epoch.

    Args:
        name: the key in the logs and the History. Defaults to None: the class's name.

    >>> model.compile("adam", "mae", metrics=["mse"])
    """
    name = "mean_squared_error"  # as Keras's class; the string "mse" keeps its own name

    def batch_total(self, xp, y, p):
        r = p - y
        return xp.sum(_per_sample_mean(xp, r * r))


class BinaryAccuracy(Metric):
    """Share of outputs whose thresholded prediction (1 above ``threshold``, else 0) equals the
    target, as Keras: a target other than 0 or 1 never matches.

    Args:
        threshold: predictions above it count as 1. Defaults to 0.5.
        name: the key in the logs and the History. Defaults to None: the class's name.

    >>> nnx.metrics.BinaryAccuracy(threshold=0.5)
    """
    name = "binary_accuracy"

    def __init__(self, threshold: float = 0.5, name: str | None = None):
        super().__init__(name)
        self.threshold = threshold

    def batch_total(self, xp, y, p):
        hit = xp.astype(xp.astype(p > self.threshold, p.dtype) == y, p.dtype)
        return xp.sum(_per_sample_mean(xp, hit))

    def get_config(self):
        return {"class_name": type(self).__name__, "config": {"threshold": float(self.threshold)}}


def _one_hot_targets(metric: Metric, y: Any, p: Any) -> None:
    if tuple(y.shape) != tuple(p.shape):
        raise ValueError(f"{type(metric).__name__} expects one-hot targets of the outputs' shape "
                         f"{tuple(p.shape)}; received targets of shape {tuple(y.shape)} (integer labels go "
                         f"with the sparse metrics)")


class CategoricalAccuracy(Metric):
    """Share of rows whose argmax matches the one-hot target's.

    Args:
        name: the key in the logs and the History. Defaults to None: the class's name.

    >>> nnx.metrics.CategoricalAccuracy()
    """
    name = "categorical_accuracy"

    def batch_total(self, xp, y, p):  # outputs (n, steps, classes): each sample's share of its steps
        _one_hot_targets(self, y, p)
        return xp.sum(_per_sample_mean(xp, xp.astype(xp.argmax(p, axis=-1) == xp.argmax(y, axis=-1), p.dtype)))


class SparseCategoricalAccuracy(Metric):
    """Share of rows whose argmax equals the integer label.

    Args:
        name: the key in the logs and the History. Defaults to None: the class's name.

    >>> nnx.metrics.SparseCategoricalAccuracy()
    """
    name = "sparse_categorical_accuracy"

    def batch_total(self, xp, y, p):
        labels = y[:, 0] if y.ndim == 2 else y
        return xp.sum(xp.astype(xp.argmax(p, axis=-1) == xp.astype(labels, xp.int64), p.dtype))


def _positive_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or int(k) < 1:
        raise ValueError(f"k must be a positive int; received {k!r}.")
    return int(k)


def _in_top_k(xp: Any, p: Any, labels: Any, k: int) -> Any:
    """Rows whose label's score is among the ``k`` largest: fewer than ``k`` scores strictly
    greater than it. Ties at the boundary count as in the top k (TensorFlow's ``in_top_k``); a
    NaN score at the label counts as the lowest."""
    at_label = xp.take_along_axis(p, xp.reshape(xp.astype(labels, xp.int64), (-1, 1)), axis=-1)
    at_label = xp.where(xp.isnan(at_label), -xp.inf, at_label)
    return xp.count_nonzero(p > at_label, axis=-1) < k


def _per_sample_total(xp: Any, hits: Any, p: Any) -> Any:
    """The sum over samples of each sample's share of hits (one hit per row of ``p`` flattened to
    (-1, classes); outputs of rank > 2 have several rows a sample)."""
    total = xp.sum(xp.astype(hits, p.dtype))
    return total if p.ndim <= 2 else total * (p.shape[0] / hits.shape[0])


class TopKCategoricalAccuracy(Metric):
    """Share of rows whose one-hot target's class (its argmax) is among the ``k`` highest
    predictions; ties at the k-th place count as hits, as Keras (TensorFlow's ``in_top_k``).

    Args:
        k: how many of the highest predictions count.
        name: the key in the logs and the History. Defaults to None: the class's name.

    >>> model.compile("adam", "categorical_crossentropy", metrics=[nnx.metrics.TopKCategoricalAccuracy(k=3)])
    """
    name = "top_k_categorical_accuracy"

    def __init__(self, k: int = 5, name: str | None = None):
        super().__init__(name)
        self.k = _positive_k(k)

    def batch_total(self, xp, y, p):
        _one_hot_targets(self, y, p)
        p2 = xp.reshape(p, (-1, p.shape[-1]))
        labels = xp.argmax(xp.reshape(y, (-1, y.shape[-1])), axis=-1)
        return _per_sample_total(xp, _in_top_k(xp, p2, labels, self.k), p)

    def get_config(self):
        return {"class_name": type(self).__name__, "config": {"k": self.k}}


class SparseTopKCategoricalAccuracy(TopKCategoricalAccuracy):
    """Share of rows whose integer label is among the ``k`` highest predictions; ties at the
    k-th place count as hits, as Keras.

    Args:
        k: how many of the highest predictions count.
        name: the key in the logs and the History. Defaults to None: the class's name.

    >>> model.compile("adam", "sparse_categorical_crossentropy", metrics=["sparse_top_k_categorical_accuracy"])
    """
    name = "sparse_top_k_categorical_accuracy"

    def batch_total(self, xp, y, p):
        labels = y[:, 0] if y.ndim == p.ndim and y.shape[-1] == 1 else y
        p2 = xp.reshape(p, (-1, p.shape[-1]))
        return _per_sample_total(xp, _in_top_k(xp, p2, xp.reshape(labels, (-1,)), self.k), p)


# -- confusion-count metrics --------------------------------------------------------------------
def _flat_truth_and_scores(xp: Any, y: Any, p: Any) -> tuple[Any, Any]:
    """(positive?, score) per prediction entry, flattened. Integer labels (one fewer axis than a
    multi-unit ``p``) become one-hot rows; a target is positive when it is nonzero (as Keras)."""
    if y.ndim == p.ndim - 1 and p.shape[-1] > 1:
        y = _losses.one_hot(xp, xp.astype(y, xp.int64), p.shape[-1], p.dtype)
    return xp.reshape(y != 0, (-1,)), xp.reshape(p, (-1,))


def _divide_no_nan(xp: Any, num: Any, den: Any) -> Any:
    """num / den, and 0 where den is 0 (Keras's ``divide_no_nan``)."""
    safe = den > 0
    return xp.where(safe, num / xp.where(safe, den, 1.0), 0.0)


def _count_dtype(xp: Any, p: Any) -> Any:
    """The float type results are computed in: p's, widened from float16."""
    half = getattr(xp, "float16", None)
    return xp.float32 if half is not None and p.dtype == half else p.dtype


def _threshold(value: Any, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ValueError(f"thresholds must be one float in [0, 1] (several thresholds are not supported); "
                             f"received {value!r}.")
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"thresholds must be a float in [0, 1]; received {value!r}.")
    return float(value)


class _ConfusionMetric(Metric):
    """Counts of true and false positives and negatives at one threshold, kept on the device as
    int64 0-d arrays: ``state = [tp, fp, fn]``."""

    stateful = True

    def __init__(self, thresholds: float | None = None, name: str | None = None):
        super().__init__(name)
        self.thresholds = _threshold(thresholds, 0.5)
        self.reset()

    def update(self, xp, y, p):
        truth, scores = _flat_truth_and_scores(xp, y, p)
        predicted = scores > self.thresholds
        counts = [xp.count_nonzero(truth & predicted), xp.count_nonzero(~truth & predicted),
                  xp.count_nonzero(truth & ~predicted)]
        self._dtype = _count_dtype(xp, p)
        self._xp = xp
        self.state = counts if self.state is None else [a + b for a, b in zip(self.state, counts)]

    def get_config(self):
        return {"class_name": type(self).__name__, "config": {"thresholds": self.thresholds}}


class Precision(_ConfusionMetric):
    """Precision ``tp / (tp + fp)`` over every batch of the epoch (0 when nothing is predicted
    positive), as Keras: a prediction is positive above ``thresholds`` (0.5), a target when it
    is nonzero. Multi-unit outputs count every entry (micro-average); integer labels for a
    multi-unit output are read as one-hot rows.

    Args:
        thresholds: the decision threshold, a float in [0, 1] (default 0.5).
        name: the key in the logs and the History. Defaults to None: the class's name.

    >>> model.compile("adam", "binary_crossentropy", metrics=["precision", nnx.metrics.Recall()])
    """
    name = "precision"

    def result(self):
        if self.state is None:
            return 0.0
        xp, (tp, fp, _) = self._xp, self.state
        tp = xp.astype(tp, self._dtype)
        return _divide_no_nan(xp, tp, tp + xp.astype(fp, self._dtype))


class Recall(_ConfusionMetric):
    """Recall ``tp / (tp + fn)`` over every batch of the epoch (0 when there are no positive
    targets), as Keras: a prediction is positive above ``thresholds`` (0.5), a target when it is
    nonzero.

    Args:
        thresholds: the decision threshold, a float in [0, 1] (default 0.5).
        name: the key in the logs and the History. Defaults to None: the class's name.

    >>> model.compile("adam", "binary_crossentropy", metrics=["recall"])
    """
    name = "recall"

    def result(self):
        if self.state is None:
            return 0.0
        xp, (tp, _, fn) = self._xp, self.state
        tp = xp.astype(tp, self._dtype)
        return _divide_no_nan(xp, tp, tp + xp.astype(fn, self._dtype))


class AUC(Metric):
    """Area under the ROC curve, as Keras's ``AUC()``: true- and false-positive counts at
    ``num_thresholds`` thresholds evenly spaced over [0, 1] (the first just below 0, the last just
    above 1) are accumulated over the epoch, and the curve through them is integrated by the
    trapezoid rule (Keras's ``summation_method="interpolation"``). Multi-unit outputs count every
    entry (Keras's ``multi_label=False``); a target is positive when it is nonzero.

    The counts come from sorting each batch's scores and a binary search of the thresholds
    (``O(m log m)`` per batch of ``m`` entries), on the device.

    Args:
        num_thresholds: how many thresholds (> 1); more is closer to the exact area.
        from_logits: whether the predictions are logits (a sigmoid is applied first).
        name: the key in the logs and the History. Defaults to None: the class's name.

    >>> model.compile("adam", "binary_crossentropy", metrics=["auc"])
    """
    name = "auc"
    stateful = True

    def __init__(self, num_thresholds: int = 200, from_logits: bool = False, name: str | None = None):
        super().__init__(name)
        if isinstance(num_thresholds, bool) or not isinstance(num_thresholds, numbers.Integral) \
                or int(num_thresholds) < 2:
            raise ValueError(f"num_thresholds must be an int > 1; received {num_thresholds!r}.")
        self.num_thresholds = int(num_thresholds)
        self.from_logits = bool(from_logits)
        self.reset()

    def thresholds(self) -> list[float]:
        """Keras's thresholds, ``num_thresholds`` of them evenly spaced over [0, 1], the ends
        pushed out by 1e-7.

        Returns:
            ``[-1e-7, 1/(N-1), …, (N-2)/(N-1), 1 + 1e-7]`` as floats.

        >>> nnx.metrics.AUC(num_thresholds=3).thresholds()   # [-1e-07, 0.5, 1.0000001]
        """
        n = self.num_thresholds
        return [0.0 - _losses.EPSILON] + [(i + 1) / (n - 1) for i in range(n - 2)] + [1.0 + _losses.EPSILON]

    def reset(self):
        self.state = None
        self._th = None

    @staticmethod
    def _count_above(xp: Any, scores: Any, member: Any, th: Any) -> Any:
        """How many entries with ``member`` true score strictly above each threshold."""
        s = xp.sort(xp.where(member & ~xp.isnan(scores), scores, -xp.inf))
        return s.shape[0] - xp.searchsorted(s, th, side="right")

    def update(self, xp, y, p):
        truth, scores = _flat_truth_and_scores(xp, y, p)
        if self.from_logits:
            scores = 0.5 * xp.tanh(0.5 * scores) + 0.5
        if self._th is None:
            self._th = xp.asarray(self.thresholds(), dtype=scores.dtype, device=scores.device)
            self._dtype = _count_dtype(xp, p)
            self._xp = xp
        tp = self._count_above(xp, scores, truth, self._th)
        fp = self._count_above(xp, scores, ~truth, self._th)
        pos = xp.count_nonzero(truth)
        counts = [tp, fp, pos, truth.shape[0] - pos]
        self.state = counts if self.state is None else [a + b for a, b in zip(self.state, counts)]

    def result(self):
        if self.state is None:
            return 0.0
        xp, dtype = self._xp, self._dtype
        tp, fp, pos, neg = (xp.astype(a, dtype) for a in self.state)
        recall = _divide_no_nan(xp, tp, xp.broadcast_to(pos, tp.shape))
        fp_rate = _divide_no_nan(xp, fp, xp.broadcast_to(neg, fp.shape))
        heights = (recall[:-1] + recall[1:]) * 0.5
        return xp.sum((fp_rate[:-1] - fp_rate[1:]) * heights)

    def get_config(self):
        return {"class_name": type(self).__name__,
                "config": {"num_thresholds": self.num_thresholds, "from_logits": self.from_logits}}


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
class LossMetric(Metric):
    """A loss used as a metric: the mean over the samples of its per-sample value, unweighted (as
    Keras, a loss's name may be given in ``metrics``).

    Args:
        loss: a loss name, config dict or ``nnx.losses.Loss``.
        name: the key in the logs and the History. Defaults to None: the loss's name.

    >>> model.compile("adam", "mse", metrics=["binary_crossentropy"])
    """

    def __init__(self, loss: str | dict | _losses.Loss, name: str | None = None):
        super().__init__(name)
        self.loss = _losses.get(loss)
        if name is None:
            self.name = self.loss.name

    def batch_total(self, xp, y, p):
        return xp.sum(self.loss.per_sample(xp, y, p))

    def get_config(self):
        return {"class_name": "LossMetric", "config": {"loss": self.loss.get_config()}}


registry.add(MeanAbsoluteError, "mae", "mean_absolute_error")
registry.add(MeanSquaredError, "mse", "mean_squared_error")
registry.add(BinaryAccuracy, "binary_accuracy")
registry.add(CategoricalAccuracy, "categorical_accuracy")
registry.add(SparseCategoricalAccuracy, "sparse_categorical_accuracy")
registry.add(Precision, "precision")
registry.add(Recall, "recall")
registry.add(AUC, "auc")
registry.add(TopKCategoricalAccuracy, "top_k_categorical_accuracy")
registry.add(SparseTopKCategoricalAccuracy, "sparse_top_k_categorical_accuracy")
registry.add(LossMetric)


def get(identifier: str | dict | Metric, loss: _losses.Loss, output_units: int | None) -> Metric:
    """A metric from its name, its config dict or an instance (copied); a name given as a string
    is the metric's name (its History key), exactly as written, as Keras.

    Args:
        identifier: a name (``"accuracy"`` / ``"acc"``, ``"mae"``, ``"mse"``,
            ``"binary_accuracy"``, ``"precision"``, ``"auc"``, …), a config dict
            (``metric.get_config()``, with an optional ``"name"``), or a ``Metric`` (copied).
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
            try:  # a loss's name: the loss as a metric, as Keras
                metric = LossMetric(identifier) if isinstance(identifier, str) else None
            except ValueError:
                metric = None
            if metric is None:
                raise ValueError(f"Unknown metric {identifier!r}; expected one of: accuracy, "
                                 f"{', '.join(registry.names())}, a loss's name (or a Metric instance).") from None
    if isinstance(identifier, str):
        metric.name = identifier  # as Keras: the string as given ("acc", "mae", "AUC") names the metric
    elif isinstance(identifier, dict) and isinstance(identifier.get("name"), str):
        metric.name = identifier["name"]
    return metric
