"""BatchNormalization and LayerNormalization: values against NumPy formulas written here, gradients
by finite differences (float64) through whole models, moving statistics by hand, frozen layers,
Keras's weight order, configs, summary and saving."""
from __future__ import annotations

import json

import numpy as np
import pytest

import nnx
from nnx import saving
from nnx.layers import BatchNormalization, LayerNormalization

from helpers import check_weight_gradients, numeric_grad


def _fd_check(model, x, y, training=True):
    check_weight_gradients(model, x, y, training=training, atol=1e-8)


def _dx_check(layer, x, training=True):
    """The layer's own input gradient against central differences of sum(forward(x) * r)."""
    b = nnx.get_backend()
    r = np.random.default_rng(7).normal(size=layer.compute_output_shape(x.shape[1:]))
    r = np.broadcast_to(r, (x.shape[0], *r.shape)).copy() * np.arange(1, x.shape[0] + 1).reshape(
        (-1,) + (1,) * (x.ndim - 1))
    rd = nnx.asarray(r)
    y, saved = layer.forward(nnx.asarray(x), training=training)
    dx, _ = layer.backward(saved, rd, need_dx=True)

    def f(values):
        return float(b.xp.sum(layer.forward(b.from_host(values), training=training)[0] * rd))

    np.testing.assert_allclose(nnx.to_numpy(dx), numeric_grad(f, x.copy()), rtol=1e-5, atol=1e-8)


def _bn_reference(x, gamma, beta, mean, var, eps=1e-3):
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _random_affine(layer, rng):
    """Non-trivial gamma, beta (and moving statistics) in Keras order."""
    ws = []
    for w in layer.weights:
        if w.name == "moving_variance":
            ws.append(rng.uniform(0.5, 2.0, size=w.shape))
        elif w.name == "gamma":
            ws.append(rng.uniform(0.5, 1.5, size=w.shape))
        else:
            ws.append(rng.normal(size=w.shape))
    layer.set_weights(ws)


# -- gradients ---------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["first", "middle"])
def test_batchnorm_gradients_after_dense(backend64, where):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 4)) * 3 + 1, rng.normal(size=(7, 2))
    layers = [nnx.Input(4), BatchNormalization(), nnx.Dense(3, activation="tanh"), nnx.Dense(2)]
    if where == "middle":
        layers = [nnx.Input(4), nnx.Dense(5), BatchNormalization(momentum=0.5), nnx.Dense(2)]
    model = nnx.Sequential(layers)
    model.compile("sgd", "mse")
    _random_affine(model.get_layer(index=0 if where == "first" else 1), rng)
    _fd_check(model, x, y)


@pytest.mark.parametrize("axis", [-1, 1, 2])
def test_batchnorm_gradients_on_4d_inputs(backend64, axis):
    """Input((4, 4, 3)) -> BatchNormalization -> Flatten -> Dense, and BN in the middle of a
    4-D chain (its input gradient through the statistics reaches the Dense before it)."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(3, 4, 4, 3)), rng.normal(size=(3, 2))
    first = nnx.Sequential([nnx.Input((4, 4, 3)), BatchNormalization(axis=axis), nnx.Flatten(), nnx.Dense(2)])
    middle = nnx.Sequential([nnx.Input((4, 4, 3)), nnx.Dense(3), BatchNormalization(axis=axis), nnx.Flatten(),
                             nnx.Dense(2)])
    for model, index in ((first, 0), (middle, 1)):
        model.compile("sgd", "mse")
        _random_affine(model.get_layer(index=index), rng)
        _fd_check(model, x, y)


@pytest.mark.parametrize("shape,axis", [((6, 5), -1), ((3, 4, 4, 3), -1), ((3, 4, 4, 3), 1), ((3, 2, 3, 4), 2)])
def test_batchnorm_input_gradient(backend64, shape, axis):
    rng = np.random.default_rng(2)
    layer = BatchNormalization(axis=axis)
    layer.build(shape[1:])
    _random_affine(layer, rng)
    _dx_check(layer, rng.normal(size=shape) * 2 + 0.5)
    layer_plain = BatchNormalization(axis=axis, center=False, scale=False)
    layer_plain.build(shape[1:])
    _dx_check(layer_plain, rng.normal(size=shape))


def test_batchnorm_need_dx_false_skips_dx(backend):
    layer = BatchNormalization()
    layer.build((3,))
    x = nnx.asarray(np.random.default_rng(0).normal(size=(4, 3)).astype("float32"))
    y, saved = layer.forward(x, training=True)
    dx, grads = layer.backward(saved, y, need_dx=False)
    assert dx is None and set(grads) == {layer.gamma, layer.beta}


# -- values and modes --------------------------------------------------------------------------
def test_batchnorm_training_uses_batch_statistics_inference_moving(backend):
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(10, 3)) * [1.0, 3.0, 0.2] + [5.0, -1.0, 0.0]).astype("float32")
    model = nnx.Sequential([nnx.Input(3), BatchNormalization()])
    layer = model.layers[0]
    gamma, beta = np.array([1.5, 0.5, 2.0]), np.array([0.1, -0.2, 0.3])
    mm, mv = np.array([4.0, -2.0, 0.5]), np.array([2.0, 8.0, 0.1])
    layer.set_weights([gamma, beta, mm, mv])
    # inference (predict, __call__, evaluate): the moving statistics, as Keras
    expected_inference = _bn_reference(x, gamma, beta, mm, mv)
    np.testing.assert_allclose(nnx.to_numpy(model.predict(x)), expected_inference, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(nnx.to_numpy(model(x)), expected_inference, rtol=2e-5, atol=2e-5)
    # training: the batch's mean and biased variance
    train = nnx.to_numpy(model.forward(nnx.asarray(x), training=True)[0])
    np.testing.assert_allclose(train, _bn_reference(x, gamma, beta, x.mean(0), x.var(0)), rtol=2e-5, atol=2e-5)
    assert not np.allclose(train, expected_inference, atol=1e-2)
    model.compile("sgd", "mse")
    target = np.zeros((10, 3), dtype="float32")
    loss = model.evaluate(x, target)
    assert loss == pytest.approx(float(np.mean(expected_inference ** 2)), rel=1e-5)
    # the forwards changed no state
    np.testing.assert_array_equal(model.get_weights()[2], mm.astype("float32"))


def test_batchnorm_4d_channels_last_and_first_values(backend):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(5, 2, 3, 4)).astype("float32") * 2 + 1
    for axis, reduce in ((-1, (0, 1, 2)), (1, (0, 2, 3)), (2, (0, 1, 3))):
        model = nnx.Sequential([nnx.Input((2, 3, 4)), BatchNormalization(axis=axis)])
        layer = model.layers[0]
        c = x.shape[axis]
        assert [w.shape for w in layer.weights] == [(c,)] * 4
        _random_affine(layer, rng)
        gamma, beta, mm, mv = layer.get_weights()
        shape = [1] * 4
        shape[axis] = c
        g, bt, m, v = (a.reshape(shape) for a in (gamma, beta, mm, mv))
        np.testing.assert_allclose(nnx.to_numpy(model.predict(x)), _bn_reference(x, g, bt, m, v), rtol=1e-4,
                                   atol=1e-5)
        train = nnx.to_numpy(model.forward(nnx.asarray(x), training=True)[0])
        expected = _bn_reference(x, g, bt, x.mean(reduce, keepdims=True), x.var(reduce, keepdims=True))
        np.testing.assert_allclose(train, expected, rtol=1e-4, atol=1e-5)


def test_moving_statistics_after_one_step_by_hand(backend):
    """Dense -> BatchNormalization -> Dense, one SGD step: the moving statistics are the batch
    statistics of the forward (the Dense weights before the step), mixed with momentum; gamma and
    beta moved by the gradient of the batch-normalised output."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(8, 3)).astype("float32")
    t = rng.normal(size=(8, 1)).astype("float32")
    model = nnx.Sequential([nnx.Input(3), nnx.Dense(4), BatchNormalization(momentum=0.9), nnx.Dense(1)])
    model.compile(nnx.optimizers.SGD(learning_rate=0.1), "mse")
    k1, b1, gamma, beta, mm, mv, k2, b2 = [w.astype("float64") for w in model.get_weights()]
    b1 = rng.normal(size=4)
    mm, mv = rng.normal(size=4), rng.uniform(0.5, 2.0, size=4)
    model.set_weights([k1, b1, gamma, beta, mm, mv, k2, b2])
    h = x @ k1 + b1
    mean, var = h.mean(0), h.var(0)
    hhat = (h - mean) / np.sqrt(var + 1e-3)
    p = (hhat * gamma + beta) @ k2 + b2
    dp = 2 * (p - t) / p.size
    dz = dp @ k2.T
    model.train_on_batch(x, t)
    new = model.get_weights()
    np.testing.assert_allclose(new[4], 0.9 * mm + 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new[5], 0.9 * mv + 0.1 * var, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new[2], gamma - 0.1 * (dz * hhat).sum(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new[3], beta - 0.1 * dz.sum(0), rtol=1e-5, atol=1e-6)
    # not the statistics the updated Dense would give
    h_after = x @ new[0] + new[1]
    assert not np.allclose(new[4], 0.9 * mm + 0.1 * h_after.mean(0), atol=1e-5)


def test_moving_statistics_over_fit_follow_each_batch(backend):
    rng = np.random.default_rng(6)
    x = (rng.normal(size=(12, 2)) * [2.0, 0.5] + [3.0, -1.0]).astype("float32")
    model = nnx.Sequential([nnx.Input(2), BatchNormalization(momentum=0.8, center=False, scale=False)])
    model.compile("sgd", "mse")  # no trainable weights: the statistics still move in fit
    assert model.trainable_weights == []
    model.fit(x, np.zeros_like(x), batch_size=4, epochs=1, shuffle=False, verbose=0)
    mm, mv = np.zeros(2), np.ones(2)
    for i in range(0, 12, 4):
        mm = 0.8 * mm + 0.2 * x[i:i + 4].mean(0)
        mv = 0.8 * mv + 0.2 * x[i:i + 4].var(0)
    got = model.get_weights()
    np.testing.assert_allclose(got[0], mm, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], mv, rtol=1e-5, atol=1e-6)


def test_validation_and_predict_do_not_move_statistics(backend):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(16, 3)).astype("float32")
    model = nnx.Sequential([nnx.Input(3), BatchNormalization(), nnx.Dense(1)])
    model.compile("adam", "mse")
    before = model.get_weights()
    model.predict(x)
    model.evaluate(x, np.zeros(16))
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    model.fit(x, np.zeros(16), batch_size=16, epochs=1, validation_data=(x * 100, np.zeros(16)), verbose=0)
    expected = 0.99 * before[2] + 0.01 * x.mean(0)  # one step: the training batch only
    np.testing.assert_allclose(model.get_weights()[2], expected, rtol=1e-5, atol=1e-6)


# -- frozen --------------------------------------------------------------------------------------
def test_frozen_batchnorm_runs_in_inference_mode(backend):
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(16, 3)).astype("float32"), rng.normal(size=(16, 1)).astype("float32")
    model = nnx.Sequential([nnx.Input(3), nnx.Dense(4), BatchNormalization(trainable=False), nnx.Dense(1)])
    bn = model.layers[1]
    _random_affine(bn, rng)
    frozen = bn.get_weights()
    assert bn.trainable_weights == [] and len(bn.non_trainable_weights) == 4
    xd = nnx.asarray(x)
    np.testing.assert_allclose(nnx.to_numpy(model.forward(xd, training=True)[0]),
                               nnx.to_numpy(model.predict(x)), rtol=1e-6, atol=1e-6)
    model.compile("adam", "mse")
    dense_before = model.layers[0].get_weights()
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    for a, b in zip(bn.get_weights(), frozen):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(model.layers[0].get_weights()[0], dense_before[0])
    assert len(model.optimizer.get_state(nnx.to_numpy, model.trainable_weights)["slots"]) == 4  # two Dense layers


def test_frozen_batchnorm_gradient_uses_moving_statistics(backend64):
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    model = nnx.Sequential([nnx.Input(3), nnx.Dense(4), BatchNormalization(), nnx.Dense(2)])
    model.compile("sgd", "mse")
    _random_affine(model.layers[1], rng)
    model.layers[1].trainable = False
    _fd_check(model, x, y)  # the training forward of a frozen layer is its inference map


def test_freezing_the_model_freezes_batchnorm(backend):
    rng = np.random.default_rng(10)
    x = rng.normal(size=(8, 3)).astype("float32")
    model = nnx.Sequential([nnx.Input(3), BatchNormalization(), nnx.Dense(1)])
    model.compile("sgd", "mse")
    model.trainable = False
    before = model.get_weights()
    model.fit(x, np.ones(8), epochs=1, verbose=0)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


# -- layer normalization -------------------------------------------------------------------------
def _ln_reference(x, gamma, beta, axes, eps=1e-3):
    mean = x.mean(axes, keepdims=True)
    var = x.var(axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


@pytest.mark.parametrize("shape,axis", [((4, 5), -1), ((3, 4, 5), -1), ((3, 4, 5), [1, 2]), ((3, 2, 3, 4), 1)])
def test_layernorm_values(backend, shape, axis):
    rng = np.random.default_rng(11)
    x = (rng.normal(size=shape) * 3 + 2).astype("float32")
    model = nnx.Sequential([nnx.Input(shape[1:]), LayerNormalization(axis=axis)])
    layer = model.layers[0]
    axes = tuple(a % len(shape) for a in (axis if isinstance(axis, list) else [axis]))
    pshape = tuple(shape[a] for a in axes)
    assert [w.name for w in layer.weights] == ["gamma", "beta"]
    assert [w.shape for w in layer.weights] == [pshape, pshape]
    _random_affine(layer, rng)
    gamma, beta = layer.get_weights()
    bshape = [shape[i] if i in axes else 1 for i in range(len(shape))]
    expected = _ln_reference(x, gamma.reshape(bshape), beta.reshape(bshape), axes)
    np.testing.assert_allclose(nnx.to_numpy(model.predict(x)), expected, rtol=1e-4, atol=1e-5)
    train = nnx.to_numpy(model.forward(nnx.asarray(x), training=True)[0])
    np.testing.assert_allclose(train, expected, rtol=1e-4, atol=1e-5)  # the same in training


@pytest.mark.parametrize("shape,axis", [((5, 4), -1), ((3, 4, 5), -1), ((3, 4, 5), [1, 2]), ((2, 3, 2, 4), 1)])
def test_layernorm_gradients(backend64, shape, axis):
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=shape) * 2 + 1, rng.normal(size=(shape[0], 2))
    for first in (True, False):
        pre = [] if first else [nnx.Dense(shape[-1])]
        model = nnx.Sequential([nnx.Input(shape[1:]), *pre, LayerNormalization(axis=axis), nnx.Flatten(),
                                nnx.Dense(2)])
        model.compile("sgd", "mse")
        _random_affine(model.layers[len(pre)], rng)
        _fd_check(model, x, y)
    layer = LayerNormalization(axis=axis)
    layer.build(shape[1:])
    _random_affine(layer, rng)
    _dx_check(layer, x)
    plain = LayerNormalization(axis=axis, center=False, scale=False)
    plain.build(shape[1:])
    assert plain.weights == []
    _dx_check(plain, x)


def test_layernorm_trains(backend):
    rng = np.random.default_rng(13)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = (x[:, :1] - x.mean(1, keepdims=True) > 0).astype("float32")
    model = nnx.Sequential([nnx.Input(6), nnx.Dense(8), LayerNormalization(), nnx.Dense(1, activation="sigmoid")])
    model.compile(nnx.optimizers.Adam(0.02), "binary_crossentropy")
    history = model.fit(x, y, epochs=15, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < 0.6 * history.history["loss"][0]


# -- Keras conventions -------------------------------------------------------------------------
def test_keras_weight_order_and_shapes(backend):
    bn = nnx.Sequential([nnx.Input((4, 4, 3)), BatchNormalization()]).layers[0]
    assert [w.name for w in bn.weights] == ["gamma", "beta", "moving_mean", "moving_variance"]
    assert [w.trainable for w in bn.weights] == [True, True, False, False]
    assert [w.name for w in bn.trainable_weights] == ["gamma", "beta"]
    assert [w.name for w in bn.non_trainable_weights] == ["moving_mean", "moving_variance"]
    gamma, beta, mm, mv = bn.get_weights()
    np.testing.assert_array_equal(gamma, np.ones(3))
    np.testing.assert_array_equal(beta, np.zeros(3))
    np.testing.assert_array_equal(mm, np.zeros(3))
    np.testing.assert_array_equal(mv, np.ones(3))
    no_scale = nnx.Sequential([nnx.Input(5), BatchNormalization(scale=False)]).layers[0]
    assert [w.name for w in no_scale.weights] == ["beta", "moving_mean", "moving_variance"]
    no_center = nnx.Sequential([nnx.Input(5), BatchNormalization(center=False)]).layers[0]
    assert [w.name for w in no_center.weights] == ["gamma", "moving_mean", "moving_variance"]
    # defaults are Keras's
    assert (bn.axis, bn.momentum, bn.epsilon, bn.center, bn.scale) == (-1, 0.99, 1e-3, True, True)
    ln = LayerNormalization()
    assert (ln.axis, ln.epsilon, ln.center, ln.scale) == (-1, 1e-3, True, True)


def test_keras_weights_load_and_compute_the_keras_function(backend):
    """A Keras model's get_weights() for Dense -> BatchNormalization -> Dense loads here in the
    same order and gives Keras's inference function."""
    rng = np.random.default_rng(14)
    keras_weights = [rng.normal(size=(3, 4)), rng.normal(size=4), rng.uniform(0.5, 2, 4), rng.normal(size=4),
                     rng.normal(size=4), rng.uniform(0.5, 2, 4), rng.normal(size=(4, 1)), rng.normal(size=1)]
    keras_weights = [w.astype("float32") for w in keras_weights]
    model = nnx.Sequential([nnx.Input(3), nnx.Dense(4, activation="relu"), BatchNormalization(), nnx.Dense(1)])
    model.set_weights(keras_weights)
    k1, b1, g, bt, m, v, k2, b2 = keras_weights
    x = rng.normal(size=(5, 3)).astype("float32")
    expected = _bn_reference(np.maximum(x @ k1 + b1, 0), g, bt, m, v) @ k2 + b2
    np.testing.assert_allclose(nnx.to_numpy(model.predict(x)), expected, rtol=1e-5, atol=1e-5)


def test_summary_counts_moving_statistics_as_non_trainable(backend):
    model = nnx.Sequential([nnx.Input(3), nnx.Dense(4), BatchNormalization(), nnx.Dense(1)])
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "Total params: 37" in text  # 16 + 16 + 5
    assert "Trainable params: 29" in text  # kernels, biases, gamma, beta
    assert "Non-trainable params: 8" in text  # moving mean and variance
    assert "BatchNormalization" in text
    model.layers[1].trainable = False
    lines.clear()
    model.summary(print_fn=lines.append)
    assert "Non-trainable params: 16" in "\n".join(lines)


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch axis"):
        BatchNormalization(axis=0)
    with pytest.raises(ValueError, match="momentum"):
        BatchNormalization(momentum=1.5)
    with pytest.raises(ValueError, match="epsilon"):
        BatchNormalization(epsilon=0)
    with pytest.raises(ValueError, match="out of range"):
        nnx.Sequential([nnx.Input((3, 4)), BatchNormalization(axis=3)])
    with pytest.raises(ValueError, match="batch axis"):
        LayerNormalization(axis=[0, 1])
    with pytest.raises(ValueError, match="twice"):
        nnx.Sequential([nnx.Input((3, 4)), LayerNormalization(axis=[2, -1])])
    with pytest.raises(ValueError, match="out of range"):
        nnx.Sequential([nnx.Input(3), LayerNormalization(axis=-2)])


def test_config_round_trip(backend):
    model = nnx.Sequential([
        nnx.Input((4, 5)),
        BatchNormalization(axis=1, momentum=0.9, epsilon=1e-5, center=False, gamma_initializer="random_normal",
                           moving_variance_initializer=nnx.initializers.Constant(2.0),
                           gamma_regularizer=nnx.regularizers.l2(0.01), name="bn"),
        LayerNormalization(axis=[1, 2], epsilon=1e-4, scale=False, name="ln"),
    ])
    config = model.get_config()
    clone = nnx.models.model_from_json(model.to_json())
    assert clone.get_config() == config
    assert json.loads(json.dumps(config)) == config
    bn, ln = clone.layers
    assert (bn.axis, bn.momentum, bn.epsilon, bn.center, bn.scale) == (1, 0.9, 1e-5, False, True)
    assert bn.gamma_regularizer is not None and bn.gamma.regularizer is not None
    np.testing.assert_array_equal(bn.get_weights()[2], np.full(4, 2.0))
    assert (ln.axis, ln.epsilon, ln.center, ln.scale) == ([1, 2], 1e-4, True, False)
    assert [w.shape for w in clone.weights] == [w.shape for w in model.weights]
    assert nnx.layers.deserialize(nnx.layers.serialize(model.layers[0])).get_config() == bn.get_config()


# -- saving --------------------------------------------------------------------------------------
def test_architecture_rules_match_the_built_weights(backend):
    model = nnx.Sequential([
        nnx.Input((4, 4, 3)), nnx.Dense(2), BatchNormalization(axis=1, center=False),
        LayerNormalization(axis=[2, 3], trainable=False), BatchNormalization(scale=False, trainable=False),
        nnx.Flatten(), nnx.Dense(1),
    ])
    implied, exact, _ = saving._architecture(model.get_config(), "model.nnx")
    assert exact
    assert implied == [(w.shape, w in model.trainable_weights) for w in model.weights]


def test_save_load_resume_with_batchnorm_is_exact(backend, tmp_path):
    rng = np.random.default_rng(15)
    x = rng.normal(size=(40, 4, 3)).astype("float32") * 2 + 1
    y = rng.normal(size=(40, 1)).astype("float32")

    def build():
        return nnx.Sequential([nnx.Input((4, 3)), BatchNormalization(), nnx.Dense(5, activation="relu"),
                               BatchNormalization(axis=1, momentum=0.9), LayerNormalization(), nnx.Flatten(),
                               nnx.Dense(1)])

    model = build()
    model.compile("adam", "mse")
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert not np.array_equal(model.layers[0].get_weights()[2], np.zeros(3))  # the statistics moved
    path = str(tmp_path / "bn.nnx")
    model.save(path)
    loaded = nnx.load_model(path)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(nnx.to_numpy(loaded.predict(x)), nnx.to_numpy(model.predict(x)))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # weights only, into a fresh model
    model.save_weights(str(tmp_path / "w.npz"))
    fresh = build()
    fresh.load_weights(str(tmp_path / "w.npz"))
    np.testing.assert_array_equal(nnx.to_numpy(fresh.predict(x)), nnx.to_numpy(model.predict(x)))


def test_load_refuses_a_moving_statistic_of_the_wrong_shape(backend, tmp_path):
    import zipfile

    model = nnx.Sequential([nnx.Input(3), BatchNormalization(), nnx.Dense(1)])
    model.compile("sgd", "mse")
    good = str(tmp_path / "good.nnx")
    model.save(good)
    bad = str(tmp_path / "bad.nnx")
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "weight_3.npy":  # moving_variance (3,) -> (4,)
                import io

                buf = io.BytesIO()
                np.save(buf, np.ones(4, dtype="float32"))
                data = buf.getvalue()
            zout.writestr(info, data)
    with pytest.raises(ValueError, match="do not match the architecture"):
        nnx.load_model(bad)


def test_float16_statistics_do_not_overflow(backend):
    """Squares of float16 values overflow past 256: the statistics are taken in float32 (as Keras)."""
    if getattr(backend.xp, "float16", None) is None:
        pytest.skip("this namespace has no float16")
    nnx.set_floatx("float16")
    rng = np.random.default_rng(16)
    x16 = (rng.normal(size=(32, 3)) * [200.0, 1.0, 30.0] + [1000.0, 0.0, -50.0]).astype("float16")
    x = x16.astype("float64")
    model = nnx.Sequential([nnx.Input(3), BatchNormalization(momentum=0.5), LayerNormalization()])
    model.compile("sgd", "mse")
    train = nnx.to_numpy(model.forward(nnx.asarray(x16), training=True)[0])
    bn = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3)
    np.testing.assert_allclose(train, _ln_reference(bn, 1.0, 0.0, (1,)), atol=3e-3)
    model.fit(x16, np.zeros((32, 3)), batch_size=32, epochs=1, verbose=0)
    mm, mv = model.layers[0].get_weights()[2:]
    np.testing.assert_allclose(mm, 0.5 * x.mean(0), rtol=2e-3)
    np.testing.assert_allclose(mv, 0.5 + 0.5 * x.var(0), rtol=2e-3)


def test_float16_statistics_of_small_variance_inputs(backend):
    """The float16 statistics are clipped to float16's range only: a variance well below 1 reaches
    the moving variance as it is."""
    if getattr(backend.xp, "float16", None) is None:
        pytest.skip("this namespace has no float16")
    nnx.set_floatx("float16")
    rng = np.random.default_rng(17)
    x16 = (rng.normal(size=(64, 2)) * [0.05, 0.3] + [2.0, -1.0]).astype("float16")
    x = x16.astype("float64")
    model = nnx.Sequential([nnx.Input(2), BatchNormalization(momentum=0.5)])
    model.compile("sgd", "mse")
    model.fit(x16, np.zeros((64, 2)), batch_size=64, epochs=1, verbose=0)
    mv = model.layers[0].get_weights()[3]
    np.testing.assert_allclose(mv, 0.5 + 0.5 * x.var(0), rtol=2e-3)
