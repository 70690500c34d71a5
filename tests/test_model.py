"""Sequential end to end: fit, evaluate, predict, weights, config and backend moves."""
from __future__ import annotations

import numpy as np
import pytest

import nnx
from conftest import assert_close


def _blobs(n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    centers = np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.5]])
    return (centers[y] + 0.5 * rng.normal(size=(n, 2))).astype("float32"), y


def _classifier(units=16):
    model = nnx.Sequential([nnx.Input(2), nnx.Dense(units, activation="relu"), nnx.Dense(3, activation="softmax")])
    model.compile(optimizer=nnx.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_fit_learns_and_history_holds_floats(backend):
    x, y = _blobs()
    model = _classifier()
    history = model.fit(x, y, epochs=15, batch_size=16, verbose=0)
    assert set(history.history) == {"loss", "accuracy"}
    assert all(type(v) is float for v in history.history["loss"]) and len(history.history["loss"]) == 15
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert history.history["accuracy"][-1] > 0.95
    loss, acc = model.evaluate(x, y)
    assert acc > 0.95 and loss < history.history["loss"][0]


def test_evaluate_matches_hand_computed_loss(backend):
    model = nnx.Sequential([nnx.Input(2), nnx.Dense(1, use_bias=False)])
    model.set_weights([np.array([[1.0], [2.0]])])
    model.compile("sgd", "mse", metrics=["mae"])
    x = np.array([[1.0, 1.0], [2.0, 0.0], [0.0, 1.0]])
    y = np.array([2.0, 2.0, 4.0])  # predictions 3, 2, 2 -> errors 1, 0, -2
    logs = model.evaluate(x, y, batch_size=2, return_dict=True)
    assert logs == pytest.approx({"loss": 5 / 3, "mae": 1.0}, rel=1e-6)
    assert model.evaluate(x, y) == pytest.approx([5 / 3, 1.0], rel=1e-6)
    model.compile("sgd", "mse")
    assert model.evaluate(x, y) == pytest.approx(5 / 3, rel=1e-6)


def test_accuracy_variants_against_hand_count(backend):
    x = np.zeros((4, 2))
    sparse = nnx.Sequential([nnx.Input(2), nnx.Dense(3, activation="softmax")])
    sparse.set_weights([np.zeros((2, 3)), np.array([0.0, 1.0, 0.0])])  # always predicts class 1
    sparse.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    assert sparse.evaluate(x, np.array([1, 1, 0, 2]))[1] == pytest.approx(0.5)
    sparse.compile("sgd", "categorical_crossentropy", metrics=["accuracy"])
    assert sparse.evaluate(x, np.eye(3)[[1, 0, 0, 2]])[1] == pytest.approx(0.25)
    binary = nnx.Sequential([nnx.Input(2), nnx.Dense(1, activation="sigmoid")])
    binary.set_weights([np.zeros((2, 1)), np.array([1.0])])  # p = 0.73 -> class 1
    binary.compile("sgd", "binary_crossentropy", metrics=["accuracy"])
    assert binary.evaluate(x, np.array([1, 0, 1, 1]))[1] == pytest.approx(0.75)


def test_validation_split_takes_last_samples_before_shuffling(backend):
    x, y = _blobs(100)
    model = _classifier()
    history = model.fit(x, y, epochs=2, batch_size=10, validation_split=0.2, verbose=0)
    val_loss, val_acc = model.evaluate(x[80:], y[80:])
    assert history.history["val_loss"][-1] == pytest.approx(val_loss, rel=1e-5)
    assert history.history["val_accuracy"][-1] == pytest.approx(val_acc)


def test_validation_data(backend):
    x, y = _blobs(60)
    model = _classifier()
    history = model.fit(x, y, epochs=1, validation_data=(x[:10], y[:10]), verbose=0)
    assert history.history["val_loss"][0] == pytest.approx(model.evaluate(x[:10], y[:10])[0], rel=1e-5)


def test_shuffle_is_seeded(backend):
    x, y = _blobs(50)

    def run():
        nnx.seed(3)
        model = _classifier()
        model.fit(x, y, epochs=2, batch_size=8, verbose=0)
        return model.get_weights()

    for a, b in zip(run(), run()):
        np.testing.assert_array_equal(a, b)


def test_predict_is_batched_and_matches_forward(backend):
    x, _ = _blobs(70)
    model = _classifier()
    full = model.predict(x, batch_size=1000)
    batched = model.predict(x, batch_size=8)
    assert tuple(batched.shape) == (70, 3) and backend.owns(batched)
    assert_close(batched, full, scale=10)
    assert_close(nnx.to_numpy(batched).sum(axis=1), np.ones(70))


def test_inputs_as_lists_and_device_arrays(backend):
    model = nnx.Sequential([nnx.Input(2), nnx.Dense(1)])
    model.compile(nnx.optimizers.SGD(0.1), "mse")
    x_list, y_list = [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], [1.0, 2.0, 3.0]
    h1 = model.fit(x_list, y_list, epochs=1, verbose=0, shuffle=False)
    h2 = model.fit(nnx.asarray(x_list), nnx.asarray(y_list), epochs=1, verbose=0, shuffle=False)
    assert h2.history["loss"][0] < h1.history["loss"][0]
    assert tuple(model.predict(x_list).shape) == (3, 1)


def test_one_dimensional_target_is_a_column(backend):
    model = nnx.Sequential([nnx.Input(1), nnx.Dense(1)])
    model.set_weights([np.array([[2.0]]), np.array([0.0])])
    model.compile("sgd", "mse")
    # read as (3, 1): errors 0, 0, 0. Broadcasting (3, 1) against (3,) would give nonzero loss
    assert model.evaluate(np.array([[1.0], [2.0], [3.0]]), np.array([2.0, 4.0, 6.0])) == pytest.approx(0.0, abs=1e-7)


def test_lazy_build_without_input(backend):
    model = nnx.Sequential([nnx.Dense(4, activation="relu"), nnx.Dense(1)])
    assert not model.built
    model.compile("adam", "mse")
    model.fit(np.ones((8, 3)), np.zeros(8), epochs=1, verbose=0)
    assert model.built and model.input_shape == (3,) and model.count_params() == 3 * 4 + 4 + 4 + 1


def test_get_set_weights_and_count_params(backend):
    model = _classifier(units=5)
    weights = model.get_weights()
    assert [w.shape for w in weights] == [(2, 5), (5,), (5, 3), (3,)]
    assert model.count_params() == 2 * 5 + 5 + 5 * 3 + 3
    new = [np.full(w.shape, 0.5, dtype="float32") for w in weights]
    model.set_weights(new)
    for a, b in zip(model.get_weights(), new):
        np.testing.assert_array_equal(a, b)


def test_config_roundtrip_gives_same_architecture_fresh_weights(backend):
    model = nnx.Sequential([nnx.Input(3), nnx.Dense(4, activation="Leaky_relu", kernel_initializer="he_uniform",
                                                    kernel_regularizer="l2"),
                            nnx.Dropout(0.1), nnx.Dense(2, activation="softmax", use_bias=False)])
    clone = nnx.Sequential.from_config(model.get_config())
    cfgs_a = [l["config"] for l in model.get_config()["layers"]]
    cfgs_b = [l["config"] for l in clone.get_config()["layers"]]
    for a, b in zip(cfgs_a, cfgs_b):
        a, b = dict(a), dict(b)
        a.pop("name"), b.pop("name")
        assert a == b
    assert clone.count_params() == model.count_params()
    assert not np.array_equal(clone.get_weights()[0], model.get_weights()[0])
    layer = nnx.layers.Layer.from_config(nnx.layers.serialize(model.layers[0]))
    assert isinstance(layer, nnx.Dense) and layer.activation.name == "leaky_relu"


def test_to_backend_moves_weights_and_optimizer_state(backend):
    x, y = _blobs(40)
    model = _classifier()
    model.fit(x, y, epochs=1, verbose=0)
    before = model.get_weights()
    p_before = nnx.to_numpy(model.predict(x))
    with nnx.use_backend("numpy") as target:
        model.to_backend()
        assert model.backend == target and target.owns(model.layers[0].kernel.value)
        assert set(model.optimizer._slots) == set(model.weights)  # still keyed by the same records
        assert all(target.owns(s) for slots in model.optimizer._slots.values() for s in slots)
        np.testing.assert_allclose(nnx.to_numpy(model.predict(x)), p_before, rtol=1e-5, atol=1e-6)
        model.fit(x, y, epochs=1, verbose=0)
    model.to_backend(backend.name, backend.device)
    assert backend.owns(model.layers[0].kernel.value)
    assert all(backend.owns(s) for slots in model.optimizer._slots.values() for s in slots)
    assert not np.array_equal(model.get_weights()[0], before[0])


def test_verbose_zero_is_silent_and_two_prints_a_line_per_epoch(backend, capsys):
    x, y = _blobs(30)
    model = _classifier()
    model.fit(x, y, epochs=2, verbose=0, validation_split=0.2)
    model.evaluate(x, y, verbose=0)
    model.predict(x, verbose=0)
    assert capsys.readouterr().out == ""
    model.fit(x, y, epochs=3, verbose=2, validation_split=0.2)
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert "\r" not in out
    assert len(lines) == 3  # one line per epoch, headed "Epoch i/N"
    for i, line in enumerate(lines):
        assert line.startswith(f"Epoch {i + 1}/3 - ") and "loss:" in line and "val_accuracy:" in line


def test_learning_rate_is_settable_and_used(backend):
    model = nnx.Sequential([nnx.Input(1), nnx.Dense(1)])
    model.compile(nnx.optimizers.SGD(0.1), "mse")
    before = model.get_weights()
    model.optimizer.learning_rate = 0.0
    model.fit(np.ones((4, 1)), np.ones(4), epochs=1, verbose=0)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_dropout_scales_kept_units_and_is_off_at_inference(backend):
    layer = nnx.Dropout(0.5)
    layer.build((1000,))
    x = nnx.asarray(np.ones((4, 1000), dtype="float32"))
    y, keep = layer.forward(x, training=True)
    y = nnx.to_numpy(y)
    kept = y != 0
    assert set(np.unique(y)) <= {0.0, 2.0} and 0.4 < kept.mean() < 0.6
    np.testing.assert_array_equal(nnx.to_numpy(keep), kept)  # the mask is what backward receives
    dx, grads = layer.backward(keep, nnx.asarray(np.ones((4, 1000), dtype="float32")))
    dx = nnx.to_numpy(dx)
    assert grads == {}
    np.testing.assert_array_equal(dx, np.where(kept, 2.0, 0.0))
    y, saved = layer.forward(x)
    assert saved is None
    np.testing.assert_array_equal(nnx.to_numpy(y), np.ones((4, 1000)))
    np.testing.assert_array_equal(nnx.to_numpy(layer(x)), np.ones((4, 1000)))


def test_regularizer_adds_to_loss(backend):
    model = nnx.Sequential([nnx.Input(1), nnx.Dense(1, use_bias=False, kernel_regularizer=nnx.regularizers.L2(0.5))])
    model.set_weights([np.array([[2.0]])])
    model.compile("sgd", "mse")
    # mse of (2x - 0) at x = 1 is 4; penalty 0.5 * 2^2 = 2
    assert model.evaluate(np.array([[1.0]]), np.array([0.0])) == pytest.approx(6.0)


def test_train_on_batch(backend):
    model = nnx.Sequential([nnx.Input(1), nnx.Dense(1, use_bias=False)])
    model.set_weights([np.array([[1.0]])])
    model.compile(nnx.optimizers.SGD(0.25), "mse")
    loss = model.train_on_batch(np.array([[1.0]]), np.array([3.0]))
    assert loss == pytest.approx(4.0)  # (1 - 3)^2
    assert model.get_weights()[0][0, 0] == pytest.approx(1.0 + 0.25 * 2 * 2)


def test_train_on_batch_returns_the_metrics_too(backend):
    """As Keras: with compiled metrics, ``[loss, *metrics]`` of the predictions the step's
    gradients came from (before the update), or a dict."""
    model = nnx.Sequential([nnx.Input(1), nnx.Dense(1, use_bias=False)])
    model.set_weights([np.array([[1.0]])])
    model.compile(nnx.optimizers.SGD(0.25), "mse", metrics=["mae", "mse"])
    x, y = np.array([[1.0], [2.0]]), np.array([3.0, 1.0])
    loss, mae, mse = model.train_on_batch(x, y)  # predictions 1 and 2: errors -2 and 1
    assert (loss, mae, mse) == (pytest.approx(2.5), pytest.approx(1.5), pytest.approx(2.5))
    w = model.get_weights()[0][0, 0]
    assert w == pytest.approx(1.0 - 0.25 * (2 * (1 - 3) * 1 + 2 * (2 - 1) * 2) / 2)
    logs = model.train_on_batch(x, y, return_dict=True)
    assert list(logs) == ["loss", "mae", "mse"]
    assert logs["mae"] == pytest.approx((abs(w - 3) + abs(2 * w - 1)) / 2)


@nnx.layers.register
class Scale(nnx.layers.Layer):
    """The README's example of a user layer."""

    def build(self, input_shape):
        super().build(input_shape)
        self.alpha = self.add_weight("alpha", (input_shape[-1],), "ones")

    def forward(self, x, training=False):
        return x * self.alpha.value, x  # output, and what backward needs

    def backward(self, x, dy, need_dx=True):
        grads = {self.alpha: self.xp.sum(dy * x, axis=0)}
        return (dy * self.alpha.value if need_dx else None), grads


def test_user_layer_trains_saves_and_loads(backend, tmp_path):
    x = np.array([[1.0, 2.0], [3.0, 4.0]], dtype="float32")
    model = nnx.Sequential([nnx.Input(2), Scale(), nnx.Dense(1, use_bias=False)])
    model.set_weights([np.ones(2), np.array([[1.0], [1.0]])])
    model.compile(nnx.optimizers.SGD(0.01), "mse")
    grads = model.compute_gradients(nnx.asarray(x), nnx.asarray(np.array([[2.0], [5.0]], dtype="float32"))).grads
    # p = x1 + x2 = [3, 7]; dL/dp = 2 (p - y) / 2 = [1, 2]; d alpha = sum(dp * x * w) = [1 + 6, 2 + 8]
    assert_close(grads[model.layers[0].alpha], [7.0, 10.0])
    assert_close(grads[model.layers[1].kernel], [[1 * 1 + 2 * 3], [1 * 2 + 2 * 4]])  # x.T @ dp
    model.fit(x, np.array([2.0, 5.0]), epochs=2, verbose=0)
    model.save(tmp_path / "m.nnx")
    loaded = nnx.load_model(tmp_path / "m.nnx")
    assert isinstance(loaded.layers[0], Scale)
    assert_close(loaded.predict(x), model.predict(x))


def test_data_too_large_for_the_device_goes_batch_by_batch(backend, monkeypatch):
    """When the dataset does not fit, fit moves each batch; the result is the same."""
    x, y = _blobs(90)

    def train():
        nnx.seed(4)
        model = _classifier()
        history = model.fit(x, y, epochs=2, batch_size=16, validation_split=0.2, verbose=0)
        return model.get_weights(), history.history

    w_device, h_device = train()
    moved = []
    real_from_host = backend.from_host
    monkeypatch.setattr(backend.ops, "fits_in_memory", lambda nbytes: False)
    monkeypatch.setattr(backend, "from_host", lambda a: moved.append(a.shape) or real_from_host(a))
    w_host, h_host = train()
    if backend.owns(np.zeros(1)):  # NumPy: a host batch is already the backend's array, nothing to move
        assert (16, 2) not in moved
    else:
        assert (16, 2) in moved  # batches crossed one at a time
    for a, b in zip(w_device, w_host):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert h_device["loss"] == pytest.approx(h_host["loss"], rel=1e-6)


def test_pop_and_get_layer(backend):
    model = _classifier()
    model.add(nnx.Dense(2, name="extra"))
    assert model.get_layer("extra") is model.layers[-1]
    model.pop()
    assert model.layers[-1].units == 3 and model.output_shape == (3,)
    with pytest.raises(ValueError, match="No layer named 'nope'"):
        model.get_layer("nope")


@pytest.mark.parametrize("loss,last", [("sparse_categorical_crossentropy", "softmax"), ("mse", "tanh")])
def test_train_step_is_the_optimizer_step_of_compute_gradients(backend, loss, last):
    """A training step is compute_gradients (penalty gradients included) then the optimizer: one
    SGD step of train_on_batch equals w - lr g from compute_gradients, on both the fused
    (softmax + cross-entropy) and the plain loss path, with a penalty on the first layer."""
    nnx.seed(4)
    model = nnx.Sequential([nnx.Input(3), nnx.Dense(5, activation="relu", kernel_regularizer=nnx.regularizers.L2(0.1)),
                            nnx.Dense(2, activation=last)])
    model.compile(nnx.optimizers.SGD(0.05), loss)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(8, 3)).astype("float32")
    y = rng.integers(0, 2, size=8) if loss.startswith("sparse") else rng.normal(size=(8, 2)).astype("float32")
    step = model.compute_gradients(nnx.asarray(x), nnx.asarray(y))
    records = model.trainable_weights
    assert set(step.grads) == set(records) and len(records) == 4
    before = {w: w.numpy() for w in records}
    expected = {w: before[w] - 0.05 * nnx.to_numpy(step.grads[w]) for w in records}
    for w in records:  # compute_gradients does not touch the weights
        np.testing.assert_array_equal(w.numpy(), before[w])
    loss_value = model.train_on_batch(x, y)
    assert loss_value == pytest.approx(float(step.loss), rel=1e-6)
    for w in records:
        np.testing.assert_allclose(w.numpy(), expected[w], rtol=2e-6, atol=1e-7)


def test_fit_step_with_regularizer_matches_hand_computed_sgd(backend):
    """One full-batch SGD step on w = 2, x = 1, y = 0, mse, L2(0.5), lr 0.1:
    dL/dw = 2 (w x - y) x + 2 * 0.5 w = 4 + 2 = 6, so w = 2 - 0.1 * 6 = 1.4."""
    model = nnx.Sequential([nnx.Input(1), nnx.Dense(1, use_bias=False, kernel_regularizer=nnx.regularizers.L2(0.5))])
    model.set_weights([np.array([[2.0]])])
    model.compile(nnx.optimizers.SGD(0.1), "mse")
    model.fit(np.array([[1.0]]), np.array([0.0]), epochs=1, batch_size=1, verbose=0)
    assert model.get_weights()[0][0, 0] == pytest.approx(1.4, rel=1e-6)
