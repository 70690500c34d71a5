"""compile(jit_compile=True): fit records its training step once as a device graph (CuPy: a CUDA
graph) and replays it per batch. Trained weights, logs and optimizer counts must equal those
of the step-by-step loop.

On cupy the real CUDA graph runs. On numpy and array_api_strict, which record no graphs, a stand-in
recorder plays the graph's part: the capture runs the step once and undoes what it wrote, and each
launch runs it again into the same buffers. That checks the loop's side (static buffers, the
device-side rate and step count, the in-place sums, recording again after ``set_weights``) on every
backend; the graph itself is checked on cupy.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import nnx


def _all_layers(layer):
    yield layer
    for sub in getattr(layer, "_layers", ()):
        yield from _all_layers(sub)


class _Rerun:
    """Stands in for a device graph: records nothing, replays by running the step again."""

    def __init__(self, fn):
        steps = fn.func.__self__  # functools.partial(CapturedSteps._body, recording)
        xp = steps.backend.xp
        model, opt = steps.model, steps.model.optimizer
        arrays = [w.value for w in model.weights] + [a for s in opt._slots.values() for a in s]
        arrays += [*steps.sums.values.values(), steps.t]
        saved = [xp.asarray(a, copy=True) for a in arrays]
        self.fn, self.opt = fn, opt
        self.bound = [(w, w.value) for w in model.weights]
        self.flags = [(layer, layer._trainable) for layer in _all_layers(model)]
        self.result = tuple(xp.asarray(r, copy=True) for r in fn())  # (NumPy's loss is a scalar)
        # a capture writes nothing: undo what running the step wrote
        for a, b in zip(arrays, saved):
            a[...] = b

    def launch(self):
        # a graph reads and writes the arrays it was recorded with, whatever the weights hold now,
        # and trains the weights that were trainable then
        now = [(w, w.value) for w, _ in self.bound]
        now_flags = [(layer, layer._trainable) for layer, _ in self.flags]
        for w, a in self.bound:
            w.value = a
        for layer, flag in self.flags:
            layer._trainable = flag
        iterations = self.opt.iterations  # a replay runs no Python: the loop counts the step
        new = self.fn()
        self.opt.iterations = iterations
        for w, a in now:
            w.value = a
        for layer, flag in now_flags:
            layer._trainable = flag
        for a, b in zip(self.result, new):
            a[...] = b


@pytest.fixture
def recorder(backend, monkeypatch):
    """The backend's own graphs on cupy; the stand-in elsewhere. Yields the recorded steps."""
    recorded = []
    if backend.name == "cupy":
        real = backend.capture

        def capture(fn):
            recorded.append(real(fn))
            return recorded[-1]
    else:
        def capture(fn):
            recorded.append(_Rerun(fn))
            return recorded[-1]
        monkeypatch.setattr(backend, "captures_steps", True)
    monkeypatch.setattr(backend, "capture", capture)
    return recorded


def _data(n=70, d=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    y = (x[:, :classes].argmax(axis=1)).astype("int64")
    return x, y


def _model(optimizer, layers=None, metrics=None, jit=False, loss="sparse_categorical_crossentropy", seed=3):
    nnx.random.seed(seed)
    model = nnx.Sequential(layers or [nnx.Input((6,)), nnx.Dense(8, activation="relu"),
                                      nnx.Dense(3, activation="softmax")])
    model.compile(optimizer=nnx.optimizers.get(optimizer) if isinstance(optimizer, str) else optimizer,
                  loss=loss, metrics=metrics or [], jit_compile=jit)
    return model


def _fit_both(make, x, y, tol, **fit):
    """The same model trained step by step and with recorded steps: (eager, recorded, histories)."""
    eager, graphed = make(False), make(True)
    nnx.random.seed(11)
    h1 = eager.fit(x, y, verbose=0, **fit)
    nnx.random.seed(11)
    h2 = graphed.fit(x, y, verbose=0, **fit)
    for a, b in zip(eager.get_weights(), graphed.get_weights()):
        np.testing.assert_allclose(b, a, rtol=tol, atol=tol)
    assert h1.history.keys() == h2.history.keys()
    for k in h1.history:
        np.testing.assert_allclose(h2.history[k], h1.history[k], rtol=tol, atol=tol)
    assert graphed.optimizer.iterations == eager.optimizer.iterations
    return eager, graphed


def _tol(backend):
    # cupy: the recorded products call cuBLAS directly and may pick another algorithm; a device
    # without float64 computes Adam's bias correction in float32 where the step-by-step loop uses
    # Python floats
    if not backend.has_float64:
        return 5e-4
    return 2e-5 if backend.name == "cupy" else 1e-6


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad"])
def test_recorded_steps_train_as_step_by_step(backend, recorder, optimizer):
    make_opt = {"momentum": lambda: nnx.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
                "sgd": lambda: nnx.optimizers.SGD(0.1)}.get(optimizer, lambda: nnx.optimizers.get(optimizer))
    x, y = _data()
    _fit_both(lambda jit: _model(make_opt(), metrics=["accuracy"], jit=jit), x, y, _tol(backend),
              epochs=3, batch_size=16)  # 70 samples: four batches of 16 and one of 6
    assert len(recorder) == 2  # recorded once for each batch size, for the whole fit


def test_only_the_first_step_runs_step_by_step(backend, recorder, monkeypatch):
    """Fit's first step runs as it comes (it is checked before it is applied); every other step,
    the smaller last batch included, is a replay."""
    eager_steps = []
    real = nnx.training.Loop.train_step

    def counted(self, x, y, sample_weight=None):
        eager_steps.append(int(x.shape[0]))
        return real(self, x, y, sample_weight)

    monkeypatch.setattr(nnx.training.Loop, "train_step", counted)
    x, y = _data()
    model = _model("adam", jit=True)
    model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    assert eager_steps == [16] and model.optimizer.iterations == 15
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert eager_steps == [16, 32] and model.optimizer.iterations == 18


def test_rate_changes_reach_the_recorded_step(backend, recorder):
    """A schedule changes the rate every step, a callback changes it per epoch; the graph reads it
    from the device, so both take effect."""
    x, y = _data()
    schedule = nnx.optimizers.schedules.ExponentialDecay(0.2, decay_steps=2, decay_rate=0.5)
    _fit_both(lambda jit: _model(nnx.optimizers.Adam(schedule), jit=jit), x, y, _tol(backend),
              epochs=2, batch_size=10)
    halve = nnx.callbacks.LearningRateScheduler(lambda epoch, lr: 0.3 / (epoch + 1))
    eager, graphed = _fit_both(lambda jit: _model(nnx.optimizers.SGD(0.3), jit=jit), x, y, _tol(backend),
                               epochs=3, batch_size=10, callbacks=[halve])
    assert graphed.optimizer.learning_rate == pytest.approx(0.1)


def test_recorded_convolutional_steps(backend, recorder):
    """Convolutions (3x3: nine taps gathered), a convolution paired with its max pooling, average
    pooling and Flatten, recorded and replayed."""
    rng = np.random.default_rng(8)
    x = rng.uniform(size=(40, 8, 8, 2)).astype("float32")
    y = rng.integers(0, 3, size=40)

    def make(jit):
        return _model("adam", [nnx.Input((8, 8, 2)), nnx.Conv2D(4, 3, padding="same", activation="relu"),
                               nnx.MaxPooling2D(2), nnx.Conv2D(3, 3, activation="tanh"),
                               nnx.AveragePooling2D(2), nnx.Flatten(), nnx.Dense(3, activation="softmax")],
                      metrics=["accuracy"], jit=jit)
    _fit_both(make, x, y, _tol(backend) * 5, epochs=2, batch_size=16)


def test_a_rate_of_zero_freezes_the_recorded_step(backend, recorder):
    x, y = _data()
    model = _model(nnx.optimizers.SGD(0.0), jit=True)
    before = model.get_weights()
    model.fit(x, y, epochs=2, batch_size=7, verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_stateful_metrics_sample_weights_and_batch_normalization(backend, recorder):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("float32")[:, None]
    w = rng.uniform(0.5, 2.0, size=64).astype("float32")

    def make(jit):
        return _model("adam", [nnx.Input((6,)), nnx.Dense(8), nnx.BatchNormalization(), nnx.Activation("relu"),
                               nnx.Dense(1, activation="sigmoid")],
                      metrics=["accuracy", nnx.metrics.AUC(), nnx.metrics.Precision()], jit=jit,
                      loss="binary_crossentropy")
    eager, graphed = _fit_both(make, x, y, _tol(backend) * 10, epochs=3, batch_size=16, sample_weight=w,
                               shuffle=True)
    np.testing.assert_allclose(nnx.to_numpy(graphed.predict(x)), nnx.to_numpy(eager.predict(x)), rtol=1e-4,
                               atol=1e-5)


def test_set_weights_between_steps_records_the_step_again(backend, recorder):
    class Reset(nnx.callbacks.Callback):
        def __init__(self, weights):
            super().__init__()
            self.weights = weights

        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                self.model.set_weights(self.weights)

    x, y = _data()
    start = _model("sgd").get_weights()
    _fit_both(lambda jit: _model("sgd", jit=jit), x, y, _tol(backend), epochs=2, batch_size=16,
              callbacks=[Reset(start)])


def test_freezing_a_layer_between_epochs_records_the_step_again(backend, recorder):
    """Which weights train, and a BatchNormalization's mode, are fixed when the step is recorded:
    freezing a layer mid-fit (fine-tuning) records it again."""

    class Freeze(nnx.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                for layer in self.model.layers[:2]:
                    layer.trainable = False

    def make(jit):
        return _model(nnx.optimizers.SGD(0.05, momentum=0.5),
                      [nnx.Input((6,)), nnx.Dense(8), nnx.BatchNormalization(), nnx.Activation("relu"),
                       nnx.Dense(3, activation="softmax")], jit=jit)
    x, y = _data()
    eager, graphed = _fit_both(make, x, y, _tol(backend) * 10, epochs=3, batch_size=16, callbacks=[Freeze()])
    assert len(recorder) == 4  # two batch sizes, recorded again once the layers are frozen


def test_changing_an_optimizer_setting_records_the_step_again(backend, recorder):
    """An optimizer's numbers other than the rate (momentum here) are read in Python while the
    step is recorded: changing one mid-fit records the step again."""

    class NoMomentum(nnx.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                self.model.optimizer.momentum = 0.0

    x, y = _data()
    _fit_both(lambda jit: _model(nnx.optimizers.SGD(0.05, momentum=0.9), jit=jit), x, y, _tol(backend),
              epochs=2, batch_size=16, callbacks=[NoMomentum()])
    assert len(recorder) == 4


def test_host_data_is_copied_into_the_recorded_step(backend, recorder, monkeypatch):
    """Data too large for the device stays on the host; its batches are copied into the step's
    static arrays."""
    monkeypatch.setattr(backend.ops, "fits_in_memory", lambda nbytes: False)
    x, y = _data(n=48)
    _fit_both(lambda jit: _model("rmsprop", metrics=["accuracy"], jit=jit), x, y, _tol(backend), epochs=2,
              batch_size=16, shuffle=False)


def test_validation_and_evaluate_after_recorded_training(backend, recorder):
    x, y = _data()
    eager, graphed = _fit_both(lambda jit: _model("adam", metrics=["accuracy"], jit=jit), x, y, _tol(backend),
                               epochs=2, batch_size=16, validation_split=0.2)
    np.testing.assert_allclose(graphed.evaluate(x, y, verbose=0), eager.evaluate(x, y, verbose=0), rtol=1e-4)


def test_a_step_that_cannot_be_recorded_trains_nothing(backend, recorder, monkeypatch):
    """A layer that replaces its weight array instead of updating it in place would leave the graph
    reading the old one: refused before the first step, with every weight as it was."""

    class Replacing(nnx.layers.Layer):
        def build(self, input_shape):
            super().build(input_shape)
            self.k = self.add_weight("k", (int(input_shape[-1]),), initializer="ones")

        def forward(self, x, training=False):
            return x * self.k.value, x

        def backward(self, saved, dy, need_dx=True):
            return dy * self.k.value, {self.k: self.xp.sum(dy * saved, axis=0)}

        def update_state(self, saved):
            self.k.value = self.k.value * 1.0

    x, y = _data()
    model = _model("sgd", [nnx.Input((6,)), Replacing(), nnx.Dense(3, activation="softmax")], jit=True)
    before = model.get_weights()
    with pytest.raises(ValueError, match="jit_compile=True.*in place"):
        model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.optimizer.iterations == 0


def test_dropout_cannot_be_recorded_on_the_gpu(backend):
    if backend.name != "cupy":
        pytest.skip("random draws are refused inside a CUDA graph; other backends record no graphs")
    x, y = _data()
    model = _model("sgd", [nnx.Input((6,)), nnx.Dense(8, activation="relu"), nnx.Dropout(0.5),
                           nnx.Dense(3, activation="softmax")], jit=True)
    before = model.get_weights()
    with pytest.raises(ValueError, match="jit_compile=False"):
        model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_without_graphs_the_flag_warns_and_trains_step_by_step(backend):
    if backend.captures_steps:
        pytest.skip(f"{backend.name} records device graphs")
    x, y = _data()
    eager, graphed = _model("adam"), _model("adam", jit=True)
    nnx.random.seed(2)
    eager.fit(x, y, epochs=2, batch_size=16, verbose=0)
    nnx.random.seed(2)
    with pytest.warns(RuntimeWarning, match="jit_compile=True"):
        graphed.fit(x, y, epochs=2, batch_size=16, verbose=0)
    for a, b in zip(eager.get_weights(), graphed.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_jit_compile_argument_and_saving(tmp_path):
    model = _model("sgd")
    with pytest.raises(ValueError, match="jit_compile must be True or False"):
        model.compile("sgd", "mse", jit_compile="yes")
    assert model.jit_compile is False and model.loss.name != "mean_squared_error"
    model.compile("sgd", "mse", jit_compile=True)
    model.save(tmp_path / "m.nnx")
    assert nnx.load_model(tmp_path / "m.nnx").jit_compile is True
    model.compile("sgd", "mse")
    model.save(tmp_path / "n.nnx")
    assert nnx.load_model(tmp_path / "n.nnx").jit_compile is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _model("sgd").fit(*_data(), epochs=1, verbose=0)  # no warning without the flag
