"""``fit(…, sample_weight=, class_weight=)`` and ``evaluate(…, sample_weight=)``, as Keras 3: each
sample's loss times its weight, summed and divided by the number of samples in the batch
("sum_over_batch_size"); metrics unweighted; class_weight is the sample weight of each sample's
class; validation_split splits the weights with x and y; bad weights are refused before any
weight changes.
"""
from __future__ import annotations

import numpy as np
import pytest

import nnx
from helpers import assert_weights_equal, weights_snapshot


def _data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype("float32")
    return x, rng


def _model(head, loss, lr=0.05, metrics=()):
    nnx.seed(0)
    model = nnx.Sequential([nnx.Input(3), nnx.Dense(4, activation="tanh"), *head])
    model.compile(nnx.optimizers.SGD(lr), loss, metrics=list(metrics))
    return model


def _head(kind):
    """Fresh output layers for each kind of target."""
    if kind in ("sparse", "onehot"):
        return [nnx.Dense(3, activation="softmax")]
    return [nnx.Dense(1, activation="sigmoid")] if kind == "binary" else [nnx.Dense(2)]


def _targets(kind, rng, n):
    """(head, loss, y, labels) for each kind of classification target."""
    labels = rng.integers(0, 3, size=n)
    if kind == "sparse":
        return _head(kind), "sparse_categorical_crossentropy", labels, labels
    if kind == "onehot":
        return _head(kind), "categorical_crossentropy", np.eye(3, dtype="float32")[labels], labels
    bits = rng.integers(0, 2, size=n)
    return _head(kind), "binary_crossentropy", bits.astype("float32"), bits


# -- the weighted loss is the hand-weighted value ------------------------------------------------------
@pytest.mark.parametrize("batch_size", [40, 16, 7])
def test_evaluate_weighted_loss_is_the_hand_weighted_mean(backend, batch_size):
    """sum(w * loss_i) / n over the whole set, however it is batched (each batch's
    sum(w l) / n_b, weighted by n_b); the metrics stay unweighted."""
    x, rng = _data()
    y = rng.normal(size=(40, 2)).astype("float32")
    w = rng.uniform(0.0, 3.0, size=40).astype("float32")
    model = _model([nnx.Dense(2)], "mse", metrics=["mae"])
    p = nnx.to_numpy(model.predict(x)).astype("float64")
    per_sample = ((p - y) ** 2).mean(axis=1)
    loss, mae = model.evaluate(x, y, batch_size=batch_size, sample_weight=w)
    assert loss == pytest.approx(np.dot(w, per_sample) / 40, rel=1e-5)
    assert loss != pytest.approx(np.dot(w, per_sample) / w.sum(), rel=1e-3)  # not divided by sum(w)
    assert mae == pytest.approx(np.abs(p - y).mean(), rel=1e-5)
    assert model.evaluate(x, y, batch_size=batch_size)[1] == pytest.approx(mae, rel=1e-6)
    assert model.test_on_batch(x, y, sample_weight=w)[0] == pytest.approx(loss, rel=1e-5)
    # a column of weights is accepted too, and weights of one change nothing
    assert model.evaluate(x, y, batch_size=batch_size, sample_weight=w[:, None])[0] == pytest.approx(loss, rel=1e-6)
    assert model.evaluate(x, y, batch_size=batch_size, sample_weight=np.ones(40))[0] == \
        pytest.approx(model.evaluate(x, y, batch_size=batch_size)[0], rel=1e-6)


@pytest.mark.parametrize("kind", ["sparse", "onehot", "binary"])
def test_weighted_training_loss_in_history(backend, kind):
    """With a learning rate of 0, the epoch's loss is the hand-weighted mean over the epoch."""
    x, rng = _data()
    head, loss, y, labels = _targets(kind, rng, 40)
    model = _model(head, loss, lr=0.0)
    w = rng.uniform(0.0, 2.0, size=40)
    p = nnx.to_numpy(model.predict(x)).astype("float64")
    if kind == "binary":
        per_sample = -(labels * np.log(p[:, 0]) + (1 - labels) * np.log(1 - p[:, 0]))
    else:
        per_sample = -np.log(p[np.arange(40), labels])
    history = model.fit(x, y, epochs=1, batch_size=12, sample_weight=w, verbose=0)
    assert history.history["loss"] == pytest.approx([np.dot(w, per_sample) / 40], rel=1e-5)


# -- class_weight is the equivalent sample_weight ------------------------------------------------------
@pytest.mark.parametrize("kind", ["sparse", "onehot", "binary"])
def test_class_weight_equals_the_equivalent_sample_weight(backend, kind):
    x, rng = _data()
    head, loss, y, labels = _targets(kind, rng, 40)
    class_weight = {0: 0.5, 1: 3.0, 2: 1.25} if kind != "binary" else {0: 0.25, 1: 2.0}
    per_sample = np.array([class_weight[int(c)] for c in labels])
    a = _model(head, loss)
    ha = a.fit(x, y, epochs=3, batch_size=9, class_weight=class_weight, verbose=0)
    b = _model(_head(kind), loss)
    hb = b.fit(x, y, epochs=3, batch_size=9, sample_weight=per_sample, verbose=0)
    assert ha.history["loss"] == pytest.approx(hb.history["loss"], rel=1e-6)
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)
    # and differs from unweighted training
    c = _model(_head(kind), loss)
    hc = c.fit(x, y, epochs=3, batch_size=9, verbose=0)
    assert hc.history["loss"][-1] != pytest.approx(ha.history["loss"][-1], rel=1e-4)


def test_class_weight_on_a_one_hot_row_uses_its_argmax_and_train_on_batch_takes_it(backend):
    x, rng = _data(12)
    soft = rng.dirichlet(np.ones(3), size=12).astype("float32")  # soft targets: the class is the argmax
    a = _model([nnx.Dense(3, activation="softmax")], "categorical_crossentropy")
    b = _model([nnx.Dense(3, activation="softmax")], "categorical_crossentropy")
    cw = {0: 1.0, 1: 0.0, 2: 4.0}
    la = a.train_on_batch(x, soft, class_weight=cw)
    lb = b.train_on_batch(x, soft, sample_weight=np.array([cw[int(c)] for c in soft.argmax(axis=1)]))
    assert la == pytest.approx(lb, rel=1e-6)
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)


# -- zero weights --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sparse", "onehot", "binary", "mse"])
def test_zero_weight_rows_have_no_effect_on_the_step(backend, kind):
    """Rows of weight 0 add nothing to the gradient, whatever their values; the mean still divides
    by the whole batch, so the step equals that on the kept rows alone with weights n_kept / n."""
    x, rng = _data(10)
    if kind == "mse":
        head, loss, y = _head(kind), "mse", rng.normal(size=(10, 2)).astype("float32")
    else:
        head, loss, y, _ = _targets(kind, rng, 10)
    keep = np.array([1, 1, 0, 1, 0, 1, 1, 0, 1, 1], dtype=bool)
    w = keep.astype("float32")
    x_junk, y_junk = x.copy(), y.copy()
    x_junk[~keep] = 50.0  # dropped rows: anything finite
    if kind == "mse":
        y_junk[~keep] = 1e4
    a = _model(head, loss)
    a.train_on_batch(x_junk, y_junk, sample_weight=w)
    b = _model(_head(kind), loss)
    b.train_on_batch(x[keep], y[keep], sample_weight=np.full(keep.sum(), keep.sum() / 10))
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-7)
    # the same step as lr scaled by n_kept / n without weights
    c = _model(_head(kind), loss, lr=0.05 * keep.sum() / 10)
    c.train_on_batch(x[keep], y[keep])
    for u, v in zip(a.get_weights(), c.get_weights()):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-7)


def test_all_zero_weights_leave_the_model_alone(backend):
    x, rng = _data(8)
    model = _model([nnx.Dense(2)], "mse")
    before = weights_snapshot(model)
    loss = model.train_on_batch(x, rng.normal(size=(8, 2)), sample_weight=np.zeros(8))
    assert loss == 0.0
    assert_weights_equal(model, before)


# -- weights travel with their rows ----------------------------------------------------------------------
class RecordingMSE(nnx.losses.MeanSquaredError):
    """Records the targets and weights of every training batch."""

    def __init__(self):
        self.seen = []

    def backward(self, xp, y, p, sample_weight=None):
        self.seen.append((nnx.to_numpy(y)[:, 0].copy(), None if sample_weight is None else nnx.to_numpy(sample_weight)))
        return super().backward(xp, y, p, sample_weight)


@pytest.mark.parametrize("on_host", [False, True], ids=["device", "host"])
def test_weights_stay_aligned_through_shuffling(backend, monkeypatch, on_host):
    """y holds each row's id; w = 1 + id / 100. Every shuffled batch must pair them again, with the
    data on the device (gathered there) or kept on the host (too large for the device)."""
    if on_host:
        monkeypatch.setattr(type(backend.ops), "fits_in_memory", lambda self, nbytes: False)
    x, _ = _data(37)
    ids = np.arange(37, dtype="float32")
    loss = RecordingMSE()
    nnx.seed(0)
    model = nnx.Sequential([nnx.Input(3), nnx.Dense(1)])
    model.compile(nnx.optimizers.SGD(0.0), loss)
    model.fit(x, ids, epochs=2, batch_size=8, sample_weight=1.0 + ids / 100.0, verbose=0)
    assert len(loss.seen) == 10
    seen_ids = np.concatenate([y for y, _ in loss.seen])
    assert sorted(seen_ids[:37].tolist()) == ids.tolist() and seen_ids[:37].tolist() != ids.tolist()  # shuffled
    for y, w in loss.seen:
        np.testing.assert_allclose(w, 1.0 + y / 100.0, rtol=1e-6)


def test_validation_split_splits_the_weights(backend):
    """The training part trains on w[:split], and val_loss weighs the held-out rows by w[split:]:
    the same history as passing those parts explicitly."""
    x, rng = _data(40)
    y = rng.normal(size=(40, 1)).astype("float32")
    w = rng.uniform(0.0, 3.0, size=40)
    a = _model([nnx.Dense(1)], "mse")
    ha = a.fit(x, y, epochs=2, batch_size=8, validation_split=0.25, sample_weight=w, verbose=0)
    b = _model([nnx.Dense(1)], "mse")
    hb = b.fit(x[:30], y[:30], epochs=2, batch_size=8, sample_weight=w[:30],
               validation_data=(x[30:], y[30:], w[30:]), verbose=0)
    assert ha.history["loss"] == pytest.approx(hb.history["loss"], rel=1e-6)
    assert ha.history["val_loss"] == pytest.approx(hb.history["val_loss"], rel=1e-6)
    assert ha.history["val_loss"][-1] == pytest.approx(a.evaluate(x[30:], y[30:], sample_weight=w[30:]), rel=1e-5)
    assert ha.history["val_loss"][-1] != pytest.approx(a.evaluate(x[30:], y[30:]), rel=1e-3)
    # class_weight applies to the training part only; the validation loss is unweighted
    labels = (y[:, 0] > 0).astype("float32")
    c = _model([nnx.Dense(1, activation="sigmoid")], "binary_crossentropy")
    hc = c.fit(x, labels, epochs=1, batch_size=8, validation_split=0.25, class_weight={0: 0.1, 1: 5.0}, verbose=0)
    assert hc.history["val_loss"][-1] == pytest.approx(c.evaluate(x[30:], labels[30:]), rel=1e-5)


# -- refused, before any weight changes --------------------------------------------------------------------
@pytest.mark.parametrize("bad, match", [
    (np.ones(11), r"shape \(12,\)"),
    (np.ones((12, 2)), r"shape \(12,\)"),
    (np.ones(()), r"shape \(12,\)"),
    (np.r_[np.ones(11), -1.0], "non-negative"),
    (np.r_[np.ones(11), np.nan], "finite"),
    (np.r_[np.ones(11), np.inf], "finite"),
    (np.array(["a"] * 12), "real numbers"),
])
def test_bad_sample_weights_are_refused(backend, bad, match):
    x, rng = _data(12)
    y = rng.normal(size=(12, 2)).astype("float32")
    model = _model([nnx.Dense(2)], "mse")
    before = weights_snapshot(model)
    with pytest.raises(ValueError, match=match):
        model.fit(x, y, sample_weight=bad, verbose=0)
    with pytest.raises(ValueError, match=match):
        model.fit(x, y, sample_weight=bad, validation_split=0.25, verbose=0)
    with pytest.raises(ValueError, match=match):
        model.evaluate(x, y, sample_weight=bad)
    with pytest.raises(ValueError, match=match):
        model.train_on_batch(x, y, sample_weight=bad)
    with pytest.raises(ValueError, match="validation sample_weight"):
        model.fit(x, y, validation_data=(x, y, bad), verbose=0)
    assert_weights_equal(model, before)


@pytest.mark.parametrize("kind, class_weight, match", [
    ("sparse", {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}, "unknown label 3"),
    ("onehot", {0: 1.0, 1: 1.0, 2: 1.0, -1: 1.0}, "unknown label -1"),
    ("binary", {0: 1.0, 1: 1.0, 2: 1.0}, "unknown label 2"),
    ("sparse", {0: 1.0, 1: 1.0, "2": 1.0}, "unknown label '2'"),
    ("sparse", {0: 1.0, 1: 1.0, 2.5: 1.0}, "unknown label 2.5"),
    ("sparse", {0: 1.0, 1: 1.0, True: 1.0, 2: 1.0}, None),  # True == 1: the dict has keys 0, 1, 2
    ("sparse", {0: 1.0, 1: -1.0, 2: 1.0}, "non-negative"),
    ("sparse", {0: 1.0, 1: float("nan"), 2: 1.0}, "non-negative"),
    ("sparse", [1.0, 1.0, 1.0], "must be a dict"),
])
def test_bad_class_weights_are_refused(backend, kind, class_weight, match):
    x, rng = _data(30)
    head, loss, y, _ = _targets(kind, rng, 30)
    model = _model(head, loss)
    before = weights_snapshot(model)
    if match is None:
        model.fit(x, y, class_weight=class_weight, verbose=0)
        return
    with pytest.raises(ValueError, match=match):
        model.fit(x, y, class_weight=class_weight, verbose=0)
    assert_weights_equal(model, before)


def test_class_weight_and_sample_weight_together_are_refused(backend):
    x, rng = _data(12)
    head, loss, y, _ = _targets("sparse", rng, 12)
    model = _model(head, loss)
    with pytest.raises(ValueError, match="not both"):
        model.fit(x, y, class_weight={0: 1.0, 1: 1.0, 2: 1.0}, sample_weight=np.ones(12), verbose=0)


def test_weights_as_device_arrays_and_lists(backend):
    x, rng = _data(12)
    y = rng.normal(size=(12, 2)).astype("float32")
    w = rng.uniform(size=12)
    model = _model([nnx.Dense(2)], "mse")
    ref = model.evaluate(x, y, sample_weight=w)
    assert model.evaluate(x, y, sample_weight=w.tolist()) == pytest.approx(ref, rel=1e-6)
    assert model.evaluate(x, y, sample_weight=nnx.asarray(w, dtype="float32")) == pytest.approx(ref, rel=1e-6)
    with pytest.raises(ValueError, match="non-negative"):
        model.evaluate(x, y, sample_weight=nnx.asarray(-w, dtype="float32"))


@pytest.mark.parametrize("kind", ["sparse", "onehot", "binary"])
def test_a_label_class_weight_leaves_out_weighs_one_as_in_keras(backend, kind):
    """Keras 3 gives every label missing from class_weight the weight 1: the same training as
    writing that 1 out."""
    x, rng = _data(30)
    head, loss, y, labels = _targets(kind, rng, 30)
    partial = {1: 3.0}
    full = {c: (3.0 if c == 1 else 1.0) for c in np.unique(labels).tolist()}
    results = []
    for class_weight in (partial, full):
        model = _model(_head(kind), loss)
        history = model.fit(x, y, class_weight=class_weight, epochs=2, batch_size=8, shuffle=False, verbose=0)
        results.append((model.get_weights(), history.history["loss"]))
    for a, b in zip(results[0][0], results[1][0]):
        np.testing.assert_array_equal(a, b)
    assert results[0][1] == results[1][1]
    # and not the unweighted training
    model = _model(_head(kind), loss)
    model.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    assert any(not np.allclose(a, b) for a, b in zip(model.get_weights(), results[0][0]))
