"""Convolution, pooling and padding layers: values against loop-based NumPy references and Keras's
documented examples, gradients by finite differences through whole models (the layer first and in
the middle), Keras's shapes, configs, saving, bad arguments, and the NumPy kernels against the
portable ones."""
from __future__ import annotations

import math
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

import nnx
from nnx.ops import Ops

from helpers import check_weight_gradients


# -- independent references (loops over output positions, vectorised over the batch) ----------
def _same_pads(n, k, s, d):
    """TensorFlow's "same" padding, from its documentation."""
    out = math.ceil(n / s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


def ref_conv2d(x, kernel, bias, strides=(1, 1), padding="valid", dilation=(1, 1)):
    kh, kw, _, f = kernel.shape
    (sh, sw), (dh, dw) = strides, dilation
    if padding == "same":
        pads = [_same_pads(x.shape[1], kh, sh, dh), _same_pads(x.shape[2], kw, sw, dw)]
        x = np.pad(x, [(0, 0), pads[0], pads[1], (0, 0)])
    span_h, span_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    ho, wo = (x.shape[1] - span_h) // sh + 1, (x.shape[2] - span_w) // sw + 1
    y = np.zeros((x.shape[0], ho, wo, f))
    for r in range(ho):
        for c in range(wo):
            patch = x[:, r * sh:r * sh + span_h:dh, c * sw:c * sw + span_w:dw, :]
            y[:, r, c, :] = np.einsum("nijc,ijcf->nf", patch, kernel)
    return y + bias


def ref_pool2d(x, pool, strides, padding, mode):
    """Max or mean over each window, padding left out (NaN-padded, then nan-reductions)."""
    (ph, pw), (sh, sw) = pool, strides
    if padding == "same":
        pads = [_same_pads(x.shape[1], ph, sh, 1), _same_pads(x.shape[2], pw, sw, 1)]
        x = np.pad(x.astype(float), [(0, 0), pads[0], pads[1], (0, 0)], constant_values=np.nan)
    ho, wo = (x.shape[1] - ph) // sh + 1, (x.shape[2] - pw) // sw + 1
    reduce = np.nanmax if mode == "max" else np.nanmean
    y = np.zeros((x.shape[0], ho, wo, x.shape[3]))
    for r in range(ho):
        for c in range(wo):
            y[:, r, c, :] = reduce(x[:, r * sh:r * sh + ph, c * sw:c * sw + pw, :], axis=(1, 2))
    return y


def _fd_check(model, x, y):
    check_weight_gradients(model, x, y, training=False, atol=1e-7)


def _check_first_and_middle(make, input_shape, n=3, seed=0):
    """``make()`` as the first layer (its weights' gradients) and after a Conv/Dense (its input
    gradient), each followed by Flatten and Dense, against finite differences."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *input_shape))
    rank = len(input_shape) - 1
    before = (nnx.Conv2D(2, (2, 1), padding="same", activation="tanh") if rank == 2
              else nnx.Conv1D(2, 2, padding="same", activation="tanh"))
    for layers in ([make()], [before, make()]):
        model = nnx.Sequential([nnx.Input(input_shape), *layers, nnx.Flatten(), nnx.Dense(2)])
        model.compile("sgd", "mse")
        _fd_check(model, x, rng.normal(size=(n, 2)))


CONV2D = {
    "valid-s1-2x3": dict(filters=3, kernel_size=(2, 3)),
    "same-s1-3x3-relu": dict(filters=2, kernel_size=3, padding="same", activation="relu"),
    "valid-s2-3x2": dict(filters=2, kernel_size=(3, 2), strides=2),
    "same-s2-3x3": dict(filters=2, kernel_size=3, strides=2, padding="same"),
    "same-s21-2x3": dict(filters=2, kernel_size=(2, 3), strides=(2, 1), padding="same", activation="tanh"),
    "valid-d2-2x2": dict(filters=2, kernel_size=2, dilation_rate=2),
    "same-d2-3x2-nobias": dict(filters=2, kernel_size=(3, 2), dilation_rate=(2, 1), padding="same", use_bias=False),
}


@pytest.mark.parametrize("kwargs", list(CONV2D.values()), ids=list(CONV2D))
def test_conv2d_gradients(backend64, kwargs):
    _check_first_and_middle(lambda: nnx.Conv2D(**kwargs), (6, 7, 2))


@pytest.mark.parametrize("kwargs", list(CONV2D.values()), ids=list(CONV2D))
def test_conv2d_values_against_loops(backend, kwargs):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 9, 8, 3)).astype("float32")
    layer = nnx.Conv2D(**{**kwargs, "bias_initializer": "random_normal"})
    model = nnx.Sequential([nnx.Input((9, 8, 3)), layer])
    kernel, *bias = layer.get_weights()
    expected = ref_conv2d(x.astype(float), kernel.astype(float), bias[0] if bias else 0.0,
                          layer.strides, layer.padding, layer.dilation_rate)
    if kwargs.get("activation") == "relu":
        expected = np.maximum(expected, 0)
    elif kwargs.get("activation") == "tanh":
        expected = np.tanh(expected)
    got = nnx.to_numpy(model.predict(x))
    assert got.shape == expected.shape == (4, *layer.output_shape)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_conv2d_by_hand_and_against_scipy(backend):
    x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    layer = nnx.Conv2D(1, 2, kernel_initializer="ones", use_bias=False)
    y = nnx.to_numpy(nnx.Sequential([nnx.Input((4, 4, 1)), layer]).predict(x))[0, :, :, 0]
    # each output is the sum of a 2x2 block: 0+1+4+5 = 10, then +4 per step right, +16 per step down
    np.testing.assert_array_equal(y, [[10, 14, 18], [26, 30, 34], [42, 46, 50]])
    signal = pytest.importorskip("scipy.signal")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 7, 6, 1)).astype("float32")
    layer = nnx.Conv2D(1, (3, 2), use_bias=False)
    got = nnx.to_numpy(nnx.Sequential([nnx.Input((7, 6, 1)), layer]).predict(x))
    kernel = layer.get_weights()[0][:, :, 0, 0]
    for i in range(2):
        np.testing.assert_allclose(got[i, :, :, 0], signal.correlate2d(x[i, :, :, 0], kernel, mode="valid"),
                                   rtol=1e-5, atol=1e-5)


CONV1D = {
    "valid": dict(filters=3, kernel_size=3),
    "same-s2": dict(filters=2, kernel_size=3, strides=2, padding="same", activation="tanh"),
    "causal-d2": dict(filters=2, kernel_size=2, dilation_rate=2, padding="causal"),
}


@pytest.mark.parametrize("kwargs", list(CONV1D.values()), ids=list(CONV1D))
def test_conv1d_gradients_and_values(backend64, kwargs):
    _check_first_and_middle(lambda: nnx.Conv1D(**kwargs), (7, 2))
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 7, 2))
    layer = nnx.Conv1D(**{**kwargs, "bias_initializer": "random_normal"})
    got = nnx.to_numpy(nnx.Sequential([nnx.Input((7, 2)), layer]).predict(x))
    kernel, bias = layer.get_weights()
    d, k = layer.dilation_rate[0], layer.kernel_size[0]
    xs = np.pad(x, [(0, 0), ((k - 1) * d, 0), (0, 0)]) if layer.padding == "causal" else x
    padding = "valid" if layer.padding == "causal" else layer.padding
    expected = ref_conv2d(xs[:, None], kernel[None], bias, (1, layer.strides[0]), padding, (1, d))[:, 0]
    if kwargs.get("activation") == "tanh":
        expected = np.tanh(expected)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    if layer.padding == "causal":  # output t never sees inputs after t
        x2 = x.copy()
        x2[:, 4:] += 1.0
        got2 = nnx.to_numpy(nnx.Sequential([nnx.Input((7, 2)), layer]).predict(x2))
        np.testing.assert_array_equal(got2[:, :4], got[:, :4])
        assert not np.allclose(got2[:, 4:], got[:, 4:])


POOL2D = {
    "2x2": dict(),
    "3x3-s2-same": dict(pool_size=3, strides=2, padding="same"),
    "2x3-s12": dict(pool_size=(2, 3), strides=(1, 2)),
    "3x2-s2-same": dict(pool_size=(3, 2), strides=2, padding="same"),
    "2x2-s1-same": dict(pool_size=2, strides=1, padding="same"),
}


@pytest.mark.parametrize("kind", ["max", "average"])
@pytest.mark.parametrize("kwargs", list(POOL2D.values()), ids=list(POOL2D))
def test_pool2d_gradients_and_values(backend64, kind, kwargs):
    cls = nnx.MaxPooling2D if kind == "max" else nnx.AveragePooling2D
    _check_first_and_middle(lambda: cls(**kwargs), (7, 6, 2))
    x = np.random.default_rng(4).normal(size=(3, 7, 6, 2))
    layer = cls(**kwargs)
    got = nnx.to_numpy(nnx.Sequential([nnx.Input((7, 6, 2)), layer]).predict(x))
    expected = ref_pool2d(x, layer.pool_size, layer.strides, layer.padding, kind)
    assert got.shape == expected.shape == (3, *layer.output_shape)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("kind", ["max", "average"])
@pytest.mark.parametrize("kwargs", [dict(), dict(pool_size=3, strides=2, padding="same"), dict(strides=1)],
                         ids=["2", "3-s2-same", "2-s1"])
def test_pool1d_gradients_and_values(backend64, kind, kwargs):
    cls = nnx.MaxPooling1D if kind == "max" else nnx.AveragePooling1D
    _check_first_and_middle(lambda: cls(**kwargs), (7, 2))
    x = np.random.default_rng(5).normal(size=(3, 7, 2))
    layer = cls(**kwargs)
    got = nnx.to_numpy(nnx.Sequential([nnx.Input((7, 2)), layer]).predict(x))
    expected = ref_pool2d(x[:, None], (1, *layer.pool_size), (1, *layer.strides), layer.padding, kind)[:, 0]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("name", ["GlobalAveragePooling2D", "GlobalMaxPooling2D", "GlobalAveragePooling1D",
                                  "GlobalMaxPooling1D", "ZeroPadding2D"])
def test_global_pooling_and_padding_gradients_and_values(backend64, name):
    cls = getattr(nnx, name)
    shape = (5, 2) if name.endswith("1D") else (4, 5, 2)
    make = (lambda: cls(((1, 0), (2, 1)))) if name == "ZeroPadding2D" else cls
    _check_first_and_middle(make, shape)
    x = np.random.default_rng(6).normal(size=(3, *shape))
    got = nnx.to_numpy(nnx.Sequential([nnx.Input(shape), make()]).predict(x))
    axes = tuple(range(1, len(shape)))
    expected = {"GlobalAveragePooling2D": lambda: x.mean(axis=axes), "GlobalAveragePooling1D": lambda: x.mean(axis=axes),
                "GlobalMaxPooling2D": lambda: x.max(axis=axes), "GlobalMaxPooling1D": lambda: x.max(axis=axes),
                "ZeroPadding2D": lambda: np.pad(x, [(0, 0), (1, 0), (2, 1), (0, 0)])}[name]()
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_keras_documented_pooling_examples(backend):
    """The examples of Keras's pooling docstrings, with the outputs they print."""
    x = np.arange(1, 10, dtype="float32").reshape(1, 3, 3, 1)

    def pool(layer, data):
        return nnx.to_numpy(nnx.Sequential([nnx.Input(data.shape[1:]), layer]).predict(data))[0, ..., 0]

    np.testing.assert_array_equal(pool(nnx.MaxPooling2D((2, 2), strides=(1, 1)), x), [[5, 6], [8, 9]])
    np.testing.assert_array_equal(pool(nnx.MaxPooling2D((2, 2), strides=(1, 1), padding="same"), x),
                                  [[5, 6, 6], [8, 9, 9], [8, 9, 9]])
    np.testing.assert_array_equal(pool(nnx.AveragePooling2D((2, 2), strides=(1, 1), padding="same"), x),
                                  [[3, 4, 4.5], [6, 7, 7.5], [7.5, 8.5, 9]])
    x4 = np.arange(1, 17, dtype="float32").reshape(1, 4, 4, 1)
    np.testing.assert_array_equal(pool(nnx.MaxPooling2D(2), x4), [[6, 8], [14, 16]])
    s = np.arange(1, 6, dtype="float32").reshape(1, 5, 1)
    np.testing.assert_array_equal(pool(nnx.AveragePooling1D(2, strides=1), s), [1.5, 2.5, 3.5, 4.5])
    np.testing.assert_array_equal(pool(nnx.AveragePooling1D(2, strides=1, padding="same"), s), [1.5, 2.5, 3.5, 4.5, 5])
    np.testing.assert_array_equal(pool(nnx.MaxPooling1D(2, strides=1, padding="same"), s), [2, 3, 4, 5, 5])


def test_max_pooling_routes_a_tie_to_the_first_maximum(backend):
    """As TensorFlow and PyTorch: one input of a window gets the gradient, the first maximum."""
    x = np.array([[[3.0, 3.0, 1.0, 2.0], [3.0, 0.0, 2.0, 2.0]]], dtype="float32")[..., None]  # (1, 2, 4, 1)
    dy = np.array([[[[5.0], [7.0]]]], dtype="float32")
    for pool in (nnx.MaxPooling2D(2), nnx.MaxPooling2D(2, strides=(1, 2)),):
        model = nnx.Sequential([nnx.Input((2, 4, 1)), pool])
        y, saved = pool.forward(nnx.asarray(x), training=True)
        np.testing.assert_array_equal(nnx.to_numpy(y)[0, 0, :, 0], [3, 2])
        dx = nnx.to_numpy(pool.backward(saved, nnx.asarray(dy), True)[0])[0, :, :, 0]
        np.testing.assert_array_equal(dx, [[5, 0, 0, 7], [0, 0, 0, 0]])
        del model


def test_keras_shapes_weights_and_names(backend):
    cases = [  # (layer, sample shape, output shape), from Keras's docs and its shape rules
        (nnx.Conv2D(2, 3), (10, 10, 128), (8, 8, 2)),
        (nnx.Conv2D(32, 3, strides=2, padding="same"), (28, 28, 1), (14, 14, 32)),
        (nnx.Conv2D(4, (3, 5), strides=(2, 3)), (28, 28, 1), (13, 8, 4)),
        (nnx.Conv2D(4, 3, dilation_rate=2), (10, 9, 1), (6, 5, 4)),
        (nnx.Conv2D(4, 4, padding="same"), (7, 7, 1), (7, 7, 4)),
        (nnx.Conv1D(32, 3), (10, 128), (8, 32)),
        (nnx.Conv1D(8, 3, strides=2, padding="same"), (9, 4), (5, 8)),
        (nnx.Conv1D(8, 3, dilation_rate=4, padding="causal"), (9, 4), (9, 8)),
        (nnx.MaxPooling2D(), (26, 26, 32), (13, 13, 32)),
        (nnx.MaxPooling2D(), (11, 11, 64), (5, 5, 64)),
        (nnx.AveragePooling2D(3, strides=2, padding="same"), (7, 8, 3), (4, 4, 3)),
        (nnx.MaxPooling1D(), (9, 3), (4, 3)),
        (nnx.AveragePooling1D(4, padding="same"), (9, 3), (3, 3)),
        (nnx.GlobalAveragePooling2D(), (5, 6, 7), (7,)),
        (nnx.GlobalMaxPooling2D(keepdims=True), (5, 6, 7), (1, 1, 7)),
        (nnx.GlobalAveragePooling1D(), (5, 7), (7,)),
        (nnx.ZeroPadding2D(), (5, 6, 7), (7, 8, 7)),
        (nnx.ZeroPadding2D((1, 2)), (5, 6, 7), (7, 10, 7)),
        (nnx.ZeroPadding2D(((1, 0), (0, 3))), (5, 6, 7), (6, 9, 7)),
    ]
    for layer, shape, out in cases:
        nnx.Sequential([nnx.Input(shape), layer])
        assert layer.output_shape == out, (type(layer).__name__, shape)
    model = nnx.Sequential([nnx.Input((28, 28, 1)), nnx.Conv2D(32, (3, 3), activation="relu"), nnx.MaxPooling2D(),
                            nnx.Conv2D(64, (3, 3), activation="relu"), nnx.MaxPooling2D(), nnx.Flatten(),
                            nnx.Dropout(0.5), nnx.Dense(10, activation="softmax")])
    assert [l.count_params() for l in model.layers] == [320, 0, 18496, 0, 0, 0, 16010]  # Keras's summary
    assert [w.shape for w in model.get_weights()[:4]] == [(3, 3, 1, 32), (32,), (3, 3, 32, 64), (64,)]
    assert [w.name for w in model.layers[0].weights] == ["kernel", "bias"]
    assert [l.name.rstrip("_0123456789") for l in model.layers[:2]] == ["conv2d", "max_pooling2d"]
    assert nnx.Conv1D(4, 3, input_shape=(9, 2)).get_config()["input_shape"] == [9, 2]
    assert nnx.layers.Conv2D is nnx.Conv2D and nnx.layers.GlobalAveragePooling1D is nnx.GlobalAveragePooling1D


def test_glorot_fans_of_a_kernel(backend):
    """Keras's fans of a (kh, kw, in, out) kernel: in * kh * kw and out * kh * kw."""
    nnx.seed(0)
    kernel = nnx.Sequential([nnx.Input((40, 40, 16)), nnx.Conv2D(32, 5)]).get_weights()[0]
    limit = math.sqrt(6 / (16 * 25 + 32 * 25))
    assert kernel.max() <= limit and kernel.max() > 0.95 * limit and kernel.min() < -0.95 * limit


def test_fused_softmax_cross_entropy_through_a_conv(backend64):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3, 6, 2))
    y = np.eye(3)[rng.integers(0, 3, size=(3, 5))]  # one-hot per step: (3, 5, 3)
    model = nnx.Sequential([nnx.Input((6, 2)), nnx.Conv1D(4, 2, activation="tanh"),
                            nnx.Conv1D(3, 1, activation="softmax")])
    model.compile("sgd", "categorical_crossentropy")
    assert model._fused and model.layers[-1].output_activation is model.layers[-1].activation
    _fd_check(model, x, y)


def test_first_conv_computes_no_input_gradient(backend, monkeypatch):
    calls, inside = [], []

    def spying(name):  # a convolution's backward, alone or with its max pooling (the outermost call counts)
        original = getattr(backend.ops, name)

        def spy(*args, **kwargs):
            if not inside:
                calls.append(kwargs["need_dx"])
            inside.append(name)
            try:
                return original(*args, **kwargs)
            finally:
                inside.pop()
        monkeypatch.setattr(backend.ops, name, spy)

    spying("conv2d_backward")
    spying("conv2d_max_pool_backward")
    model = nnx.Sequential([nnx.Input((8, 8, 1)), nnx.Conv2D(2, 3, activation="relu"), nnx.MaxPooling2D(),
                            nnx.Conv2D(2, 2), nnx.Flatten(), nnx.Dense(3, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype("float32")
    model.train_on_batch(x, np.array([0, 1, 2, 0]))
    assert calls == [True, False]  # the second conv first (it passes dx down), then the first
    calls.clear()
    model.layers[0].trainable = False  # now only the second conv has trainable weights
    model.train_on_batch(x, np.array([0, 1, 2, 0]))
    assert calls == [False]
    _, saved = model.layers[0].forward(nnx.asarray(x), training=False)
    assert saved[0] is None  # inference keeps no patches


def test_training_learns_a_spatial_task(backend):
    """A bright 2x2 square in the left or the right half of the image: a small CNN learns it."""
    rng = np.random.default_rng(0)
    n = 256
    x = 0.1 * rng.random((n, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 2, n)
    rows, cols = rng.integers(0, 7, n), rng.integers(0, 3, n) + 4 * y
    for dr in (0, 1):
        for dc in (0, 1):
            x[np.arange(n), rows + dr, cols + dc, 0] = 1.0
    model = nnx.Sequential([nnx.Input((8, 8, 1)), nnx.Conv2D(4, 2, activation="relu"), nnx.MaxPooling2D(),
                            nnx.Conv2D(4, 2, padding="same", activation="relu"), nnx.GlobalMaxPooling2D(),
                            nnx.Dense(2, activation="softmax")])
    model.compile(nnx.optimizers.Adam(0.02), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    assert model.evaluate(x, y)[1] > 0.95


def test_config_round_trip(backend):
    model = nnx.Sequential([
        nnx.Input((12, 12, 3)), nnx.ZeroPadding2D(((1, 0), (2, 1))),
        nnx.Conv2D(4, (3, 2), strides=(2, 1), padding="SAME", activation="relu", use_bias=False,
                   kernel_initializer="he_normal", kernel_regularizer=nnx.regularizers.l2(1e-3)),
        nnx.AveragePooling2D(2, strides=1, padding="same"), nnx.MaxPooling2D((2, 3)),
        nnx.GlobalMaxPooling2D(keepdims=True), nnx.layers.Reshape((1, 4)),
        nnx.Conv1D(3, 1, dilation_rate=1, padding="causal", bias_regularizer="l1"), nnx.MaxPooling1D(1),
        nnx.AveragePooling1D(1), nnx.GlobalAveragePooling1D()])
    clone = nnx.Sequential.from_config(model.get_config())
    for a, b in zip(model.layers, clone.layers):
        assert type(a) is type(b)
        assert {k: v for k, v in a.get_config().items() if k != "name"} == \
               {k: v for k, v in b.get_config().items() if k != "name"}
    assert clone.layers[1].padding == "same" and clone.layers[1].strides == (2, 1)
    assert clone.layers[0].padding == ((1, 0), (2, 1))
    assert [w.shape for w in clone.weights] == [w.shape for w in model.weights]
    conv = nnx.Conv2D(8, 3)
    assert nnx.Conv2D.from_config(conv.get_config()).get_config() == conv.get_config()
    assert conv.get_config()["kernel_size"] == [3, 3] and conv.get_config()["dilation_rate"] == [1, 1]
    restored = nnx.models.model_from_json(model.to_json())
    assert restored.output_shape == model.output_shape == (3,)


def test_save_and_load_a_conv_model(backend, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((40, 10, 10, 1)).astype("float32")
    y = rng.integers(0, 3, 40)
    model = nnx.Sequential([nnx.Input((10, 10, 1)), nnx.Conv2D(4, 3, padding="same", activation="relu"),
                            nnx.MaxPooling2D(), nnx.Conv2D(6, (2, 3), strides=2, use_bias=False),
                            nnx.GlobalAveragePooling2D(), nnx.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    path = str(tmp_path / "cnn.nnx")
    model.save(path)
    loaded = nnx.load_model(path)
    np.testing.assert_array_equal(nnx.to_numpy(loaded.predict(x)), nnx.to_numpy(model.predict(x)))
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    loaded.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)  # the optimizer state came along
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    from nnx import saving

    weights, exact, _ = saving._architecture(model.get_config(), path)
    assert exact and [s for s, _ in weights] == [(3, 3, 1, 4), (4,), (2, 3, 4, 6), (6, 3), (3,)]


def test_load_refuses_a_conv_kernel_of_the_wrong_shape(backend, tmp_path):
    """The loader checks each kernel against the shape the config implies before reading it."""
    import io
    import json
    import zipfile

    model = nnx.Sequential([nnx.Input((6, 6, 2)), nnx.Conv2D(3, 3), nnx.MaxPooling2D(), nnx.Flatten(), nnx.Dense(2)])
    model.compile("sgd", "mse")
    path = tmp_path / "m.nnx"
    model.save(str(path))
    with zipfile.ZipFile(path) as z:
        members = {name: z.read(name) for name in z.namelist()}
    meta = json.loads(np.load(io.BytesIO(members["__nnx__.npy"])).tobytes())

    def rewritten(edit):
        header = json.loads(json.dumps(meta))
        edit(header["config"]["layers"])
        f = io.BytesIO()
        np.lib.format.write_array(f, np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
        bad = tmp_path / "bad.nnx"
        with zipfile.ZipFile(bad, "w") as z:
            for name, data in {**members, "__nnx__.npy": f.getvalue()}.items():
                z.writestr(name, data)
        return str(bad)

    def kernel_2x2(layers):
        layers[0]["config"]["kernel_size"] = [2, 2]  # the file's kernel stays (3, 3, 2, 3)

    with pytest.raises(ValueError, match="weight 0"):
        nnx.load_model(rewritten(kernel_2x2))

    def pool_of_3(layers):
        layers[1]["config"]["pool_size"] = [3, 3]  # Dense's kernel would need 3 inputs, the file has 12

    with pytest.raises(ValueError, match="weight 2"):
        nnx.load_model(rewritten(pool_of_3))

    def bad_padding(layers):
        layers[0]["config"]["padding"] = "full"

    with pytest.raises(ValueError, match="layer 0 \\(Conv2D\\).*padding must be one of"):
        nnx.load_model(rewritten(bad_padding))
    np.testing.assert_array_equal(nnx.load_model(str(path)).get_weights()[0], model.get_weights()[0])


@pytest.mark.parametrize("make, match", [
    (lambda: nnx.Conv2D(0, 3), "filters must be an int >= 1; received 0"),
    (lambda: nnx.Conv2D(4, (3, 3, 3)), r"kernel_size must be an int or a tuple of 2 ints >= 1; received \(3, 3, 3\)"),
    (lambda: nnx.Conv2D(4, 3, strides=0), "strides must be .* received 0"),
    (lambda: nnx.Conv2D(4, 3, padding="full"), "padding must be one of 'valid', 'same'; received 'full'"),
    (lambda: nnx.Conv2D(4, 3, padding="causal"), "padding must be one of 'valid', 'same'; received 'causal'"),
    (lambda: nnx.Conv2D(4, 3, strides=2, dilation_rate=2), "strides > 1 together with dilation_rate > 1"),
    (lambda: nnx.Conv2D(4, 3, data_format="channels_first"), "channels-last.*received 'channels_first'"),
    (lambda: nnx.Conv2D(4, 2.5), "kernel_size must be .* received 2.5"),
    (lambda: nnx.Conv1D(4, (3, 3)), r"kernel_size must be an int or a tuple of 1 ints >= 1; received \(3, 3\)"),
    (lambda: nnx.MaxPooling2D(0), "pool_size must be .* received 0"),
    (lambda: nnx.AveragePooling1D(2, strides=-1), "strides must be .* received -1"),
    (lambda: nnx.MaxPooling2D(padding="causal"), "padding must be one of 'valid', 'same'; received 'causal'"),
    (lambda: nnx.ZeroPadding2D(-1), "padding must be an int, a pair .* received -1"),
    (lambda: nnx.ZeroPadding2D(((1, 2), 3)), r"received \(\(1, 2\), 3\)"),
    (lambda: nnx.GlobalAveragePooling2D(data_format="channels_first"), "channels_last"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_input_shapes(backend):
    with pytest.raises(ValueError, match=r"Conv2D expects inputs of shape \(batch, height, width, channels\); "
                                         r"received samples of shape \(10,\)"):
        nnx.Sequential([nnx.Input((10,)), nnx.Conv2D(2, 3)])
    with pytest.raises(ValueError, match=r"Conv1D expects inputs of shape \(batch, steps, channels\)"):
        nnx.Sequential([nnx.Input((4, 4, 1)), nnx.Conv1D(2, 3)])
    with pytest.raises(ValueError, match=r"smaller than the kernel .* expected at least \(5, 5\)"):
        nnx.Sequential([nnx.Input((4, 6, 1)), nnx.Conv2D(2, 3, dilation_rate=2)])
    with pytest.raises(ValueError, match="smaller than pool_size"):
        nnx.Sequential([nnx.Input((1, 6, 1)), nnx.MaxPooling2D()])
    with pytest.raises(ValueError, match="GlobalAveragePooling1D expects inputs of shape"):
        nnx.Sequential([nnx.Input((4, 4, 1)), nnx.GlobalAveragePooling1D()])
    model = nnx.Sequential([nnx.Input((8, 8, 1)), nnx.Conv2D(2, 3), nnx.Flatten(), nnx.Dense(1)])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match=r"Expected x with sample shape \(8, 8, 1\).*received x of shape \(2, 8, 8\)"):
        model.fit(np.zeros((2, 8, 8), "float32"), np.zeros(2, "float32"), verbose=0)


# -- the NumPy kernels against the portable ones ----------------------------------------------
def _numpy_ops():
    b = nnx.get_backend()
    if b.name != "numpy" or type(b.ops) is Ops:
        pytest.skip("compares the NumPy kernels with the portable code")
    return b.ops, Ops(b.xp, b.device)


@pytest.mark.parametrize("channels", [1, 3, 6], ids=["tap-major-1", "tap-major-3", "strided-view-6"])
@pytest.mark.parametrize("window, strides, dilation", [((3, 3), (1, 1), (1, 1)), ((2, 3), (2, 1), (1, 1)),
                                                       ((3, 2), (1, 1), (2, 3)), ((1, 1), (2, 2), (1, 1))])
def test_numpy_convolution_kernels_match_the_portable_code(backend, window, strides, dilation, channels):
    """Both im2col layouts of the NumPy kernels (tap-major up to ``tap_major_channels`` input
    channels, a strided view's copy above) against the portable code."""
    fast, portable = _numpy_ops()
    assert (channels <= fast.tap_major_channels) == (channels < 4)
    rng = np.random.default_rng(8)
    x = rng.normal(size=(3, 9, 10, channels)).astype("float32")
    kernel = rng.normal(size=(*window, channels, 5)).astype("float32")
    pads = ((1, 2), (0, 1))
    z, saved = fast.conv2d(x, kernel, strides, dilation, pads)
    z0, saved0 = portable.conv2d(x, kernel, strides, dilation, pads)
    np.testing.assert_allclose(z, z0, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(saved[0], saved0[0])  # the same patches
    dz = rng.normal(size=z.shape).astype("float32")
    got = fast.conv2d_backward(saved, dz, kernel, strides, dilation, pads, need_dbias=True)
    want = portable.conv2d_backward(saved0, dz, kernel, strides, dilation, pads, need_dbias=True)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("window, shape", [((2, 2), (2, 26, 26, 3)), ((2, 2), (2, 11, 11, 3)), ((3, 2), (2, 7, 5, 2)),
                                           ((1, 1), (2, 3, 3, 2))])
def test_numpy_max_pooling_takes_the_tiled_path_and_matches(backend, window, shape):
    from nnx.backends.numpy_conv import _TiledMax

    fast, portable = _numpy_ops()
    rng = np.random.default_rng(9)
    x = rng.integers(0, 3, size=shape).astype("float32")  # many ties: the first maximum must win
    x[0, 0, 0, 0] = np.inf
    pads = ((0, 0), (0, 0))
    y, saved = fast.max_pool2d(x, window, window, pads)
    y0, saved0 = portable.max_pool2d(x, window, window, pads)
    assert isinstance(saved, _TiledMax)  # the declared fast path is taken
    np.testing.assert_array_equal(y, y0)
    dy = rng.normal(size=y.shape).astype("float32")
    dy[0, 0, 0, 1] = np.nan
    np.testing.assert_array_equal(fast.max_pool2d_backward(saved, dy, window, window, pads),
                                  portable.max_pool2d_backward(saved0, dy, window, window, pads))


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="glibc's mallopt")
def test_numpy_backend_keeps_freed_memory_unless_told_not_to():
    """Without it a CNN step faults in fresh pages for its large arrays on every step (about 30% of
    the step in benchmarks/cnn.py); NNX_MALLOPT=0 leaves the allocator alone."""
    code = "import nnx; from nnx.backends import numpy_backend as m; print(m.keep_freed_memory())"

    def run(env):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, **env})
        return out.stdout.strip()

    assert run({}) == "True"
    assert run({"NNX_MALLOPT": "0"}) == "False"


# -- a convolution and the max pooling after it, run as one ----------------------------------------
POOLED = {
    "conv2d-relu-max2": ((6, 7, 2), lambda: [nnx.Conv2D(3, 3, padding="same", activation="relu",
                                                        bias_initializer="random_normal"), nnx.MaxPooling2D(2)]),
    "conv2d-linear-max2-s1-same": ((6, 7, 2), lambda: [nnx.Conv2D(2, (2, 3), bias_initializer="random_normal"),
                                                       nnx.MaxPooling2D(2, strides=1, padding="same")]),
    "conv2d-relu-nobias-max3x2": ((7, 8, 1), lambda: [nnx.Conv2D(2, 2, activation="relu", use_bias=False),
                                                      nnx.MaxPooling2D((3, 2))]),
    "conv2d-relu-globalmax": ((5, 6, 2), lambda: [nnx.Conv2D(3, 2, activation="relu", bias_initializer="random_normal"),
                                                  nnx.GlobalMaxPooling2D()]),
    "conv2d-s2-relu-max2-tiles": ((9, 8, 3), lambda: [nnx.Conv2D(5, 3, strides=(2, 1), padding="same", activation="relu",
                                                                 bias_initializer="random_normal"), nnx.MaxPooling2D(2)]),
    "conv2d-d2-relu-max2x3-tiles": ((11, 10, 6), lambda: [nnx.Conv2D(2, (2, 3), dilation_rate=2, activation="relu",
                                                                     bias_initializer="random_normal"),
                                                          nnx.MaxPooling2D((2, 3))]),
    "conv1d-relu-max2-tiles": ((9, 2), lambda: [nnx.Conv1D(3, 2, activation="relu", bias_initializer="random_normal"),
                                                nnx.MaxPooling1D(2)]),
    "activation-relu-max2": ((6, 7, 2), lambda: [nnx.Activation("relu"), nnx.MaxPooling2D(2)]),
    "relu-layer-max2-s1-same": ((6, 7, 2), lambda: [nnx.layers.ReLU(), nnx.MaxPooling2D(2, strides=1, padding="same")]),
    "activation-relu-globalmax": ((5, 6, 2), lambda: [nnx.Activation("relu"), nnx.GlobalMaxPooling2D()]),
    "activation-relu-max1d": ((9, 2), lambda: [nnx.Activation("relu"), nnx.MaxPooling1D(3, strides=2)]),
    "conv1d-relu-globalmax1d": ((7, 3), lambda: [nnx.Conv1D(4, 3, activation="relu", bias_initializer="random_normal"),
                                                 nnx.GlobalMaxPooling1D()]),
    "conv1d-relu-max3-s2-same": ((9, 2), lambda: [nnx.Conv1D(3, 2, activation="relu", bias_initializer="random_normal"),
                                                  nnx.MaxPooling1D(3, strides=2, padding="same")]),
}


def _pooled_model(name, middle=False):
    shape, make = POOLED[name]
    before = [nnx.Conv2D(2, 1, activation="tanh") if len(shape) == 3 else nnx.Conv1D(2, 1, activation="tanh")]
    model = nnx.Sequential([nnx.Input(shape), *(before if middle else []), *make(), nnx.Flatten(), nnx.Dense(2)])
    model.compile("sgd", "mse")
    return model, shape


@pytest.mark.parametrize("name", list(POOLED), ids=list(POOLED))
def test_conv_and_max_pooling_run_as_one_and_match_the_layers_one_by_one(backend, name):
    """``act(max(z) + b)`` (the model's pair) equals ``max(act(z + b))`` (each layer on its own),
    and so do the gradients of the weights and of the input."""
    model, shape = _pooled_model(name, middle=True)
    assert model._pooled == {1}
    rng = np.random.default_rng(11)
    x = nnx.asarray(rng.normal(size=(4, *shape)).astype("float32"))
    y, saved = model.forward(x, training=True)
    h, chain = x, []
    for layer in model.layers:  # the layers one by one: bias and activation before the pooling
        h, s = layer.forward(h, training=True)
        chain.append(s)
    np.testing.assert_allclose(nnx.to_numpy(y), nnx.to_numpy(h), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nnx.to_numpy(model.predict(x, verbose=0)), nnx.to_numpy(h), rtol=1e-5, atol=1e-6)
    dy = nnx.asarray(rng.normal(size=tuple(y.shape)).astype("float32"))
    dx, grads = model.backward(saved, dy)
    d, want = dy, {}
    for layer, s in zip(reversed(model.layers), reversed(chain)):
        d, g = layer.backward(s, d, True)
        want.update(g)
    np.testing.assert_allclose(nnx.to_numpy(dx), nnx.to_numpy(d), rtol=1e-4, atol=1e-5)
    assert set(grads) == set(want) == set(model.trainable_weights)
    for w in want:
        np.testing.assert_allclose(nnx.to_numpy(grads[w]), nnx.to_numpy(want[w]), rtol=1e-4, atol=1e-5, err_msg=w.path)


@pytest.mark.parametrize("name", list(POOLED), ids=list(POOLED))
def test_conv_and_max_pooling_as_one_gradients(backend64, name):
    for middle in (False, True):  # first (no input gradient) and after another convolution
        if not middle and name.startswith(("activation", "relu")):
            continue  # a pair without weights: only its input gradient, checked after a convolution
        model, shape = _pooled_model(name, middle)
        assert model._pooled == {int(middle)}
        rng = np.random.default_rng(12)
        _fd_check(model, rng.normal(size=(3, *shape)), rng.normal(size=(3, 2)))


def test_only_a_relu_or_linear_convolution_runs_with_the_max_pooling_after_it(backend):
    def pooled(*layers, shape=(6, 6, 2)):
        model = nnx.Sequential([nnx.Input(shape), *layers, nnx.Flatten(), nnx.Dense(2)])
        return model._pooled

    assert pooled(nnx.Conv2D(2, 3, activation="relu"), nnx.MaxPooling2D()) == {0}
    assert pooled(nnx.Conv2D(2, 3), nnx.MaxPooling2D()) == {0}
    assert pooled(nnx.Conv2D(2, 3, activation="swish"), nnx.MaxPooling2D()) == set()  # max(swish(z)) != swish(max z)
    assert pooled(nnx.Conv2D(2, 3, activation="relu"), nnx.AveragePooling2D()) == set()
    assert pooled(nnx.Conv2D(2, 3, activation="relu"), nnx.Dropout(0.5), nnx.MaxPooling2D()) == set()
    assert pooled(nnx.Conv2D(2, 1, activation="relu"), nnx.MaxPooling2D(), nnx.Conv2D(2, 1), nnx.MaxPooling2D()) == {0, 2}
    assert pooled(nnx.Conv2D(2, 1), nnx.layers.BatchNormalization(), nnx.Activation("relu"), nnx.MaxPooling2D()) == {2}
    assert pooled(nnx.Activation("tanh"), nnx.MaxPooling2D()) == set()
    assert pooled(nnx.layers.LeakyReLU(), nnx.MaxPooling2D()) == set()
    # a non-monotone activation gives different values when pooled first: the model keeps the layers' order
    model = nnx.Sequential([nnx.Input((6, 6, 2)), nnx.Conv2D(3, 3, activation="swish"), nnx.MaxPooling2D()])
    x = np.random.default_rng(13).normal(size=(2, 6, 6, 2)).astype("float32")
    conv, pool = model.layers
    h = pool.forward(conv.forward(nnx.asarray(x))[0])[0]
    np.testing.assert_allclose(nnx.to_numpy(model.predict(x, verbose=0)), nnx.to_numpy(h), rtol=1e-6)


@pytest.mark.parametrize("channels", [1, 6], ids=["tap-major", "strided-view"])
@pytest.mark.parametrize("window, strides, dilation, pool", [((3, 3), (1, 1), (1, 1), (2, 2)),
                                                             ((2, 3), (2, 1), (1, 1), (2, 3)),
                                                             ((3, 2), (1, 1), (2, 1), (3, 2)),
                                                             ((1, 1), (1, 1), (1, 1), (1, 2))])
def test_numpy_convolution_with_max_pooling_matches_the_portable_code(backend, window, strides, dilation, pool,
                                                                      channels):
    """The NumPy kernel computes only the window-covered outputs, blocked by window position; the
    portable code convolves, then pools. Integer inputs make ties, where the first maximum wins."""
    from nnx.backends.numpy_conv import _PooledConv

    fast, portable = _numpy_ops()
    rng = np.random.default_rng(10)
    x = rng.integers(-1, 2, size=(3, 11, 10, channels)).astype("float32")
    kernel = rng.integers(-1, 2, size=(*window, channels, 4)).astype("float32")
    pads = ((1, 0), (0, 1))
    p, saved = fast.conv2d_max_pool(x, kernel, strides, dilation, pads, pool)
    p0, saved0 = portable.conv2d_max_pool(x, kernel, strides, dilation, pads, pool)
    assert isinstance(saved, _PooledConv)  # the declared fast path is taken
    np.testing.assert_array_equal(p, p0)
    dp = rng.normal(size=p.shape).astype("float32")
    for need_dx in (True, False):
        got = fast.conv2d_max_pool_backward(saved, dp, kernel, strides, dilation, pads, pool, need_dx=need_dx)
        want = portable.conv2d_max_pool_backward(saved0, dp, kernel, strides, dilation, pads, pool, need_dx=need_dx)
        for a, b in zip(got, want):
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_pairs_follow_a_changed_activation_and_the_layer_list_is_a_copy(backend):
    """``model.layers`` is a new list at each access, as Keras's: changing it changes nothing.
    A layer's ``activation`` is a plain attribute: changed in place, the next forward pass runs
    what the layers say now."""
    rng = np.random.default_rng(14)
    x = rng.normal(3.0, 2.0, size=(8, 8, 8, 2)).astype("float32")

    def one_by_one(model):
        h = nnx.asarray(x)
        for layer in model.layers:
            h = layer.forward(h)[0]
        return nnx.to_numpy(h)

    model = nnx.Sequential([nnx.Input((8, 8, 2)), nnx.Conv2D(3, 3, activation="relu", bias_initializer="random_normal"),
                            nnx.MaxPooling2D(2), nnx.Flatten(), nnx.Dense(2)])
    before = nnx.to_numpy(model.predict(x, verbose=0))
    assert model._pooled == {0}
    layers = model.layers
    layers[1] = nnx.AveragePooling2D(2)
    layers.append(nnx.Dense(3))
    assert model.layers is not layers and len(model.layers) == 4
    assert isinstance(model.layers[1], nnx.MaxPooling2D)
    np.testing.assert_array_equal(nnx.to_numpy(model.predict(x, verbose=0)), before)
    model.layers[0].activation = nnx.activations.get("swish")  # max no longer commutes with it
    np.testing.assert_allclose(nnx.to_numpy(model.predict(x, verbose=0)), one_by_one(model), rtol=1e-5, atol=1e-5)
    assert model._pooled == set()
    model.layers[0].activation = nnx.activations.get("relu")
    model.predict(x, verbose=0)
    assert model._pooled == set()  # not paired again until the layers change (add, pop): still exact
    np.testing.assert_allclose(nnx.to_numpy(model.predict(x, verbose=0)), before, rtol=1e-6)

    class Pool(nnx.MaxPooling2D):  # a user's pooling with its own forward: not replaced by the pair
        def forward(self, x, training=False):
            y, saved = super().forward(x, training)
            return y * 2.0, saved

    mine = nnx.Sequential([nnx.Input((8, 8, 2)), nnx.Conv2D(3, 3, activation="relu"), Pool(2)])
    assert mine._pooled == set()
    np.testing.assert_allclose(nnx.to_numpy(mine.predict(x, verbose=0)), one_by_one(mine), rtol=1e-6)


def test_random_pairs_match_the_layers_one_by_one(backend):
    """Drawn convolution + max pooling configurations (rank, kernel, strides, dilation, padding
    on both, bias, activation, batch size, integer inputs that tie), the pair against the
    layers one by one: outputs, weight gradients and the input gradient."""
    rng = np.random.default_rng(15)
    checked = 0
    for _ in range(12):
        rank = int(rng.integers(1, 3))
        spatial = tuple(int(v) for v in rng.integers(5, 10, size=rank))
        channels = int(rng.integers(1, 7))
        kernel = tuple(int(v) for v in rng.integers(1, 4, size=rank))
        strided = rng.random() < 0.3
        conv_kwargs = dict(filters=int(rng.integers(1, 5)), kernel_size=kernel,
                           strides=tuple(int(v) for v in rng.integers(1, 3, size=rank)) if strided else 1,
                           dilation_rate=1 if strided else tuple(int(v) for v in rng.integers(1, 3, size=rank)),
                           padding=str(rng.choice(["valid", "same"])), use_bias=bool(rng.random() < 0.8),
                           activation=str(rng.choice(["relu", "linear"])), bias_initializer="random_normal")
        pool_size = tuple(int(v) for v in rng.integers(1, 4, size=rank))
        tiles = rng.random() < 0.6
        pool_kwargs = dict(pool_size=pool_size, strides=None if tiles else tuple(int(v) for v in rng.integers(1, 3, size=rank)),
                           padding="valid" if tiles else str(rng.choice(["valid", "same"])))
        conv = (nnx.Conv2D if rank == 2 else nnx.Conv1D)(**conv_kwargs)
        pool = (nnx.MaxPooling2D if rank == 2 else nnx.MaxPooling1D)(**pool_kwargs)
        try:
            model = nnx.Sequential([nnx.Input((*spatial, channels)), conv, pool])
        except ValueError:  # a pooling window larger than the convolution's output
            continue
        checked += 1
        assert model._pooled == {0}
        n = int(rng.integers(1, 4))
        x = nnx.asarray(rng.integers(-2, 3, size=(n, *spatial, channels)).astype("float32"))
        y, saved = model.forward(x, training=True)
        h, s_conv = conv.forward(x, training=True)
        want, s_pool = pool.forward(h, training=True)
        np.testing.assert_allclose(nnx.to_numpy(y), nnx.to_numpy(want), rtol=1e-6, atol=1e-6, err_msg=str(conv_kwargs))
        dy = nnx.asarray(rng.normal(size=tuple(y.shape)).astype("float32"))
        dx, grads = model.backward(saved, dy)
        d = pool.backward(s_pool, dy, True)[0]
        d, want_grads = conv.backward(s_conv, d, True)
        np.testing.assert_allclose(nnx.to_numpy(dx), nnx.to_numpy(d), rtol=1e-5, atol=1e-5, err_msg=str(conv_kwargs))
        for w, g in want_grads.items():
            np.testing.assert_allclose(nnx.to_numpy(grads[w]), nnx.to_numpy(g), rtol=1e-5, atol=1e-4,
                                       err_msg=f"{w.path} {conv_kwargs} {pool_kwargs}")
    assert checked >= 8
