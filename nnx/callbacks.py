"""Callbacks: hooks into ``fit``, ``evaluate`` and ``predict``, with Keras 3's names and semantics.
``History`` is always attached and returned by ``fit``. Every message a callback prints goes
through :func:`nnx.progbar.message`, so it starts on a line of its own even mid-bar."""
from __future__ import annotations

import csv
import inspect
import math
import numbers
import os
import warnings
from collections.abc import Mapping
from typing import Any, Callable, Iterator

from . import progbar as _progbar

# Every hook a loop may call, and the Keras 2 names of the train-batch hooks.
HOOKS = (
    "on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
    "on_train_batch_begin", "on_train_batch_end",
    "on_test_begin", "on_test_end", "on_test_batch_begin", "on_test_batch_end",
    "on_predict_begin", "on_predict_end", "on_predict_batch_begin", "on_predict_batch_end",
)
_ALIASES = {"on_batch_begin": "on_train_batch_begin", "on_batch_end": "on_train_batch_end"}
_ALIASED_BY = {v: k for k, v in _ALIASES.items()}


class Callback:
    """Base class for hooks into training, evaluation and prediction; every hook does nothing
    unless overridden. ``self.model`` and ``self.params`` are set by the loop before any hook.

    ``on_train_batch_begin/end`` call ``on_batch_begin/end`` (their Keras 2 names), so overriding
    either name works, and a callback overriding one of them is called once per batch. Batch
    ``logs`` hold the running means over the epoch so far (``"loss"`` and the metric names).

    Example:

    >>> class PrintLoss(nnx.callbacks.Callback):
    ...     def on_epoch_end(self, epoch, logs=None):
    ...         print(epoch, logs["loss"])
    >>> model.fit(x, y, epochs=3, callbacks=[PrintLoss()])
    """

    def __init__(self) -> None:
        self.model = None
        self.params: dict = {}

    def set_model(self, model: Any) -> None:
        self.model = model

    def set_params(self, params: dict) -> None:
        self.params = params

    # -- fit ------------------------------------------------------------------------------------
    def on_train_begin(self, logs: Mapping | None = None) -> None:
        """Called once at the start of ``fit``."""

    def on_train_end(self, logs: Mapping | None = None) -> None:
        """Called once at the end of ``fit`` (stopped early or not)."""

    def on_epoch_begin(self, epoch: int, logs: Mapping | None = None) -> None:
        """Called at the start of epoch ``epoch`` (0-based)."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Called at the end of an epoch; ``logs`` holds the epoch's loss, metrics and ``val_*``."""

    def on_train_batch_begin(self, batch: int, logs: Mapping | None = None) -> None:
        """Called before each training batch; by default calls ``on_batch_begin``."""
        self.on_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: Mapping | None = None) -> None:
        """Called after each training batch; by default calls ``on_batch_end``."""
        self.on_batch_end(batch, logs)

    def on_batch_begin(self, batch: int, logs: Mapping | None = None) -> None:
        """Keras 2 name of ``on_train_batch_begin``."""

    def on_batch_end(self, batch: int, logs: Mapping | None = None) -> None:
        """Keras 2 name of ``on_train_batch_end``."""

    # -- evaluate (and the validation inside fit) -----------------------------------------------
    def on_test_begin(self, logs: Mapping | None = None) -> None:
        """Called at the start of ``evaluate`` and of each validation pass in ``fit``."""

    def on_test_end(self, logs: Mapping | None = None) -> None:
        """Called at the end of ``evaluate`` and of each validation pass."""

    def on_test_batch_begin(self, batch: int, logs: Mapping | None = None) -> None:
        """Called before each evaluation batch."""

    def on_test_batch_end(self, batch: int, logs: Mapping | None = None) -> None:
        """Called after each evaluation batch."""

    # -- predict --------------------------------------------------------------------------------
    def on_predict_begin(self, logs: Mapping | None = None) -> None:
        """Called at the start of ``predict``."""

    def on_predict_end(self, logs: Mapping | None = None) -> None:
        """Called at the end of ``predict``."""

    def on_predict_batch_begin(self, batch: int, logs: Mapping | None = None) -> None:
        """Called before each prediction batch."""

    def on_predict_batch_end(self, batch: int, logs: Mapping | None = None) -> None:
        """Called after each prediction batch."""


class BatchLogs(Mapping):
    """Running means over the epoch so far, read from the device only when a key is looked up."""

    def __init__(self, sums: dict[str, Any], count: int):
        self._sums, self._count = sums, count

    def __getitem__(self, key: str) -> float:
        return float(self._sums[key]) / max(self._count, 1)

    def __iter__(self) -> Iterator[str]:
        return iter(self._sums)

    def __len__(self) -> int:
        return len(self._sums)


def _overrides(cb: Callback, hook: str) -> bool:
    """Whether ``cb`` does something on ``hook`` (its class overrides it, or the instance holds
    it, as ``LambdaCallback`` does), less the hooks the instance declares idle."""
    if hook in getattr(cb, "__dict__", {}):
        return True
    impl = getattr(type(cb), hook, None)
    if impl is None or impl is getattr(Callback, hook):
        return False
    return impl is not getattr(cb, "_idle_hooks", {}).get(hook)


def _listens(cb: Callback, hook: str) -> bool:
    alias = _ALIASED_BY.get(hook)
    return _overrides(cb, hook) or (alias is not None and _overrides(cb, alias))


def _hook_name(hook: str) -> str:
    hook = _ALIASES.get(hook, hook)
    if hook not in HOOKS:
        raise ValueError(f"Unknown callback hook {hook!r}; the hooks are: {', '.join(HOOKS)} "
                         f"(and their aliases on_batch_begin, on_batch_end).")
    return hook


def _as_callback_list(callbacks: Any) -> list[Callback]:
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback):
        return [callbacks]
    if not isinstance(callbacks, (list, tuple)):
        raise TypeError(f"callbacks must be a list or tuple of Callback instances, a single Callback, "
                        f"or None; received {type(callbacks).__name__}: {callbacks!r}.")
    for i, cb in enumerate(callbacks):
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks[{i}] must be an nnx.callbacks.Callback instance; "
                            f"received {type(cb).__name__}: {cb!r}.")
    return list(callbacks)


class CallbackList:
    """The callbacks of one ``fit``/``evaluate``/``predict`` call, dispatched together.

    Args:
        callbacks: a list or tuple of ``Callback`` instances, a single ``Callback``, or ``None``
            (no callbacks). Anything else raises ``TypeError``.
        model: the model, given to every callback's ``set_model``. Defaults to None.
        params: the run's parameters (``epochs``, ``steps``, ``verbose``, ...), given to every
            callback's ``set_params``. Defaults to an empty dict.

    ``call(hook, *args)`` calls ``hook`` on the callbacks that override it (others would do
    nothing); ``"on_batch_begin"``/``"on_batch_end"`` name ``on_train_batch_begin``/``_end``, and
    a callback overriding either name is called once. ``wants(hook)`` says whether any callback
    overrides the hook, so a loop can skip building per-batch logs nobody reads.

    Example:

    >>> cbs = CallbackList([EarlyStopping(patience=2)], model, {"epochs": 10, "steps": 5})
    >>> cbs.call("on_train_begin", {})
    >>> if cbs.wants("on_train_batch_end"):
    ...     cbs.call("on_train_batch_end", 0, BatchLogs(sums, seen))
    """

    def __init__(self, callbacks: Any = None, model: Any = None, params: dict | None = None):
        self.callbacks = _as_callback_list(callbacks)
        self.model = model
        self.params = {} if params is None else params
        self._listeners: dict[str, list[Callback]] = {}
        for cb in self.callbacks:
            cb.set_model(model)
            cb.set_params(self.params)

    def append(self, callback: Callback) -> None:
        """Add one more callback (given the list's model and params)."""
        (callback,) = _as_callback_list([callback])
        callback.set_model(self.model)
        callback.set_params(self.params)
        self.callbacks.append(callback)
        self._listeners.clear()

    def set_model(self, model: Any) -> None:
        self.model = model
        for cb in self.callbacks:
            cb.set_model(model)

    def set_params(self, params: dict) -> None:
        self.params = params
        for cb in self.callbacks:
            cb.set_params(params)

    def _for(self, hook: str) -> list[Callback]:
        listeners = self._listeners.get(hook)
        if listeners is None:
            listeners = self._listeners[hook] = [cb for cb in self.callbacks if _listens(cb, hook)]
        return listeners

    def wants(self, hook: str) -> bool:
        """Whether any callback overrides ``hook`` (or its alias: ``on_batch_end`` for
        ``on_train_batch_end`` and the reverse)."""
        return bool(self._for(_hook_name(hook)))

    @property
    def wants_batches(self) -> bool:
        """Whether any callback overrides a train-batch hook (under either name)."""
        return self.wants("on_train_batch_begin") or self.wants("on_train_batch_end")

    def call(self, hook: str, *args: Any) -> None:
        """Call ``hook(*args)`` on every callback that overrides it, in list order."""
        hook = _hook_name(hook)
        for cb in self._for(hook):
            getattr(cb, hook)(*args)

    def __iter__(self) -> Iterator[Callback]:
        return iter(self.callbacks)

    def __len__(self) -> int:
        return len(self.callbacks)


class History(Callback):
    """Records the epoch logs: ``history.history["loss"]`` is one float per epoch.

    Example:

    >>> history = model.fit(x, y, epochs=3)
    >>> history.history["loss"]
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(float(v))


def _is_chief() -> bool:
    """False on the ranks other than 0 in data-parallel training, which write no files."""
    from .distributed import is_chief

    return is_chief()


# -- argument checks -------------------------------------------------------------------------------
def _int_arg(value: Any, name: str, minimum: int = 0) -> int:
    """An int of any integer type (numpy's included) that is at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; received {value!r}.")
    return int(value)


def _real_arg(value: Any, name: str, expected: str = "a finite number",
              ok: Callable[[float], bool] | None = None) -> float:
    """A finite real number of any type (numpy's included) for which ``ok`` holds."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)) \
            or (ok is not None and not ok(float(value))):
        raise ValueError(f"{name} must be {expected}; received {value!r}.")
    return float(value)


def _verbose_arg(value: Any) -> int:
    if not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"verbose must be 0 (silent) or 1 (print messages); received {value!r}.")
    return int(value)


def _monitor_arg(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"monitor must be the name of a logged quantity, e.g. 'val_loss'; received {value!r}.")
    return value


_MAXIMIZED = ("acc", "auc", "precision", "recall", "f1", "fmeasure")


def _resolve_mode(mode: Any, monitor: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max'; received {mode!r}.")
    if mode == "auto":
        name = monitor.removeprefix("val_").lower()  # "val_AUC": a metric named as written in compile
        return "max" if any(token in name for token in _MAXIMIZED) else "min"
    return mode


def _log_value(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class _Monitor(Callback):
    """Shared logic: track the best value of ``monitor`` in the right direction."""

    def __init__(self, monitor: str, mode: str, min_delta: float = 0.0):
        super().__init__()
        self.monitor = _monitor_arg(monitor)
        self.mode = _resolve_mode(mode, self.monitor)
        self.min_delta = abs(_real_arg(min_delta, "min_delta"))
        self.best = self._worst()

    def _worst(self) -> float:
        return math.inf if self.mode == "min" else -math.inf

    def _improved(self, value: float, reference: float | None = None) -> bool:
        """Whether ``value`` beats ``reference`` (default: the best so far) by more than
        ``min_delta``; NaN never does."""
        reference = self.best if reference is None else reference
        if self.mode == "min":
            return value + self.min_delta < reference
        return value - self.min_delta > reference

    def _value(self, logs: Mapping | None) -> float | None:
        if logs is None or self.monitor not in logs:
            warnings.warn(f"{type(self).__name__}: metric {self.monitor!r} is not in the logs "
                          f"(available: {', '.join(logs or {}) or 'none'}); skipping.", stacklevel=3)
            return None
        return float(logs[self.monitor])


class EarlyStopping(_Monitor):
    """Stops training when a monitored quantity has stopped improving.

    At the end of every epoch from ``start_from_epoch`` on, the callback compares ``monitor`` with
    the best value so far; after ``patience`` epochs without an improvement of more than
    ``min_delta`` it sets ``model.stop_training``, and ``fit`` ends after that epoch.

    Args:
        monitor: the quantity to watch, a key of the epoch logs. Defaults to ``"val_loss"``.
        min_delta: the least change that counts as an improvement (its sign is ignored).
            Defaults to 0.0.
        patience: epochs without improvement after which training stops. Defaults to 0 (stop at
            the first epoch that does not improve; 0 and 1 behave alike, as in Keras).
        verbose: 1 prints ``"Epoch N: early stopping"`` at the end of training, and
            ``"Restoring model weights from the end of the best epoch: N."`` when restoring.
            Defaults to 0 (silent).
        mode: ``"min"`` (lower is better), ``"max"`` (higher is better) or ``"auto"`` (``"max"``
            for accuracy, AUC, precision, recall and F1 names, ``"min"`` otherwise). Defaults to
            ``"auto"``.
        baseline: a value the monitored quantity must beat. If not None, training stops when the
            model has not improved over the baseline within ``patience`` epochs (an epoch that
            beats the best so far but not the baseline does not reset the wait). Defaults to None.
        restore_best_weights: restore, at the end of training (stopped early or not), the weights
            of the epoch with the best monitored value (the first monitored epoch's weights if
            none improved). Defaults to False (keep the last epoch's weights).
        start_from_epoch: epochs to wait before monitoring at all: a warm-up during which no
            improvement is expected and training is never stopped. Defaults to 0.

    Example:

    >>> callback = nnx.callbacks.EarlyStopping(monitor="loss", patience=3)
    >>> history = model.fit(x, y, epochs=100, callbacks=[callback], verbose=0)
    >>> len(history.history["loss"])  # fewer than 100 once the loss stops improving
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0, verbose: int = 0,
                 mode: str = "auto", baseline: float | None = None, restore_best_weights: bool = False,
                 start_from_epoch: int = 0):
        super().__init__(monitor, mode, min_delta)
        self.patience = _int_arg(patience, "patience")
        self.verbose = _verbose_arg(verbose)
        self.baseline = None if baseline is None else _real_arg(baseline, "baseline", "None or a finite number")
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = _int_arg(start_from_epoch, "start_from_epoch")
        self.wait = 0
        self.stopped_epoch = 0
        self.best_epoch = 0
        self.best_weights = None

    def on_train_begin(self, logs=None):
        self.wait, self.stopped_epoch, self.best_epoch, self.best_weights = 0, 0, 0, None
        self.best = self._worst()

    def on_epoch_end(self, epoch, logs=None):
        value = self._value(logs)
        if value is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights, self.best_epoch = self.model.get_weights(), epoch
        self.wait += 1
        if self._improved(value):
            self.best, self.best_epoch = value, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._improved(value, self.baseline):
                self.wait = 0  # only beating both the best and the baseline restarts the wait
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose:
            _progbar.message(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                _progbar.message(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(_Monitor):
    """Saves the model (or its weights) at the end of every epoch, or every ``save_freq`` batches.

    Logs that hold NaN or inf are never saved (a warning says so), so the last good checkpoint
    survives a diverging run. ``filepath`` may hold ``{epoch}`` (1-based), ``{batch}`` (1-based,
    with an int ``save_freq``) and log keys, e.g. ``"ckpt-{epoch:02d}-{val_loss:.2f}.nnx"``; its
    folder is created if missing.

    Args:
        filepath: where to save: an ``.nnx`` model file, or a weights file (a path ending in
            ``.npz`` always saves weights only).
        monitor: the quantity compared with ``save_best_only``. Defaults to ``"val_loss"``.
        verbose: 1 prints a line for each decision: ``"Epoch 1: val_loss improved from inf to
            0.12345, saving model to best.nnx"``, ``"Epoch 2: val_loss did not improve from
            0.12345"``, ``"Epoch 1: saving model to x.nnx"``. Defaults to 0 (silent).
        save_best_only: save only when ``monitor`` improves on the best value saved so far
            (kept across ``fit`` calls, as Keras does); logs without ``monitor`` are saved with a
            warning, as Keras does. Defaults to False (save every time).
        save_weights_only: save with ``model.save_weights`` rather than ``model.save``.
            Defaults to False.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (from the name of ``monitor``), as in
            ``EarlyStopping``. Defaults to ``"auto"``.
        save_freq: ``"epoch"`` saves at the end of each epoch with the epoch logs; an int ``n``
            saves after every ``n`` training batches (counted across epochs) with that batch's logs,
            the running means of the epoch so far. Defaults to ``"epoch"``.
        initial_value_threshold: the best value to beat before the first save with
            ``save_best_only``. Defaults to None (any finite value beats it).

    Example:

    >>> checkpoint = nnx.callbacks.ModelCheckpoint("best.nnx", monitor="val_loss",
    ...                                            save_best_only=True, verbose=1)
    >>> model.fit(x, y, epochs=10, validation_split=0.2, callbacks=[checkpoint])
    >>> model = nnx.load_model("best.nnx")
    """

    def __init__(self, filepath: str, monitor: str = "val_loss", verbose: int = 0, save_best_only: bool = False,
                 save_weights_only: bool = False, mode: str = "auto", save_freq: str | int = "epoch",
                 initial_value_threshold: float | None = None):
        super().__init__(monitor, mode)
        try:
            self.filepath = os.fspath(filepath)
        except TypeError:
            raise TypeError(f"ModelCheckpoint filepath must be a str or os.PathLike; received "
                            f"{type(filepath).__name__}.") from None
        if not self.filepath:
            raise ValueError("ModelCheckpoint filepath must name a file; received an empty path.")
        self.verbose = _verbose_arg(verbose)
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only) or self.filepath.endswith(".npz")
        if isinstance(save_freq, str):
            if save_freq != "epoch":
                raise ValueError(f"save_freq must be 'epoch' or a positive int (a number of batches); "
                                 f"received {save_freq!r}.")
            self.save_freq: str | int = "epoch"
        elif isinstance(save_freq, numbers.Integral) and not isinstance(save_freq, bool) and save_freq > 0:
            self.save_freq = int(save_freq)
        else:
            raise ValueError(f"save_freq must be 'epoch' or a positive int (a number of batches); "
                             f"received {save_freq!r}.")
        if initial_value_threshold is not None:
            self.best = _real_arg(initial_value_threshold, "initial_value_threshold", "None or a finite number")
        if self.save_freq == "epoch":  # nothing to do per batch: the loop may skip the batch logs
            self._idle_hooks = {"on_train_batch_end": ModelCheckpoint.on_train_batch_end}
        self._current_epoch = 0
        self._batches_seen_since_last_saving = 0
        self._last_batch_seen = -1

    def on_train_begin(self, logs=None):
        self._current_epoch = 0
        self._batches_seen_since_last_saving = 0
        self._last_batch_seen = -1

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq == "epoch":
            return
        if batch <= self._last_batch_seen:  # a new epoch: its batches count from 0 again
            self._batches_seen_since_last_saving += batch + 1
        else:
            self._batches_seen_since_last_saving += batch - self._last_batch_seen
        self._last_batch_seen = batch
        if self._batches_seen_since_last_saving >= self.save_freq:
            self._batches_seen_since_last_saving = 0
            self._save(self._current_epoch, batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch, None, logs)

    def _save(self, epoch: int, batch: int | None, logs: Mapping | None) -> None:
        logs = dict(logs or {})
        bad = [k for k, v in logs.items() if (f := _log_value(v)) is not None and not math.isfinite(f)]
        if bad:
            where = f"epoch {epoch + 1}" if batch is None else f"epoch {epoch + 1}, batch {batch + 1},"
            warnings.warn(f"ModelCheckpoint: {where} has NaN or inf in its logs ({', '.join(bad)}); "
                          f"keeping the previous checkpoint.", stacklevel=3)
            return
        path = self._path(epoch, batch, logs)
        if self.save_best_only and self.monitor not in logs:  # as Keras: a warning, and the model is saved
            warnings.warn(f"ModelCheckpoint: can save the best model only with {self.monitor!r} in the logs "
                          f"(available: {', '.join(logs) or 'none'}); saving this one, as Keras does.",
                          stacklevel=3)
            if self.verbose:
                _progbar.message(f"Epoch {epoch + 1}: saving model to {path}")
        elif self.save_best_only:
            value = float(logs[self.monitor])
            if not self._improved(value):
                if self.verbose:
                    _progbar.message(f"Epoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}")
                return
            if self.verbose:
                _progbar.message(f"Epoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to "
                                 f"{value:.5f}, saving model to {path}")
            self.best = value
        elif self.verbose:
            _progbar.message(f"Epoch {epoch + 1}: saving model to {path}")
        if not _is_chief():  # data-parallel training: rank 0 writes the files
            return
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)

    def _path(self, epoch: int, batch: int | None, logs: dict) -> str:
        fields = dict(logs)
        fields["epoch"] = epoch + 1
        if batch is not None:
            fields.setdefault("batch", batch + 1)
        try:
            return self.filepath.format(**fields)
        except (KeyError, IndexError) as e:
            raise KeyError(f"ModelCheckpoint cannot format the filepath {self.filepath!r}: it names {e}, "
                           f"which is not one of epoch, batch or the logged {', '.join(logs) or '(none)'}.") from None


def _format_rate(rate: float) -> str:
    return f"{float(rate):.6g}"


class ReduceLROnPlateau(_Monitor):
    """Reduces the learning rate when a monitored quantity has stopped improving.

    After ``patience`` epochs without an improvement of more than ``min_delta``, the optimizer's
    ``learning_rate`` is multiplied by ``factor`` (never below ``min_lr``), then ``cooldown``
    epochs pass before the wait starts again. ``logs["learning_rate"]`` records, each epoch, the
    rate that epoch ran with.

    Args:
        monitor: the quantity to watch. Defaults to ``"val_loss"``.
        factor: the factor the rate is multiplied by, in (0, 1). Defaults to 0.1.
        patience: epochs without improvement before a reduction. Defaults to 10.
        verbose: 1 prints ``"Epoch N: ReduceLROnPlateau reducing learning rate to R."`` at each
            reduction. Defaults to 0 (silent).
        mode: ``"min"``, ``"max"`` or ``"auto"`` (from the name of ``monitor``). Defaults to
            ``"auto"``.
        min_delta: the least change that counts as an improvement. Defaults to 1e-4.
        cooldown: epochs to wait after a reduction before the wait counts again. As in Keras, the
            counter drops before each epoch's check, so a cooldown of ``n`` leaves ``n - 1`` epochs
            that cannot reduce the rate. Defaults to 0.
        min_lr: the lowest rate a reduction goes to. Defaults to 0.0.

    Example:

    >>> reduce_lr = nnx.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.2, patience=5, min_lr=0.001)
    >>> model.fit(x, y, epochs=50, validation_split=0.2, callbacks=[reduce_lr])
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, verbose: int = 0,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0):
        super().__init__(monitor, mode, min_delta)
        self.factor = _real_arg(factor, "factor", "a number in (0, 1)", lambda f: 0.0 < f < 1.0)
        self.patience = _int_arg(patience, "patience")
        self.verbose = _verbose_arg(verbose)
        self.cooldown = _int_arg(cooldown, "cooldown")
        self.min_lr = _real_arg(min_lr, "min_lr", "a finite number >= 0", lambda v: v >= 0.0)
        self.wait = self.cooldown_counter = 0

    def on_train_begin(self, logs=None):
        self.wait = self.cooldown_counter = 0
        self.best = self._worst()

    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)
        value = self._value(logs)
        if value is None:
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(value):
            self.best, self.wait = value, 0
            return
        if self.in_cooldown():
            return
        self.wait += 1
        if self.wait >= self.patience:
            old = float(self.model.optimizer.learning_rate)
            if old > self.min_lr:
                new = max(old * self.factor, self.min_lr)
                self.model.optimizer.learning_rate = new
                if self.verbose:
                    _progbar.message(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to "
                                     f"{_format_rate(new)}.")
                self.cooldown_counter, self.wait = self.cooldown, 0


def _schedule_arity(schedule: Callable) -> int | None:
    """1 or 2: how many positional arguments to pass ``schedule`` (two whenever it accepts two,
    as Keras passes ``(epoch, lr)`` first); None when its signature cannot be read."""
    try:
        signature = inspect.signature(schedule)
    except (TypeError, ValueError):
        return None
    params = list(signature.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p.name for p in positional if p.default is p.empty]
    required_kw = [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    takes_varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
    if required_kw or len(required) > 2 or not (positional or takes_varargs):
        takes = ", ".join(required + [f"*, {n}" for n in required_kw]) or "no positional argument"
        raise ValueError(f"The schedule must take (epoch) or (epoch, lr); received a callable taking ({takes}).")
    return 2 if len(positional) >= 2 or takes_varargs else 1


class LearningRateScheduler(Callback):
    """Sets the optimizer's learning rate at the start of every epoch from a schedule.

    The schedule is called as ``schedule(epoch)`` or ``schedule(epoch, lr)`` (``epoch`` 0-based,
    ``lr`` the current rate): a schedule that accepts two positional arguments gets both, one that
    takes one gets the epoch only (decided from its signature). ``logs["learning_rate"]`` records
    the rate at the end of each epoch.

    Args:
        schedule: a function of the epoch (and the current rate) returning the new rate, a finite
            float.
        verbose: 1 prints ``"Epoch N: LearningRateScheduler setting learning rate to R."`` each
            epoch. Defaults to 0 (silent).

    Example:

    >>> def scheduler(epoch, lr):
    ...     return lr if epoch < 10 else lr * 0.9
    >>> model.fit(x, y, epochs=15, callbacks=[nnx.callbacks.LearningRateScheduler(scheduler)])
    """

    def __init__(self, schedule: Callable[..., float], verbose: int = 0):
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"schedule must be a callable (epoch) or (epoch, lr) -> lr; "
                            f"received {type(schedule).__name__}: {schedule!r}.")
        self.schedule = schedule
        self.verbose = _verbose_arg(verbose)
        self._arity = _schedule_arity(schedule)

    def _rate(self, epoch: int) -> Any:
        lr = float(self.model.optimizer.learning_rate)
        if self._arity == 2:
            return self.schedule(epoch, lr)
        if self._arity == 1:
            return self.schedule(epoch)
        try:  # a signature that cannot be read (some builtins): try the two-argument form first
            return self.schedule(epoch, lr)
        except TypeError:
            return self.schedule(epoch)

    def on_epoch_begin(self, epoch, logs=None):
        lr = self._rate(epoch)
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(float(lr)):
            raise ValueError(f"The schedule must return a finite float learning rate; received {lr!r} "
                             f"for epoch {epoch}.")
        self.model.optimizer.learning_rate = float(lr)
        if self.verbose:
            _progbar.message(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to "
                             f"{_format_rate(lr)}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)


class LambdaCallback(Callback):
    """A callback built from functions, for quick one-off hooks.

    Each argument is a function called at that hook with the hook's arguments:
    ``on_epoch_begin(epoch, logs)``, ``on_epoch_end(epoch, logs)``, ``on_train_begin(logs)``,
    ``on_train_end(logs)``, ``on_train_batch_begin(batch, logs)``, ``on_train_batch_end(batch,
    logs)``. ``**kwargs`` may name any other hook (``on_batch_end``, ``on_test_begin``,
    ``on_predict_batch_end``, ...); an unknown name raises ``TypeError``.

    Args:
        on_epoch_begin: called at the start of every epoch. Defaults to None.
        on_epoch_end: called at the end of every epoch. Defaults to None.
        on_train_begin: called at the start of training. Defaults to None.
        on_train_end: called at the end of training. Defaults to None.
        on_train_batch_begin: called before every training batch. Defaults to None.
        on_train_batch_end: called after every training batch. Defaults to None.
        **kwargs: functions for any other hook, by name.

    Example:

    >>> print_batch = nnx.callbacks.LambdaCallback(
    ...     on_train_batch_begin=lambda batch, logs: print(batch))
    >>> losses = []
    >>> keep_loss = nnx.callbacks.LambdaCallback(
    ...     on_epoch_end=lambda epoch, logs: losses.append(logs["loss"]))
    >>> model.fit(x, y, epochs=3, callbacks=[print_batch, keep_loss])
    """

    def __init__(self, on_epoch_begin: Callable | None = None, on_epoch_end: Callable | None = None,
                 on_train_begin: Callable | None = None, on_train_end: Callable | None = None,
                 on_train_batch_begin: Callable | None = None, on_train_batch_end: Callable | None = None,
                 **kwargs: Callable | None):
        super().__init__()
        hooks = {"on_epoch_begin": on_epoch_begin, "on_epoch_end": on_epoch_end, "on_train_begin": on_train_begin,
                 "on_train_end": on_train_end, "on_train_batch_begin": on_train_batch_begin,
                 "on_train_batch_end": on_train_batch_end, **kwargs}
        known = set(HOOKS) | set(_ALIASES)
        for name, fn in hooks.items():
            if name not in known:
                raise TypeError(f"LambdaCallback got an unknown hook {name!r}; the hooks are: "
                                f"{', '.join(HOOKS)}, on_batch_begin, on_batch_end.")
            if fn is None:
                continue
            if not callable(fn):
                raise TypeError(f"LambdaCallback {name} must be a callable or None; received {type(fn).__name__}.")
            setattr(self, name, fn)


class TerminateOnNaN(Callback):
    """Stops training at the first batch whose loss is NaN or inf (reads the loss every batch);
    that epoch's validation still runs and is recorded.

    Example:

    >>> model.fit(x, y, epochs=10, callbacks=[nnx.callbacks.TerminateOnNaN()])
    """

    def on_batch_end(self, batch, logs=None):
        if logs is not None and "loss" in logs and not math.isfinite(logs["loss"]):
            _progbar.message(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True
            self.model._stop_now = True


class CSVLogger(Callback):
    """Writes one CSV row per epoch: epoch, then the logs in sorted order.

    Args:
        filename: the CSV file.
        separator: the field separator. Defaults to ``","``.
        append: append to an existing file (without a second header) rather than overwrite it.
            Defaults to False.

    Example:

    >>> model.fit(x, y, epochs=10, callbacks=[nnx.callbacks.CSVLogger("training.csv")])
    """

    def __init__(self, filename: str, separator: str = ",", append: bool = False):
        super().__init__()
        self.filename, self.separator, self.append = os.fspath(filename), separator, append
        self._file = None
        self._writer = None
        self._keys: list[str] | None = None

    def on_train_begin(self, logs=None):
        if not _is_chief():  # data-parallel training: rank 0 writes the file
            return
        exists = self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0
        self._file = open(self.filename, "a" if self.append else "w", newline="")
        self._keys = None
        self._header_written = exists

    def on_epoch_end(self, epoch, logs=None):
        if self._file is None:  # a rank other than 0 in data-parallel training
            return
        logs = dict(logs or {})
        if self._keys is None:
            self._keys = sorted(logs)
            self._writer = csv.DictWriter(self._file, fieldnames=["epoch", *self._keys], delimiter=self.separator)
            if not self._header_written:
                self._writer.writeheader()
        self._writer.writerow({"epoch": epoch, **{k: logs.get(k, "NA") for k in self._keys}})
        self._file.flush()

    def on_train_end(self, logs=None):
        if self._file is not None:
            self._file.close()
            self._file = None
