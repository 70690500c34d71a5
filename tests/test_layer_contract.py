"""A layer of one's own that breaks the layer contract (README, "Writing a layer") is refused with
an error naming the layer and what was expected, before any weight changes; and a class of one's
own, registered with ``nnx.register``, loads back."""
from __future__ import annotations

import collections
import itertools

import numpy as np
import pytest

import nnx


class _Scale(nnx.layers.Layer):
    def build(self, input_shape):
        super().build(input_shape)
        self.alpha = self.add_weight("alpha", (input_shape[-1],), "ones")

    def forward(self, x, training=False):
        return x * self.alpha.value, x

    def backward(self, x, dy, need_dx=True):
        return (dy * self.alpha.value if need_dx else None), {self.alpha: self.xp.sum(dy * x, axis=0)}


class _NoSaved(_Scale):  # forward returns the output alone
    def forward(self, x, training=False):
        return x * self.alpha.value


class _BackwardArray(_Scale):  # backward returns dx alone
    def backward(self, x, dy, need_dx=True):
        return dy * self.alpha.value


class _MissingGradient(_Scale):
    def backward(self, x, dy, need_dx=True):
        return dy * self.alpha.value, {}


class _WrongWeight(_Scale):  # the gradient keyed by the frozen weight instead of the trainable one
    def build(self, input_shape):
        super().build(input_shape)
        self.beta = self.add_weight("beta", (input_shape[-1],), "zeros", trainable=False)

    def backward(self, x, dy, need_dx=True):
        return dy * self.alpha.value, {self.beta: self.xp.sum(dy * x, axis=0)}


class _WrongShape(_Scale):
    def backward(self, x, dy, need_dx=True):
        return dy * self.alpha.value, {self.alpha: self.xp.sum(dy * x, axis=0)[:2]}


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(6, 3)).astype("float32"), rng.normal(size=(6, 1)).astype("float32")


def _model(layer):
    model = nnx.Sequential([nnx.Input((3,)), layer, nnx.Dense(1)])
    model.compile(nnx.optimizers.SGD(0.1), "mse")
    return model


@pytest.mark.parametrize("cls,error,match", [
    (_NoSaved, TypeError, r"forward must return the pair \(y, saved\); received an array of shape \(3, 3\)"),
    (_BackwardArray, TypeError, r"backward must return the pair \(dx, grads\)"),
    (_MissingGradient, ValueError, r"no gradient for its trainable weight '.*/alpha'"),
    (_WrongWeight, ValueError, r"no gradient for its trainable weight '.*/alpha'"),
    (_WrongShape, ValueError, r"has shape \(2,\); expected the weight's shape \(3,\)"),
])
def test_a_broken_layer_is_refused_before_any_weight_changes(backend, cls, error, match):
    x, y = _data()
    model = _model(cls())
    before = model.get_weights()
    with pytest.raises(error, match=match):
        model.fit(x, y, batch_size=3, epochs=1, verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.optimizer.iterations == 0


def test_a_forward_without_its_context_is_refused_in_inference(backend):
    """Inference too: the model used to take the output's first row as the batch's output."""
    x, _ = _data()
    with pytest.raises(TypeError, match=r"Layer '.*' \(_NoSaved\): forward must return the pair"):
        _model(_NoSaved()).predict(x, verbose=0)


def test_the_contract_layer_trains(backend):
    """The well-formed layer of the same shape trains: the checks refuse only broken layers."""
    x, y = _data()
    model = _model(_Scale())
    history = model.fit(x, y, batch_size=3, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


_FRESH = itertools.count()


def _square(name: str) -> type:
    """An activation class of one's own, x^2, under a name no other test registers."""
    return type(name, (nnx.activations.ActivationFunction,), {
        "name": name.lower(), "saves": "x",
        "forward": lambda self, xp, x: x * x,
        "backward": lambda self, xp, dy, x: 2.0 * x * dy})


def test_registered_activation_and_layer_load_back(backend, tmp_path):
    x, y = _data()
    tag = next(_FRESH)  # a name no earlier run registered
    square, scale = _square(f"Square{tag}"), type(f"Scale{tag}", (_Scale,), {})
    model = nnx.Sequential([nnx.Input((3,)), nnx.Dense(4, activation=square()), scale(), nnx.Dense(1)])
    model.compile("sgd", "mse")
    model.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "custom.nnx")
    model.save(path)
    with pytest.raises(ValueError, match=r"Unknown .*must be registered before loading: decorate it with @nnx.register"):
        nnx.load_model(path)
    assert nnx.register(square) is square and nnx.register(scale) is scale
    loaded = nnx.load_model(path)
    np.testing.assert_allclose(nnx.to_numpy(loaded.predict(x, verbose=0)), nnx.to_numpy(model.predict(x, verbose=0)),
                               rtol=1e-6, atol=1e-6)


def test_register_refuses_other_classes():
    with pytest.raises(TypeError, match="register expects a subclass of one of .*Layer"):
        nnx.register(dict)


def test_register_leaves_built_in_names_alone(backend):
    """A subclass of a built-in inherits its ``name`` but is registered under its own names only;
    a class that would take a built-in name is refused, and nothing is registered."""
    relu_child = type(f"LoggingReLU{next(_FRESH)}", (nnx.activations.ReLU,), {})
    nnx.register(relu_child)
    assert type(nnx.activations.get("relu")) is nnx.activations.ReLU
    assert type(nnx.activations.get(relu_child.__name__)) is relu_child
    model = nnx.Sequential([nnx.Input((3,)), nnx.Dense(2, activation="relu")])
    assert type(model.layers[0].activation) is nnx.activations.ReLU
    impostor = type("Adam", (nnx.optimizers.Optimizer,), {"name": "my_adam"})
    with pytest.raises(ValueError, match="the optimizer name 'Adam' belongs to nnx's Adam"):
        nnx.register(impostor)
    assert nnx.optimizers.registry.lookup("my_adam") is None
    assert type(nnx.optimizers.get("adam")) is nnx.optimizers.Adam
    with pytest.raises(ValueError) as info:
        nnx.activations.get("nope")
    listed = str(info.value).split("expected one of: ")[1].split(" (")[0].split(", ")
    assert len(listed) == len(set(listed))  # each name once


_Pair = collections.namedtuple("_Pair", "y saved")


class _NamedPair(_Scale):  # a namedtuple and a list are pairs too
    def forward(self, x, training=False):
        return _Pair(x * self.alpha.value, x)

    def backward(self, x, dy, need_dx=True):
        return [dy * self.alpha.value, {self.alpha: self.xp.sum(dy * x, axis=0)}]



def test_pairs_as_a_namedtuple_or_a_list_train_as_tuples(backend):
    x, y = _data()
    results = []
    for cls in (_Scale, _NamedPair):
        nnx.seed(3)
        model = _model(cls())
        model.fit(x, y, batch_size=3, epochs=2, verbose=0, shuffle=False)
        results.append(model.get_weights())
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_keras_argument_hints_only_where_they_belong():
    with pytest.raises(TypeError, match=r"^Dense got unexpected keyword argument 'alpha'\.$"):
        nnx.Dense(3, alpha=0.1)
    with pytest.raises(TypeError, match=r"^Dense got unexpected keyword argument 'groups'\.$"):
        nnx.Dense(3, groups=2)
    with pytest.raises(TypeError, match=r"^Dense got unexpected keyword argument 'kernel_constraint': weight constraints"):
        nnx.Dense(3, kernel_constraint="max_norm")
