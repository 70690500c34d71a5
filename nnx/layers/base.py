"""The Layer base class: weights, their gradients, config and backend placement."""
from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

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


class Layer:
    """Base class: ``build`` creates weights, ``forward`` maps x -> y, ``backward`` maps dy -> dx
    and stores the weight gradients in ``self.grads`` (same order as ``self.weights``).
    ``backward`` is linear in ``dy`` (penalties go through ``regularization_gradients``), and it
    owns ``dy``: it may overwrite it (backends' in-place kernels do).

    >>> class Scale(nnx.layers.Layer):
    ...     def forward(self, x, training=False): return 2 * x
    ...     def backward(self, dy): return 2 * dy
    """

    weight_names: tuple[str, ...] = ()

    def __init__(self, name: str | None = None, trainable: bool = True):
        self.name = name or unique_name(_snake(type(self).__name__))
        self.trainable = trainable
        self.built = False
        self.input_shape: tuple[int, ...] | None = None  # without the batch axis
        self.grads: list[Any] = []
        self.needs_input_grad = True  # False for the first layers of a model: nobody reads their dx
        self.backend: _backend.Backend | None = None
        self.dtype = _backend.floatx()

    # -- lifecycle -------------------------------------------------------------------------
    def build(self, input_shape: tuple[int, ...]) -> None:
        """Create the weights for inputs of ``input_shape`` (batch axis excluded)."""
        self.input_shape = tuple(input_shape)
        self.backend = _backend.get_backend()
        self.dtype = _backend.floatx()
        self.built = True

    def forward(self, x: Any, training: bool = False) -> Any:
        raise NotImplementedError

    def backward(self, dy: Any) -> Any:
        raise NotImplementedError

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape)

    def __call__(self, x: Any, training: bool = False) -> Any:
        if not self.built:
            self.build(tuple(x.shape[1:]))
        return self.forward(x, training=training)

    @property
    def output_shape(self) -> tuple[int, ...] | None:
        return None if self.input_shape is None else self.compute_output_shape(self.input_shape)

    # -- weights ---------------------------------------------------------------------------
    @property
    def xp(self) -> Any:
        return self.backend.xp

    @property
    def weights(self) -> list[Any]:
        return [getattr(self, n) for n in self.weight_names if getattr(self, n, None) is not None]

    @property
    def trainable_weights(self) -> list[Any]:
        return self.weights if self.trainable else []

    def _weight_attrs(self) -> list[str]:
        return [n for n in self.weight_names if getattr(self, n, None) is not None]

    def add_weight(self, name: str, shape: tuple[int, ...], initializer: Any) -> Any:
        from .. import initializers

        host = initializers.get(initializer)(tuple(shape), self.dtype)
        value = self.backend.from_host(host)
        setattr(self, name, value)
        return value

    def get_weights(self) -> list[Any]:
        """The weights as host numpy arrays, in Keras order (kernel, bias)."""
        return [_backend.to_numpy(w).copy() for w in self.weights]

    def set_weights(self, weights: list[Any]) -> None:
        """Replace the weights; shapes are checked for all before any is changed."""
        names = self._weight_attrs()
        if len(weights) != len(names):
            raise ValueError(
                f"Layer {self.name!r} expects {len(names)} weight arrays ({', '.join(names) or 'none'}), "
                f"received {len(weights)}."
            )
        hosts = []
        for n, w in zip(names, weights):
            host = _backend.to_numpy(w)
            expected = tuple(getattr(self, n).shape)
            if tuple(host.shape) != expected:
                raise ValueError(
                    f"Layer {self.name!r}: weight {n!r} expects shape {expected}, received {tuple(host.shape)}."
                )
            hosts.append(host.astype(self.dtype, copy=True))
        for n, host in zip(names, hosts):
            setattr(self, n, self.backend.from_host(host))

    def count_params(self) -> int:
        total = 0
        for w in self.weights:
            n = 1
            for d in w.shape:
                n *= int(d)
            total += n
        return total

    def regularization_loss(self) -> Any:
        """The penalty this layer adds to the loss (0.0 when it has none)."""
        return 0.0

    def regularization_gradients(self) -> list[Any] | None:
        """The penalty's gradient for each of ``weights`` (None where it has none), or None."""
        return None

    def to_backend(self, backend: _backend.Backend) -> None:
        """Move the weights (through the host) onto ``backend``."""
        for n in self._weight_attrs():
            setattr(self, n, backend.from_host(_backend.to_numpy(getattr(self, n))))
        self.backend = backend
        self.clear_cache()

    def clear_cache(self) -> None:
        """Drop whatever forward kept for backward."""

    # -- config ----------------------------------------------------------------------------
    def get_config(self) -> dict:
        return {"name": self.name, "trainable": self.trainable}

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
