"""Callbacks with Keras 3's hooks, arguments and messages, driven directly through a CallbackList
and a small fake model, in the order the training loop calls the hooks."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest

from nnx import progbar
from nnx.callbacks import (HOOKS, BatchLogs, Callback, CallbackList, EarlyStopping, History, LambdaCallback,
                           LearningRateScheduler, ModelCheckpoint, ReduceLROnPlateau, TerminateOnNaN)


class FakeOptimizer:
    def __init__(self, learning_rate=0.1):
        self.learning_rate = learning_rate


class FakeModel:
    """What a callback may touch: stop_training, optimizer.learning_rate, weights, save."""

    def __init__(self, learning_rate=0.1):
        self.stop_training = False
        self._stop_now = False
        self.optimizer = FakeOptimizer(learning_rate)
        self.weights = [np.zeros(3, dtype="float32")]
        self.saved: list[tuple[str, str]] = []

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        self.weights = [np.array(w) for w in weights]

    def save(self, path):
        with open(path, "w") as f:
            f.write(f"model {self.weights[0][0]}")
        self.saved.append(("model", str(path)))

    def save_weights(self, path):
        with open(path, "w") as f:
            f.write(f"weights {self.weights[0][0]}")
        self.saved.append(("weights", str(path)))


def fit(callbacks, model, epoch_logs, steps=0, batch_logs=None, mark_weights=True):
    """Call the hooks as fit does, feeding scripted logs: epoch ``e`` ends with ``epoch_logs[e]``
    and, when ``mark_weights``, runs with weights filled with ``e``. Returns the epochs run."""
    cbs = CallbackList(callbacks, model, {"epochs": len(epoch_logs), "steps": steps, "verbose": 0})
    model.stop_training = False
    cbs.call("on_train_begin", {})
    ran = []
    for epoch, logs in enumerate(epoch_logs):
        cbs.call("on_epoch_begin", epoch, {})
        if mark_weights:
            model.set_weights([np.full(3, float(epoch), dtype="float32")])
        for batch in range(steps):
            if cbs.wants("on_train_batch_begin"):
                cbs.call("on_train_batch_begin", batch, {})
            if cbs.wants("on_train_batch_end"):
                cbs.call("on_train_batch_end", batch, batch_logs(epoch, batch) if batch_logs else {"loss": 1.0})
        logs = dict(logs)
        cbs.call("on_epoch_end", epoch, logs)
        ran.append(epoch)
        if model.stop_training:
            break
    cbs.call("on_train_end", {})
    return ran


def val_losses(*values):
    return [{"loss": 1.0, "val_loss": v} for v in values]


@pytest.fixture(autouse=True)
def _no_open_line(monkeypatch):
    monkeypatch.setattr(progbar, "_open_stream", None)


# -- Callback and CallbackList ----------------------------------------------------------------------
class Counter(Callback):
    def __init__(self):
        super().__init__()
        self.calls = []


class OldName(Counter):
    def on_batch_end(self, batch, logs=None):
        self.calls.append(("on_batch_end", batch))


class NewName(Counter):
    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(("on_train_batch_end", batch))


class BothNames(Counter):
    def on_batch_end(self, batch, logs=None):
        self.calls.append(("on_batch_end", batch))

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(("on_train_batch_end", batch))


@pytest.mark.parametrize("cls, expected", [(OldName, "on_batch_end"), (NewName, "on_train_batch_end"),
                                           (BothNames, "on_train_batch_end")])
@pytest.mark.parametrize("hook", ["on_train_batch_end", "on_batch_end"])
def test_train_batch_end_and_its_alias_call_a_callback_once(cls, expected, hook):
    cb = cls()
    cbs = CallbackList([cb], FakeModel(), {})
    assert cbs.wants("on_train_batch_end") and cbs.wants("on_batch_end") and cbs.wants_batches
    assert not cbs.wants("on_train_batch_begin")
    for batch in range(3):
        cbs.call(hook, batch, {"loss": 1.0})
    assert cb.calls == [(expected, 0), (expected, 1), (expected, 2)]


def test_train_batch_begin_alias():
    seen = []

    class Begin(Callback):
        def on_batch_begin(self, batch, logs=None):
            seen.append(batch)

    cbs = CallbackList(Begin(), None, {})
    assert cbs.wants("on_train_batch_begin") and cbs.wants_batches and not cbs.wants("on_train_batch_end")
    cbs.call("on_train_batch_begin", 0, {})
    cbs.call("on_batch_begin", 1, {})
    assert seen == [0, 1]


def test_default_hooks_do_nothing_and_nobody_wants_them():
    cb = Callback()
    for hook in HOOKS + ("on_batch_begin", "on_batch_end"):
        args = (0, {}) if "batch" in hook or "epoch" in hook else ({},)
        assert getattr(cb, hook)(*args) is None
    cbs = CallbackList([Callback(), History()], FakeModel(), {})
    assert not cbs.wants_batches
    assert [h for h in HOOKS if cbs.wants(h)] == ["on_epoch_end"]


def test_test_and_predict_hooks_are_dispatched():
    events = []

    class Watch(Callback):
        def on_test_begin(self, logs=None): events.append("test_begin")
        def on_test_batch_begin(self, batch, logs=None): events.append(f"test_batch_begin {batch}")
        def on_test_batch_end(self, batch, logs=None): events.append(f"test_batch_end {batch} {logs['loss']}")
        def on_test_end(self, logs=None): events.append(f"test_end {logs['loss']}")
        def on_predict_begin(self, logs=None): events.append("predict_begin")
        def on_predict_batch_begin(self, batch, logs=None): events.append(f"predict_batch_begin {batch}")
        def on_predict_batch_end(self, batch, logs=None): events.append(f"predict_batch_end {batch}")
        def on_predict_end(self, logs=None): events.append("predict_end")

    cbs = CallbackList([Watch()], FakeModel(), {})
    assert not cbs.wants_batches  # test and predict batches are not train batches
    assert all(cbs.wants(h) for h in HOOKS if h.startswith(("on_test", "on_predict")))
    cbs.call("on_test_begin", {})
    cbs.call("on_test_batch_begin", 0, {})
    cbs.call("on_test_batch_end", 0, BatchLogs({"loss": 3.0}, 2))
    cbs.call("on_test_end", {"loss": 1.5})
    cbs.call("on_predict_begin", {})
    cbs.call("on_predict_batch_begin", 0, {})
    cbs.call("on_predict_batch_end", 0, {})
    cbs.call("on_predict_end", {})
    assert events == ["test_begin", "test_batch_begin 0", "test_batch_end 0 1.5", "test_end 1.5", "predict_begin",
                      "predict_batch_begin 0", "predict_batch_end 0", "predict_end"]


def test_callback_list_accepts_list_tuple_single_or_none_and_sets_model_and_params():
    model, params = FakeModel(), {"epochs": 3}
    a, b = History(), Callback()
    assert CallbackList(None, model, params).callbacks == []
    assert CallbackList(a, model, params).callbacks == [a]
    assert CallbackList((a, b), model, params).callbacks == [a, b]
    cbs = CallbackList([a, b], model, params)
    assert cbs.callbacks == [a, b] and len(cbs) == 2 and list(cbs) == [a, b]
    assert a.model is model and b.params is params
    c = EarlyStopping()
    cbs.append(c)
    assert c.model is model and cbs.callbacks[-1] is c


@pytest.mark.parametrize("bad, named", [({"a": History()}, "dict"), ("early_stopping", "str"),
                                        (History, "type"), ([History(), "x"], r"callbacks\[1\].*str")])
def test_callback_list_rejects_anything_else(bad, named):
    with pytest.raises(TypeError, match=named):
        CallbackList(bad, FakeModel(), {})


def test_unknown_hook_name_is_an_error():
    cbs = CallbackList([History()], FakeModel(), {})
    with pytest.raises(ValueError, match="on_epoch_ended"):
        cbs.call("on_epoch_ended", 0, {})
    with pytest.raises(ValueError, match="on_epoch_ended"):
        cbs.wants("on_epoch_ended")


def test_hooks_are_called_in_list_order():
    order = []
    cbs = CallbackList([LambdaCallback(on_epoch_end=lambda e, logs: order.append("a")),
                        LambdaCallback(on_epoch_end=lambda e, logs: order.append("b"))], None, {})
    cbs.call("on_epoch_end", 0, {})
    assert order == ["a", "b"]


def test_only_batch_callbacks_make_the_loop_build_batch_logs(tmp_path):
    def wants(*cbs):
        return CallbackList(list(cbs), FakeModel(), {}).wants_batches

    assert not wants(History(), EarlyStopping(), ReduceLROnPlateau(), LearningRateScheduler(lambda e: 0.1))
    assert not wants(ModelCheckpoint(str(tmp_path / "x.nnx")))  # save_freq="epoch"
    assert wants(ModelCheckpoint(str(tmp_path / "x.nnx"), save_freq=2))
    assert wants(TerminateOnNaN())
    assert wants(LambdaCallback(on_batch_end=lambda b, logs: None))
    assert not wants(LambdaCallback(on_epoch_end=lambda e, logs: None))

    class MyCheckpoint(ModelCheckpoint):  # a subclass overriding the batch hook is called
        def on_train_batch_end(self, batch, logs=None):
            pass

    assert wants(MyCheckpoint(str(tmp_path / "x.nnx")))


# -- EarlyStopping ----------------------------------------------------------------------------------
def test_early_stopping_baseline_never_reached_stops_after_patience_epochs():
    model = FakeModel()
    # nothing beats 0.5: the wait is never reset, so patience 2 stops at the second epoch
    cb = EarlyStopping(patience=2, baseline=0.5)
    assert fit([cb], model, val_losses(0.9, 0.95, 0.97, 0.3)) == [0, 1]
    assert cb.stopped_epoch == 1 and model.stop_training


def test_early_stopping_baseline_improving_epochs_do_not_reset_the_wait():
    model = FakeModel()
    # epochs 0 and 1 beat the best but not the baseline (the wait grows to 2, but an improving
    # epoch never stops training); epoch 2 beats the baseline and resets the wait; epochs 3 and 4
    # do not improve: patience 2 stops at epoch 4, as Keras 3 does
    cb = EarlyStopping(patience=2, baseline=0.5)
    assert fit([cb], model, val_losses(0.9, 0.6, 0.4, 0.45, 0.46, 0.1)) == [0, 1, 2, 3, 4]
    assert cb.stopped_epoch == 4 and cb.best == 0.4 and cb.best_epoch == 2


def test_early_stopping_baseline_in_max_mode_with_min_delta():
    cb = EarlyStopping(monitor="val_accuracy", patience=1, baseline=0.8, min_delta=0.05)
    logs = [{"val_accuracy": v} for v in (0.7, 0.86, 0.87, 0.9)]
    # 0.86 beats 0.8 by more than 0.05: the wait resets; 0.87 is within min_delta of 0.86: stop
    assert fit([cb], FakeModel(), logs) == [0, 1, 2]


def test_early_stopping_start_from_epoch():
    values = val_losses(1.0, 2.0, 3.0, 4.0, 5.0, 3.0, 6.0)
    assert fit([EarlyStopping(patience=0)], FakeModel(), values) == [0, 1]
    # epochs 0-2 are not monitored at all; epoch 3 sets the best; epoch 4 does not improve
    cb = EarlyStopping(patience=0, start_from_epoch=3)
    assert fit([cb], FakeModel(), values) == [0, 1, 2, 3, 4]
    assert cb.best == 4.0
    cb = EarlyStopping(patience=2, start_from_epoch=np.int64(3), restore_best_weights=True)
    model = FakeModel()
    assert fit([cb], model, values) == [0, 1, 2, 3, 4, 5, 6]
    assert cb.best == 3.0 and cb.best_epoch == 5
    np.testing.assert_array_equal(model.weights[0], 5.0)  # the best monitored epoch, not epoch 0


def test_early_stopping_restores_best_weights_even_without_stopping():
    model = FakeModel()
    fit([EarlyStopping(patience=5, restore_best_weights=True)], model, val_losses(3.0, 1.0, 2.0))
    np.testing.assert_array_equal(model.weights[0], 1.0)


def test_early_stopping_never_takes_nan_as_best():
    model = FakeModel()
    cb = EarlyStopping(patience=1, restore_best_weights=True)
    assert fit([cb], model, val_losses(math.nan, 2.0, math.nan, math.nan, 1.0)) == [0, 1, 2]
    assert cb.best == 2.0
    np.testing.assert_array_equal(model.weights[0], 1.0)


def test_early_stopping_can_be_reused():
    cb = EarlyStopping(patience=1)
    assert fit([cb], FakeModel(), val_losses(1.0, 0.5, 0.6)) == [0, 1, 2]
    assert fit([cb], FakeModel(), val_losses(2.0, 1.5, 1.0)) == [0, 1, 2]  # the old best is forgotten
    assert cb.stopped_epoch == 0


def test_early_stopping_verbose_messages_start_on_their_own_line(capsys):
    model = FakeModel()
    cb = EarlyStopping(patience=1, verbose=1, restore_best_weights=True)
    cbs = CallbackList([cb], model, {})
    cbs.call("on_train_begin", {})
    for epoch, value in enumerate([1.0, 0.5, 0.7]):
        model.set_weights([np.full(3, float(epoch))])
        cbs.call("on_epoch_end", epoch, {"val_loss": value})
    progbar.write("\r3/3 [==============================] - 0s - loss: 0.8945")  # a bar left open
    cbs.call("on_train_end", {})
    assert capsys.readouterr().out == ("\r3/3 [==============================] - 0s - loss: 0.8945\n"
                                       "Epoch 3: early stopping\n"
                                       "Restoring model weights from the end of the best epoch: 2.\n")
    assert not progbar.line_open()


def test_early_stopping_silent_by_default(capsys):
    fit([EarlyStopping(patience=0, restore_best_weights=True)], FakeModel(), val_losses(1.0, 2.0))
    assert capsys.readouterr().out == ""


def test_early_stopping_keyword_and_positional_arguments_as_keras():
    cb = EarlyStopping("loss", 0.01, 3, 1, "min", 0.5, True, 2)
    assert (cb.monitor, cb.min_delta, cb.patience, cb.verbose, cb.mode, cb.baseline, cb.restore_best_weights,
            cb.start_from_epoch) == ("loss", 0.01, 3, 1, "min", 0.5, True, 2)
    cb = EarlyStopping(patience=np.int64(3), min_delta=np.float32(0.5), baseline=np.float64(1.0),
                       start_from_epoch=np.int32(1))
    assert cb.patience == 3 and type(cb.patience) is int and cb.start_from_epoch == 1
    assert EarlyStopping(monitor="val_accuracy").mode == "max" and EarlyStopping(monitor="val_auc").mode == "max"
    assert EarlyStopping(monitor="val_mae").mode == "min"


@pytest.mark.parametrize("kwargs, named", [
    ({"patience": -1}, r"patience must be an int >= 0; received -1"),
    ({"patience": 2.5}, r"patience must be an int >= 0; received 2\.5"),
    ({"patience": "3"}, r"patience must be an int >= 0; received '3'"),
    ({"start_from_epoch": -2}, r"start_from_epoch must be an int >= 0; received -2"),
    ({"mode": "up"}, r"mode must be 'auto', 'min' or 'max'; received 'up'"),
    ({"baseline": "low"}, r"baseline must be None or a finite number; received 'low'"),
    ({"min_delta": math.nan}, r"min_delta must be a finite number; received nan"),
    ({"verbose": -1}, r"verbose must be .*received -1"),
    ({"monitor": None}, r"monitor must be .*received None"),
])
def test_early_stopping_bad_arguments(kwargs, named):
    with pytest.raises(ValueError, match=named):
        EarlyStopping(**kwargs)


def test_early_stopping_warns_when_the_monitor_is_missing():
    with pytest.warns(UserWarning, match="val_loss.*available: loss"):
        assert fit([EarlyStopping()], FakeModel(), [{"loss": 1.0}] * 3) == [0, 1, 2]


# -- ModelCheckpoint --------------------------------------------------------------------------------
def test_model_checkpoint_save_freq_saves_every_n_batches(tmp_path):
    model = FakeModel()
    cb = ModelCheckpoint(str(tmp_path / "ckpt-{epoch}-{batch}.nnx"), save_freq=2)
    fit([cb], model, [{"loss": 1.0}], steps=5)
    assert [p for _, p in model.saved] == [str(tmp_path / "ckpt-1-2.nnx"), str(tmp_path / "ckpt-1-4.nnx")]


def test_model_checkpoint_save_freq_counts_across_epochs(tmp_path):
    model = FakeModel()
    cb = ModelCheckpoint(str(tmp_path / "ckpt-{epoch}-{batch}.nnx"), save_freq=np.int64(2), save_weights_only=True)
    fit([cb], model, [{"loss": 1.0}] * 2, steps=3)
    # batches 2, 4, 6 overall: batch 2 of epoch 1, batches 1 and 3 of epoch 2
    assert model.saved == [("weights", str(tmp_path / n)) for n in ("ckpt-1-2.nnx", "ckpt-2-1.nnx", "ckpt-2-3.nnx")]
    model.saved.clear()
    fit([cb], model, [{"loss": 1.0}], steps=3)  # a new fit counts from zero
    assert [p for _, p in model.saved] == [str(tmp_path / "ckpt-1-2.nnx")]


def test_model_checkpoint_per_batch_best_only_reads_the_batch_logs(tmp_path, capsys):
    model = FakeModel()
    path = str(tmp_path / "best.nnx")
    losses = {(0, 0): 0.9, (0, 1): 0.5, (0, 2): 0.7, (0, 3): 0.6, (1, 0): 0.8, (1, 1): 0.4}
    cb = ModelCheckpoint(path, monitor="loss", save_best_only=True, save_freq=1, verbose=1)
    fit([cb], model, [{"loss": 1.0}] * 2, steps=4, batch_logs=lambda e, b: BatchLogs({"loss": losses.get((e, b), 9.0)}, 1))
    assert len(model.saved) == 3 and cb.best == 0.4
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == [f"Epoch 1: loss improved from inf to 0.90000, saving model to {path}",
                       f"Epoch 1: loss improved from 0.90000 to 0.50000, saving model to {path}",
                       "Epoch 1: loss did not improve from 0.50000"]
    assert out[5] == f"Epoch 2: loss improved from 0.50000 to 0.40000, saving model to {path}"


def test_model_checkpoint_verbose_messages_as_keras(tmp_path, capsys):
    model = FakeModel()
    best = str(tmp_path / "best.nnx")
    every = str(tmp_path / "x.nnx")
    fit([ModelCheckpoint(best, save_best_only=True, verbose=1), ModelCheckpoint(every, verbose=1)], model,
        val_losses(0.123454, 0.2, 0.1))
    assert capsys.readouterr().out.splitlines() == [
        f"Epoch 1: val_loss improved from inf to 0.12345, saving model to {best}",
        f"Epoch 1: saving model to {every}",
        "Epoch 2: val_loss did not improve from 0.12345",
        f"Epoch 2: saving model to {every}",
        f"Epoch 3: val_loss improved from 0.12345 to 0.10000, saving model to {best}",
        f"Epoch 3: saving model to {every}",
    ]
    assert [p for _, p in model.saved] == [best, every, every, best, every]
    assert open(best).read() == "model 2.0"  # epoch 3's weights


def test_model_checkpoint_message_starts_on_its_own_line_mid_bar(tmp_path, capsys):
    model = FakeModel()
    path = str(tmp_path / "x.nnx")
    cbs = CallbackList([ModelCheckpoint(path, monitor="loss", verbose=1)], model, {})
    bar = progbar.Progbar(5, verbose=1, stream=None)
    bar.update(5, lambda: {"loss": 0.8945})  # the running bar: the line stays open
    assert progbar.line_open()
    cbs.call("on_epoch_end", 0, {"loss": 0.8945})
    bar.update(5, lambda: {}, final=True, extra={"loss": 0.8945})
    out = capsys.readouterr().out
    assert "loss: 0.8945\nEpoch 1: saving model to " in out
    assert out.endswith("loss: 0.8945\n") and not progbar.line_open()


def test_model_checkpoint_initial_value_threshold_and_max_mode(tmp_path):
    model = FakeModel()
    cb = ModelCheckpoint(str(tmp_path / "b.nnx"), monitor="val_accuracy", save_best_only=True,
                         initial_value_threshold=0.8)
    assert cb.mode == "max"
    fit([cb], model, [{"val_accuracy": v} for v in (0.7, 0.85, 0.82, 0.9)])
    assert len(model.saved) == 2 and cb.best == 0.9
    assert open(tmp_path / "b.nnx").read() == "model 3.0"


def test_model_checkpoint_never_saves_nan_logs(tmp_path):
    model = FakeModel()
    path = tmp_path / "ckpt.nnx"
    with pytest.warns(UserWarning, match="epoch 2 has NaN or inf.*keeping the previous checkpoint"):
        fit([ModelCheckpoint(str(path), monitor="loss")], model, [{"loss": 1.0}, {"loss": math.inf}])
    assert len(model.saved) == 1 and path.read_text() == "model 0.0"
    with pytest.warns(UserWarning, match="batch 2, has NaN"):
        fit([ModelCheckpoint(str(path), save_freq=1)], model, [{"loss": 1.0}], steps=2,
            batch_logs=lambda e, b: {"loss": [1.0, math.nan][b]})


def test_model_checkpoint_weights_only_and_folders(tmp_path):
    model = FakeModel()
    fit([ModelCheckpoint(str(tmp_path / "w.npz"), monitor="loss"),
         ModelCheckpoint(str(tmp_path / "sub" / "dir" / "m-{epoch:02d}-{loss:.1f}.nnx"))], model, [{"loss": 0.25}])
    assert model.saved == [("weights", str(tmp_path / "w.npz")), ("model", str(tmp_path / "sub" / "dir" / "m-01-0.2.nnx"))]
    assert (tmp_path / "sub" / "dir" / "m-01-0.2.nnx").exists()
    with pytest.raises(KeyError, match="val_acc"):
        fit([ModelCheckpoint(str(tmp_path / "m-{val_acc}.nnx"))], model, [{"loss": 0.25}])


def test_model_checkpoint_saves_with_a_warning_when_best_only_has_no_monitor(tmp_path):
    """As Keras 3 (``_should_save_model``): the monitor missing from the logs, it warns and saves."""
    model = FakeModel()
    with pytest.warns(UserWarning, match="val_loss.*saving this one"):
        fit([ModelCheckpoint(str(tmp_path / "b.nnx"), save_best_only=True)], model, [{"loss": 1.0}, {"loss": 2.0}])
    assert len(model.saved) == 2


def test_model_checkpoint_arguments_as_keras(tmp_path):
    cb = ModelCheckpoint(str(tmp_path / "x.nnx"), "loss", 1, True, True, "min", 3, 0.5)
    assert (cb.monitor, cb.verbose, cb.save_best_only, cb.save_weights_only, cb.mode, cb.save_freq, cb.best) == \
        ("loss", 1, True, True, "min", 3, 0.5)
    assert ModelCheckpoint(tmp_path / "x.nnx").filepath == str(tmp_path / "x.nnx")  # a PathLike works


@pytest.mark.parametrize("kwargs, named", [
    ({"save_freq": 0}, r"save_freq must be 'epoch' or a positive int .*received 0"),
    ({"save_freq": -3}, r"received -3"),
    ({"save_freq": "batch"}, r"save_freq must be 'epoch' or a positive int .*received 'batch'"),
    ({"save_freq": 2.0}, r"received 2\.0"),
    ({"save_freq": True}, r"received True"),
    ({"mode": "best"}, r"mode must be 'auto', 'min' or 'max'; received 'best'"),
    ({"initial_value_threshold": "x"}, r"initial_value_threshold must be None or a finite number; received 'x'"),
])
def test_model_checkpoint_bad_arguments(tmp_path, kwargs, named):
    with pytest.raises(ValueError, match=named):
        ModelCheckpoint(str(tmp_path / "x.nnx"), **kwargs)


# -- LearningRateScheduler --------------------------------------------------------------------------
class RateLog(Callback):
    def __init__(self):
        super().__init__()
        self.rates = []

    def on_epoch_begin(self, epoch, logs=None):
        self.rates.append(self.model.optimizer.learning_rate)


def test_learning_rate_scheduler_one_argument():
    model, log = FakeModel(0.5), RateLog()
    history = History()
    fit([LearningRateScheduler(lambda epoch: 0.1 / (epoch + 1)), log, history], model, [{"loss": 1.0}] * 3)
    assert log.rates == pytest.approx([0.1, 0.05, 0.1 / 3])
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.05, 0.1 / 3])


def test_learning_rate_scheduler_two_arguments():
    model, log = FakeModel(0.8), RateLog()
    fit([LearningRateScheduler(lambda epoch, lr: lr * 0.5), log], model, [{"loss": 1.0}] * 3)
    assert log.rates == pytest.approx([0.4, 0.2, 0.1])


def test_learning_rate_scheduler_reads_the_signature():
    calls = []

    def with_default(epoch, lr=None):  # accepts the rate: gets it, as Keras passes (epoch, lr) first
        calls.append((epoch, lr))
        return 0.01

    class EpochOnly:
        def __call__(self, epoch):
            calls.append((epoch,))
            return 0.02

    def varargs(*args):
        calls.append(args)
        return 0.03

    model = FakeModel(0.1)
    fit([LearningRateScheduler(with_default), LearningRateScheduler(EpochOnly()), LearningRateScheduler(varargs)],
        model, [{"loss": 1.0}])
    assert calls == [(0, 0.1), (0,), (0, 0.02)]
    for bad in (lambda: 0.1, lambda epoch, lr, extra: 0.1, lambda epoch, *, lr: 0.1):
        with pytest.raises(ValueError, match=r"schedule must take \(epoch\) or \(epoch, lr\)"):
            LearningRateScheduler(bad)
    with pytest.raises(TypeError, match="schedule must be a callable"):
        LearningRateScheduler(0.1)


def test_learning_rate_scheduler_does_not_hide_a_type_error_in_the_schedule():
    calls = []

    def schedule(epoch, lr):
        calls.append(epoch)
        return lr + "oops"

    with pytest.raises(TypeError):
        fit([LearningRateScheduler(schedule)], FakeModel(), [{"loss": 1.0}])
    assert calls == [0]  # called once, not retried with one argument


def test_learning_rate_scheduler_unreadable_signature_tries_two_arguments_then_one():
    class Opaque:
        __signature__ = "unreadable"

        def __call__(self, epoch):
            return 0.5 ** epoch

    import inspect
    with pytest.raises((TypeError, ValueError)):
        inspect.signature(Opaque())
    log = RateLog()
    fit([LearningRateScheduler(Opaque()), log], FakeModel(), [{"loss": 1.0}] * 2)
    assert log.rates == [1.0, 0.5]


@pytest.mark.parametrize("value", ["0.1", None, math.nan, math.inf, True])
def test_learning_rate_scheduler_needs_a_finite_float(value):
    with pytest.raises(ValueError, match="finite float learning rate"):
        fit([LearningRateScheduler(lambda epoch: value)], FakeModel(), [{"loss": 1.0}])


def test_learning_rate_scheduler_accepts_numpy_floats_and_prints_on_its_own_line(capsys):
    model = FakeModel()
    cbs = CallbackList([LearningRateScheduler(lambda epoch: np.float32(0.25), verbose=1)], model, {})
    progbar.write("Epoch 1/2 - ")  # a line left open
    cbs.call("on_epoch_begin", 0, {})
    assert model.optimizer.learning_rate == 0.25 and type(model.optimizer.learning_rate) is float
    assert capsys.readouterr().out == "Epoch 1/2 - \nEpoch 1: LearningRateScheduler setting learning rate to 0.25.\n"


# -- ReduceLROnPlateau ------------------------------------------------------------------------------
def test_reduce_lr_on_plateau_keras_argument_order():
    cb = ReduceLROnPlateau("loss", 0.5, np.int64(2), 1, "min", 0.01, 1, 0.001)
    assert (cb.monitor, cb.factor, cb.patience, cb.verbose, cb.mode, cb.min_delta, cb.cooldown, cb.min_lr) == \
        ("loss", 0.5, 2, 1, "min", 0.01, 1, 0.001)
    cb = ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=3, min_lr=1e-5)  # keywords, as before
    assert (cb.factor, cb.patience, cb.min_lr, cb.min_delta, cb.cooldown) == (0.5, 3, 1e-5, 1e-4, 0)


def test_reduce_lr_on_plateau_cooldown_and_message(capsys):
    model = FakeModel(0.1)
    history = History()
    cb = ReduceLROnPlateau(factor=0.5, patience=1, cooldown=2, verbose=1)
    fit([cb, history], model, val_losses(1.0, 1.0, 1.0, 1.0, 1.0))
    # reduce at epoch 1; epoch 2 is quiet; reduce again at epoch 3 (as in Keras, the counter is
    # decremented before the check, so a cooldown of n leaves n - 1 quiet epochs)
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    assert model.optimizer.learning_rate == pytest.approx(0.025)
    assert capsys.readouterr().out.splitlines() == ["Epoch 2: ReduceLROnPlateau reducing learning rate to 0.05.",
                                                    "Epoch 4: ReduceLROnPlateau reducing learning rate to 0.025."]


def test_reduce_lr_on_plateau_stops_at_min_lr():
    model = FakeModel(0.1)
    fit([ReduceLROnPlateau(factor=0.5, patience=2, min_lr=0.03)], model, val_losses(*[1.0] * 9))
    assert model.optimizer.learning_rate == pytest.approx(0.03)


def test_reduce_lr_on_plateau_records_the_rate_without_the_monitor():
    model, history = FakeModel(0.1), History()
    with pytest.warns(UserWarning, match="val_loss"):
        fit([ReduceLROnPlateau(), history], model, [{"loss": 1.0}])
    assert history.history["learning_rate"] == [0.1]


@pytest.mark.parametrize("kwargs, named", [
    ({"factor": 1.0}, r"factor must be a number in \(0, 1\); received 1\.0"),
    ({"factor": 0}, r"factor must be a number in \(0, 1\); received 0"),
    ({"patience": -1}, r"patience must be an int >= 0; received -1"),
    ({"cooldown": 1.5}, r"cooldown must be an int >= 0; received 1\.5"),
    ({"min_lr": -0.1}, r"min_lr must be a finite number >= 0; received -0\.1"),
    ({"mode": "lower"}, r"mode must be 'auto', 'min' or 'max'; received 'lower'"),
])
def test_reduce_lr_on_plateau_bad_arguments(kwargs, named):
    with pytest.raises(ValueError, match=named):
        ReduceLROnPlateau(**kwargs)


# -- LambdaCallback ---------------------------------------------------------------------------------
def test_lambda_callback_calls_each_function_at_its_hook():
    events = []
    cb = LambdaCallback(
        on_train_begin=lambda logs: events.append("train_begin"),
        on_epoch_begin=lambda epoch, logs: events.append(f"epoch_begin {epoch}"),
        on_train_batch_begin=lambda batch, logs: events.append(f"batch_begin {batch}"),
        on_train_batch_end=lambda batch, logs: events.append(f"batch_end {batch} {logs['loss']}"),
        on_epoch_end=lambda epoch, logs: events.append(f"epoch_end {epoch} {logs['loss']}"),
        on_train_end=lambda logs: events.append("train_end"),
    )
    fit([cb], FakeModel(), [{"loss": 0.5}] * 2, steps=2)
    assert events == ["train_begin",
                      "epoch_begin 0", "batch_begin 0", "batch_end 0 1.0", "batch_begin 1", "batch_end 1 1.0",
                      "epoch_end 0 0.5",
                      "epoch_begin 1", "batch_begin 0", "batch_end 0 1.0", "batch_begin 1", "batch_end 1 1.0",
                      "epoch_end 1 0.5", "train_end"]


def test_lambda_callback_other_hooks_by_keyword():
    events = []
    cb = LambdaCallback(on_batch_end=lambda batch, logs: events.append(f"batch {batch}"),
                        on_test_begin=lambda logs: events.append("test_begin"),
                        on_predict_batch_end=lambda batch, logs: events.append(f"predict {batch}"))
    cbs = CallbackList([cb], FakeModel(), {})
    assert cbs.wants("on_train_batch_end") and cbs.wants("on_test_begin") and not cbs.wants("on_epoch_end")
    cbs.call("on_train_batch_end", 0, {})
    cbs.call("on_test_begin", {})
    cbs.call("on_predict_batch_end", 3, {})
    cbs.call("on_epoch_end", 0, {})  # not given: nothing happens
    assert events == ["batch 0", "test_begin", "predict 3"]


def test_lambda_callback_rejects_unknown_hooks_and_non_callables():
    with pytest.raises(TypeError, match="unknown hook 'on_epoch_ended'"):
        LambdaCallback(on_epoch_ended=print)
    with pytest.raises(TypeError, match="on_epoch_end must be a callable or None; received int"):
        LambdaCallback(on_epoch_end=3)


# -- TerminateOnNaN ---------------------------------------------------------------------------------
def test_terminate_on_nan_stops_after_the_batch_with_a_message_on_its_own_line(capsys):
    model = FakeModel()
    cbs = CallbackList([TerminateOnNaN()], model, {})
    progbar.write("\r1/4 [=====>....] - loss: 1.2")
    cbs.call("on_train_batch_end", 0, {"loss": 1.2})
    assert not model.stop_training
    cbs.call("on_train_batch_end", 1, {"loss": math.nan})
    assert model.stop_training and model._stop_now
    assert capsys.readouterr().out == "\r1/4 [=====>....] - loss: 1.2\nBatch 1: Invalid loss, terminating training\n"


# -- progbar line tracking --------------------------------------------------------------------------
def test_progbar_message_ends_an_open_line_first():
    stream = io.StringIO()
    progbar.message("Epoch 1/2", stream)
    assert not progbar.line_open()
    progbar.write("\r1/2 [===>...]", stream)
    assert progbar.line_open()
    progbar.message("Epoch 1: note", stream)
    progbar.message("Epoch 1: another", stream)  # no blank line between two messages
    progbar.end_line()  # nothing open: nothing written
    assert stream.getvalue() == "Epoch 1/2\n\r1/2 [===>...]\nEpoch 1: note\nEpoch 1: another\n"


def test_progbar_live_bar_keeps_the_line_open_until_the_final_update():
    stream = io.StringIO()
    bar = progbar.Progbar(4, verbose=1, stream=stream, interval=0.0)
    bar.update(1, lambda: {"loss": 2.0})
    assert progbar.line_open()
    bar.update(2, lambda: {"loss": 1.5})
    progbar.message("a message", stream)
    bar.update(3, lambda: {"loss": 1.0})  # continues on a fresh line, without padding
    bar.update(4, lambda: {}, final=True, extra={"loss": 0.5})
    assert not progbar.line_open()
    lines = stream.getvalue().split("\n")
    assert lines[1] == "a message" and lines[-1] == ""
    _, third, final = lines[2].split("\r")
    assert third.startswith("3/4 [") and third.endswith("loss: 1.0000")  # no padding over the message
    assert final.startswith("4/4 [==============================]") and final.rstrip().endswith("loss: 0.5000")


def test_progbar_verbose_two_prefix_gives_one_line_per_epoch():
    stream = io.StringIO()
    bar = progbar.Progbar(5, verbose=2, stream=stream, prefix="Epoch 3/10")
    for step in range(1, 5):
        bar.update(step, lambda: {"loss": 1.0})
    assert stream.getvalue() == "" and not progbar.line_open()
    bar.update(5, lambda: {}, final=True, extra={"loss": 0.25, "val_loss": 0.5})
    line = stream.getvalue()
    assert line.startswith("Epoch 3/10 - 5/5 - ") and line.endswith(" - loss: 0.2500 - val_loss: 0.5000\n")
    assert line.count("\n") == 1 and not progbar.line_open()
    plain = io.StringIO()
    progbar.Progbar(5, verbose=2, stream=plain).update(5, final=True)
    assert plain.getvalue().startswith("5/5 - ")


def test_end_line_survives_a_closed_stream():
    stream = io.StringIO()
    progbar.write("open", stream)
    stream.close()
    progbar.end_line()
    assert not progbar.line_open()
