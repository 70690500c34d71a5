"""The Keras conventions a Keras user's script relies on (API.md), one test each."""
from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest

import nnx


def _data(n=40, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    return x, (x[:, 0] > 0).astype("int64") + (x[:, 1] > 1).astype("int64")


def _compiled(**dense_kwargs):
    model = nnx.Sequential([nnx.Dense(8, activation="relu", **dense_kwargs), nnx.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("kwargs", [{"input_shape": (5,)}, {"input_dim": 5}, {"input_dim": np.int64(5)}])
def test_first_layer_input_shape_or_dim_builds_like_an_input(backend, kwargs):
    nnx.seed(3)
    model = _compiled(**kwargs)
    nnx.seed(3)
    reference = nnx.Sequential([nnx.Input(5), nnx.Dense(8, activation="relu"), nnx.Dense(3, activation="softmax")])
    assert model.built and model.input_shape == (5,)
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_batch_size_none_is_32_and_a_single_callback_is_accepted(backend):
    x, y = _data(n=70)

    class Count(nnx.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.batches = 0

        def on_train_batch_end(self, batch, logs=None):
            self.batches += 1

    count = Count()
    _compiled(input_dim=5).fit(x, y, batch_size=None, epochs=1, callbacks=count, verbose=0)
    assert count.batches == 3  # ceil(70 / 32)


def test_metrics_as_a_bare_string_is_refused_and_nothing_changes(backend):
    model = _compiled(input_dim=5)
    optimizer = model.optimizer
    with pytest.raises(ValueError, match="must be a list"):
        model.compile("sgd", "mse", metrics="accuracy")
    assert model.optimizer is optimizer and model.loss.name == "sparse_categorical_crossentropy"


def test_keras_class_names_and_regularizer_functions(backend):
    init = nnx.initializers.get("GlorotUniform")
    assert type(init) is nnx.initializers.GlorotUniform and type(init).__name__ == "GlorotUniform"
    assert init.get_config() == "glorot_uniform" and nnx.initializers.get("glorot_uniform").name == "glorot_uniform"
    assert isinstance(nnx.losses.get("SparseCategoricalCrossentropy"), nnx.losses.SparseCategoricalCrossentropy)
    assert isinstance(nnx.optimizers.get("Adam"), nnx.optimizers.Adam)
    w = np.array([[1.0, -2.0], [0.5, 0.0]])
    xp = nnx.get_backend().xp
    wd = nnx.asarray(w, dtype="float32")
    assert float(nnx.regularizers.l1(0.01)(xp, wd)) == pytest.approx(0.035)
    assert float(nnx.regularizers.l2(0.01)(xp, wd)) == pytest.approx(0.0525)
    assert float(nnx.regularizers.l1_l2(l1=0.01, l2=0.01)(xp, wd)) == pytest.approx(0.0875)


def test_metrics_names_predict_on_batch_and_test_on_batch(backend):
    x, y = _data()
    model = _compiled(input_dim=5)
    model.fit(x, y, epochs=1, verbose=0)
    assert model.metrics_names == ["loss", "accuracy"]
    np.testing.assert_allclose(nnx.to_numpy(model.predict_on_batch(x[:7])), nnx.to_numpy(model.predict(x[:7])),
                               rtol=1e-6)
    loss, acc = model.test_on_batch(x[:7], y[:7])
    expected = model.evaluate(x[:7], y[:7], batch_size=7)
    assert loss == pytest.approx(expected[0], rel=1e-6) and acc == pytest.approx(expected[1])


def test_get_layer_by_name_and_index(backend):
    model = _compiled(input_dim=5)
    assert model.get_layer(index=0) is model.layers[0]
    assert model.get_layer(index=-1) is model.layers[-1]
    assert model.get_layer(name=model.layers[1].name) is model.layers[1]
    with pytest.raises(ValueError):
        model.get_layer(index=5)
    with pytest.raises(ValueError):
        model.get_layer()


def test_to_json_and_model_from_json_rebuild_the_architecture(backend):
    model = _compiled(input_dim=5)
    text = model.to_json()
    assert json.loads(text)["class_name"] == "Sequential"
    clone = nnx.models.model_from_json(text)
    assert [type(l) for l in clone.layers] == [type(l) for l in model.layers]
    assert clone.count_params() == model.count_params()


def test_deepcopy_and_pickle_carry_weights_and_optimizer_state(backend, tmp_path):
    x, y = _data()
    model = _compiled(input_dim=5)
    model.fit(x, y, epochs=2, verbose=0)
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert twin is not model
        np.testing.assert_array_equal(nnx.to_numpy(twin.predict(x)), nnx.to_numpy(model.predict(x)))
        assert twin.optimizer.iterations == model.optimizer.iterations
        twin.fit(x, y, epochs=1, verbose=0, shuffle=False)
    before = model.get_weights()
    copy.deepcopy(model).fit(x, y, epochs=1, verbose=0)
    for a, b in zip(model.get_weights(), before):  # the copy trains alone
        np.testing.assert_array_equal(a, b)
    path = tmp_path / "m.nnx"
    model.save(path)
    assert nnx.models.load_model(path).count_params() == model.count_params()


def test_deepcopy_and_pickle_of_a_compiled_model_not_built_yet_keep_its_compile_settings(backend):
    """A model with no Input is built by its first fit; copied before that, it stays compiled."""
    model = nnx.Sequential([nnx.Dense(4, activation="relu"), nnx.Dense(3, activation="softmax")])
    model.compile(nnx.optimizers.Adam(learning_rate=0.02), "sparse_categorical_crossentropy", metrics=["acc", "AUC"])
    assert not model.built
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert not twin.built and twin.compiled
        assert type(twin.optimizer) is nnx.optimizers.Adam and twin.optimizer.learning_rate == 0.02
        assert type(twin.loss) is type(model.loss) and twin.metrics_names == ["loss", "acc", "AUC"]
        x = np.random.default_rng(0).normal(size=(8, 5))
        assert list(twin.fit(x, np.arange(8) % 3, verbose=0).history) == ["loss", "acc", "AUC"]


def test_a_sequential_inside_a_sequential_trains_and_matches_the_flat_model(backend):
    x, y = _data()
    nnx.seed(1)
    inner = nnx.Sequential([nnx.Dense(8, activation="relu")])
    outer = nnx.Sequential([nnx.Input(5), inner, nnx.Dense(3, activation="softmax")])
    nnx.seed(1)
    flat = nnx.Sequential([nnx.Input(5), nnx.Dense(8, activation="relu"), nnx.Dense(3, activation="softmax")])
    for m in (outer, flat):
        m.compile(nnx.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
        m.fit(x, y, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(outer.get_weights(), flat.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    inner.trainable = False
    frozen = inner.get_weights()
    outer.fit(x, y, epochs=1, verbose=0)
    for a, b in zip(inner.get_weights(), frozen):
        np.testing.assert_array_equal(a, b)


def test_a_bare_layer_pickles_and_count_params_needs_a_built_layer(backend):
    """A layer on its own pickles (its preset initializers are found by their class names), and
    ``count_params`` on an unbuilt layer or model raises as Keras does instead of giving 0."""
    import pickle

    layer = pickle.loads(pickle.dumps(nnx.Dense(3, kernel_initializer="he_normal")))
    assert type(layer.kernel_initializer) is nnx.initializers.HeNormal
    model = nnx.Sequential([nnx.Input(4), layer])
    assert layer.count_params() == 15 and model.count_params() == 15
    with pytest.raises(ValueError, match="not built"):
        nnx.Dense(3).count_params()
    with pytest.raises(ValueError, match="not built"):
        nnx.Sequential([nnx.Dense(3)]).count_params()
    lines = []
    nnx.Sequential([nnx.Dense(3)]).summary(print_fn=lines.append)  # the summary still prints, as Keras's
    assert "0 (unbuilt)" in lines[0] and "Total params: 0" in lines[0]


def test_categorical_crossentropy_on_one_output_unit_warns_as_keras(backend):
    """One output unit: every row normalises to 1 and the loss is 0 whatever the prediction;
    Keras warns, and so does nnx, naming binary_crossentropy."""
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    y = np.array([0, 1] * 4, dtype="float32")
    model = nnx.Sequential([nnx.Input(3), nnx.Dense(1, activation="sigmoid")])
    model.compile("sgd", "categorical_crossentropy")
    with pytest.warns(UserWarning, match="num_classes > 1.*binary_crossentropy"):
        history = model.fit(x, y, epochs=1, verbose=0)
    assert history.history["loss"][0] == pytest.approx(0.0, abs=1e-6)
    model = nnx.Sequential([nnx.Input(3), nnx.Dense(1, activation="sigmoid")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"1 output unit; .*need binary_crossentropy"):
        model.fit(x, y.astype("int64"), epochs=1, verbose=0)


def test_unknown_layer_arguments_name_the_layer_and_the_keras_way():
    with pytest.raises(TypeError, match=r"^Conv2D got unexpected keyword argument 'groups': grouped convolutions"):
        nnx.Conv2D(3, 3, groups=2)
    with pytest.raises(TypeError, match=r"^LeakyReLU got unexpected keyword argument 'alpha': .*negative_slope"):
        nnx.LeakyReLU(alpha=0.2)
    with pytest.raises(TypeError, match=r"^Dense got unexpected keyword arguments 'bar', 'foo'\.$"):
        nnx.Dense(3, foo=1, bar=2)
