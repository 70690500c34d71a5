"""Core v2 contracts, end to end through ``Sequential``: every activation and loss against finite
differences, the bugs of the core-v2 issue pinned one by one, shuffling and validation rows,
Dropout, initializers, regularizers, learning-rate changes, statelessness and frozen layers.

Finite differences run in float64 (``backend64``); everything else on every backend in float32.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import nnx
from conftest import assert_close
from helpers import numeric_grad

ACTIVATIONS = [cls.name for cls in nnx.activations.ALL]


# -- helpers ----------------------------------------------------------------------------------------
def _loss_value(model, xd, yd) -> float:
    """The model's loss (with penalties) in inference mode, computed from its parts."""
    p = model.forward(xd, training=False)[0]
    return float(model.loss.forward(model.backend.xp, yd, p)) + float(model.regularization_loss())


def _check_gradients(model, x, y, rtol=1e-5, atol=1e-8, loss_of=None):
    """compute_gradients against central differences of the loss, for every trainable weight."""
    xd, yd = nnx.asarray(x), nnx.asarray(y)
    if loss_of is None:
        loss_of = lambda: _loss_value(model, xd, yd)  # noqa: E731
        # evaluate is the same loss, penalties included
        assert model.evaluate(x, y, batch_size=len(x)) == pytest.approx(loss_of(), rel=1e-10, abs=1e-12)
    step = model.compute_gradients(xd, yd)
    records = model.trainable_weights
    assert records and set(step.grads) == set(records)
    assert float(step.loss) == pytest.approx(loss_of(), rel=1e-10, abs=1e-12)
    grads = {w: nnx.to_numpy(g).copy() for w, g in step.grads.items()}
    for w in records:
        original = w.numpy()

        def f(v, w=w):
            w.value = nnx.asarray(np.array(v))
            return loss_of()

        expected = numeric_grad(f, original.copy())
        w.value = nnx.asarray(original)
        assert np.abs(expected).max() > 0 or w.name == "bias", f"{w.path}: a gradient of zero tests nothing"
        np.testing.assert_allclose(grads[w], expected, rtol=rtol, atol=atol, err_msg=w.path)


def _weights_equal(a, b) -> list[bool]:
    return [np.array_equal(u, v) for u, v in zip(a, b)]


class Recorder(nnx.layers.Layer):
    """Identity that records the ids (column 0) of the rows it sees in training. Placed before
    every trainable layer, its backward must never run."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen: list[list[int]] = []

    def forward(self, x, training=False):
        if training:
            self.seen.append([int(round(v)) for v in nnx.to_numpy(x[:, 0]).tolist()])
        return x, None

    def backward(self, saved, dy, need_dx=True):
        raise AssertionError("the backward pass must stop at the first layer with trainable weights")


def _id_data(n, features=3, seed=0):
    """x whose column 0 is the row id; y random targets."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    x[:, 0] = np.arange(n)
    return x, rng.normal(size=(n, 1)).astype("float32")


def _recording_model(lr=0.01):
    recorder = Recorder()
    model = nnx.Sequential([nnx.Input(3), recorder, nnx.Dense(1)])
    model.compile(nnx.optimizers.SGD(lr), "mse")
    return model, recorder


# -- a. every activation, as Dense(activation=...) and as Dense + Activation, first and middle -------
def _activation_model(name, form, position):
    hidden = [nnx.Dense(4, activation=name)] if form == "dense" else [nnx.Dense(4), nnx.Activation(name)]
    before = [] if position == "first" else [nnx.Dense(4, activation="tanh")]
    return nnx.Sequential([nnx.Input(3), *before, *hidden, nnx.Dense(2)])


@pytest.mark.parametrize("position", ["first", "middle"])
@pytest.mark.parametrize("form", ["dense", "layer"])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_gradients_through_the_model(backend64, name, form, position):
    model = _activation_model(name, form, position)
    model.compile("sgd", "mse")
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    _check_gradients(model, x, y)


def test_flatten_between_trainable_layers_gradients(backend64):
    """Dense on (batch, 2, 3) maps the last axis, Flatten reshapes its gradient back to (2, 4)."""
    model = nnx.Sequential([nnx.Input((2, 3)), nnx.Dense(4, activation="tanh"), nnx.Flatten(), nnx.Dense(2)])
    model.compile("sgd", "mse")
    assert model.layers[1].output_shape == (8,)
    rng = np.random.default_rng(24)
    _check_gradients(model, rng.normal(size=(5, 2, 3)), rng.normal(size=(5, 2)))


# -- b. every loss through a whole model ------------------------------------------------------------
def _multi_hot(rng, n, k):
    y = np.zeros((n, k))
    for i in range(n):
        y[i, rng.choice(k, size=2 + i % 2, replace=False)] = 1.0  # two or three classes a row
    return y


def _loss_case(case):
    rng = np.random.default_rng(12)
    n = 6
    x = rng.normal(size=(n, 3))
    hidden = [nnx.Input(3), nnx.Dense(5, activation="tanh")]
    onehot = np.eye(3)[rng.integers(0, 3, size=n)]
    labels = rng.integers(0, 3, size=n)
    CCE, SCE, BCE = (nnx.losses.CategoricalCrossentropy, nnx.losses.SparseCategoricalCrossentropy,
                     nnx.losses.BinaryCrossentropy)
    cases = {
        "mse": ([nnx.Dense(2)], "mse", 2.0 * rng.normal(size=(n, 2))),
        "mae": ([nnx.Dense(2)], "mae", 2.0 * rng.normal(size=(n, 2))),
        "huber": ([nnx.Dense(2)], nnx.losses.Huber(delta=1.0), 2.0 * rng.normal(size=(n, 2))),
        "binary_sigmoid": ([nnx.Dense(2, activation="sigmoid")], "binary_crossentropy",
                           rng.integers(0, 2, size=(n, 2)).astype(float)),
        "binary_from_logits": ([nnx.Dense(2)], BCE(from_logits=True), rng.integers(0, 2, size=(n, 2)).astype(float)),
        "categorical_softmax": ([nnx.Dense(3, activation="softmax")], "categorical_crossentropy", onehot),
        "categorical_softmax_layer": ([nnx.Dense(3), nnx.Activation("softmax")], "categorical_crossentropy", onehot),
        "categorical_from_logits": ([nnx.Dense(3)], CCE(from_logits=True), onehot),
        "categorical_unnormalised": ([nnx.Dense(3, activation="relu", bias_initializer=nnx.initializers.Constant(1.0))],
                                     "categorical_crossentropy", onehot),
        "multi_hot_softmax": ([nnx.Dense(4, activation="softmax")], "categorical_crossentropy", _multi_hot(rng, n, 4)),
        "multi_hot_from_logits": ([nnx.Dense(4)], CCE(from_logits=True), _multi_hot(rng, n, 4)),
        "sparse_softmax": ([nnx.Dense(3, activation="softmax")], "sparse_categorical_crossentropy", labels),
        "sparse_softmax_layer": ([nnx.Dense(3), nnx.Activation("softmax")], "sparse_categorical_crossentropy", labels),
        "sparse_from_logits": ([nnx.Dense(3)], SCE(from_logits=True), labels),
    }
    head, loss, y = cases[case]
    model = nnx.Sequential([*hidden, *head])
    model.compile("sgd", loss)
    return model, x, y


LOSS_CASES = ["mse", "mae", "huber", "binary_sigmoid", "binary_from_logits", "categorical_softmax",
              "categorical_softmax_layer", "categorical_from_logits", "categorical_unnormalised", "multi_hot_softmax",
              "multi_hot_from_logits", "sparse_softmax", "sparse_softmax_layer", "sparse_from_logits"]


@pytest.mark.parametrize("case", LOSS_CASES)
def test_loss_gradients_through_the_model(backend64, case):
    model, x, y = _loss_case(case)
    p = nnx.to_numpy(model.predict(x))
    if case == "huber":  # both branches of the loss are exercised
        r = np.abs(p - y)
        assert (r > 1.05).any() and (r < 0.95).any()
    if case == "categorical_unnormalised":  # the normalisation path: rows far from summing to 1
        assert (p > 0).all() and np.abs(p.sum(axis=1) - 1.0).min() > 0.1
    last = model.layers[-1].output_activation
    fused = model.loss.fuses_with(last)
    assert fused == (case in ("binary_sigmoid", "categorical_softmax", "categorical_softmax_layer",
                              "multi_hot_softmax", "sparse_softmax", "sparse_softmax_layer"))
    _check_gradients(model, x, y)


# -- c. the bugs of the issue, pinned -----------------------------------------------------------------
def _regression(n=64, seed=13):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, np.sin(x).sum(axis=1, keepdims=True).astype("float32")


@pytest.mark.parametrize("name", ["elu", "selu"])
@pytest.mark.parametrize("form", ["dense", "layer"])
def test_elu_and_selu_train(backend, name, form):
    hidden = [nnx.Dense(16, activation=name, kernel_initializer="lecun_normal")] if form == "dense" else \
        [nnx.Dense(16, kernel_initializer="lecun_normal"), nnx.Activation(name)]
    model = nnx.Sequential([nnx.Input(4), *hidden, nnx.Dense(1)])
    model.compile(nnx.optimizers.Adam(0.02), "mse")
    x, y = _regression()
    history = model.fit(x, y, epochs=15, batch_size=16, verbose=0)
    losses = history.history["loss"]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0]


def test_flatten_model_fits(backend):
    rng = np.random.default_rng(14)
    x = rng.normal(size=(64, 8, 8)).astype("float32")
    y = (x[:, 0, :].sum(axis=1) > 0).astype("int64") + 2 * (x[:, 1, :].sum(axis=1) > 0)
    model = nnx.Sequential([nnx.Input((8, 8)), nnx.Flatten(), nnx.Dense(32, activation="relu"), nnx.Dense(10)])
    model.compile(nnx.optimizers.Adam(0.01), nnx.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, epochs=8, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert tuple(model.predict(x[:3]).shape) == (3, 10)


@pytest.mark.parametrize("first", ["dropout", "activation", "flatten", "user"])
def test_a_layer_without_weights_first_fits(backend, first):
    """Dropout, Activation, Flatten or a user layer before the first trainable layer: fit works,
    and the backward pass never reaches it (the user layer's backward raises)."""
    layer = {"dropout": lambda: nnx.Dropout(0.2), "activation": lambda: nnx.Activation("tanh"),
             "flatten": nnx.Flatten, "user": Recorder}[first]()
    model = nnx.Sequential([nnx.Input(4), layer, nnx.Dense(16, activation="relu"), nnx.Dense(1)])
    model.compile(nnx.optimizers.Adam(0.01), "mse")
    x, y = _regression()
    history = model.fit(x, y, epochs=10, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < 0.7 * history.history["loss"][0]


class Relu6(nnx.activations.ReLU):
    name = "relu6"

    def forward(self, xp, x):
        return xp.minimum(xp.maximum(x, 0.0), 6.0)


@pytest.mark.parametrize("form", ["dense", "dense_no_bias", "layer"])
def test_relu_subclass_runs_its_own_forward(backend, form):
    """A ReLU subclass is not ReLU: no backend may take ReLU's kernel for it."""
    if form == "layer":
        model = nnx.Sequential([nnx.Input(1), nnx.Dense(1), nnx.Activation(Relu6())])
        model.set_weights([np.array([[1.0]]), np.array([0.0])])
    else:
        use_bias = form == "dense"
        model = nnx.Sequential([nnx.Input(1), nnx.Dense(1, activation=Relu6(), use_bias=use_bias)])
        model.set_weights([np.array([[1.0]]), np.array([0.0])] if use_bias else [np.array([[1.0]])])
    x = np.array([[10.0], [3.0], [-2.0]], dtype="float32")
    np.testing.assert_array_equal(nnx.to_numpy(model.predict(x)), [[6.0], [3.0], [0.0]])
    np.testing.assert_array_equal(nnx.to_numpy(model.forward(nnx.asarray(x), training=True)[0]), [[6.0], [3.0], [0.0]])
    model.compile("sgd", "mse")
    step = model.compute_gradients(nnx.asarray(x), nnx.asarray(np.array([[6.0], [3.0], [0.0]], dtype="float32")))
    np.testing.assert_array_equal(nnx.to_numpy(step.predictions), [[6.0], [3.0], [0.0]])
    assert float(step.loss) == 0.0


class BroadcastShift(nnx.layers.Layer):
    """y = x + b with one shared gradient for b, returned as a broadcast view (read-only in NumPy),
    and dx returned as a broadcast view too."""

    def build(self, input_shape):
        super().build(input_shape)
        self.b = self.add_weight("b", (input_shape[-1],), "zeros")

    def forward(self, x, training=False):
        return x + self.b.value, None

    def backward(self, saved, dy, need_dx=True):
        xp = self.xp
        g = xp.broadcast_to(xp.sum(dy), self.b.shape)
        return (xp.broadcast_to(dy, dy.shape) if need_dx else None), {self.b: g}


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "rmsprop"])
@pytest.mark.parametrize("position", ["first", "middle"])
def test_user_layer_with_broadcast_gradients_trains(backend, optimizer, position):
    """Gradients a user layer returns may be read-only views; the optimizer must not write into them."""
    opt = {"sgd": lambda: nnx.optimizers.SGD(0.05), "momentum": lambda: nnx.optimizers.SGD(0.01, momentum=0.9),
           "adam": lambda: nnx.optimizers.Adam(0.05), "rmsprop": lambda: nnx.optimizers.RMSprop(0.01)}[optimizer]()
    layers = [BroadcastShift(), nnx.Dense(1)] if position == "first" else [nnx.Dense(3), BroadcastShift(), nnx.Dense(1)]
    model = nnx.Sequential([nnx.Input(3), *layers])
    model.compile(opt, "mse")
    rng = np.random.default_rng(15)
    x = rng.normal(size=(32, 3)).astype("float32")
    y = (x.sum(axis=1, keepdims=True) + 3.0).astype("float32")
    shift = model.layers[0] if position == "first" else model.layers[1]
    history = model.fit(x, y, epochs=10, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    b = shift.b.numpy()
    assert b[0] != 0.0 and np.all(b == b[0])  # trained, with the shared gradient on every entry


@pytest.mark.parametrize("n,split,n_train", [(10, 0.25, 7), (9, 0.1, 8), (12, 0.25, 9)])
def test_validation_split_holds_out_the_last_rows(backend, n, split, n_train):
    """Training takes the first floor(n (1 - split)) rows, validation the rest; lr = 0 keeps the
    weights, so the recorded val_loss is evaluate on exactly the held-out rows."""
    x, y = _id_data(n)
    model, recorder = _recording_model(lr=0.0)
    history = model.fit(x, y, epochs=2, batch_size=4, validation_split=split, verbose=0)
    for epoch in range(2):
        rows = [i for batch in recorder.seen[epoch * math.ceil(n_train / 4):(epoch + 1) * math.ceil(n_train / 4)]
                for i in batch]
        assert sorted(rows) == list(range(n_train))
    held_out = model.evaluate(x[n_train:], y[n_train:], batch_size=n)
    assert history.history["val_loss"] == pytest.approx([held_out, held_out], rel=1e-5)
    assert model.evaluate(x[n_train - 1:], y[n_train - 1:]) != pytest.approx(held_out, rel=1e-5)


class _BatchCounts(nnx.callbacks.Callback):
    pass


def _counting(*hooks, call_super=False):
    counts = {h: [] for h in hooks}

    def make(hook):
        def method(self, batch, logs=None):
            counts[hook].append(batch)
            if call_super:
                getattr(nnx.callbacks.Callback, hook)(self, batch, logs)
        return method

    cls = type("Counting", (nnx.callbacks.Callback,), {h: make(h) for h in hooks})
    return cls(), counts


@pytest.mark.parametrize("hooks,call_super", [
    (("on_batch_begin", "on_batch_end"), False),
    (("on_train_batch_begin", "on_train_batch_end"), False),
    (("on_batch_begin", "on_batch_end", "on_train_batch_begin", "on_train_batch_end"), True),
])
def test_batch_hooks_are_called_once_per_batch(backend, hooks, call_super):
    """10 rows in batches of 4: three batches an epoch, two epochs. Each hook, under either name,
    runs once per batch (a default on_train_batch_begin calling on_batch_begin included)."""
    callback, counts = _counting(*hooks, call_super=call_super)
    x, y = _id_data(10)
    model, _ = _recording_model()
    model.fit(x, y, epochs=2, batch_size=4, callbacks=[callback], verbose=0)
    for hook in hooks:
        assert counts[hook] == [0, 1, 2, 0, 1, 2], hook


def test_terminate_on_nan_still_validates_the_epoch(backend):
    model = nnx.Sequential([nnx.Input(2), nnx.Dense(1)])
    # the first step is finite (loss 4e20) and throws the weights to -4e20: the second overflows
    # float32 (a first step that overflows is refused with ValueError before any weight changes)
    model.set_weights([np.array([[1e10], [1e10]]), np.array([0.0])])
    model.compile(nnx.optimizers.SGD(1e10), "mse")
    x = np.ones((8, 2), dtype="float32")
    y = np.zeros(8, dtype="float32")
    with np.errstate(all="ignore"):
        history = model.fit(x, y, epochs=5, batch_size=4, validation_split=0.25,
                            callbacks=[nnx.callbacks.TerminateOnNaN()], verbose=0)
    assert history.epoch == [0]
    assert len(history.history["loss"]) == 1 and not math.isfinite(history.history["loss"][0])
    assert "val_loss" in history.history and len(history.history["val_loss"]) == 1


@pytest.mark.parametrize("sparse", [False, True])
def test_crossentropy_normalises_rows_as_keras(backend, sparse):
    """Rows [0.2, 0.3, 0.1] and [0.5, 0.5, 1.0] become [1/3, 1/2, 1/6] and [1/4, 1/4, 1/2]; with
    labels 1 and 0 the loss is -(log 1/2 + log 1/4) / 2 = 1.5 log 2."""
    p = np.array([[0.2, 0.3, 0.1], [0.5, 0.5, 1.0]], dtype="float32")
    labels = np.array([1, 0])
    y = labels if sparse else np.eye(3, dtype="float32")[labels]
    name = "sparse_categorical_crossentropy" if sparse else "categorical_crossentropy"
    expected = 1.5 * math.log(2.0)
    assert float(nnx.losses.get(name)(nnx.asarray(y), nnx.asarray(p))) == pytest.approx(expected, rel=1e-6)
    # through a model whose outputs are those rows (x one-hot picks a kernel row), not softmax
    model = nnx.Sequential([nnx.Input(2), nnx.Dense(3, activation="relu")])
    model.set_weights([p, np.zeros(3)])
    model.compile("sgd", name)
    assert model.evaluate(np.eye(2, dtype="float32"), y) == pytest.approx(expected, rel=1e-6)


def test_two_binary_accuracies_get_suffixes_and_their_own_values(backend):
    """p = x: thresholds 0.5 and 0.9 on p = [0.3, 0.6, 0.95, 0.2] against y = [0, 1, 1, 1] hit
    [1, 1, 1, 0] (0.75) and [1, 0, 1, 0] (0.5)."""
    assert nnx.metrics.BinaryAccuracy().name == "binary_accuracy"
    model = nnx.Sequential([nnx.Input(1), nnx.Dense(1, use_bias=False)])
    model.set_weights([np.array([[1.0]])])
    metrics = [nnx.metrics.BinaryAccuracy(), nnx.metrics.BinaryAccuracy(threshold=0.9)]
    x = np.array([[0.3], [0.6], [0.95], [0.2]], dtype="float32")
    y = np.array([0.0, 1.0, 1.0, 1.0], dtype="float32")
    for _ in range(2):  # compiling again with the same instances gives the same names
        model.compile(nnx.optimizers.SGD(0.0), "mse", metrics=metrics)
        assert model.metrics_names == ["loss", "binary_accuracy", "binary_accuracy_1"]
    assert [m.name for m in metrics] == ["binary_accuracy", "binary_accuracy"]  # the user's instances untouched
    logs = model.evaluate(x, y, return_dict=True)
    assert logs["binary_accuracy"] == pytest.approx(0.75) and logs["binary_accuracy_1"] == pytest.approx(0.5)
    history = model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert history.history["binary_accuracy"] == pytest.approx([0.75])
    assert history.history["binary_accuracy_1"] == pytest.approx([0.5])


def test_multi_hot_targets_train_on_the_exact_gradient(backend64):
    """One SGD step on multi-hot targets moves every weight by -lr times the finite-difference
    gradient of the loss (softmax + cross-entropy, fused)."""
    rng = np.random.default_rng(16)
    x, y = rng.normal(size=(6, 3)), _multi_hot(rng, 6, 4)
    model = nnx.Sequential([nnx.Input(3), nnx.Dense(4, activation="softmax")])
    model.compile(nnx.optimizers.SGD(0.1), "categorical_crossentropy")
    xd, yd = nnx.asarray(x), nnx.asarray(y)
    expected = {}
    for w in model.trainable_weights:
        original = w.numpy()

        def f(v, w=w):
            w.value = nnx.asarray(np.array(v))
            return _loss_value(model, xd, yd)

        g = numeric_grad(f, original.copy())
        w.value = nnx.asarray(original)
        expected[w] = original - 0.1 * g
    model.train_on_batch(x, y)
    for w, e in expected.items():
        np.testing.assert_allclose(w.numpy(), e, rtol=1e-7, atol=1e-9)


# -- d. shuffling, validation rows, Dropout, initializers, regularizers, learning rates, state -------
def _epochs_seen(recorder, batches_per_epoch):
    seen = recorder.seen
    return [[i for batch in seen[k:k + batches_per_epoch] for i in batch] for k in range(0, len(seen), batches_per_epoch)]


class RecordingMSE(nnx.losses.MeanSquaredError):
    """mse that records the targets of each batch it sees."""

    def __init__(self):
        self.seen: list[list[int]] = []

    def forward(self, xp, y, p):
        self.seen.append([int(round(v)) for v in nnx.to_numpy(y).reshape(-1).tolist()])
        return super().forward(xp, y, p)


def test_each_epoch_sees_a_fresh_permutation(backend):
    x, _ = _id_data(12)
    y = x[:, :1].copy()  # the targets are the row ids too
    model, recorder = _recording_model()
    loss = RecordingMSE()
    model.compile(nnx.optimizers.SGD(0.001), loss)
    model.fit(x, y, epochs=3, batch_size=5, verbose=0)
    assert loss.seen == recorder.seen  # every row keeps its own target through the shuffle
    assert [len(b) for b in recorder.seen] == [5, 5, 2] * 3
    epochs = _epochs_seen(recorder, 3)
    assert len(epochs) == 3
    for order in epochs:
        assert sorted(order) == list(range(12))
    assert len({tuple(order) for order in epochs}) == 3  # each epoch its own order
    assert all(order != list(range(12)) for order in epochs)


def test_shuffle_false_keeps_the_natural_order(backend):
    x, y = _id_data(12)
    model, recorder = _recording_model()
    model.fit(x, y, epochs=2, batch_size=5, shuffle=False, verbose=0)
    assert recorder.seen == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11]] * 2


def test_validation_rows_are_never_trained_on(backend):
    x, y = _id_data(20)
    model, recorder = _recording_model()
    model.fit(x, y, epochs=4, batch_size=3, validation_split=0.3, verbose=0)  # floor(20 * 0.7) = 14
    epochs = _epochs_seen(recorder, 5)
    assert len(epochs) == 4
    for order in epochs:
        assert sorted(order) == list(range(14))


def test_dropout_backward_is_exact(backend64):
    """Forward keeps the rows of the mask scaled by 1 / (1 - rate); backward with that mask is the
    derivative of that very function (the mask held fixed), computed by hand."""
    rate = 0.3
    layer = nnx.Dropout(rate)
    layer.build((50,))
    rng = np.random.default_rng(17)
    x, r = rng.normal(size=(4, 50)), rng.normal(size=(4, 50))
    y, keep = layer.forward(nnx.asarray(x), training=True)
    mask = nnx.to_numpy(keep).astype(bool)
    assert 0.5 < mask.mean() < 0.9
    np.testing.assert_allclose(nnx.to_numpy(y), np.where(mask, x / (1 - rate), 0.0), rtol=1e-15)
    dx, grads = layer.backward(keep, nnx.asarray(r))
    assert grads == {}

    def f(v):
        return float(np.sum(r * np.where(mask, v / (1 - rate), 0.0)))

    np.testing.assert_allclose(nnx.to_numpy(dx), numeric_grad(f, x.copy()), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(nnx.to_numpy(dx), np.where(mask, r / (1 - rate), 0.0), rtol=1e-15)


def test_model_with_dropout_gradients_with_a_fixed_mask(backend64, monkeypatch):
    """With the random draws held fixed, the training loss is a function of the weights:
    compute_gradients matches its finite differences through a Dropout in the middle."""
    draws = {}

    def fixed_uniform(shape, dtype):
        if shape not in draws:
            draws[shape] = np.random.default_rng(18).random(shape)
        return nnx.asarray(draws[shape], dtype=dtype)

    monkeypatch.setattr(backend64, "uniform", fixed_uniform)
    model = nnx.Sequential([nnx.Input(3), nnx.Dense(6, activation="tanh"), nnx.Dropout(0.4), nnx.Dense(2)])
    model.compile("sgd", "mse")
    rng = np.random.default_rng(19)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    xd, yd = nnx.asarray(x), nnx.asarray(y)

    def training_loss():
        return float(model.compute_gradients(xd, yd).loss)

    _check_gradients(model, x, y, loss_of=training_loss)
    (u,) = draws.values()
    assert (u < 0.4).any() and (u >= 0.4).any()  # the mask dropped some units and kept others
    assert training_loss() != pytest.approx(_loss_value(model, xd, yd), rel=1e-6)  # dropout was on


def test_evaluate_and_predict_run_dropout_in_inference_mode(backend):
    model = nnx.Sequential([nnx.Input(3), nnx.Dense(4), nnx.Dropout(0.5), nnx.Dense(1)])
    model.compile("sgd", "mse")
    rng = np.random.default_rng(20)
    x, y = rng.normal(size=(16, 3)).astype("float32"), rng.normal(size=(16, 1)).astype("float32")
    k1, b1, k2, b2 = (w.astype(np.float64) for w in model.get_weights())
    p = (x @ k1 + b1) @ k2 + b2  # no dropout, no scaling
    first = nnx.to_numpy(model.predict(x))
    np.testing.assert_array_equal(nnx.to_numpy(model.predict(x)), first)
    np.testing.assert_allclose(first, p, rtol=1e-5, atol=1e-6)
    loss = model.evaluate(x, y, batch_size=5)
    assert model.evaluate(x, y, batch_size=5) == loss
    assert loss == pytest.approx(float(np.mean((p - y) ** 2)), rel=1e-5)
    assert_close(model(nnx.asarray(x)), first, scale=100)


VARIANCE_SCALING = [  # name, scale, mode, uniform
    ("glorot_uniform", 1.0, "fan_avg", True), ("glorot_normal", 1.0, "fan_avg", False),
    ("he_uniform", 2.0, "fan_in", True), ("he_normal", 2.0, "fan_in", False),
    ("lecun_uniform", 1.0, "fan_in", True), ("lecun_normal", 1.0, "fan_in", False),
]


@pytest.mark.parametrize("name,scale,mode,uniform", VARIANCE_SCALING, ids=[v[0] for v in VARIANCE_SCALING])
def test_variance_scaling_presets(backend, name, scale, mode, uniform):
    """A (300, 100) kernel: fan_in 300, fan_out 100, fan_avg 200, so a preset using the wrong fan is
    off by a factor sqrt(3/2) or more."""
    fan = {"fan_in": 300, "fan_out": 100, "fan_avg": 200}[mode]
    camel = "".join(part.capitalize() for part in name.split("_"))
    for spelling in (name, camel):
        layer = nnx.Dense(100, kernel_initializer=spelling)
        layer.build((300,))
        w = layer.kernel.numpy().astype(np.float64)
        assert w.shape == (300, 100)
        if uniform:
            limit = math.sqrt(3.0 * scale / fan)
            assert np.abs(w).max() <= limit * (1 + 1e-6)
            assert np.abs(w).max() > 0.99 * limit
            assert abs(w.std() - limit / math.sqrt(3.0)) < 0.03 * limit / math.sqrt(3.0)
        else:
            std = math.sqrt(scale / fan)
            assert abs(w.std() - std) < 0.03 * std
            assert np.abs(w).max() <= 2.0 * std / 0.87962566103423978 * (1 + 1e-6)  # truncated at two stddevs
        assert abs(w.mean()) < 0.05 * w.std()


def test_l1_and_l1l2_gradients(backend64):
    model = nnx.Sequential([
        nnx.Input(3),
        nnx.Dense(4, activation="tanh", kernel_regularizer=nnx.regularizers.L1(0.1),
                  bias_regularizer=nnx.regularizers.L1L2(l1=0.05, l2=0.2)),
        nnx.Dense(2, kernel_regularizer=nnx.regularizers.l1_l2(l1=0.03, l2=0.02),
                  bias_regularizer=nnx.regularizers.l1(0.3)),
    ])
    model.compile("sgd", "mse")
    rng = np.random.default_rng(21)
    weights = [rng.normal(size=w.shape) for w in model.get_weights()]  # no zero (|w|'s kink)
    model.set_weights(weights)
    k1, b1, k2, b2 = weights
    penalty = (0.1 * np.abs(k1).sum() + 0.05 * np.abs(b1).sum() + 0.2 * (b1 ** 2).sum()
               + 0.03 * np.abs(k2).sum() + 0.02 * (k2 ** 2).sum() + 0.3 * np.abs(b2).sum())
    assert float(model.regularization_loss()) == pytest.approx(penalty, rel=1e-12)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    _check_gradients(model, x, y)


def test_regularizer_functions_are_keras_defaults():
    assert isinstance(nnx.regularizers.l1(), nnx.regularizers.L1) and nnx.regularizers.l1().l1 == 0.01
    assert isinstance(nnx.regularizers.l2(), nnx.regularizers.L2) and nnx.regularizers.l2().l2 == 0.01
    both = nnx.regularizers.l1_l2()
    assert isinstance(both, nnx.regularizers.L1L2) and (both.l1, both.l2) == (0.01, 0.01)
    assert nnx.regularizers.l1_l2(l1=0.5, l2=0.0).l1 == 0.5


# learning-rate changes: one weight w, x = 1, y = 0, mse: the loss is w^2 and its gradient 2 w.
def _reference(kind, w, lrs):
    """Keras's update rules in float64, one step per learning rate."""
    m = v = 0.0
    for t, lr in enumerate(lrs, start=1):
        g = 2.0 * w
        if kind == "sgd":
            w -= lr * g
        elif kind == "momentum":
            m = 0.9 * m - lr * g
            w += m
        elif kind == "nesterov":
            m = 0.9 * m - lr * g
            w += 0.9 * m - lr * g
        elif kind == "adam":
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            w -= lr * math.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t) * m / (math.sqrt(v) + EPSILON)
        elif kind == "rmsprop":
            v = 0.9 * v + 0.1 * g * g
            w -= lr * g / math.sqrt(v + EPSILON)
    return w


EPSILON = 0.1  # large, so where epsilon enters the formula shows in the step


def _one_weight_model(kind, lr):
    opt = {"sgd": lambda: nnx.optimizers.SGD(lr), "momentum": lambda: nnx.optimizers.SGD(lr, momentum=0.9),
           "nesterov": lambda: nnx.optimizers.SGD(lr, momentum=0.9, nesterov=True),
           "adam": lambda: nnx.optimizers.Adam(lr, epsilon=EPSILON),
           "rmsprop": lambda: nnx.optimizers.RMSprop(lr, epsilon=EPSILON)}[kind]()
    model = nnx.Sequential([nnx.Input(1), nnx.Dense(1, use_bias=False)])
    model.set_weights([np.array([[0.8]])])
    model.compile(opt, "mse")
    return model


OPTIMIZER_KINDS = ["sgd", "momentum", "nesterov", "adam", "rmsprop"]
X1, Y1 = np.array([[1.0]], dtype="float32"), np.array([0.0], dtype="float32")


@pytest.mark.parametrize("kind", OPTIMIZER_KINDS)
def test_learning_rate_set_after_compile_reaches_the_step(backend, kind):
    model = _one_weight_model(kind, 0.5)
    model.fit(X1, Y1, epochs=1, batch_size=1, verbose=0)
    model.optimizer.learning_rate = 0.05
    model.fit(X1, Y1, epochs=2, batch_size=1, verbose=0)
    assert model.get_weights()[0][0, 0] == pytest.approx(_reference(kind, 0.8, [0.5, 0.05, 0.05]), rel=1e-5)


@pytest.mark.parametrize("kind", OPTIMIZER_KINDS)
def test_learning_rate_scheduler_reaches_the_step(backend, kind):
    rates = [0.1, 0.02, 0.3]
    model = _one_weight_model(kind, 0.5)
    history = model.fit(X1, Y1, epochs=3, batch_size=1, verbose=0,
                        callbacks=[nnx.callbacks.LearningRateScheduler(lambda epoch, lr: rates[epoch])])
    assert history.history["learning_rate"] == pytest.approx(rates)
    assert model.get_weights()[0][0, 0] == pytest.approx(_reference(kind, 0.8, rates), rel=1e-5)


@pytest.mark.parametrize("kind", OPTIMIZER_KINDS)
def test_reduce_lr_on_plateau_reaches_the_step(backend, kind):
    """mode="max" on a falling loss: epoch 1 is no improvement, so epoch 2 runs at half the rate
    (and ends with another halving)."""
    model = _one_weight_model(kind, 0.1)
    reduce = nnx.callbacks.ReduceLROnPlateau(monitor="loss", mode="max", factor=0.5, patience=1, min_delta=0.0)
    history = model.fit(X1, Y1, epochs=3, batch_size=1, verbose=0, callbacks=[reduce])
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.05])
    assert model.optimizer.learning_rate == pytest.approx(0.025)  # epoch 2 was no improvement either
    assert model.get_weights()[0][0, 0] == pytest.approx(_reference(kind, 0.8, [0.1, 0.1, 0.05]), rel=1e-5)


def _arrays_held(obj, backend, depth=0):
    """Backend arrays reachable from obj's attributes through lists, tuples and dicts (Weight
    records and layers are not followed)."""
    found = []
    values = list(vars(obj).items()) if depth == 0 else [(None, obj)]
    for key, value in values:
        if backend.owns(value) and not isinstance(value, (int, float)):
            found.append(key)
        elif isinstance(value, (list, tuple)):
            for item in value:
                found += [key] * len(_arrays_held(item, backend, depth + 1))
        elif isinstance(value, dict):
            for item in value.values():
                found += [key] * len(_arrays_held(item, backend, depth + 1))
    return found


def test_nothing_is_cached_after_fit_predict_or_evaluate(backend):
    model = nnx.Sequential([nnx.Input((2, 3)), nnx.Flatten(), nnx.Dense(4, activation="relu"), nnx.Dropout(0.5),
                            nnx.Dense(3), nnx.Activation("softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(22)
    x, y = rng.normal(size=(20, 2, 3)).astype("float32"), rng.integers(0, 3, size=20)
    model.fit(x, y, epochs=1, batch_size=8, validation_split=0.2, verbose=0)
    model.predict(x)
    model.evaluate(x, y)
    model.predict_on_batch(x[:4])
    model.test_on_batch(x[:4], y[:4])
    for layer in [model, *model.layers]:
        assert _arrays_held(layer, backend) == [], f"{layer.name} keeps arrays after predict/evaluate"
        for key, value in vars(layer).items():
            if isinstance(value, nnx.Weight):
                assert value in layer.weights, f"{layer.name}.{key}"


def _fit_changes(model, x, y):
    before = model.get_weights()
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    return [not same for same in _weights_equal(before, model.get_weights())]


def _frozen_model():
    model = nnx.Sequential([nnx.Input(3), nnx.Dense(4, activation="tanh"), nnx.Dense(2)])
    model.compile(nnx.optimizers.SGD(0.1), "mse")
    rng = np.random.default_rng(23)
    return model, rng.normal(size=(16, 3)).astype("float32"), rng.normal(size=(16, 2)).astype("float32")


def _summary(model):
    lines = []
    model.summary(print_fn=lines.append)
    return "\n".join(lines)


def test_frozen_model_keeps_its_weights(backend):
    model, x, y = _frozen_model()
    model.trainable = False  # after compile
    assert model.trainable_weights == [] and len(model.non_trainable_weights) == 4
    assert model.compute_gradients(nnx.asarray(x), nnx.asarray(y)).grads == {}
    assert _fit_changes(model, x, y) == [False] * 4
    text = _summary(model)
    assert "Trainable params: 0 " in text and "Non-trainable params: 26 " in text and "Total params: 26 " in text
    model.trainable = True
    assert _fit_changes(model, x, y) == [True] * 4
    assert "Trainable params: 26 " in _summary(model) and "Non-trainable params: 0 " in _summary(model)


@pytest.mark.parametrize("when", ["before_compile", "after_compile"])
def test_frozen_layer_keeps_its_weights(backend, when):
    model, x, y = _frozen_model()
    if when == "before_compile":
        model.layers[0].trainable = False
        model.compile(nnx.optimizers.SGD(0.1), "mse")
    else:
        model.layers[0].trainable = False
    assert model.trainable_weights == model.layers[1].weights
    assert _fit_changes(model, x, y) == [False, False, True, True]
    text = _summary(model)
    assert "Trainable params: 10 " in text and "Non-trainable params: 16 " in text


@pytest.mark.parametrize("when", ["at_construction", "before_compile", "after_compile"])
def test_unfrozen_layer_trains_again(backend, when):
    """Unfreezing the first layer after the model has worked out where its backward pass stops."""
    if when == "at_construction":
        model = nnx.Sequential([nnx.Input(3), nnx.Dense(4, activation="tanh", trainable=False), nnx.Dense(2)])
        model.compile(nnx.optimizers.SGD(0.1), "mse")
        _, x, y = _frozen_model()
    else:
        model, x, y = _frozen_model()
        model.layers[0].trainable = False
        if when == "before_compile":
            model.compile(nnx.optimizers.SGD(0.1), "mse")
    assert _fit_changes(model, x, y) == [False, False, True, True]
    model.layers[0].trainable = True
    assert _fit_changes(model, x, y) == [True] * 4


def test_initial_epoch_resumes_at_that_epoch(backend):
    class Epochs(nnx.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seen = []

        def on_epoch_begin(self, epoch, logs=None):
            self.seen.append(epoch)

    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    model = nnx.Sequential([nnx.Input(3), nnx.Dense(1)])
    model.compile("sgd", "mse")
    rec = Epochs()
    history = model.fit(x, x[:, 0], epochs=5, initial_epoch=3, callbacks=[rec], verbose=0)
    assert history.epoch == [3, 4] and rec.seen == [3, 4] and len(history.history["loss"]) == 2


def test_epoch_sums_weigh_each_batch_loss_by_its_samples(backend):
    """The running loss is the sample-weighted mean of the batch losses, however often it is
    read; a loss given as a Python float counts the same."""
    model = nnx.Sequential([nnx.Input(2), nnx.Dense(1)])
    model.compile("sgd", "mse")
    xp = backend.xp
    sums = nnx.training.Sums(model, xp, backend.has_float64)
    batches = [(0.5, 4), (2.0, 4), (1.25, 2)]
    for i, (loss, n) in enumerate(batches):
        value = loss if i == 1 else xp.asarray(loss, dtype=xp.float32, device=backend.device)
        sums.add(value, None, None, n)
        if i == 0:
            assert sums.running()["loss"] == pytest.approx(0.5)
    expected = sum(loss * n for loss, n in batches) / 10
    assert sums.running()["loss"] == pytest.approx(expected, rel=1e-6)
    assert sums.means() == {"loss": pytest.approx(expected, rel=1e-6)}
    sums.add(xp.asarray(3.0, dtype=xp.float32, device=backend.device), None, None, 10)
    assert sums.means()["loss"] == pytest.approx((expected * 10 + 30) / 20, rel=1e-6)
