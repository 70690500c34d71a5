"""Optimizer steps against values worked out by hand (the arithmetic is in each docstring)."""
from __future__ import annotations

import numpy as np
import pytest

import nnx
from conftest import assert_close


def _steps(backend, optimizer, w0, grads):
    w = nnx.Weight("w", nnx.asarray(np.asarray(w0, dtype="float32")))
    out = []
    for g in grads:
        optimizer.apply({w: nnx.asarray(np.asarray(g, dtype="float32"))}, backend)
        out.append(nnx.to_numpy(w.value).copy())
    return out


def test_adam_first_two_steps(backend):
    """lr 0.1, g1 = [0.1, -0.2], g2 = [0.3, 0.05].
    Step 1: m = [0.01, -0.02], v = [1e-5, 4e-5]; m_hat / sqrt(v_hat) = sign(g) -> w = [0.9, -1.9].
    Step 2: m = [0.039, -0.013], v = [9.9999e-5, 4.246e-5]; m_hat = m / 0.19, v_hat = v / 0.001999
            -> update 0.1 * [0.91773, -0.46947] -> w = [0.808227, -1.853053], less the epsilon term
            (Keras's eps / sqrt(1 - b2^t) on the denominator: 1e-7 / 0.0447) -> [0.808226, -1.853056]."""
    opt = nnx.optimizers.Adam(learning_rate=0.1)
    w1, w2 = _steps(backend, opt, [1.0, -2.0], [[0.1, -0.2], [0.3, 0.05]])
    np.testing.assert_allclose(w1, [0.9, -1.9], atol=1e-5)
    np.testing.assert_allclose(w2, [0.808226, -1.8530555], atol=1.5e-6)
    assert opt.iterations == 2


def test_sgd_plain(backend):
    """w = 1 - 0.1 * 0.5 = 0.95, then 0.95 - 0.1 * 0.25 = 0.925."""
    w1, w2 = _steps(backend, nnx.optimizers.SGD(learning_rate=0.1), [1.0], [[0.5], [0.25]])
    assert_close(w1, [0.95])
    assert_close(w2, [0.925])


def test_sgd_momentum(backend):
    """v1 = -0.1 * 0.5 = -0.05, w1 = 0.95; v2 = 0.9 * -0.05 - 0.1 * 0.25 = -0.07, w2 = 0.88."""
    w1, w2 = _steps(backend, nnx.optimizers.SGD(learning_rate=0.1, momentum=0.9), [1.0], [[0.5], [0.25]])
    assert_close(w1, [0.95])
    assert_close(w2, [0.88])


def test_sgd_nesterov(backend):
    """v1 = -0.05, w1 = 1 + 0.9 * -0.05 - 0.05 = 0.905; v2 = -0.07, w2 = 0.905 + 0.9 * -0.07 - 0.025 = 0.817."""
    w1, w2 = _steps(backend, nnx.optimizers.SGD(learning_rate=0.1, momentum=0.9, nesterov=True), [1.0], [[0.5], [0.25]])
    assert_close(w1, [0.905])
    assert_close(w2, [0.817])


def test_rmsprop(backend):
    """lr 0.01, rho 0.9, g = 0.5 twice. v1 = 0.1 * 0.25 = 0.025, w1 = 1 - 0.005 / sqrt(0.025) = 0.968377;
    v2 = 0.9 * 0.025 + 0.025 = 0.0475, w2 = w1 - 0.005 / sqrt(0.0475) = 0.945435."""
    w1, w2 = _steps(backend, nnx.optimizers.RMSprop(learning_rate=0.01), [1.0], [[0.5], [0.5]])
    np.testing.assert_allclose(w1, [0.968377], atol=2e-6)
    np.testing.assert_allclose(w2, [0.945435], atol=2e-6)


def test_updates_are_in_place(backend):
    array = nnx.asarray(np.ones(3, dtype="float32"))
    w = nnx.Weight("w", array)
    nnx.optimizers.Adam().apply({w: nnx.asarray(np.ones(3, dtype="float32"))}, backend)
    assert w.value is array  # the very array object the layer holds was updated
    assert float(nnx.to_numpy(array)[0]) < 1.0


def test_state_lives_on_parameter_device_and_dtype(backend):
    w = nnx.Weight("w", nnx.asarray(np.ones(3, dtype="float32")))
    opt = nnx.optimizers.Adam()
    opt.apply({w: nnx.asarray(np.ones(3, dtype="float32"))}, backend)
    assert list(opt._slots) == [w]  # keyed by the weight record
    assert len(opt._slots[w]) == 2
    for slot in opt._slots[w]:
        assert slot.device == w.value.device and slot.dtype == w.value.dtype


@pytest.mark.parametrize("name,cls", [("sgd", nnx.optimizers.SGD), ("Adam", nnx.optimizers.Adam),
                                      ("rmsprop", nnx.optimizers.RMSprop)])
def test_names_give_default_instances(name, cls):
    opt = nnx.optimizers.get(name)
    assert type(opt) is cls
    opt.learning_rate = 0.5
    assert opt.learning_rate == 0.5
    with pytest.raises(ValueError, match="expected one of"):
        nnx.optimizers.get("adamw2")


def test_compile_turns_name_into_instance(backend):
    model = nnx.Sequential([nnx.Input(2), nnx.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    assert isinstance(model.optimizer, nnx.optimizers.Adam)
    assert model.optimizer.learning_rate == 0.001


@pytest.mark.parametrize("make,setting,value", [
    (nnx.optimizers.Adam, "beta_1", 1.0), (nnx.optimizers.Adam, "beta_2", -0.1), (nnx.optimizers.Adam, "epsilon", 0.0),
    (nnx.optimizers.RMSprop, "rho", 1.0), (nnx.optimizers.RMSprop, "epsilon", -1e-7),
    (nnx.optimizers.SGD, "momentum", 1.5), (nnx.optimizers.SGD, "momentum", -0.1),
    (nnx.optimizers.SGD, "learning_rate", -0.1), (nnx.optimizers.Adam, "learning_rate", float("nan"))])
def test_settings_are_validated(make, setting, value):
    with pytest.raises(ValueError, match=setting):
        make(**{setting: value})


def test_settings_at_their_limits_are_accepted():
    nnx.optimizers.SGD(momentum=1.0)
    nnx.optimizers.SGD(momentum=0.0, learning_rate=0.0)
    nnx.optimizers.Adam(beta_1=0.0, beta_2=0.0, epsilon=1e-12)
    nnx.optimizers.RMSprop(rho=0.0)


def test_gradients_of_several_weights_update_each_own_record(backend):
    """Slots belong to one weight record: two weights with different gradients move apart."""
    a = nnx.Weight("a", nnx.asarray(np.zeros(2, dtype="float32")))
    b = nnx.Weight("b", nnx.asarray(np.zeros(2, dtype="float32")))
    opt = nnx.optimizers.SGD(0.1, momentum=0.5)
    for _ in range(2):
        opt.apply({a: nnx.asarray(np.ones(2, dtype="float32")), b: nnx.asarray(-np.ones(2, dtype="float32"))}, backend)
    # v1 = -0.1, w1 = -0.1; v2 = 0.5 * -0.1 - 0.1 = -0.15, w2 = -0.25 (b: the opposite)
    assert_close(a.value, [-0.25, -0.25])
    assert_close(b.value, [0.25, 0.25])
    assert opt.iterations == 2
