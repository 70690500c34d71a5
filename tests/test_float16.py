"""float16 models: epoch sums that do not overflow or round away, and cross-entropies that stay
finite for saturated outputs. array_api_strict has no float16: those backends are skipped."""
from __future__ import annotations

import math

import numpy as np
import pytest

import nnx


def _needs_float16(backend):
    if not hasattr(backend.xp, "float16"):
        pytest.skip(f"{backend.name} has no float16")


def test_float16_epoch_loss_agrees_with_float32_evaluation(backend):
    """40,000 samples, 10 classes: the epoch's loss sum (about 92,000) is beyond float16's 65,504,
    and float16 sums would round each batch's contribution away long before. With the learning
    rate at 0 the epoch loss of the float16 model is the loss of fixed weights, which the float32
    model with the same (float16-rounded) weights evaluates: they agree within 2%."""
    _needs_float16(backend)
    rng = np.random.default_rng(0)
    n, classes = 40_000, 10
    x = rng.standard_normal((n, 16)).astype("float32")
    y = np.argmax(x @ rng.standard_normal((16, classes)) + 2.0 * rng.standard_normal((n, classes)), axis=1)
    with nnx.use_floatx("float16"):
        half = nnx.Sequential([nnx.Input(16), nnx.Dense(24, activation="relu"),
                               nnx.Dense(classes, activation="softmax")])
    assert half.dtype == "float16" and nnx.floatx() == "float32"
    half.compile(optimizer=nnx.optimizers.SGD(learning_rate=0.0), loss="sparse_categorical_crossentropy",
                 metrics=["accuracy"])
    history = half.fit(x, y, epochs=1, batch_size=64, shuffle=False, verbose=0).history
    full = nnx.Sequential.from_config(half.get_config())
    assert full.dtype == "float32"
    full.set_weights(half.get_weights())
    full.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    loss, accuracy = full.evaluate(x, y, batch_size=1024)
    assert loss * n > 65504  # the sum float16 could not hold
    assert history["loss"][0] == pytest.approx(loss, rel=0.02)
    assert history["accuracy"][0] == pytest.approx(accuracy, abs=0.02)
    half_loss, half_accuracy = half.evaluate(x, y, batch_size=64)
    assert half_loss == pytest.approx(loss, rel=0.02) and half_accuracy == pytest.approx(accuracy, abs=0.02)


@pytest.mark.parametrize("from_logits", [False, True])
def test_binary_crossentropy_in_float16_stays_finite_for_saturated_outputs(backend, from_logits):
    """Outputs saturated at exactly 0 and 1 in float16 (Keras's clip 1e-7 would give log(0) there:
    1 - 1e-7 rounds to 1): the loss is -log(eps) per wrong output with eps float16's resolution,
    and the gradients are finite."""
    _needs_float16(backend)
    with nnx.use_floatx("float16"):
        model = nnx.Sequential([nnx.Input(2), nnx.Dense(1, activation=None if from_logits else "sigmoid",
                                                        kernel_initializer="ones")])
    model.compile("sgd", nnx.losses.BinaryCrossentropy(from_logits=from_logits), metrics=["accuracy"])
    x = np.array([[20, 20], [-20, -20], [20, 20], [-20, -20]], dtype="float32")  # logits of +-40
    y = np.array([1, 0, 0, 1], dtype="float32")  # two right, two wrong
    if not from_logits:
        p = nnx.to_numpy(model.predict(x)).ravel()
        assert p.dtype == np.float16 and set(p.tolist()) == {0.0, 1.0}
    step = model.compute_gradients(nnx.asarray(x.astype("float16")), nnx.asarray(y.astype("float16")[:, None]))
    assert math.isfinite(float(step.loss))
    assert all(np.isfinite(nnx.to_numpy(g)).all() for g in step.grads.values())
    loss, accuracy = model.evaluate(x, y)
    expected = 40.0 / 2 if from_logits else -math.log(float(np.finfo(np.float16).eps)) / 2
    assert loss == pytest.approx(expected, rel=1e-2) and accuracy == 0.5
    history = model.fit(x, y, epochs=2, batch_size=2, verbose=0).history
    assert all(math.isfinite(v) for v in history["loss"])
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_categorical_crossentropy_in_float16_stays_finite_for_saturated_outputs(backend):
    _needs_float16(backend)
    with nnx.use_floatx("float16"):
        model = nnx.Sequential([nnx.Input(3), nnx.Dense(3, activation="softmax", use_bias=False)])
    model.set_weights([np.diag([30.0, 30.0, 30.0])])  # one-hot x: a softmax saturated on its class
    x = np.eye(3, dtype="float32")
    for loss in ("sparse_categorical_crossentropy", "categorical_crossentropy"):
        model.compile("sgd", loss)
        labels = np.array([1, 2, 0])  # every row wrong
        y = labels if loss.startswith("sparse") else np.eye(3, dtype="float32")[labels]
        value = model.evaluate(x, y)
        assert value == pytest.approx(-math.log(float(np.finfo(np.float16).eps)), rel=1e-2)
        step = model.compute_gradients(nnx.asarray(x.astype("float16")),
                                       nnx.asarray(y if loss.startswith("sparse") else y.astype("float16")))
        assert math.isfinite(float(step.loss)) and all(np.isfinite(nnx.to_numpy(g)).all() for g in step.grads.values())
