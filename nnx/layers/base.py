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
from collections import defaultdict
from typing import Any

import numpy as np  # host side: weights entering and leaving

from .. import backend as _backend

_name_counters: defaultdict[str, itertools.count] = defaultdict(itertools.count)


def _snake(name: str) -> str:
    out = [name[0].lower()]
    for prev, ch in zip(name, name[1:]):
        out.append(f"_{ch.lower()}" if ch.isupper() and prev.islower() else ch.lower())
    return "".join(out)


def unique_name(prefix: str) -> str:
    n = next(_name_counters[prefix])
    return prefix if n == 0 else f"{prefix}_{n}"


def as_int(value: Any, what: str, minimum: int = 1) -> int:
    """An int of any integer type (``numpy.int64`` too) at least ``minimum``, or ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}; received {value!r}.")
    return int(value)


def shape_tuple(shape: Any, what: str = "Input shape") -> tuple[int, ...]:
    """A sample shape (batch axis excluded) as a tuple of positive ints."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise ValueError(f"{what} must be an int or a tuple of positive ints; received {shape!r}.") from None
    if not dims or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or int(d) <= 0 for d in dims):
        raise ValueError(f"{what} must be positive ints (without the batch axis); received {shape!r}.")
    return tuple(int(d) for d in dims)


class Weight:
    """A weight record: its name, its array (``value``), whether the optimizer trains it, and an
    optional regularizer. Gradients and optimizer slots are keyed by the record itself.

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
        return tuple(int(d) for d in self.value.shape)

    @property
    def dtype(self) -> Any:
        return self.value.dtype

    @property
    def path(self) -> str:
        return f"{self.layer.name}/{self.name}" if self.layer is not None else self.name

    def numpy(self) -> np.ndarray:
        """The value as a host numpy array (a copy)."""
        return np.array(_backend.to_numpy(self.value), copy=True)

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

    Keyword arguments every layer takes: ``name``, ``trainable``, and, for the first layer of a
    ``Sequential``, ``input_shape=(…)`` or ``input_dim=n`` (Keras 2 style).
    """

    def __init__(self, name: str | None = None, trainable: bool = True, input_shape: Any = None,
                 input_dim: Any = None, dtype: str | None = None):
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
        """Create the weights for inputs of ``input_shape`` (batch axis excluded)."""
        self.input_shape = tuple(input_shape)
        self.backend = _backend.get_backend()
        self.dtype = _backend.floatx()
        self._weights = []
        self.built = True

    def forward(self, x: Any, training: bool = False) -> tuple[Any, Any]:
        """``(y, saved)``: the output and what ``backward`` needs (anything; None for nothing)."""
        raise NotImplementedError

    def backward(self, saved: Any, dy: Any, need_dx: bool = True) -> tuple[Any, dict]:
        """``(dx, grads)`` from the ``saved`` of ``forward`` and the output gradient ``dy``."""
        raise NotImplementedError

    def update_state(self, saved: Any) -> None:
        """Update non-trainable state after the optimizer step (default: nothing)."""

    @property
    def output_activation(self) -> Any:
        """The activation applied last, when the layer can back-propagate from its pre-activation
        through ``backward_from_logits`` (a loss may then fuse with it); None otherwise."""
        return None

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape)

    def __call__(self, x: Any, training: bool = False) -> Any:
        """The output for a batch ``x`` of the current backend (builds on first use)."""
        if not self.built:
            self.build(tuple(int(d) for d in x.shape[1:]))
        return self.forward(x, training=training)[0]

    @property
    def output_shape(self) -> tuple[int, ...] | None:
        return None if self.input_shape is None else self.compute_output_shape(self.input_shape)

    # -- weights ---------------------------------------------------------------------------
    @property
    def xp(self) -> Any:
        return self.backend.xp

    @property
    def ops(self) -> Any:
        return self.backend.ops

    @property
    def trainable(self) -> bool:
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
        return [w for w in self._weights if w.trainable] if self._trainable else []

    @property
    def non_trainable_weights(self) -> list[Weight]:
        return [w for w in self._weights if not (w.trainable and self.trainable)]

    def add_weight(self, name: str, shape: tuple[int, ...], initializer: Any = "zeros", regularizer: Any = None,
                   trainable: bool = True) -> Weight:
        """Create a weight record, drawn on the host (seeded) and moved to the backend."""
        from .. import initializers, regularizers

        host = initializers.get(initializer)(tuple(int(d) for d in shape), self.dtype)
        weight = Weight(name, self.backend.from_host(np.asarray(host, dtype=self.dtype)), trainable,
                        regularizers.get(regularizer), self)
        self._weights.append(weight)
        return weight

    def get_weights(self) -> list[np.ndarray]:
        """The weights as host numpy arrays, in Keras order."""
        return [w.numpy() for w in self._weights]

    def check_weights(self, weights: list[Any]) -> list[np.ndarray]:
        """Host copies of ``weights`` in this layer's dtype, after checking count, shape and
        values; raises ValueError before anything changes."""
        from ..data import host_weight

        if len(weights) != len(self._weights):
            names = ", ".join(w.name for w in self._weights) or "none"
            raise ValueError(f"Layer {self.name!r} expects {len(self._weights)} weight arrays ({names}), "
                             f"received {len(weights)}.")
        return [host_weight(a, w.shape, self.dtype, f"Layer {self.name!r}: weight {w.name!r}")
                for w, a in zip(self._weights, weights)]

    def set_weights(self, weights: list[Any]) -> None:
        """Replace the weights (numpy arrays, Keras order); all are checked before any changes."""
        hosts = self.check_weights(list(weights))
        for w, host in zip(self._weights, hosts):
            w.value = self.backend.from_host(host)

    def count_params(self) -> int:
        return sum(math.prod(w.shape) for w in self._weights)

    def regularization_loss(self) -> Any:
        """The sum of this layer's weight penalties (0.0 when it has none)."""
        total = 0.0
        for w in self._weights:
            if w.regularizer is not None:
                total = total + w.regularizer(self.xp, w.value)
        return total

    def to_backend(self, backend: _backend.Backend) -> None:
        """Move the weights (through the host) onto ``backend``."""
        for w in self._weights:
            w.value = backend.from_host(_backend.to_numpy(w.value))
        self.backend = backend

    # -- config ----------------------------------------------------------------------------
    def get_config(self) -> dict:
        config = {"name": self.name, "trainable": self.trainable}
        if self._declared_input_shape is not None:
            config["input_shape"] = list(self._declared_input_shape)
        return config

    @classmethod
    def from_config(cls, config: dict) -> "Layer":
        """A new, unbuilt layer from ``get_config()``; on ``Layer`` itself, ``config`` must
        carry ``class_name`` (as ``nnx.layers.serialize`` writes)."""
        if cls is Layer:
            from . import deserialize

            return deserialize(config)
        return cls(**config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} built={self.built}>"
