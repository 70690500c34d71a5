"""The losses added after the core: KLDivergence, Hinge, LogCosh, MeanAbsolutePercentageError and
label smoothing on the cross-entropies. Values against hand computations (NumPy formulas written
out here, Keras 3's definitions), gradients against central differences through a whole model in
float64, with and without sample weights, on the fused (softmax / sigmoid) paths and the unfused
ones.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import nnx
from helpers import check_weight_gradients, numeric_grad

L = nnx.losses
EPS = 1e-7


def _value(loss, y, p, w=None, dtype="float32"):
    kwargs = {} if w is None else {"sample_weight": nnx.asarray(np.asarray(w, dtype=dtype))}
    return float(loss(nnx.asarray(np.asarray(y, dtype=dtype)), nnx.asarray(np.asarray(p, dtype=dtype)), **kwargs))


# -- names -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, cls", [
    ("kl_divergence", L.KLDivergence), ("kld", L.KLDivergence), ("KLDivergence", L.KLDivergence),
    ("hinge", L.Hinge), ("Hinge", L.Hinge),
    ("log_cosh", L.LogCosh), ("logcosh", L.LogCosh), ("LogCosh", L.LogCosh),
    ("mean_absolute_percentage_error", L.MeanAbsolutePercentageError), ("mape", L.MeanAbsolutePercentageError),
    ("MeanAbsolutePercentageError", L.MeanAbsolutePercentageError),
])
def test_names_resolve_to_the_classes(name, cls):
    assert type(L.get(name)) is cls


def test_label_smoothing_config_round_trips_and_is_checked():
    for cls in (L.CategoricalCrossentropy, L.BinaryCrossentropy):
        loss = L.get(cls(from_logits=True, label_smoothing=0.2).get_config())
        assert type(loss) is cls and loss.label_smoothing == 0.2 and loss.from_logits
        assert cls().label_smoothing == 0.0
        for bad in (-0.1, 1.5, "0.1", True, float("nan")):
            with pytest.raises(ValueError, match="label_smoothing"):
                cls(label_smoothing=bad)
    with pytest.raises(TypeError):  # as Keras 3: no label smoothing for integer labels
        L.SparseCategoricalCrossentropy(label_smoothing=0.1)
    assert L.get(L.SparseCategoricalCrossentropy().get_config()).get_config() == \
        {"class_name": "SparseCategoricalCrossentropy", "config": {"from_logits": False}}


def test_label_smoothing_survives_save_and_load(backend, tmp_path):
    model = nnx.Sequential([nnx.Input(3), nnx.Dense(2, activation="softmax")])
    model.compile("sgd", L.CategoricalCrossentropy(label_smoothing=0.3))
    model.save(tmp_path / "m.nnx")
    loaded = nnx.load_model(tmp_path / "m.nnx")
    assert type(loaded.loss) is L.CategoricalCrossentropy and loaded.loss.label_smoothing == 0.3


# -- values by hand ----------------------------------------------------------------------------------
def test_kl_divergence_values(backend):
    """sum(y log(y / p)) over the last axis, mean over rows, y and p clipped to [1e-7, 1]."""
    y = np.array([[0.2, 0.8], [0.5, 0.5], [1.0, 0.0]])
    p = np.array([[0.4, 0.6], [0.9, 0.1], [0.7, 0.3]])
    rows = [0.2 * math.log(0.2 / 0.4) + 0.8 * math.log(0.8 / 0.6),
            0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1),
            1.0 * math.log(1.0 / 0.7) + EPS * math.log(EPS / 0.3)]
    assert _value(L.KLDivergence(), y, p) == pytest.approx(np.mean(rows), rel=1e-6)
    # a prediction of 0 is clipped to 1e-7, not log(0)
    assert _value(L.KLDivergence(), [[1.0, 0.0]], [[0.0, 1.0]]) == pytest.approx(
        math.log(1.0 / EPS) + EPS * math.log(EPS / 1.0), rel=1e-5)
    # per sample: the row sums; weighted: sum(w * row) / n
    w = [2.0, 0.0, 0.5]
    assert _value(L.KLDivergence(), y, p, w) == pytest.approx(np.dot(w, rows) / 3, rel=1e-6)


def test_hinge_values_and_label_conversion(backend):
    """0/1 labels become -1/1 (Keras's convert_binary_labels_to_hinge), so both spellings give the
    same loss: rows mean(max(1 - y p, 0)) over the outputs."""
    p = np.array([[0.3, -2.0], [-0.5, 0.8]])
    signed = np.array([[-1.0, -1.0], [1.0, 1.0]])
    expected = np.mean([[1.3, 0.0], [1.5, 0.2]])
    assert _value(L.Hinge(), signed, p) == pytest.approx(expected, rel=1e-6)
    assert _value(L.Hinge(), (signed + 1) / 2, p) == pytest.approx(expected, rel=1e-6)
    # labels that are not all 0 or 1 are used as they are: the 0 contributes max(1, 0) = 1
    assert _value(L.Hinge(), [[-1.0, 0.0]], [[0.5, 7.0]]) == pytest.approx((1.5 + 1.0) / 2, rel=1e-6)


def test_log_cosh_values_are_stable(backend):
    r = np.array([[0.0, 1e-3, -0.5], [2.0, -30.0, 80.0]])
    expected = np.mean(np.log(np.cosh(r)))  # float64 on the host: cosh(80) is finite there
    assert _value(L.LogCosh(), np.zeros_like(r), r) == pytest.approx(expected, rel=1e-6)
    # far beyond float32's cosh overflow (|r| > 89): log cosh r = |r| - log 2
    big = _value(L.LogCosh(), [[0.0, 0.0]], [[1000.0, -3000.0]])
    assert big == pytest.approx((1000.0 + 3000.0) / 2 - math.log(2.0), rel=1e-6)
    # small residuals keep their precision: log cosh r = r^2 / 2 - r^4 / 12 + ...
    if "no_float64" not in str(backend.device):
        assert _value(L.LogCosh(), [[0.0]], [[1e-3]], dtype="float64") == pytest.approx(0.5e-6 - 1e-12 / 12, rel=1e-9)


def test_mean_absolute_percentage_error_values(backend):
    """100 mean(|y - p| / max(|y|, 1e-7)); a zero target divides by 1e-7, as Keras."""
    y = np.array([[1.0, -2.0], [0.0, 4.0]])
    p = np.array([[1.5, -1.0], [1e-5, 4.0]])
    expected = 100.0 * np.mean([0.5, 0.5, 1e-5 / EPS, 0.0])
    assert _value(L.MeanAbsolutePercentageError(), y, p) == pytest.approx(expected, rel=1e-5)
    assert _value(L.get("mape"), y, p, [1.0, 3.0]) == pytest.approx(100.0 * (1.0 + 3.0 * 100.0) / 2 / 2, rel=1e-5)


def test_categorical_label_smoothing_values(backend):
    """y (1 - ls) + ls / k: with ls = 0.3 and k = 3, [0, 1, 0] becomes [0.1, 0.8, 0.1]."""
    p = np.array([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]])
    y = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    t = y * 0.7 + 0.1
    expected = -np.mean(np.sum(t * np.log(p), axis=1))
    assert _value(L.CategoricalCrossentropy(label_smoothing=0.3), y, p) == pytest.approx(expected, rel=1e-6)
    z = np.log(p) + 1.0  # logits whose softmax is p
    assert _value(L.CategoricalCrossentropy(from_logits=True, label_smoothing=0.3), y, z) == \
        pytest.approx(expected, rel=1e-5)
    assert _value(L.CategoricalCrossentropy(), y, p) == pytest.approx(-np.mean(np.log([0.5, 0.6])), rel=1e-6)


def test_binary_label_smoothing_values(backend):
    """y (1 - ls) + 0.5 ls: with ls = 0.2, 1 becomes 0.9 and 0 becomes 0.1."""
    p = np.array([[0.8, 0.3], [0.1, 0.6]])
    y = np.array([[1.0, 0.0], [0.0, 1.0]])
    t = y * 0.8 + 0.1
    expected = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))
    assert _value(L.BinaryCrossentropy(label_smoothing=0.2), y, p) == pytest.approx(expected, rel=1e-6)
    z = np.log(p / (1 - p))
    assert _value(L.BinaryCrossentropy(from_logits=True, label_smoothing=0.2), y, z) == \
        pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", ["mse", "mae", "huber", "log_cosh", "mape", "hinge", "kl_divergence",
                                  "binary_crossentropy", "categorical_crossentropy"])
def test_per_sample_and_weighted_mean(backend, name):
    """forward == mean(per_sample); with weights, sum(w * per_sample) / n (not / sum(w))."""
    rng = np.random.default_rng(3)
    p = rng.uniform(0.05, 0.95, size=(5, 3)).astype("float32")
    y = (rng.uniform(size=(5, 3)) > 0.5).astype("float32")
    if name == "kl_divergence":
        y = rng.dirichlet(np.ones(3), size=5).astype("float32")
    loss, xp = L.get(name), backend.xp
    per = nnx.to_numpy(loss.per_sample(xp, nnx.asarray(y), nnx.asarray(p)))
    assert per.shape == (5,)
    assert float(loss.forward(xp, nnx.asarray(y), nnx.asarray(p))) == pytest.approx(per.mean(), rel=1e-5)
    w = np.array([0.0, 1.0, 2.5, 0.5, 3.0], dtype="float32")
    weighted = float(loss.forward(xp, nnx.asarray(y), nnx.asarray(p), sample_weight=nnx.asarray(w)))
    assert weighted == pytest.approx(np.dot(w, per) / 5, rel=1e-5)
    # the weighted gradient is the unweighted one with rows scaled
    g = nnx.to_numpy(loss.backward(xp, nnx.asarray(y), nnx.asarray(p)))
    gw = nnx.to_numpy(loss.backward(xp, nnx.asarray(y), nnx.asarray(p), sample_weight=nnx.asarray(w)))
    np.testing.assert_allclose(gw, g * w[:, None], rtol=1e-6)


# -- gradients through a whole model (float64) --------------------------------------------------------
def _loss_value(model, xd, yd, wd=None) -> float:
    p = model.forward(xd, training=False)[0]
    xp = model.backend.xp
    value = model.loss.forward(xp, yd, p) if wd is None else model.loss.forward(xp, yd, p, sample_weight=wd)
    return float(value) + float(model.regularization_loss())


def _check_gradients(model, x, y, w=None, rtol=1e-5, atol=1e-8):
    """compute_gradients (weighted when ``w`` is given) against central differences of the loss;
    evaluate gives the same loss."""
    xd, yd = nnx.asarray(x), nnx.asarray(y)
    wd = None if w is None else nnx.asarray(w)
    assert model.evaluate(x, y, batch_size=len(x), sample_weight=w) == \
        pytest.approx(_loss_value(model, xd, yd, wd), rel=1e-10, abs=1e-12)
    step = model.compute_gradients(xd, yd, sample_weight=wd)
    assert float(step.loss) == pytest.approx(_loss_value(model, xd, yd, wd), rel=1e-10, abs=1e-12)
    for rec in model.trainable_weights:
        original = rec.numpy()

        def f(v, rec=rec):
            rec.value = nnx.asarray(np.array(v))
            return _loss_value(model, xd, yd, wd)

        expected = numeric_grad(f, original.copy())
        rec.value = nnx.asarray(original)
        assert np.abs(expected).max() > 0, f"{rec.path}: a gradient of zero tests nothing"
        np.testing.assert_allclose(nnx.to_numpy(step.grads[rec]), expected, rtol=rtol, atol=atol, err_msg=rec.path)


def _case(case):
    rng = np.random.default_rng(21)
    n = 7
    x = rng.normal(size=(n, 3))
    hidden = [nnx.Input(3), nnx.Dense(5, activation="tanh")]
    onehot = np.eye(3)[rng.integers(0, 3, size=n)]
    bits = rng.integers(0, 2, size=(n, 2)).astype(float)
    CCE, BCE = L.CategoricalCrossentropy, L.BinaryCrossentropy
    cases = {
        "kl_softmax": ([nnx.Dense(3, activation="softmax")], "kl_divergence", rng.dirichlet(np.ones(3), size=n)),
        "kl_softmax_layer": ([nnx.Dense(3), nnx.Activation("softmax")], L.KLDivergence(),
                             rng.dirichlet(np.ones(3), size=n)),
        "hinge_01": ([nnx.Dense(2)], "hinge", bits),
        "hinge_signed": ([nnx.Dense(2)], "hinge", 2.0 * bits - 1.0),
        "log_cosh": ([nnx.Dense(2)], "log_cosh", 3.0 * rng.normal(size=(n, 2))),
        "mape": ([nnx.Dense(2)], "mape", rng.choice([-1.0, 1.0], size=(n, 2)) * rng.uniform(0.5, 2.0, size=(n, 2))),
        "cce_smooth_softmax": ([nnx.Dense(3, activation="softmax")], CCE(label_smoothing=0.2), onehot),
        "cce_smooth_softmax_layer": ([nnx.Dense(3), nnx.Activation("softmax")], CCE(label_smoothing=0.2), onehot),
        "cce_smooth_logits": ([nnx.Dense(3)], CCE(from_logits=True, label_smoothing=0.2), onehot),
        "cce_smooth_unnormalised": ([nnx.Dense(3, activation="relu", bias_initializer=nnx.initializers.Constant(1.0))],
                                    CCE(label_smoothing=0.2), onehot),
        "bce_smooth_sigmoid": ([nnx.Dense(2, activation="sigmoid")], BCE(label_smoothing=0.3), bits),
        "bce_smooth_logits": ([nnx.Dense(2)], BCE(from_logits=True, label_smoothing=0.3), bits),
        "bce_smooth_softmax": ([nnx.Dense(2, activation="softmax")], BCE(label_smoothing=0.3), bits),
        "cce_softmax": ([nnx.Dense(3, activation="softmax")], "categorical_crossentropy", onehot),
        "sparse_softmax": ([nnx.Dense(3, activation="softmax")], "sparse_categorical_crossentropy",
                           rng.integers(0, 3, size=n)),
        "sparse_logits": ([nnx.Dense(3)], L.SparseCategoricalCrossentropy(from_logits=True), rng.integers(0, 3, size=n)),
        "bce_sigmoid": ([nnx.Dense(2, activation="sigmoid")], "binary_crossentropy", bits),
        "mse": ([nnx.Dense(2)], "mse", rng.normal(size=(n, 2))),
        "mae": ([nnx.Dense(2)], "mae", rng.normal(size=(n, 2))),
        "huber": ([nnx.Dense(2)], "huber", 2.0 * rng.normal(size=(n, 2))),
    }
    head, loss, y = cases[case]
    model = nnx.Sequential([*hidden, *head])
    model.compile("sgd", loss)
    if case.startswith("hinge"):  # outputs beyond the margin too
        model.set_weights([*model.get_weights()[:2], 4.0 * model.get_weights()[2], model.get_weights()[3]])
    return model, x, y


FUSED = {"cce_smooth_softmax", "cce_smooth_softmax_layer", "bce_smooth_sigmoid", "cce_softmax", "sparse_softmax",
         "bce_sigmoid"}
CASES = ["kl_softmax", "kl_softmax_layer", "hinge_01", "hinge_signed", "log_cosh", "mape", "cce_smooth_softmax",
         "cce_smooth_softmax_layer", "cce_smooth_logits", "cce_smooth_unnormalised", "bce_smooth_sigmoid",
         "bce_smooth_logits", "bce_smooth_softmax", "cce_softmax", "sparse_softmax", "sparse_logits", "bce_sigmoid",
         "mse", "mae", "huber"]


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("case", CASES)
def test_loss_gradients_through_the_model(backend64, case, weighted):
    model, x, y = _case(case)
    assert model._fused == (case in FUSED)
    p = nnx.to_numpy(model.predict(x))
    if case.startswith("hinge"):  # both sides of the hinge are exercised
        t = 2.0 * y - 1.0 if case == "hinge_01" else y
        margin = 1.0 - t * p
        assert (margin > 0.05).any() and (margin < -0.05).any()
    if case == "log_cosh":  # the linear tails and the quadratic middle
        r = np.abs(p - y)
        assert (r > 3.0).any() and (r < 0.5).any()
    w = np.random.default_rng(5).uniform(0.0, 3.0, size=len(x)) if weighted else None
    if weighted:
        w[2] = 0.0
    _check_gradients(model, x, y, w)


def test_label_smoothing_changes_the_fused_gradient(backend64):
    """The fused softmax gradient with smoothing is (p - t') / n with t' the smoothed targets, not
    the unsmoothed one: one SGD step differs from the unsmoothed loss's step by lr * ls (y - 1/k)
    pulled back through the last layer."""
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    y = np.eye(3)[[0, 2]]
    steps = {}
    for ls in (0.0, 0.3):
        nnx.seed(0)
        model = nnx.Sequential([nnx.Input(2), nnx.Dense(3, activation="softmax", use_bias=False)])
        model.compile(nnx.optimizers.SGD(1.0), L.CategoricalCrossentropy(label_smoothing=ls))
        before = model.get_weights()[0]
        model.train_on_batch(x, y)
        steps[ls] = model.get_weights()[0] - before
    # x is the identity, so the kernel step is -dz: the difference is -(t_plain - t_smooth) / n
    t_smooth = y * 0.7 + 0.1
    np.testing.assert_allclose(steps[0.3] - steps[0.0], (t_smooth - y) / 2, atol=1e-12)


def test_categorical_crossentropy_over_sequences_is_the_mean_over_steps(backend64):
    """Outputs (n, steps, classes), as Keras: the cross-entropy of each step, averaged over steps
    and samples (not summed over steps); categorical accuracy is each sample's share of steps."""
    rng = np.random.default_rng(21)
    n, steps, k = 4, 5, 3
    x = rng.normal(size=(n, steps, 2))
    y = np.eye(k)[rng.integers(0, k, size=(n, steps))]
    w = rng.random(n) + 0.5
    for from_logits in (False, True):
        model = nnx.Sequential([nnx.Input((steps, 2)),
                                nnx.Dense(k, activation="linear" if from_logits else "softmax")])
        model.compile("sgd", nnx.losses.CategoricalCrossentropy(from_logits=from_logits), metrics=["accuracy"])
        z = x @ model.layers[0].kernel.numpy() + model.layers[0].bias.numpy()
        q = np.exp(z - z.max(-1, keepdims=True))
        q /= q.sum(-1, keepdims=True)
        per_step = -(y * np.log(q)).sum(-1)  # (n, steps)
        hits = (q.argmax(-1) == y.argmax(-1)).mean(-1)  # each sample's share of steps
        loss, accuracy = model.evaluate(x, y, verbose=0)
        np.testing.assert_allclose(loss, per_step.mean(), rtol=1e-10)
        np.testing.assert_allclose(accuracy, hits.mean(), rtol=1e-12)
        weighted = model.evaluate(x, y, sample_weight=w, verbose=0)[0]
        np.testing.assert_allclose(weighted, (per_step.mean(-1) * w).mean(), rtol=1e-10)
        check_weight_gradients(model, x, y)  # the fused softmax gradient is scaled by 1/(n steps) too
