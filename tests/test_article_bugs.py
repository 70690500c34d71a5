"""One test per defect of the article nnx grew from (see the design notes); each would have failed there."""
from __future__ import annotations

import math

import numpy as np

import nnx
from conftest import assert_close


def test_bug1_softmax_normalises_over_class_axis(backend):
    x = np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]], dtype="float32")
    y = nnx.to_numpy(nnx.activations.get("softmax").forward(backend.xp, nnx.asarray(x)))
    e = math.exp(1), math.exp(2), math.exp(3)
    assert_close(y[0], [v / sum(e) for v in e])
    assert_close(y[1], [1 / 3] * 3)
    assert_close(y.sum(axis=1), [1.0, 1.0])
    assert not np.allclose(y.sum(axis=0), 1.0)  # normalising over the batch would make these 1


def test_bug2_tanh_derivative_is_one_minus_tanh_squared(backend):
    xp = backend.xp
    points = [-2.0, -0.5, 0.0, 0.7, 3.0]
    act = nnx.activations.get("tanh")
    x = nnx.asarray(np.array(points, dtype="float32"))
    assert act.saves == "y"
    dx = act.backward(xp, nnx.asarray(np.ones(5, dtype="float32")), act.forward(xp, x))
    assert_close(dx, [1 - math.tanh(p) ** 2 for p in points])
    y, saved = backend.ops.activation(act, x)  # the backend's path (a kernel on numpy) agrees
    assert_close(backend.ops.activation_backward(act, nnx.asarray(np.ones(5, dtype="float32")), saved),
                 [1 - math.tanh(p) ** 2 for p in points])


def test_bug3_linear_activation_backpropagates_identity(backend):
    xp = backend.xp
    act = nnx.activations.get(None)
    x = nnx.asarray(np.array([-3.0, -0.1, 2.0], dtype="float32"))
    dy = nnx.asarray(np.array([0.5, -1.0, 2.0], dtype="float32"))
    assert act.saves is None  # nothing to keep: the identity needs neither x nor y
    assert_close(act.backward(xp, dy, None), [0.5, -1.0, 2.0])  # ReLU's would zero the first two
    _, saved = backend.ops.activation(act, x)
    assert_close(backend.ops.activation_backward(act, dy, saved), [0.5, -1.0, 2.0])


def test_bug4_bias_gradient_is_per_unit_sum_over_batch(backend):
    layer = nnx.Dense(3)
    layer.build((2,))
    x = nnx.asarray(np.array([[1.0, 2.0], [3.0, 4.0]], dtype="float32"))
    _, saved = layer.forward(x, training=True)
    dz = np.array([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0]], dtype="float32")
    _, grads = layer.backward(saved, nnx.asarray(dz))
    assert set(grads) == {layer.kernel, layer.bias}
    d_kernel, d_bias = nnx.to_numpy(grads[layer.kernel]), nnx.to_numpy(grads[layer.bias])
    assert d_bias.shape == (3,)
    assert_close(d_bias, [11.0, 22.0, 33.0])
    assert_close(d_kernel, [[31.0, 62.0, 93.0], [42.0, 84.0, 126.0]])  # x.T @ dz by hand


def test_bug5_he_initialisation_multiplies_by_sqrt_2_over_n(backend):
    fan_in = 800
    layer = nnx.Dense(400, kernel_initializer="he_normal")
    layer.build((fan_in,))
    kernel = layer.get_weights()[0]
    assert abs(kernel.std() - math.sqrt(2 / fan_in)) < 0.03 * math.sqrt(2 / fan_in)  # /sqrt(2/n) would give 20
    uniform = nnx.Dense(400, kernel_initializer="he_uniform")
    uniform.build((fan_in,))
    limit = math.sqrt(6 / fan_in)
    k = uniform.get_weights()[0]
    assert k.max() <= limit and k.min() >= -limit and k.max() > 0.98 * limit


def test_bug6_epochs_are_the_outer_loop(backend):
    """Two epochs of per-sample SGD on y = w x + b match a hand loop with epochs outside samples."""
    x = np.array([[1.0], [2.0], [3.0]], dtype="float32")
    y = np.array([2.0, 3.0, 5.0], dtype="float32")
    model = nnx.Sequential([nnx.Input(1), nnx.Dense(1)])
    model.set_weights([np.array([[0.5]]), np.array([0.1])])
    model.compile(optimizer=nnx.optimizers.SGD(learning_rate=0.05), loss="mse")
    model.fit(x, y, epochs=2, batch_size=1, shuffle=False, verbose=0)
    w, b = 0.5, 0.1
    for _ in range(2):  # epochs outside ...
        for xi, yi in zip(x[:, 0], y):  # ... samples inside
            r = w * xi + b - yi
            w, b = w - 0.05 * 2 * r * xi, b - 0.05 * 2 * r
    kernel, bias = model.get_weights()
    np.testing.assert_allclose([kernel[0, 0], bias[0]], [w, b], rtol=1e-5)


def test_bug7_layers_persist_and_predict_returns_array(backend):
    dense = nnx.Dense(2)
    model = nnx.Sequential([nnx.Input(3), dense])
    kernel_before = model.layers[0].kernel
    array_before = kernel_before.value
    values_before = kernel_before.numpy()
    model.compile("sgd", "mse")
    x = np.ones((4, 3), dtype="float32")
    model.fit(x, np.zeros((4, 2), dtype="float32"), epochs=2, verbose=0)
    assert model.layers[0] is dense and dense.kernel is kernel_before  # the same record, never re-created
    assert dense.kernel.value is array_before  # and the same array, updated in place
    assert not np.array_equal(nnx.to_numpy(array_before), values_before)
    out = model.predict(x)
    assert backend.owns(out) and tuple(out.shape) == (4, 2)


def test_bug8_input_takes_shapes_without_reshape(backend):
    for shape in (3, (3,), [3]):
        model = nnx.Sequential([nnx.Input(shape), nnx.Dense(2)])
        assert model.input_shape == (3,)
        assert tuple(model.predict(np.ones((5, 3))).shape) == (5, 2)
