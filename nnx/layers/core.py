"""Input, Dense, Activation and Dropout."""
from __future__ import annotations

import math
from typing import Any

from .. import activations as _activations
from .. import initializers as _initializers
from .. import regularizers as _regularizers
from .base import Layer


def _shape_tuple(shape: int | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(f"Input shape must be positive ints (without the batch axis); received {shape!r}.")
    return shape


class Input(Layer):
    """Declares the shape of one sample (batch axis excluded); the model builds from it.

    >>> nnx.Sequential([nnx.Input((64,)), nnx.Dense(10)])
    """

    def __init__(self, shape: int | tuple[int, ...], name: str | None = None):
        super().__init__(name=name)
        self.shape = _shape_tuple(shape)

    def forward(self, x, training=False):
        return x

    def backward(self, dy):
        return dy

    def get_config(self) -> dict:
        return {"shape": list(self.shape), "name": self.name}


class Dense(Layer):
    """A fully connected layer: ``y = activation(x @ kernel + bias)``.

    >>> layer = nnx.Dense(128, activation="relu", kernel_initializer="he_normal")
    """

    weight_names = ("kernel", "bias")

    def __init__(
        self,
        units: int,
        activation: str | _activations.ActivationFunction | None = None,
        use_bias: bool = True,
        kernel_initializer: str | _initializers.Initializer = "glorot_uniform",
        bias_initializer: str | _initializers.Initializer = "zeros",
        kernel_regularizer: str | _regularizers.Regularizer | None = None,
        name: str | None = None,
        trainable: bool = True,
    ):
        super().__init__(name=name, trainable=trainable)
        if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
            raise ValueError(f"Dense units must be a positive int; received {units!r}.")
        self.units = units
        self.activation = _activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializers.get(kernel_initializer)
        self.bias_initializer = _initializers.get(bias_initializer)
        self.kernel_regularizer = _regularizers.get(kernel_regularizer)
        self.kernel = self.bias = None
        self._cache: tuple = ()

    def build(self, input_shape):
        super().build(input_shape)
        self.add_weight("kernel", (int(input_shape[-1]), self.units), self.kernel_initializer)
        if self.use_bias:
            self.add_weight("bias", (self.units,), self.bias_initializer)

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:-1], self.units)

    def forward(self, x, training=False):
        z = x @ self.kernel
        fused = self.backend.kernels.get("bias_activation")
        y = fused(z, self.bias, self.activation.name) if fused is not None else None
        if y is None:
            if self.use_bias:
                z = z + self.bias
            y = self.activation.forward(self.backend.xp, z)
        if training:
            self._cache = (x, z if self.activation.saves == "x" else None, y)
        return y

    def backward(self, dy):
        x, z, y = self._cache
        return self.backward_from_logits(_activation_backward(self.backend, self.activation, dy, z, y))

    def backward_from_logits(self, dz: Any) -> Any:
        """Backward from the gradient of the pre-activation ``z = x @ kernel + bias``."""
        xp = self.backend.xp
        x = self._cache[0]
        if x.ndim > 2:  # (batch, ..., features): fold the leading axes into the batch
            x2, dz2 = xp.reshape(x, (-1, x.shape[-1])), xp.reshape(dz, (-1, self.units))
        else:
            x2, dz2 = x, dz
        d_kernel = x2.T @ dz2
        if self.use_bias:
            sum_rows = self.backend.kernels.get("sum_rows")
            self.grads = [d_kernel, sum_rows(dz2) if sum_rows is not None else xp.sum(dz2, axis=0)]
        else:
            self.grads = [d_kernel]
        self._cache = ()
        return dz @ self.kernel.T if self.needs_input_grad else None

    def regularization_loss(self):
        if self.kernel_regularizer is None:
            return 0.0
        return self.kernel_regularizer(self.backend.xp, self.kernel)

    def regularization_gradients(self):
        if self.kernel_regularizer is None:
            return None
        return [self.kernel_regularizer.gradient(self.backend.xp, self.kernel)] + [None] * self.use_bias

    def clear_cache(self):
        self._cache = ()

    def get_config(self) -> dict:
        reg = self.kernel_regularizer
        return {
            **super().get_config(),
            "units": self.units,
            "activation": self.activation.get_config(),
            "use_bias": self.use_bias,
            "kernel_initializer": self.kernel_initializer.get_config(),
            "bias_initializer": self.bias_initializer.get_config(),
            "kernel_regularizer": None if reg is None else reg.get_config(),
        }


def _activation_backward(backend, activation, dy, x, y):
    """The activation's backward, through the backend's in-place kernel when it has one."""
    fused = backend.kernels.get("activation_backward")
    dx = fused(activation.name, dy, x, y) if fused is not None else None
    return activation.backward(backend.xp, dy, x, y) if dx is None else dx


class Activation(Layer):
    """Applies an activation by name: ``nnx.Activation("softmax")``.

    >>> nnx.Sequential([nnx.Input(4), nnx.Dense(3), nnx.Activation("softmax")])
    """

    def __init__(self, activation: str | _activations.ActivationFunction | None, name: str | None = None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.activation = _activations.get(activation)
        self._cache: tuple = ()

    def forward(self, x, training=False):
        y = self.activation.forward(self.backend.xp, x)
        if training:
            self._cache = (x if self.activation.saves == "x" else None, y)
        return y

    def backward(self, dy):
        x, y = self._cache
        self._cache = ()
        return _activation_backward(self.backend, self.activation, dy, x, y)

    def backward_from_logits(self, dz):
        self._cache = ()
        return dz

    def clear_cache(self):
        self._cache = ()

    def get_config(self) -> dict:
        return {**super().get_config(), "activation": self.activation.get_config()}


class Dropout(Layer):
    """Zeroes a fraction ``rate`` of the inputs during training and scales the rest by 1/(1-rate).

    >>> nnx.Dropout(0.2)
    """

    def __init__(self, rate: float, name: str | None = None, **kwargs):
        super().__init__(name=name, **kwargs)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"Dropout rate must be in [0, 1); received {rate!r}.")
        self.rate = float(rate)
        self._mask = None

    def forward(self, x, training=False):
        if not training or self.rate == 0.0:
            return x
        xp = self.backend.xp
        keep = self.backend.uniform(tuple(x.shape), x.dtype) >= self.rate
        self._mask = keep
        return xp.where(keep, x * (1.0 / (1.0 - self.rate)), 0.0)

    def backward(self, dy):
        if self._mask is None:
            return dy
        keep, self._mask = self._mask, None
        return self.backend.xp.where(keep, dy * (1.0 / (1.0 - self.rate)), 0.0)

    def clear_cache(self):
        self._mask = None

    def get_config(self) -> dict:
        return {**super().get_config(), "rate": self.rate}


class Flatten(Layer):
    """Flattens each sample to one axis: (batch, a, b) -> (batch, a*b).

    >>> nnx.Sequential([nnx.Input((8, 8)), nnx.Flatten(), nnx.Dense(10)])
    """

    def compute_output_shape(self, input_shape):
        return (math.prod(input_shape),)

    def forward(self, x, training=False):
        return self.backend.xp.reshape(x, (x.shape[0], -1))

    def backward(self, dy):
        return self.backend.xp.reshape(dy, (dy.shape[0], *self.input_shape))
