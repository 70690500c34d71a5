"""AdamW, Adagrad, gradient clipping and learning-rate schedules, against values worked out by hand
(the arithmetic is in each docstring) and against float64 numpy references of Keras 3's rules."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import nnx
from conftest import assert_close

S = nnx.optimizers.schedules
KERNEL_SCALE = 1000.0  # as test_kernels: a fused kernel may round differently


def _weight(values, dtype="float32"):
    return nnx.Weight("w", nnx.asarray(np.asarray(values, dtype=dtype)))


def _grad(values, dtype="float32"):
    return nnx.asarray(np.asarray(values, dtype=dtype))


def _steps(backend, optimizer, w0, grads, rates=None):
    """Apply ``grads`` one step each; before step i, set the learning rate to ``rates[i]`` when given."""
    w = _weight(w0)
    out = []
    for i, g in enumerate(grads):
        if rates is not None:
            optimizer.learning_rate = rates[i]
        optimizer.apply({w: _grad(g)}, backend)
        out.append(nnx.to_numpy(w.value).copy())
    return out


# -- float64 references, written from Keras 3's update_step / _apply_weight_decay ------------------
def _adamw_reference(w, grads, rates, weight_decay, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    w = np.asarray(w, dtype="float64")
    m, v, out = np.zeros_like(w), np.zeros_like(w), []
    for t, (g, lr) in enumerate(zip(grads, rates), start=1):
        g = np.asarray(g, dtype="float64")
        w = w - w * weight_decay * lr  # _apply_weight_decay, before the step
        m = m + (g - m) * (1 - beta_1)
        v = v + (g * g - v) * (1 - beta_2)
        alpha = lr * math.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        w = w - m * alpha / (np.sqrt(v) + epsilon)
        out.append(w)
    return out


def _adagrad_reference(w, grads, rates, initial=0.1, epsilon=1e-7):
    w = np.asarray(w, dtype="float64")
    acc, out = np.full_like(w, initial), []
    for g, lr in zip(grads, rates):
        g = np.asarray(g, dtype="float64")
        acc = acc + g * g
        w = w - lr * g / np.sqrt(acc + epsilon)
        out.append(w)
    return out


# -- AdamW ------------------------------------------------------------------------------------------
def test_adamw_two_steps_with_a_changed_learning_rate(backend):
    """weight_decay 0.1; lr 0.1, then 0.05; g1 = [0.1, -0.2], g2 = [0.3, 0.05].
    Step 1: decay w -= 0.1 * 0.1 * w -> [0.99, -1.98]; Adam's first step is lr * sign(g) less the
            epsilon term -> w1 = [0.890003, -1.880002].
    Step 2: decay at the new rate, w *= 1 - 0.05 * 0.1 -> [0.885553, -1.870602]; m_hat / sqrt(v_hat)
            = [0.91773, -0.46947] (as test_adam_first_two_steps) times 0.05 -> w2 = [0.839665, -1.847129]."""
    opt = nnx.optimizers.AdamW(learning_rate=0.1, weight_decay=0.1)
    grads = [[0.1, -0.2], [0.3, 0.05]]
    w1, w2 = _steps(backend, opt, [1.0, -2.0], grads, rates=[0.1, 0.05])
    np.testing.assert_allclose(w1, [0.890003, -1.880002], atol=2e-6)
    np.testing.assert_allclose(w2, [0.839665, -1.847129], atol=2e-6)
    r1, r2 = _adamw_reference([1.0, -2.0], grads, [0.1, 0.05], weight_decay=0.1)
    np.testing.assert_allclose(w1, r1, atol=1e-6)
    np.testing.assert_allclose(w2, r2, atol=1e-6)
    assert opt.iterations == 2


def test_adamw_decay_is_decoupled_from_the_gradient(backend):
    """A zero gradient leaves Adam's step at zero (m = 0), so only the decay moves w:
    w = 2 (1 - 0.5 * 0.2) = 1.8, then 1.8 * 0.9 = 1.62. Adam with weight_decay 0 would not move."""
    opt = nnx.optimizers.AdamW(learning_rate=0.5, weight_decay=0.2)
    w1, w2 = _steps(backend, opt, [2.0, -4.0], [[0.0, 0.0], [0.0, 0.0]])
    assert_close(w1, [1.8, -3.6])
    assert_close(w2, [1.62, -3.24])


def test_adamw_with_zero_decay_is_adam(backend):
    grads = [[0.1, -0.2], [0.3, 0.05], [-0.4, 0.2]]
    a = _steps(backend, nnx.optimizers.AdamW(0.1, weight_decay=0.0), [1.0, -2.0], grads)
    b = _steps(backend, nnx.optimizers.Adam(0.1), [1.0, -2.0], grads)
    for x, y in zip(a, b):
        assert_close(x, y)


def test_adamw_defaults_are_keras():
    opt = nnx.optimizers.AdamW()
    assert (opt.learning_rate, opt.weight_decay, opt.beta_1, opt.beta_2, opt.epsilon) == (0.001, 0.004, 0.9, 0.999, 1e-7)
    assert isinstance(opt, nnx.optimizers.Adam)


# -- Adagrad ----------------------------------------------------------------------------------------
def test_adagrad_two_steps_with_a_changed_learning_rate(backend):
    """initial accumulator 0.1; lr 0.1, then 0.05; g1 = [0.5, -1], g2 = [0.2, 0.4].
    Step 1: acc = [0.35, 1.1]; w1 = [1 - 0.05 / 0.591608, -2 + 0.1 / 1.048809] = [0.915485, -1.904654].
    Step 2: acc = [0.39, 1.26]; w2 = [w1 - 0.01 / 0.624500, w1 - 0.02 / 1.122497] = [0.899472, -1.922471]."""
    opt = nnx.optimizers.Adagrad(learning_rate=0.1)
    grads = [[0.5, -1.0], [0.2, 0.4]]
    w1, w2 = _steps(backend, opt, [1.0, -2.0], grads, rates=[0.1, 0.05])
    np.testing.assert_allclose(w1, [0.915485, -1.904654], atol=2e-6)
    np.testing.assert_allclose(w2, [0.899472, -1.922471], atol=2e-6)
    r1, r2 = _adagrad_reference([1.0, -2.0], grads, [0.1, 0.05])
    np.testing.assert_allclose(w1, r1, atol=1e-6)
    np.testing.assert_allclose(w2, r2, atol=1e-6)


def test_adagrad_accumulator_starts_at_its_initial_value(backend):
    """initial 0: acc = g^2 = 0.25, w = 1 - 0.1 * 0.5 / 0.5 = 0.9; the slot holds 0.25. With the
    default 0.1 the accumulator would hold 0.35 instead. Epsilon counts under the root: g = 1e-4
    gives acc = 1e-8 and w = 1 - 1e-5 / sqrt(1.1e-7) = 0.969849 (0.9 without epsilon)."""
    w = _weight([1.0, 1.0])
    opt = nnx.optimizers.Adagrad(learning_rate=0.1, initial_accumulator_value=0.0)
    opt.apply({w: _grad([0.5, 1e-4])}, backend)
    np.testing.assert_allclose(nnx.to_numpy(w.value), [0.9, 0.969849], rtol=2e-6)
    np.testing.assert_allclose(nnx.to_numpy(opt._slots[w][0]), [0.25, 1e-8], rtol=1e-5)
    w2 = _weight([1.0, 1.0])
    opt2 = nnx.optimizers.Adagrad()
    opt2.apply({w2: _grad([0.5, 0.0])}, backend)
    assert_close(opt2._slots[w2][0], [0.35, 0.1])
    assert opt2._slots[w2][0].dtype == w2.value.dtype and opt2._slots[w2][0].device == w2.value.device


def test_adagrad_defaults_are_keras():
    opt = nnx.optimizers.Adagrad()
    assert (opt.learning_rate, opt.initial_accumulator_value, opt.epsilon) == (0.001, 0.1, 1e-7)


# -- kernels against the portable code --------------------------------------------------------------
@pytest.fixture
def fused(backend):
    if type(backend.ops) is nnx.ops.Ops:
        pytest.skip(f"{backend.describe()} runs the portable operations only")
    return backend


@pytest.mark.parametrize("make,method,scale", [
    (lambda: nnx.optimizers.AdamW(0.01, weight_decay=0.05), "adamw_update", 1.0),
    (lambda: nnx.optimizers.AdamW(0.01, weight_decay=0.05), "adamw_update", 1e-6),
    (lambda: nnx.optimizers.Adagrad(0.05), "adagrad_update", 1.0),
    (lambda: nnx.optimizers.Adagrad(0.05, initial_accumulator_value=0.0), "adagrad_update", 1e-4),
], ids=["adamw", "adamw-epsilon", "adagrad", "adagrad-epsilon"])
def test_kernels_match_the_portable_update(fused, monkeypatch, make, method, scale):
    """Gradients of size ``scale``: the small ones make epsilon count (sqrt(v) ~ epsilon)."""
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(5, 3)).astype("float32")
    grads = [(scale * rng.normal(size=(5, 3))).astype("float32") for _ in range(3)]
    assert getattr(type(fused.ops), method) is not getattr(nnx.ops.Ops, method), f"{method} has no kernel here"

    def run():
        weight = nnx.Weight("w", nnx.asarray(w0.copy()))
        array = weight.value
        opt = make()
        for g in grads:
            opt.apply({weight: nnx.asarray(g.copy())}, fused)
        assert weight.value is array  # in place
        return nnx.to_numpy(weight.value), [nnx.to_numpy(s) for s in opt._slots[weight]]

    w_kernel, slots_kernel = run()
    monkeypatch.setattr(fused, "ops", nnx.ops.Ops(fused.xp, fused.device))
    w_portable, slots_portable = run()
    assert_close(w_kernel, w_portable, scale=KERNEL_SCALE)
    for a, b in zip(slots_kernel, slots_portable):
        assert_close(a, b, scale=KERNEL_SCALE)
    assert not np.allclose(w_kernel, w0)


def test_numpy_kernels_accept_read_only_gradients():
    with nnx.use_backend("numpy") as b:
        if type(b.ops) is nnx.ops.Ops:
            pytest.skip("numpy runs the portable operations only here")
        for opt in (nnx.optimizers.AdamW(0.1), nnx.optimizers.Adagrad(0.1)):
            w = _weight([1.0, 2.0])
            g = np.broadcast_to(np.float32(0.5), (2,))  # a read-only view
            opt.apply({w: g}, b)
            assert np.all(nnx.to_numpy(w.value) < [1.0, 2.0])


# -- clipping ---------------------------------------------------------------------------------------
def test_clipnorm_clips_each_gradient_by_its_own_norm(backend):
    """clipnorm 1, SGD lr 1 from zeros: a's gradient [3, 4] (norm 5) becomes [0.6, 0.8]; b's [0.3, 0.4]
    (norm 0.5) is left alone; c's zeros stay zeros (no division by a zero norm)."""
    a, b, c = _weight([0.0, 0.0]), _weight([0.0, 0.0]), _weight([0.0, 0.0])
    opt = nnx.optimizers.SGD(learning_rate=1.0, clipnorm=1.0)
    opt.apply({a: _grad([3.0, 4.0]), b: _grad([0.3, 0.4]), c: _grad([0.0, 0.0])}, backend)
    assert_close(a.value, [-0.6, -0.8])
    assert_close(b.value, [-0.3, -0.4])
    assert_close(c.value, [0.0, 0.0])


def test_global_clipnorm_scales_all_gradients_together(backend):
    """global_clipnorm 1: a = [3, 4], b = [[0, 12]] -> joint norm sqrt(9 + 16 + 144) = 13, every gradient
    divided by 13 -> a = [3/13, 4/13], b = [[0, 12/13]]; with clipnorm 1 instead, a would be [0.6, 0.8]
    and b [[0, 1]]. A joint norm below the limit changes nothing."""
    a, b = _weight([0.0, 0.0]), _weight([[0.0, 0.0]])
    opt = nnx.optimizers.SGD(learning_rate=1.0, global_clipnorm=1.0)
    opt.apply({a: _grad([3.0, 4.0]), b: _grad([[0.0, 12.0]])}, backend)
    assert_close(a.value, [-3 / 13, -4 / 13])
    assert_close(b.value, [[0.0, -12 / 13]])
    opt.apply({a: _grad([0.3, 0.0]), b: _grad([[0.0, 0.4]])}, backend)  # joint norm 0.5
    assert_close(a.value, [-3 / 13 - 0.3, -4 / 13])
    assert_close(b.value, [[0.0, -12 / 13 - 0.4]])


def test_global_clipnorm_of_a_non_finite_norm_gives_nan_as_keras(backend):
    a, b = _weight([0.0, 0.0]), _weight([1.0])
    opt = nnx.optimizers.SGD(learning_rate=1.0, global_clipnorm=1.0)
    with np.errstate(invalid="ignore", over="ignore"):
        opt.apply({a: _grad([np.inf, 1.0]), b: _grad([2.0])}, backend)
    assert np.isnan(nnx.to_numpy(a.value)).all() and np.isnan(nnx.to_numpy(b.value)).all()


def test_clipvalue_clips_elementwise(backend):
    """clipvalue 0.5: [3, -4, 0.2] -> [0.5, -0.5, 0.2]; SGD lr 1 from zeros."""
    w = _weight([0.0, 0.0, 0.0])
    nnx.optimizers.SGD(learning_rate=1.0, clipvalue=0.5).apply({w: _grad([3.0, -4.0, 0.2])}, backend)
    assert_close(w.value, [-0.5, 0.5, -0.2])


def test_clipped_gradient_feeds_the_optimizer_state(backend):
    """Momentum 0.5, clipnorm 1, g = [3, 4] twice: v1 = -[0.6, 0.8]; v2 = 0.5 v1 - [0.6, 0.8] = -[0.9, 1.2];
    w2 = v1 + v2 = -[1.5, 2.0]."""
    w = _weight([0.0, 0.0])
    opt = nnx.optimizers.SGD(learning_rate=1.0, momentum=0.5, clipnorm=1.0)
    for _ in range(2):
        opt.apply({w: _grad([3.0, 4.0])}, backend)
    assert_close(w.value, [-1.5, -2.0])


@pytest.mark.parametrize("kind", ["clipnorm", "global_clipnorm"])
def test_clipping_of_float16_gradients_keeps_their_dtype(backend, kind):
    """Squares of 600 and 800 overflow float16 (max 65504): the norm (1000) is summed in float32;
    the clipped gradient [0.6, 0.8] and the weight stay float16."""
    if getattr(backend.xp, "float16", None) is None:
        pytest.skip(f"{backend.describe()} has no float16")
    w = _weight([0.0, 0.0], "float16")
    nnx.optimizers.SGD(learning_rate=1.0, **{kind: 1.0}).apply({w: _grad([600.0, 800.0], "float16")}, backend)
    assert w.value.dtype == backend.xp.float16
    np.testing.assert_allclose(nnx.to_numpy(w.value).astype("float64"), [-0.6, -0.8], atol=1e-3)


@pytest.mark.parametrize("clip", [{"clipnorm": 1.0}, {"global_clipnorm": 1.0}, {"clipvalue": 0.5}])
def test_clipping_reads_nothing_back_from_the_device(backend, monkeypatch, clip):
    """The norms and scale factors stay arrays: turning any array into a Python number (or handing
    it to the host) during ``apply`` fails here (array_api_strict's Array class is patched)."""
    if backend.name != "array_api_strict":
        pytest.skip("the array class is patched on array_api_strict only")
    a, b = _weight([0.0, 0.0]), _weight([0.0])
    ga, gb = _grad([3.0, 4.0]), _grad([12.0])
    cls = type(ga)

    def refuse(*args, **kwargs):
        raise AssertionError("a host read-back in Optimizer.apply")

    opt = nnx.optimizers.Adam(0.1, **clip)
    with monkeypatch.context() as m:
        for name in ("__float__", "__int__", "__bool__", "__index__", "__complex__", "__dlpack__", "__array__"):
            if hasattr(cls, name):
                m.setattr(cls, name, refuse)
        opt.apply({a: ga, b: gb}, backend)
    assert np.all(nnx.to_numpy(a.value) < 0)


@pytest.mark.parametrize("make", [nnx.optimizers.SGD, nnx.optimizers.Adam, nnx.optimizers.AdamW,
                                  nnx.optimizers.RMSprop, nnx.optimizers.Adagrad])
def test_every_optimizer_takes_the_clipping_arguments(make):
    for kind in ("clipnorm", "clipvalue", "global_clipnorm"):
        opt = make(**{kind: 2.0})
        config = opt.get_config()
        assert config[kind] == 2.0
        assert sum(config[k] is not None for k in ("clipnorm", "clipvalue", "global_clipnorm")) == 1
    assert {"clipnorm": None, "clipvalue": None, "global_clipnorm": None}.items() <= make().get_config().items()
    assert "clipnorm" not in repr(make()) and "clipnorm=2.0" in repr(make(clipnorm=2.0))


# -- schedules --------------------------------------------------------------------------------------
def test_exponential_decay_values():
    """0.1 * 0.5^(step / 10): steps 0, 5, 10, 25 -> 0.1, 0.0707107, 0.05, 0.0176777; staircase
    floors the exponent -> 0.1, 0.1, 0.05, 0.025."""
    smooth = S.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    np.testing.assert_allclose([smooth(s) for s in (0, 5, 10, 25)], [0.1, 0.0707107, 0.05, 0.0176777], rtol=1e-5)
    stairs = S.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5, staircase=True)
    np.testing.assert_allclose([stairs(s) for s in (0, 5, 9, 10, 25)], [0.1, 0.1, 0.1, 0.05, 0.025], rtol=1e-12)
    assert isinstance(smooth(3), float)


def test_exponential_decay_overflow_is_inf_not_an_exception():
    assert S.ExponentialDecay(0.1, 1, 10.0)(10**6) == math.inf


def test_cosine_decay_values():
    """0.1 * ((1 - 0.2) * 0.5 (1 + cos(pi s / 10)) + 0.2): s = 0 -> 0.1; s = 2 -> 0.5 (1 + 0.809017)
    = 0.904508 -> 0.0923607; s = 5 -> 0.06; s = 10 -> 0.02; beyond, s is held at 10 -> 0.02."""
    lr = S.CosineDecay(0.1, decay_steps=10, alpha=0.2)
    np.testing.assert_allclose([lr(s) for s in (0, 2, 5, 10, 20)], [0.1, 0.0923607, 0.06, 0.02, 0.02], rtol=1e-6)
    assert S.CosineDecay(0.1, 10)(10) == pytest.approx(0.0, abs=1e-15)


def test_cosine_decay_with_warmup_values():
    """From 0 up to 0.1 over 4 steps (0.025 a step), then cosine from 0.1 over 10 steps:
    s = 0, 2 -> 0, 0.05; s = 4 -> 0.1; s = 9 (5 into the decay) -> 0.05; s = 14 and beyond -> 0."""
    lr = S.CosineDecay(0.0, decay_steps=10, warmup_target=0.1, warmup_steps=4)
    np.testing.assert_allclose([lr(s) for s in (0, 2, 4, 9, 14, 100)], [0.0, 0.05, 0.1, 0.05, 0.0, 0.0],
                               atol=1e-12)
    config = lr.get_config()
    assert config["warmup_target"] == 0.1 and config["warmup_steps"] == 4
    assert S.CosineDecay(0.1, 10).get_config()["warmup_target"] is None
    assert S.CosineDecay(0.1, 10).get_config()["warmup_steps"] == 0


def test_piecewise_constant_decay_values():
    """boundaries [2, 5], values [1, 0.5, 0.1]: step <= 2 -> 1; 2 < step <= 5 -> 0.5; after -> 0.1."""
    lr = S.PiecewiseConstantDecay([2, 5], [1.0, 0.5, 0.1])
    assert [lr(s) for s in range(8)] + [lr(100)] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.1, 0.1, 0.1]
    assert S.PiecewiseConstantDecay([], [0.3])(7) == 0.3


def _linear_model(lr):
    nnx.seed(0)
    model = nnx.Sequential([nnx.Input(2), nnx.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer=nnx.optimizers.SGD(learning_rate=lr), loss="mse")
    return model


def _sgd_reference(x, y, rates, batch_size):
    """Mean squared error of x @ w: gradient 2 / n x^T (x w - y); one step per batch, in order."""
    w = np.zeros((x.shape[1], 1))
    t = 0
    while t < len(rates):
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            w = w - rates[t] * 2.0 / len(xb) * xb.T @ (xb @ w - yb)
            t += 1
    return w


@pytest.mark.parametrize("schedule", [
    S.PiecewiseConstantDecay([0, 1, 3], [0.1, 0.05, 0.02, 0.01]),
    S.ExponentialDecay(0.2, decay_steps=2, decay_rate=0.3),
    S.CosineDecay(0.01, decay_steps=3, warmup_target=0.1, warmup_steps=2),
], ids=["piecewise", "exponential", "cosine-warmup"])
def test_fit_takes_step_t_with_the_schedule_at_t(backend, schedule):
    """8 samples, batch 4, 3 epochs: 6 SGD steps whose rates must be schedule(0) ... schedule(5); a
    reference with the rates shifted by one step (schedule(1) ... schedule(6)) lands elsewhere."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 2))
    y = x @ np.array([[1.0], [-2.0]])
    model = _linear_model(schedule)
    seen = []
    record = nnx.callbacks.LambdaCallback(on_train_batch_begin=lambda b, logs: seen.append(model.optimizer.learning_rate))
    model.fit(x.astype("float32"), y.astype("float32"), batch_size=4, epochs=3, shuffle=False, verbose=0,
              callbacks=[record])
    assert model.optimizer.iterations == 6
    np.testing.assert_allclose(seen, [schedule(t) for t in range(6)], rtol=1e-12)
    assert model.optimizer.learning_rate == schedule(6)
    w = model.get_weights()[0]
    expected = _sgd_reference(x, y, [schedule(t) for t in range(6)], 4)
    shifted = _sgd_reference(x, y, [schedule(t + 1) for t in range(6)], 4)
    np.testing.assert_allclose(w, expected, rtol=2e-5, atol=2e-6)
    assert not np.allclose(w, shifted, rtol=2e-5, atol=2e-6)


def test_a_schedule_gives_the_same_steps_as_setting_each_rate(backend):
    """AdamW with PiecewiseConstantDecay([0], [0.1, 0.05]) takes step 0 at 0.1 and step 1 at 0.05,
    decay included: the same weights as setting 0.1 then 0.05 by hand."""
    grads = [[0.1, -0.2], [0.3, 0.05]]
    by_hand = _steps(backend, nnx.optimizers.AdamW(0.1, weight_decay=0.1), [1.0, -2.0], grads, rates=[0.1, 0.05])
    scheduled = _steps(backend, nnx.optimizers.AdamW(S.PiecewiseConstantDecay([0], [0.1, 0.05]), weight_decay=0.1),
                       [1.0, -2.0], grads)
    for a, b in zip(by_hand, scheduled):
        np.testing.assert_array_equal(a, b)


def test_learning_rate_of_an_optimizer_holding_a_schedule():
    """Reads as the float of the next step; a float cannot be set (TypeError, as Keras); a new
    schedule replaces the old one."""
    schedule = S.ExponentialDecay(0.1, 10, 0.5)
    opt = nnx.optimizers.SGD(learning_rate=schedule)
    assert opt.learning_rate == 0.1 and isinstance(opt.learning_rate, float)
    opt.iterations = 10
    assert opt.learning_rate == pytest.approx(0.05)
    with pytest.raises(TypeError, match="schedule"):
        opt.learning_rate = 0.01
    assert opt.learning_rate == pytest.approx(0.05)
    opt.learning_rate = S.PiecewiseConstantDecay([], [0.3])
    assert opt.learning_rate == 0.3
    plain = nnx.optimizers.SGD(0.1)
    plain.learning_rate = schedule
    assert plain.learning_rate == pytest.approx(0.05 if plain.iterations == 10 else 0.1)


class _Negative(S.LearningRateSchedule):
    def __call__(self, step):
        return -0.1 if step >= 1 else 0.1


def test_a_schedule_returning_a_bad_rate_fails_before_any_change(backend):
    opt = nnx.optimizers.SGD(learning_rate=_Negative())
    w = _weight([1.0])
    opt.apply({w: _grad([1.0])}, backend)
    assert_close(w.value, [0.9])
    with pytest.raises(ValueError, match="_Negative returned -0.1 at step 1"):
        opt.apply({w: _grad([1.0])}, backend)
    assert opt.iterations == 1
    assert_close(w.value, [0.9])


def test_rate_setting_callbacks_refuse_an_optimizer_holding_a_schedule(backend):
    x = np.ones((4, 2), dtype="float32")
    y = np.ones((4, 1), dtype="float32")
    model = _linear_model(S.PiecewiseConstantDecay([], [0.0]))
    with pytest.raises(TypeError, match="LearningRateScheduler"):
        model.fit(x, y, epochs=2, verbose=0, callbacks=[nnx.callbacks.LearningRateScheduler(lambda e, lr: lr)])
    model = _linear_model(S.PiecewiseConstantDecay([], [1e-12]))  # the loss never improves by min_delta
    plateau = nnx.callbacks.ReduceLROnPlateau(monitor="loss", patience=1)
    with pytest.raises(TypeError, match="ReduceLROnPlateau"):
        model.fit(x, y, epochs=3, verbose=0, callbacks=[plateau])


# -- registry and configs ---------------------------------------------------------------------------
@pytest.mark.parametrize("name,cls", [("adamw", nnx.optimizers.AdamW), ("AdamW", nnx.optimizers.AdamW),
                                      ("adam_w", nnx.optimizers.AdamW), ("adagrad", nnx.optimizers.Adagrad),
                                      ("Adagrad", nnx.optimizers.Adagrad)])
def test_names_give_default_instances(name, cls):
    assert type(nnx.optimizers.get(name)) is cls


def test_compile_accepts_the_new_names(backend):
    model = nnx.Sequential([nnx.Input(2), nnx.Dense(1)])
    model.compile(optimizer="adamw", loss="mse")
    assert type(model.optimizer) is nnx.optimizers.AdamW and model.optimizer.weight_decay == 0.004
    model.compile(optimizer="Adagrad", loss="mse")
    assert type(model.optimizer) is nnx.optimizers.Adagrad


@pytest.mark.parametrize("make", [
    lambda: nnx.optimizers.AdamW(learning_rate=0.01, weight_decay=0.1, beta_1=0.8, clipnorm=2.0),
    lambda: nnx.optimizers.Adagrad(learning_rate=0.05, initial_accumulator_value=0.2, clipvalue=0.3),
    lambda: nnx.optimizers.SGD(S.ExponentialDecay(0.1, 100, 0.9, staircase=True), momentum=0.9, global_clipnorm=5.0),
    lambda: nnx.optimizers.Adam(S.CosineDecay(0.0, 50, alpha=0.1, warmup_target=0.01, warmup_steps=5)),
    lambda: nnx.optimizers.RMSprop(S.PiecewiseConstantDecay([10, 20], [0.1, 0.01, 0.001]), rho=0.8),
], ids=["adamw", "adagrad", "sgd-exponential", "adam-cosine", "rmsprop-piecewise"])
def test_config_round_trips_through_json(make):
    opt = make()
    data = json.loads(json.dumps(nnx.optimizers.serialize(opt), allow_nan=False))
    again = nnx.optimizers.get(data)
    assert type(again) is type(opt)
    assert again.get_config() == opt.get_config()
    assert type(again)(**opt.get_config()).get_config() == opt.get_config()
    for step in (0, 7, 15, 60):
        again.iterations = opt.iterations = step
        assert again.learning_rate == opt.learning_rate


@pytest.mark.parametrize("schedule", [
    S.ExponentialDecay(0.1, 100, 0.96, staircase=True, name="decay"),
    S.CosineDecay(0.1, 1000, alpha=0.01, warmup_target=0.2, warmup_steps=10),
    S.PiecewiseConstantDecay([100, 200], [0.1, 0.01, 0.001]),
])
def test_schedule_config_round_trips(schedule):
    config = json.loads(json.dumps(schedule.get_config()))
    again = type(schedule).from_config(config)
    assert again.get_config() == schedule.get_config()
    assert S.deserialize(S.serialize(schedule)).get_config() == schedule.get_config()
    keras_style = {"module": "keras.optimizers.schedules", "class_name": type(schedule).__name__,
                   "config": config, "registered_name": None}
    assert S.get(keras_style).get_config() == schedule.get_config()
    assert [again(s) for s in (0, 150, 5000)] == [schedule(s) for s in (0, 150, 5000)]


# -- saving -----------------------------------------------------------------------------------------
def _data():
    rng = np.random.default_rng(1)
    return rng.normal(size=(32, 3)).astype("float32"), rng.normal(size=(32, 2)).astype("float32")


@pytest.mark.parametrize("make", [
    lambda: nnx.optimizers.AdamW(S.ExponentialDecay(0.05, 3, 0.5), weight_decay=0.05, global_clipnorm=0.5),
    lambda: nnx.optimizers.Adagrad(S.PiecewiseConstantDecay([5], [0.1, 0.02]), clipnorm=0.1),
    lambda: nnx.optimizers.SGD(S.CosineDecay(0.0, 8, warmup_target=0.1, warmup_steps=3), momentum=0.9,
                               clipvalue=0.05),
], ids=["adamw-exponential-global", "adagrad-piecewise-clipnorm", "sgd-cosine-clipvalue"])
def test_save_and_load_resume_exactly(backend, tmp_path, make):
    """Trained 4 steps, saved, loaded: the same config (schedule and clipping included), step count
    and slots; 4 more steps on each give the same weights (the schedule resumes at step 4)."""
    x, y = _data()
    nnx.seed(0)
    model = nnx.Sequential([nnx.Input(3), nnx.Dense(4, activation="tanh"), nnx.Dense(2)])
    model.compile(optimizer=make(), loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    path = tmp_path / "model.nnx"
    model.save(path)
    loaded = nnx.load_model(path)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert loaded.optimizer.iterations == model.optimizer.iterations == 4
    assert loaded.optimizer.learning_rate == model.optimizer.learning_rate
    for a, b in zip(model.optimizer.get_state(nnx.to_numpy, model.trainable_weights)["slots"],
                    loaded.optimizer.get_state(nnx.to_numpy, loaded.trainable_weights)["slots"]):
        for s, t in zip(a, b):
            np.testing.assert_array_equal(s, t)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    loaded.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def _header_and_members(path):
    import io
    import zipfile

    with zipfile.ZipFile(path) as z:
        members = {name: z.read(name) for name in z.namelist()}
    header = json.loads(np.load(io.BytesIO(members["__nnx__.npy"])).tobytes())
    return header, members


def _rewrite(path, members, header):
    import io
    import zipfile

    f = io.BytesIO()
    np.lib.format.write_array(f, np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), allow_pickle=False)
    members = {**members, "__nnx__.npy": f.getvalue()}
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


@pytest.mark.parametrize("learning_rate", [
    {"class_name": "ExponentialDecay", "config": {"initial_learning_rate": 0.1, "decay_steps": -1, "decay_rate": 0.5}},
    {"class_name": "ExponentialDecay", "config": {"initial_learning_rate": "x", "decay_steps": 1, "decay_rate": 0.5}},
    {"class_name": "PiecewiseConstantDecay", "config": {"boundaries": [1, 2], "values": [0.1]}},
    {"class_name": "PiecewiseConstantDecay", "config": {"boundaries": "ab", "values": "abc"}},
    {"class_name": "PiecewiseConstantDecay", "config": {"boundaries": [[1]], "values": [0.1, 0.2]}},
    {"class_name": "CosineDecay", "config": {"initial_learning_rate": 0.1, "decay_steps": 10, "surprise": 1}},
    {"class_name": "NoSuchSchedule", "config": {}},
    {"class_name": "ExponentialDecay", "config": []},
    {"config": {}},
])
def test_a_file_with_a_bad_schedule_is_refused(tmp_path, learning_rate):
    x, y = _data()
    model = nnx.Sequential([nnx.Input(3), nnx.Dense(2)])
    model.compile(optimizer=nnx.optimizers.SGD(S.ExponentialDecay(0.1, 10, 0.5), clipnorm=1.0), loss="mse")
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "model.nnx"
    model.save(path)
    header, members = _header_and_members(path)
    assert header["compile"]["optimizer"]["config"]["learning_rate"]["class_name"] == "ExponentialDecay"
    header["compile"]["optimizer"]["config"]["learning_rate"] = learning_rate
    _rewrite(path, members, header)
    with pytest.raises(ValueError, match="invalid compile config"):
        nnx.load_model(path)


# -- bad arguments ----------------------------------------------------------------------------------
@pytest.mark.parametrize("make,match", [
    (lambda: nnx.optimizers.AdamW(weight_decay=-0.1), "weight_decay"),
    (lambda: nnx.optimizers.AdamW(weight_decay=float("inf")), "weight_decay"),
    (lambda: nnx.optimizers.AdamW(weight_decay=None), "weight_decay"),
    (lambda: nnx.optimizers.Adagrad(initial_accumulator_value=-1.0), "initial_accumulator_value"),
    (lambda: nnx.optimizers.Adagrad(epsilon=0.0), "epsilon"),
    (lambda: nnx.optimizers.SGD(clipnorm=0.0), "clipnorm"),
    (lambda: nnx.optimizers.Adam(clipnorm=-1.0), "clipnorm"),
    (lambda: nnx.optimizers.Adam(clipvalue=0.0), "clipvalue"),
    (lambda: nnx.optimizers.RMSprop(global_clipnorm=-2.0), "global_clipnorm"),
    (lambda: nnx.optimizers.Adagrad(clipnorm=float("nan")), "clipnorm"),
    (lambda: nnx.optimizers.SGD(clipnorm=1.0, global_clipnorm=1.0), "Only one of"),
    (lambda: nnx.optimizers.AdamW(clipnorm=1.0, clipvalue=1.0), "Only one of"),
    (lambda: nnx.optimizers.SGD(learning_rate="fast"), "learning_rate"),
    (lambda: nnx.optimizers.SGD(learning_rate=lambda: 0.1), "learning_rate"),
    (lambda: S.ExponentialDecay(0.1, decay_steps=0, decay_rate=0.5), "decay_steps"),
    (lambda: S.ExponentialDecay(0.1, decay_steps=-5, decay_rate=0.5), "decay_steps"),
    (lambda: S.ExponentialDecay(0.1, decay_steps=10, decay_rate=-0.5), "decay_rate"),
    (lambda: S.ExponentialDecay(-0.1, decay_steps=10, decay_rate=0.5), "initial_learning_rate"),
    (lambda: S.CosineDecay(0.1, decay_steps=0), "decay_steps"),
    (lambda: S.CosineDecay(0.1, decay_steps=10, alpha=1.5), "alpha"),
    (lambda: S.CosineDecay(0.1, decay_steps=10, warmup_steps=-1), "warmup_steps"),
    (lambda: S.CosineDecay(0.1, decay_steps=10, warmup_target=float("nan")), "warmup_target"),
    (lambda: S.PiecewiseConstantDecay([1, 2], [0.1, 0.2]), "length of boundaries"),
    (lambda: S.PiecewiseConstantDecay([1], [0.1, 0.2, 0.3]), "length of boundaries"),
    (lambda: S.PiecewiseConstantDecay([2, 1], [0.1, 0.2, 0.3]), "strictly increasing"),
    (lambda: S.PiecewiseConstantDecay([1], [0.1, -0.2]), "values"),
    (lambda: S.PiecewiseConstantDecay([True], [0.1, 0.2]), "boundaries"),
    (lambda: S.ExponentialDecay(0.1, decay_steps=10**400, decay_rate=0.5), "decay_steps"),
    (lambda: nnx.optimizers.SGD(clipnorm=10**400), "clipnorm"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_numpy_integers_are_accepted_and_kept_exact():
    lr = S.ExponentialDecay(np.float32(0.5), np.int64(10), 0.5)
    assert lr.get_config()["decay_steps"] == 10 and type(lr.get_config()["decay_steps"]) is int
    assert S.PiecewiseConstantDecay([np.int64(3)], [0.1, 0.2]).get_config()["boundaries"] == [3]
    json.dumps(lr.get_config())


def test_from_nnx_optimizers_schedules_import():
    from nnx.optimizers.schedules import CosineDecay, ExponentialDecay, PiecewiseConstantDecay  # noqa: F401

    assert nnx.optimizers.schedules.ExponentialDecay is ExponentialDecay
