"""Callbacks: hooks into ``fit``. ``History`` is always attached and returned by ``fit``."""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping
from typing import Any, Callable, Iterator


class Callback:
    """Base class for hooks into training; ``self.model`` is set by ``fit``.

    >>> class PrintLoss(nnx.callbacks.Callback):
    ...     def on_epoch_end(self, epoch, logs=None): print(epoch, logs["loss"])
    """

    def __init__(self) -> None:
        self.model = None
        self.params: dict = {}

    def set_model(self, model: Any) -> None:
        self.model = model

    def set_params(self, params: dict) -> None:
        self.params = params

    def on_train_begin(self, logs: dict | None = None) -> None: ...
    def on_train_end(self, logs: dict | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None: ...
    def on_batch_begin(self, batch: int, logs: dict | None = None) -> None: ...
    def on_batch_end(self, batch: int, logs: Mapping | None = None) -> None: ...

    def on_train_batch_begin(self, batch: int, logs: Mapping | None = None) -> None:
        self.on_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: Mapping | None = None) -> None:
        self.on_batch_end(batch, logs)

    def on_test_begin(self, logs: dict | None = None) -> None: ...
    def on_test_end(self, logs: dict | None = None) -> None: ...
    def on_test_batch_begin(self, batch: int, logs: Mapping | None = None) -> None: ...
    def on_test_batch_end(self, batch: int, logs: Mapping | None = None) -> None: ...
    def on_predict_begin(self, logs: dict | None = None) -> None: ...
    def on_predict_end(self, logs: dict | None = None) -> None: ...
    def on_predict_batch_begin(self, batch: int, logs: Mapping | None = None) -> None: ...
    def on_predict_batch_end(self, batch: int, logs: Mapping | None = None) -> None: ...


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


_ALIASES = {"on_train_batch_begin": "on_batch_begin", "on_train_batch_end": "on_batch_end"}


class CallbackList:
    def __init__(self, callbacks: list[Callback] | Callback | None, model: Any, params: dict):
        if callbacks is None:
            callbacks = []
        elif isinstance(callbacks, Callback):
            callbacks = [callbacks]
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            cb.set_model(model)
            cb.set_params(params)
        self.wants_batches = any(_overrides(cb, "on_batch_end") or _overrides(cb, "on_batch_begin") for cb in self.callbacks)

    def wants(self, hook: str) -> bool:
        """Whether any callback overrides ``hook`` (or its alias)."""
        alias = _ALIASES.get(hook)
        return any(_overrides(cb, hook) or (alias is not None and _overrides(cb, alias)) for cb in self.callbacks)

    def call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)


def _overrides(cb: Callback, hook: str) -> bool:
    return getattr(type(cb), hook) is not getattr(Callback, hook)


class History(Callback):
    """Records the epoch logs: ``history.history["loss"]`` is one float per epoch.

    >>> history = model.fit(x, y, epochs=3); history.history["loss"]
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(float(v))


def _resolve_mode(mode: str, monitor: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max'; received {mode!r}.")
    if mode == "auto":
        return "max" if ("acc" in monitor or monitor.endswith("auc")) else "min"
    return mode


class _Monitor(Callback):
    """Shared logic: track the best value of ``monitor`` in the right direction."""

    def __init__(self, monitor: str, mode: str, min_delta: float = 0.0):
        super().__init__()
        self.monitor = monitor
        self.mode = _resolve_mode(mode, monitor)
        self.min_delta = abs(float(min_delta))
        self.best = math.inf if self.mode == "min" else -math.inf

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def _value(self, logs: dict | None) -> float | None:
        if logs is None or self.monitor not in logs:
            import warnings

            warnings.warn(f"{type(self).__name__}: metric {self.monitor!r} is not in the logs "
                          f"(available: {', '.join(logs or {}) or 'none'}); skipping.", stacklevel=3)
            return None
        return float(logs[self.monitor])


class EarlyStopping(_Monitor):
    """Stops training once ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    >>> nnx.callbacks.EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True)
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0, mode: str = "auto",
                 restore_best_weights: bool = False):
        super().__init__(monitor, mode, min_delta)
        self.patience = int(patience)
        self.restore_best_weights = restore_best_weights
        self.wait = 0
        self.stopped_epoch = None
        self.best_epoch = None
        self.best_weights = None

    def on_train_begin(self, logs=None):
        self.wait, self.stopped_epoch, self.best_weights, self.best_epoch = 0, None, None, None
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch, logs=None):
        value = self._value(logs)
        if value is None:
            return
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait >= self.patience:  # as Keras: patience 0 and 1 both stop at the first miss
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:  # stopped early or not, as Keras 3
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(_Monitor):
    """Saves the model after each epoch (or only when ``monitor`` improves, with ``save_best_only``);
    an epoch whose logs hold NaN or inf is never saved, so the last good checkpoint survives.
    ``filepath`` may hold ``{epoch}`` and log keys, e.g. ``"ckpt-{epoch:02d}.nnx"``; a path ending in
    ``.npz`` or ``.weights.npz`` saves weights only.

    >>> nnx.callbacks.ModelCheckpoint("best.nnx", monitor="val_loss", save_best_only=True)
    """

    def __init__(self, filepath: str, monitor: str = "val_loss", save_best_only: bool = False, mode: str = "auto",
                 save_weights_only: bool = False):
        super().__init__(monitor, mode)
        self.filepath = os.fspath(filepath)
        self.save_best_only = save_best_only
        self.save_weights_only = save_weights_only or self.filepath.endswith(".npz")

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if not all(math.isfinite(float(v)) for v in logs.values()):
            import warnings

            warnings.warn(f"ModelCheckpoint: epoch {epoch + 1} has NaN or inf in its logs; "
                          f"keeping the previous checkpoint.", stacklevel=2)
            return
        if self.save_best_only:
            value = self._value(logs)
            if value is None or not math.isfinite(value) or not self._improved(value):
                return
            self.best = value
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)


class ReduceLROnPlateau(_Monitor):
    """Multiplies the learning rate by ``factor`` after ``patience`` epochs without improvement.

    >>> nnx.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=3, min_lr=1e-5)
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, min_lr: float = 0.0,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0, verbose: int = 0):
        super().__init__(monitor, mode, min_delta)
        if not 0.0 < factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau factor must be in (0, 1); received {factor!r}.")
        self.factor, self.patience, self.min_lr = float(factor), int(patience), float(min_lr)
        self.cooldown, self.verbose = int(cooldown), verbose
        self.wait = self.cooldown_counter = 0

    def on_train_begin(self, logs=None):
        self.wait = self.cooldown_counter = 0
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch, logs=None):
        value = self._value(logs)
        if value is None:
            return
        if logs is not None:
            logs["learning_rate"] = self.model.optimizer.learning_rate
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(value):
            self.best, self.wait = value, 0
            return
        if self.cooldown_counter > 0:
            return
        self.wait += 1
        if self.wait >= self.patience:
            old = self.model.optimizer.learning_rate
            new = max(old * self.factor, self.min_lr)
            if new < old:
                self.model.optimizer.learning_rate = new
                if self.verbose:
                    print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new:.4g}.")
            self.cooldown_counter, self.wait = self.cooldown, 0


class LearningRateScheduler(Callback):
    """Sets ``learning_rate = schedule(epoch, lr)`` at the start of each epoch.

    >>> nnx.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.9)
    """

    def __init__(self, schedule: Callable[[int, float], float], verbose: int = 0):
        super().__init__()
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        lr = self.schedule(epoch, self.model.optimizer.learning_rate)
        if not isinstance(lr, (int, float)) or not math.isfinite(lr):
            raise ValueError(f"The schedule must return a finite float learning rate; received {lr!r}.")
        self.model.optimizer.learning_rate = float(lr)
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr:.4g}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = self.model.optimizer.learning_rate


class TerminateOnNaN(Callback):
    """Stops training at the first batch whose loss is NaN or inf (reads the loss every batch).

    >>> nnx.callbacks.TerminateOnNaN()
    """

    def on_batch_end(self, batch, logs=None):
        if logs is not None and "loss" in logs and not math.isfinite(logs["loss"]):
            print(f"Batch {batch}: invalid loss, terminating training.")
            self.model.stop_training = True
            self.model._stop_now = True


class CSVLogger(Callback):
    """Writes one CSV row per epoch: epoch, then the logs in sorted order.

    >>> nnx.callbacks.CSVLogger("training.csv")
    """

    def __init__(self, filename: str, separator: str = ",", append: bool = False):
        super().__init__()
        self.filename, self.separator, self.append = os.fspath(filename), separator, append
        self._file = None
        self._writer = None
        self._keys: list[str] | None = None

    def on_train_begin(self, logs=None):
        exists = self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0
        self._file = open(self.filename, "a" if self.append else "w", newline="")
        self._keys = None
        self._header_written = exists

    def on_epoch_end(self, epoch, logs=None):
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
