"""Callbacks: each one's behaviour, in fit and against scripted logs."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest

import nnx


def _regression(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype("float32")
    return x, (x @ np.array([1.0, -2.0, 0.5]) + 0.3).astype("float32")


def _model(lr=0.05):
    model = nnx.Sequential([nnx.Input(3), nnx.Dense(8, activation="tanh"), nnx.Dense(1)])
    model.compile(optimizer=nnx.optimizers.SGD(lr), loss="mse", metrics=["mae"])
    return model


class Recorder(nnx.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.events, self.batch_losses, self.lrs = [], [], []

    def on_train_begin(self, logs=None):
        self.events.append("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.events.append(f"epoch_begin {epoch}")
        self.lrs.append(self.model.optimizer.learning_rate)

    def on_batch_end(self, batch, logs=None):
        self.batch_losses.append(logs["loss"])

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(f"epoch_end {epoch}")

    def on_train_end(self, logs=None):
        self.events.append("train_end")


def test_user_callback_hooks_and_running_mean_loss(backend):
    x, y = _regression(10)
    model = _model(lr=0.0)  # weights never move, so each batch loss is known in advance
    rec = Recorder()
    model.fit(x, y, epochs=2, batch_size=4, shuffle=False, callbacks=[rec], verbose=0)
    assert rec.events == ["train_begin", "epoch_begin 0", "epoch_end 0", "epoch_begin 1", "epoch_end 1", "train_end"]
    assert rec.model is model
    batch = [model.evaluate(x[i:i + 4], y[i:i + 4]) [0] for i in (0, 4, 8)]
    sizes = [4, 4, 2]
    running = [sum(b * s for b, s in zip(batch[:k], sizes[:k])) / sum(sizes[:k]) for k in (1, 2, 3)]
    np.testing.assert_allclose(rec.batch_losses, running * 2, rtol=1e-5)


def test_stop_training_ends_after_current_epoch(backend):
    class StopAtOne(nnx.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True

    history = _model().fit(*_regression(), epochs=10, callbacks=[StopAtOne()], verbose=0)
    assert history.epoch == [0, 1]


def _drive(callback, model, values, key="val_loss", weights=None):
    """Feed scripted epoch logs to a callback, as fit would; returns the epochs that ran."""
    callback.set_model(model)
    callback.on_train_begin({})
    ran = []
    model.stop_training = False
    for epoch, value in enumerate(values):
        if weights is not None:
            model.set_weights(weights[epoch])
        callback.on_epoch_end(epoch, {key: value})
        ran.append(epoch)
        if model.stop_training:
            break
    callback.on_train_end({})
    return ran


def test_early_stopping_patience(backend):
    model = _model()
    # best at epoch 1; epochs 2, 3 do not improve; patience 2 stops at epoch 3
    ran = _drive(nnx.callbacks.EarlyStopping(patience=2), model, [1.0, 0.5, 0.6, 0.55, 0.1])
    assert ran == [0, 1, 2, 3]


def test_early_stopping_min_delta(backend):
    model = _model()
    # improvements of 0.01 are below min_delta 0.05: no improvement after epoch 0
    ran = _drive(nnx.callbacks.EarlyStopping(patience=2, min_delta=0.05), model, [1.0, 0.99, 0.98, 0.97])
    assert ran == [0, 1, 2]
    ran = _drive(nnx.callbacks.EarlyStopping(patience=2, min_delta=0.005), model, [1.0, 0.99, 0.98, 0.97])
    assert ran == [0, 1, 2, 3]


def test_early_stopping_mode(backend):
    model = _model()
    ran = _drive(nnx.callbacks.EarlyStopping(monitor="val_accuracy", patience=0), model, [0.5, 0.7, 0.6, 0.9],
                 key="val_accuracy")  # auto -> max
    assert ran == [0, 1, 2]
    ran = _drive(nnx.callbacks.EarlyStopping(monitor="val_score", mode="max", patience=0), model, [1.0, 2.0, 1.5],
                 key="val_score")
    assert ran == [0, 1, 2]
    with pytest.raises(ValueError, match="mode must be"):
        nnx.callbacks.EarlyStopping(mode="up")


def test_early_stopping_restores_best_weights(backend):
    model = _model()
    snapshots = [[np.full(w.shape, float(e), dtype="float32") for w in model.get_weights()] for e in range(5)]
    _drive(nnx.callbacks.EarlyStopping(patience=1, restore_best_weights=True), model, [3.0, 1.0, 2.0, 2.5, 0.0],
           weights=snapshots)
    for w in model.get_weights():
        np.testing.assert_array_equal(w, 1.0)  # epoch 1's weights


def test_model_checkpoint_save_best_only(backend, tmp_path):
    x, y = _regression(80)
    path = tmp_path / "best.nnx"
    every = tmp_path / "epoch-{epoch:02d}.nnx"
    model = _model(lr=0.02)
    history = model.fit(x, y, epochs=6, validation_split=0.25, verbose=0, callbacks=[
        nnx.callbacks.ModelCheckpoint(str(path), save_best_only=True),
        nnx.callbacks.ModelCheckpoint(str(every))])
    assert sorted(p.name for p in tmp_path.glob("epoch-*.nnx")) == [f"epoch-{e:02d}.nnx" for e in range(1, 7)]
    best = nnx.load_model(path)
    val_loss = best.evaluate(x[60:], y[60:])[0]
    assert val_loss == pytest.approx(min(history.history["val_loss"]), rel=1e-5)


def test_reduce_lr_on_plateau_changes_optimizer(backend):
    model = _model(lr=0.1)
    cb = nnx.callbacks.ReduceLROnPlateau(factor=0.5, patience=2, min_lr=0.03)
    _drive(cb, model, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    # no improvement from epoch 1 on: halve at epochs 2 and 4, floored at 0.03 at epoch 6
    assert model.optimizer.learning_rate == pytest.approx(0.03)
    model = _model(lr=0.1)
    _drive(nnx.callbacks.ReduceLROnPlateau(factor=0.5, patience=2), model, [1.0, 0.9, 0.8, 0.7])
    assert model.optimizer.learning_rate == pytest.approx(0.1)


def test_reduce_lr_on_plateau_in_fit(backend):
    model = _model(lr=0.1)
    history = model.fit(*_regression(), epochs=3, verbose=0,
                        callbacks=[nnx.callbacks.ReduceLROnPlateau(monitor="loss", min_delta=1e9, factor=0.5, patience=1)])
    assert model.optimizer.learning_rate == pytest.approx(0.025)
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.05])  # the rate each epoch ran with


def test_learning_rate_scheduler(backend):
    model = _model(lr=0.1)
    rec = Recorder()
    model.fit(*_regression(), epochs=3, verbose=0,
              callbacks=[nnx.callbacks.LearningRateScheduler(lambda epoch, lr: 0.01 * (epoch + 1)), rec])
    assert rec.lrs == pytest.approx([0.01, 0.02, 0.03])
    assert model.optimizer.learning_rate == pytest.approx(0.03)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the run is made to overflow
def test_terminate_on_nan_keeps_last_good_checkpoint(backend, tmp_path):
    x, y = _regression(64)
    model = _model(lr=0.01)
    path = tmp_path / "ckpt.nnx"
    explode = nnx.callbacks.LearningRateScheduler(lambda epoch, lr: 1e30 if epoch >= 2 else lr)
    with pytest.warns(UserWarning, match="keeping the previous checkpoint"):
        history = model.fit(x, y, epochs=8, batch_size=8, verbose=0, callbacks=[
            explode, nnx.callbacks.TerminateOnNaN(), nnx.callbacks.ModelCheckpoint(str(path), monitor="loss")])
    losses = history.history["loss"]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses[:2]) and not math.isfinite(losses[2])
    good = nnx.load_model(path)
    assert all(np.isfinite(w).all() for w in good.get_weights())
    assert good.evaluate(x, y)[0] == pytest.approx(losses[1], rel=0.5)


def test_csv_logger(backend, tmp_path):
    path = tmp_path / "log.csv"
    model = _model()
    history = model.fit(*_regression(), epochs=3, validation_split=0.25, verbose=0,
                        callbacks=[nnx.callbacks.CSVLogger(str(path))])
    rows = list(csv.DictReader(open(path)))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert set(rows[0]) == {"epoch", "loss", "mae", "val_loss", "val_mae"}
    np.testing.assert_allclose([float(r["val_loss"]) for r in rows], history.history["val_loss"], rtol=1e-6)


def test_missing_monitor_warns(backend):
    model = _model()
    with pytest.warns(UserWarning, match="val_loss"):
        model.fit(*_regression(), epochs=1, verbose=0, callbacks=[nnx.callbacks.EarlyStopping()])
