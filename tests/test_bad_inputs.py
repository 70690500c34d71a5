"""Every bad input named in the API contract: the right error, a message that says what was expected
and what was received, and no weight changed."""
from __future__ import annotations

import numpy as np
import pytest

import nnx
from helpers import assert_weights_equal, weights_snapshot


def _classifier():
    model = nnx.Sequential([nnx.Input(4), nnx.Dense(8, activation="relu"), nnx.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _data(n=10):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 4)).astype("float32"), rng.integers(0, 3, size=n)


def test_fit_before_compile(backend):
    model = nnx.Sequential([nnx.Input(4), nnx.Dense(3)])
    before = weights_snapshot(model)
    with pytest.raises(RuntimeError, match=r"compile\(\)"):
        model.fit(*_data(), verbose=0)
    assert_weights_equal(model, before)


def test_wrong_input_width(backend):
    model = _classifier()
    before = weights_snapshot(model)
    x, y = _data()
    with pytest.raises(ValueError, match=r"\(4,\).*received x of shape \(10, 5\)"):
        model.fit(np.ones((10, 5), dtype="float32"), y, verbose=0)
    with pytest.raises(ValueError, match="received"):
        model.predict(np.ones((10, 5), dtype="float32"))
    with pytest.raises(ValueError, match="received"):
        model.evaluate(np.ones((10, 5), dtype="float32"), y)
    assert_weights_equal(model, before)


def test_length_mismatch(backend):
    model = _classifier()
    before = weights_snapshot(model)
    x, y = _data()
    with pytest.raises(ValueError, match="10 samples in x, received 9"):
        model.fit(x, y[:9], verbose=0)
    assert_weights_equal(model, before)


@pytest.mark.parametrize("bad", [-1, 3, 7])
def test_labels_out_of_range(backend, bad):
    model = _classifier()
    before = weights_snapshot(model)
    x, y = _data()
    y[4] = bad
    with pytest.raises(ValueError, match=r"\[0, 2\].*3 output units.*received labels"):
        model.fit(x, y, verbose=0)
    assert_weights_equal(model, before)


def test_non_integer_labels(backend):
    model = _classifier()
    x, y = _data()
    with pytest.raises(ValueError, match="integer class labels"):
        model.fit(x, y + 0.5, verbose=0)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["x", "y"])
def test_nan_or_inf(backend, value, where):
    model = nnx.Sequential([nnx.Input(4), nnx.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    before = weights_snapshot(model)
    x = np.ones((6, 4), dtype="float32")
    y = np.zeros((6, 2), dtype="float32")
    (x if where == "x" else y)[2, 1] = value
    with pytest.raises(ValueError, match=f"{where} must be finite; received 1 NaN or inf"):
        model.fit(x, y, verbose=0)
    assert_weights_equal(model, before)


def test_nan_in_device_array(backend):
    model = nnx.Sequential([nnx.Input(4), nnx.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    before = weights_snapshot(model)
    x = np.ones((6, 4), dtype="float32")
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="x must be finite"):
        model.fit(nnx.asarray(x), nnx.asarray(np.zeros((6, 2), dtype="float32")), verbose=0)
    assert_weights_equal(model, before)


def test_wrong_target_shape(backend):
    model = nnx.Sequential([nnx.Input(4), nnx.Dense(3, activation="softmax")])
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    before = weights_snapshot(model)
    x, y = _data()
    with pytest.raises(ValueError, match=r"Expected y of shape \(n, 3\).*received y of shape \(10,\).*sparse"):
        model.fit(x, y, verbose=0)
    assert_weights_equal(model, before)


def test_bad_validation_data_changes_nothing(backend):
    model = _classifier()
    before = weights_snapshot(model)
    x, y = _data()
    with pytest.raises(ValueError, match="received"):
        model.fit(x, y, validation_data=(x[:, :3], y), verbose=0)
    assert_weights_equal(model, before)


def test_set_weights_wrong_shapes(backend):
    model = _classifier()
    before = weights_snapshot(model)
    bad = [w.copy() for w in before]
    bad[-1] = np.zeros(7)
    with pytest.raises(ValueError, match=r"expects shape \(3,\), received \(7,\)"):
        model.set_weights(bad)
    with pytest.raises(ValueError, match="4 weight arrays, received 3"):
        model.set_weights(before[:3])
    assert_weights_equal(model, before)


def test_unknown_backend_keeps_current(backend):
    with pytest.raises(ValueError, match="numpy, cupy, array_api_strict, auto"):
        nnx.set_backend("torch")
    assert nnx.get_backend() == backend


def test_unusable_cupy_keeps_current(backend):
    if "cupy" in nnx.available_backends():
        pytest.skip("cupy is usable here, so there is no failure to check")
    with pytest.raises(RuntimeError, match="Cannot use the cupy backend"):
        nnx.set_backend("cupy")
    assert nnx.get_backend() == backend


def test_unknown_activation():
    with pytest.raises(ValueError, match="relu.*swish"):
        nnx.Dense(3, activation="relux")


def test_model_on_another_backend(backend):
    model = _classifier()
    before = weights_snapshot(model)
    other = "numpy" if backend.name != "numpy" else "array_api_strict"
    with nnx.use_backend(other):
        with pytest.raises(RuntimeError, match=rf"lives on {backend.name}.*current backend is {other}.*to_backend\(\)"):
            model.fit(*_data(), verbose=0)
        with pytest.raises(RuntimeError, match="to_backend"):
            model.predict(_data()[0])
    assert_weights_equal(model, before)


def test_bad_hyperparameters(backend):
    model = _classifier()
    x, y = _data()
    for kwargs in ({"epochs": -1}, {"batch_size": -1}, {"batch_size": 0}, {"validation_split": 1.0},
                   {"validation_split": -0.1}, {"initial_epoch": -1}):
        with pytest.raises(ValueError, match="received"):
            model.fit(x, y, verbose=0, **kwargs)
    before = model.get_weights()
    history = model.fit(x, y, epochs=0, verbose=0)  # as Keras: zero epochs train nothing
    assert history.history == {}
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="Unknown loss"):
        model.compile("sgd", loss="mse2")


@pytest.mark.parametrize("metric", ["mae", "categorical_accuracy", "top_k_categorical_accuracy"])
def test_a_metric_that_cannot_read_the_targets_fails_before_the_first_step(backend, metric):
    """Integer labels with a metric for one-hot or real targets: a ValueError naming the metric
    and both shapes, and the weights as they were."""
    model = nnx.Sequential([nnx.Input((4,)), nnx.Dense(3, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=[metric])
    x = np.random.default_rng(0).random((8, 4)).astype("float32")
    before = model.get_weights()
    with pytest.raises(ValueError, match=rf"metric '{metric}'.*shape \(8,\).*\(8, 3\)"):
        model.fit(x, np.arange(8) % 3, verbose=0)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_clear_errors_for_common_slips(backend):
    """Each names what was expected and what was received."""
    cases = [
        (lambda: nnx.asarray([1.0], dtype="bogus"), ValueError, "Unknown dtype 'bogus'"),
        (lambda: nnx.Sequential(nnx.Dense(3)), TypeError, "list of layers; received a single Dense"),
        (lambda: nnx.callbacks.ModelCheckpoint(3), TypeError, "filepath must be a str.*received int"),
        (lambda: nnx.callbacks.ModelCheckpoint(""), ValueError, "empty path"),
        (lambda: nnx.Sequential([nnx.Input((2,)), nnx.Dense(3, name="a"), nnx.Dense(2, name="a")]), ValueError,
         "unique names.*'a'"),
        (lambda: nnx.regularizers.l2("a"), ValueError, "l2 must be a finite float >= 0; received 'a'"),
        (lambda: nnx.Dense(3, name=5), TypeError, "name must be a str; received int 5"),
        (lambda: nnx.Dense(3, input_shape=(4,), input_dim=5), ValueError, "input_shape or input_dim, not both"),
        (lambda: nnx.regularizers.L1L2(l1=-1.0), ValueError, "l1 must be a finite float >= 0; received -1.0"),
        (lambda: nnx.Sequential([nnx.Input((2,)), nnx.Dense(3)]).compute_gradients(
            nnx.asarray(np.ones((2, 2), "float32")), nnx.asarray(np.ones((2, 3), "float32"))), RuntimeError,
         "compiled before computing gradients"),
    ]
    for make, error, match in cases:
        with pytest.raises(error, match=match):
            make()


def test_validation_data_errors_say_validation(backend):
    model = nnx.Sequential([nnx.Input((4,)), nnx.Dense(3, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    x, y = np.ones((8, 4), "float32"), np.arange(8) % 3
    with pytest.raises(ValueError, match=r"validation x with sample shape \(4,\).*received validation x of shape \(4, 5\)"):
        model.fit(x, y, validation_data=(np.ones((4, 5), "float32"), np.zeros(4)), verbose=0)
    with pytest.raises(ValueError, match="received validation labels from 0 to 5"):
        model.fit(x, y, validation_data=(np.ones((4, 4), "float32"), np.array([0, 1, 2, 5])), verbose=0)


def test_finite_values_beyond_float32_say_so_and_change_nothing(backend):
    """1e300 is finite in float64 but inf in float32: the error says the cast overflows (not
    that the data holds NaN or inf), for x and y, in fit and predict; nothing trains."""
    model = nnx.Sequential([nnx.Input(3), nnx.Dense(1)])
    model.compile("sgd", "mse")
    before = model.get_weights()
    x, y = np.ones((4, 3)), np.ones((4, 1))
    big = x.copy()
    big[0, 0] = 1e300
    with pytest.raises(ValueError, match=r"x holds values beyond the range of float32 \(\|x\| up to 1e\+300"):
        model.fit(big, y, verbose=0)
    with pytest.raises(ValueError, match=r"x holds values beyond the range of float32"):
        model.predict(big, verbose=0)
    with pytest.raises(ValueError, match=r"y holds values beyond the range of float32"):
        model.fit(x, y * 1e300, verbose=0)
    big[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"x must be finite; received 1 NaN or inf values"):
        model.fit(big, y, verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
