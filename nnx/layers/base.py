"""The Layer base class and weight records.

The layer contract (what ``Sequential`` relies on):

- ``build(input_shape)`` creates weights with ``add_weight`` (batch axis excluded).
- ``forward(x, training) -> (y, saved)``: the output and whatever backward will need. The model
  keeps ``saved`` (only while training) and hands exactly it back; a layer stores nothing itself.
- ``backward(saved, dy, need_dx) -> (dx, grads)``: ``grads`` maps each trainable weight record of
  the layer to its gradient; ``dx`` is the input gradient, or None when ``need_dx`` is false (the
  model asks for none below the first layer that needs one). ``dy`` is read-only.
- ``update_state(saved)``: non-trainable state (moving statistics) updated after the optimizer
  step, outside the gradient. Most layers have none.
"""
from __future__ import annotations

import itertools
import math
import numbers
from collections import defaultdict
from typing import Any

from .. import backend as _backend
from ..data import host_copy

_name_counters: defaultdict[str, itertools.count] = defaultdict(itertools.count)


def _snake(name: str) -> str:
    out = [name[0].lower()]
    for prev, ch in zip(name, name[1:]):
        out.append(f"_{ch.lower()}" if ch.isupper() and prev.islower() else ch.lower())
    return "".join(out)


def unique_name(prefix: str) -> str:
    """A layer name not handed out before in this process: ``prefix``, then ``prefix_1``, …

    Args:
        prefix: the base name, e.g. ``"dense"``.

    Returns:
        ``prefix`` the first time, ``f"{prefix}_{n}"`` the n-th time after.

    >>> unique_name("dense"), unique_name("dense")   # ('dense', 'dense_1') in a fresh process
    """
    n = next(_name_counters[prefix])
    return prefix if n == 0 else f"{prefix}_{n}"


def as_int(value: Any, what: str, minimum: int = 1) -> int:
    """``value`` as a Python int: any integer type (``numpy.int64`` too), not a bool.

    Args:
        value: the value to check.
        what: how the error message names it, e.g. ``"batch_size"``.
        minimum: the least value accepted. Defaults to 1.

    Returns:
        ``int(value)``.

    Raises:
        ValueError: a bool, a non-integer or a value below ``minimum``.

    >>> as_int(np.int64(32), "batch_size")   # 32
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}; received {value!r}.")
    return int(value)


def shape_tuple(shape: Any, what: str = "Input shape") -> tuple[int, ...]:
    """A sample shape (batch axis excluded) as a tuple of positive ints.

    Args:
        shape: an int or an iterable of ints of any integer type.
        what: how the error message names it. Defaults to ``"Input shape"``.

    Returns:
        A tuple of Python ints, each at least 1.

    Raises:
        ValueError: an empty shape, a non-integer or a dimension below 1.

    >>> shape_tuple(64), shape_tuple([8, 8])   # ((64,), (8, 8))
    """
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise ValueError(f"{what} must be an int or a tuple of positive ints; received {shape!r}.") from None
    if not dims or any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or int(d) <= 0 for d in dims):
        raise ValueError(f"{what} must be positive ints (without the batch axis); received {shape!r}.")
    return tuple(int(d) for d in dims)


# Keras arguments nnx does not take: (the layer classes they belong to, None: any; what to do instead)
_KERAS_ONLY = {
    "alpha": (("LeakyReLU",), "LeakyReLU's slope is negative_slope (its Keras 3 name)"),
    "groups": (("Conv1D", "Conv2D"), "grouped convolutions are not supported"),
    "activity_regularizer": (None, "activity regularizers are not supported (kernel_regularizer and bias_regularizer "
                                   "are)"),
    "kernel_constraint": (None, "weight constraints are not supported"),
    "bias_constraint": (None, "weight constraints are not supported"),
}


def _unknown_arguments(cls_name: str, unknown: dict) -> str:
    names = ", ".join(map(repr, sorted(unknown)))
    hints = "; ".join(dict.fromkeys(hint for k in sorted(unknown) if k in _KERAS_ONLY
                                    for owners, hint in [_KERAS_ONLY[k]] if owners is None or cls_name in owners))
    return f"{cls_name} got unexpected keyword argument{'s' * (len(unknown) > 1)} {names}" + \
        (f": {hints}." if hints else ".")


class Weight:
    """A weight record: its name, its array (``value``), whether the optimizer trains it, and an
    optional regularizer. Gradients and optimizer slots are keyed by the record itself. Layers make
    them with ``Layer.add_weight``.

    Args:
        name: the weight's name within its layer, e.g. ``"kernel"``.
        value: the array, of the layer's backend.
        trainable: whether the optimizer updates it. Defaults to True.
        regularizer: an ``nnx.regularizers.Regularizer`` whose penalty is added to the loss, or
            None (the default).
        layer: the layer that owns it (for ``path``), or None.

    >>> w = layer.kernel; w.name, w.shape, w.trainable; w.numpy()
    """

    __slots__ = ("name", "value", "trainable", "regularizer", "layer", "__weakref__")

    def __init__(self, name: str, value: Any, trainable: bool = True, regularizer: Any = None, layer: Any = None):
        self.name = name
        self.value = value
        self.trainable = trainable
        self.regularizer = regularizer
        self.layer = layer

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape, as a tuple of Python ints."""
        return tuple(int(d) for d in self.value.shape)

    @property
    def dtype(self) -> Any:
        """The array's dtype (an object of the backend's namespace)."""
        return self.value.dtype

    @property
    def path(self) -> str:
        """``"layer_name/weight_name"`` (the weight's name alone without a layer)."""
        return f"{self.layer.name}/{self.name}" if self.layer is not None else self.name

    def numpy(self) -> Any:
        """The value as a host numpy array (a copy).

        Returns:
            A ``numpy.ndarray``.

        >>> model.layers[0].kernel.numpy()
        """
        return host_copy(self.value)

    def __repr__(self) -> str:
        return f"<Weight {self.path} shape={self.shape} trainable={self.trainable}>"


class Layer:
    """Base class of every layer. Subclass it with ``build``, ``forward`` and ``backward``::

        class Scale(nnx.layers.Layer):
            def build(self, input_shape):
                super().build(input_shape)
                self.alpha = self.add_weight("alpha", (1,), "ones")
            def forward(self, x, training=False):
                return x * self.alpha.value, x            # output, and what backward needs
            def backward(self, x, dy, need_dx=True):
                xp = self.xp
                return dy * self.alpha.value, {self.alpha: xp.reshape(xp.sum(dy * x), (1,))}

    Args (keyword arguments every layer takes):
        name: the layer's name. Defaults to a unique name from the class name (``dense``,
            ``dense_1``, …).
        trainable: whether ``fit`` updates the layer's weights. Defaults to True.
        input_shape: for the first layer of a ``Sequential``: the shape of one sample (batch axis
            excluded), as a leading ``Input`` would give it (Keras 2 style). Defaults to None.
        input_dim: for the first layer: the width of a 1-D sample, the same as
            ``input_shape=(input_dim,)``. Defaults to None.
        dtype: the float type name of the layer's weights. Defaults to ``nnx.floatx()`` when the
            layer is built.

    Raises:
        ValueError: an ``input_shape`` or ``input_dim`` that is not positive ints.

    >>> model = nnx.Sequential([nnx.Input(4), Scale(), nnx.Dense(1)])
    """

    #: whether ``backward`` may return a kernel gradient from ``ops.weight_gradient`` as an
    #: ``nnx.ops.DeferredMatmul`` when the model lets it (``fit``'s step, on a backend whose update
    #: consumes one). A subclass whose ``backward`` or ``backward_from_logits`` comes from a class
    #: other than the one that set it True (its own body, a mixin) gets False unless its own class
    #: body says otherwise: that code may work on the gradients it returns.
    defers_gradients = False
    _deferring_backward: tuple | None = None  # set for each class that defers (see ``__init_subclass__``)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.defers_gradients:
            return
        if "defers_gradients" not in cls.__dict__:
            owner = next(c for c in cls.__mro__ if "defers_gradients" in c.__dict__)
            for name in ("backward", "backward_from_logits"):
                where = next(c for c in cls.__mro__ if name in c.__dict__)  # the class whose method runs
                if not issubclass(owner, where):
                    cls.defers_gradients = False
                    return
        # the backward this class defers with: one set on the class later is not trusted
        cls._deferring_backward = (cls.backward, getattr(cls, "backward_from_logits", None))

    def _backward_unchanged(self) -> bool:
        """Whether this layer's backward is still the one its class declared ``defers_gradients``
        with: not replaced on the class, nor set on the instance."""
        cls, own = type(self), self.__dict__
        return ("backward" not in own and "backward_from_logits" not in own and "backward_pooled" not in own
                and (cls.backward, getattr(cls, "backward_from_logits", None)) == cls._deferring_backward)

    def __init__(self, name: str | None = None, trainable: bool = True, input_shape: Any = None,
                 input_dim: Any = None, dtype: str | None = None, **unknown: Any):
        if unknown:
            raise TypeError(_unknown_arguments(type(self).__name__, unknown))
        if name is not None and not isinstance(name, str):
            raise TypeError(f"A layer's name must be a str; received {type(name).__name__} {name!r}.")
        if input_shape is not None and input_dim is not None:
            raise ValueError(f"Give input_shape or input_dim, not both; received input_shape={input_shape!r} and "
                             f"input_dim={input_dim!r}.")
        self.name = name or unique_name(_snake(type(self).__name__))
        self._trainable = bool(trainable)
        self.built = False
        self.input_shape: tuple[int, ...] | None = None  # without the batch axis
        self.backend: _backend.Backend | None = None
        self.dtype = dtype or _backend.floatx()
        self._weights: list[Weight] = []
        self._declared_input_shape = None
        if input_shape is not None:
            self._declared_input_shape = shape_tuple(input_shape, "input_shape")
        elif input_dim is not None:
            self._declared_input_shape = (as_int(input_dim, "input_dim"),)

    # -- lifecycle -------------------------------------------------------------------------
    def build(self, input_shape: tuple[int, ...]) -> None:
        """Create the weights for inputs of ``input_shape`` (batch axis excluded), on the current
        backend in the current floatx. Subclasses call ``super().build(input_shape)`` first, then
        ``add_weight``.

        Args:
            input_shape: the shape of one sample, without the batch axis.

        >>> layer = nnx.Dense(3); layer.build((4,)); layer.kernel.shape   # (4, 3)
        """
        self.input_shape = tuple(input_shape)
        self.backend = _backend.get_backend()
        self.dtype = _backend.floatx()
        self._weights = []
        self.built = True

    def forward(self, x: Any, training: bool = False) -> tuple[Any, Any]:
        """The layer's output for a batch, and what ``backward`` will need.

        Args:
            x: a batch of inputs, an array of the layer's backend (batch axis first).
            training: whether this is a training step (Dropout drops, the model keeps ``saved``
                for ``backward``) or inference. Defaults to False.

        Returns:
            ``(y, saved)``: the output, and anything ``backward`` needs (None for nothing). The
            layer itself stores nothing; the model hands ``saved`` back to ``backward``.

        >>> y, saved = layer.forward(x, training=True)
        """
        raise NotImplementedError

    def backward(self, saved: Any, dy: Any, need_dx: bool = True) -> tuple[Any, dict]:
        """Back-propagate through the layer.

        Args:
            saved: exactly what ``forward`` returned as its second value.
            dy: the gradient of the loss with respect to the layer's output (read-only).
            need_dx: whether the input gradient is wanted; False for the lowest layer the model
                back-propagates to, which may then skip computing it. Defaults to True.

        Returns:
            ``(dx, grads)``: the input gradient (None when ``need_dx`` is false), and a dict from
            each trainable weight record of the layer to its gradient.

        >>> dx, grads = layer.backward(saved, dy)
        """
        raise NotImplementedError

    def update_state(self, saved: Any) -> None:
        """Update non-trainable state (moving statistics) after the optimizer step, outside the
        gradient. The default does nothing.

        Args:
            saved: what ``forward`` returned as its second value in this training step.

        >>> layer.update_state(saved)
        """

    @property
    def output_activation(self) -> Any:
        """The activation applied last, when the layer can back-propagate from its pre-activation
        through ``backward_from_logits`` (a loss may then fuse with it); None otherwise."""
        return None

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one output sample for samples of ``input_shape`` (batch axes excluded).
        The default: the same shape.

        Args:
            input_shape: the shape of one input sample.

        Returns:
            A tuple of ints.

        >>> nnx.Dense(3).compute_output_shape((4,))   # (3,)
        """
        return tuple(input_shape)

    def __call__(self, x: Any, training: bool = False) -> Any:
        """The output for a batch ``x`` of the current backend (builds on first use).

        Args:
            x: a batch of inputs, batch axis first.
            training: run in training mode (see ``forward``). Defaults to False.

        Returns:
            The output array.

        >>> y = nnx.Dense(3)(nnx.asarray(np.ones((2, 4), "float32")))
        """
        if not self.built:
            self.build(tuple(int(d) for d in x.shape[1:]))
        return self.forward(x, training=training)[0]

    @property
    def output_shape(self) -> tuple[int, ...] | None:
        """The shape of one output sample once built (batch axis excluded); None before."""
        return None if self.input_shape is None else self.compute_output_shape(self.input_shape)

    # -- weights ---------------------------------------------------------------------------
    @property
    def xp(self) -> Any:
        """The Array API namespace of the layer's backend."""
        return self.backend.xp

    @property
    def ops(self) -> Any:
        """The operations object of the layer's backend (``nnx.ops.Ops`` or a faster subclass)."""
        return self.backend.ops

    @property
    def trainable(self) -> bool:
        """Whether ``fit`` updates this layer's weights; set it to False to freeze the layer."""
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        self._trainable = bool(value)

    @property
    def weights(self) -> list[Weight]:
        """Every weight record, trainable first in Keras order (e.g. kernel, bias)."""
        return list(self._weights)

    @property
    def trainable_weights(self) -> list[Weight]:
        """The weight records the optimizer updates (none when the layer is frozen)."""
        return [w for w in self._weights if w.trainable] if self._trainable else []

    @property
    def non_trainable_weights(self) -> list[Weight]:
        """The weight records the optimizer leaves alone (all of them when the layer is frozen)."""
        return [w for w in self._weights if not (w.trainable and self.trainable)]

    def add_weight(self, name: str, shape: tuple[int, ...], initializer: Any = "zeros", regularizer: Any = None,
                   trainable: bool = True) -> Weight:
        """Create a weight record: its initial value is drawn on the host (seeded by
        ``nnx.seed``, so identical on every backend) in the layer's dtype, then moved to the
        layer's backend. Call it from ``build``.

        Args:
            name: the weight's name within the layer, e.g. ``"kernel"``.
            shape: its shape, a tuple of ints.
            initializer: an initializer name (``"glorot_uniform"``, ``"zeros"``, …) or instance.
                Defaults to ``"zeros"``.
            regularizer: a regularizer name or instance whose penalty the model adds to the loss,
                or None (the default).
            trainable: whether the optimizer updates it; False for state such as moving
                statistics. Defaults to True.

        Returns:
            The new ``Weight`` (also appended to ``weights``).

        Raises:
            ValueError: an unknown initializer or regularizer name.

        >>> self.alpha = self.add_weight("alpha", (input_shape[-1],), "ones")
        """
        from .. import initializers, regularizers

        host = initializers.get(initializer)(tuple(int(d) for d in shape), self.dtype)
        weight = Weight(name, self.backend.from_host(host_copy(host, self.dtype)), trainable,
                        regularizers.get(regularizer), self)
        self._weights.append(weight)
        return weight

    def get_weights(self) -> list[Any]:
        """The weights as host numpy arrays (copies), in Keras order (e.g. kernel, bias).

        Returns:
            A list of ``numpy.ndarray``.

        >>> kernel, bias = nnx.Dense(3, input_dim=4).get_weights()
        """
        return [w.numpy() for w in self._weights]

    def check_weights(self, weights: list[Any]) -> list[Any]:
        """Host copies of ``weights`` in this layer's dtype, checked, without changing anything.

        Args:
            weights: one array per weight (numpy arrays, nested lists or backend arrays), in
                Keras order.

        Returns:
            A list of ``numpy.ndarray`` in the layer's dtype.

        Raises:
            ValueError: a wrong count, a wrong shape, a non-real dtype, or a value that is NaN or
                inf after the cast (1e39 in float32).

        >>> layer.check_weights(layer.get_weights())
        """
        from ..data import host_weight

        if len(weights) != len(self._weights):
            names = ", ".join(w.name for w in self._weights) or "none"
            raise ValueError(f"Layer {self.name!r} expects {len(self._weights)} weight arrays ({names}), "
                             f"received {len(weights)}.")
        return [host_weight(a, w.shape, self.dtype, f"Layer {self.name!r}: weight {w.name!r}")
                for w, a in zip(self._weights, weights)]

    def set_weights(self, weights: list[Any]) -> None:
        """Replace the weights; all are checked (as ``check_weights``) before any changes.

        Args:
            weights: one array per weight, in Keras order (numpy arrays, nested lists or arrays
                of any backend); cast to the layer's dtype.

        Raises:
            ValueError: a wrong count, shape or dtype, or a non-finite value; nothing changes.

        >>> layer.set_weights([np.eye(4, 3), np.zeros(3)])
        """
        hosts = self.check_weights(list(weights))
        for w, host in zip(self._weights, hosts):
            w.value = self.backend.from_host(host)

    def count_params(self) -> int:
        """The number of scalars in the layer's weights, trainable or not.

        Returns:
            An int.

        Raises:
            ValueError: the layer is not built yet (its weights do not exist), as in Keras.

        >>> nnx.Dense(3, input_dim=4).count_params()   # 15
        """
        if not self.built:
            raise ValueError(f"count_params on layer {self.name!r}, which is not built: its weights do not exist "
                             f"until it knows its input shape (give it input_shape=, put it in a model after an "
                             f"Input, or call build(input_shape)).")
        return sum(math.prod(w.shape) for w in self._weights)

    def regularization_loss(self) -> Any:
        """The sum of this layer's weight penalties.

        Returns:
            A 0-d array of the backend, or the float 0.0 when no weight has a regularizer.

        >>> nnx.Dense(3, input_dim=4, kernel_regularizer="l2").regularization_loss()
        """
        total = 0.0
        for w in self._weights:
            if w.regularizer is not None:
                total = total + w.regularizer(self.xp, w.value)
        return total

    def to_backend(self, backend: _backend.Backend) -> None:
        """Move the weights (through the host) onto ``backend``.

        Args:
            backend: an ``nnx.Backend``, e.g. ``nnx.get_backend()``.

        >>> layer.to_backend(nnx.get_backend())
        """
        for w in self._weights:
            w.value = backend.from_host(_backend.to_numpy(w.value))
        self.backend = backend

    # -- config ----------------------------------------------------------------------------
    def get_config(self) -> dict:
        """The constructor arguments that rebuild this layer (no weights), as JSON-able values.

        Returns:
            A dict; ``type(layer).from_config(config)`` makes an equal, unbuilt layer.

        >>> nnx.Dense(3).get_config()["units"]   # 3
        """
        config = {"name": self.name, "trainable": self.trainable}
        if self._declared_input_shape is not None:
            config["input_shape"] = list(self._declared_input_shape)
        return config

    @classmethod
    def from_config(cls, config: dict) -> "Layer":
        """A new, unbuilt layer from ``get_config()``.

        Args:
            config: what ``get_config`` returned; called on ``Layer`` itself, a dict with
                ``class_name`` and ``config`` (as ``nnx.layers.serialize`` writes).

        Returns:
            The layer.

        Raises:
            ValueError: an unknown class name (on ``Layer``).

        >>> nnx.Dense.from_config(nnx.Dense(3).get_config())
        """
        if cls is Layer:
            from . import deserialize

            return deserialize(config)
        return cls(**config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} built={self.built}>"
