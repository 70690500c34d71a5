"""Input, Dense, Activation, Dropout and Flatten."""
from __future__ import annotations

import math
from typing import Any


from .. import activations as _activations
from .. import data as _data
from .. import initializers as _initializers
from .. import regularizers as _regularizers
from . import pooling
from .base import Layer, as_int, shape_tuple


class Input(Layer):
    """Declares the shape of one sample (batch axis excluded); a ``Sequential`` that starts with
    it builds its weights at once. It has no weights and passes its input through.

    Args:
        shape: an int or a tuple of positive ints (any integer type), without the batch axis.
        dtype: the dtype of the data. Defaults to None: the float type, ``nnx.floatx()``. An integer
            dtype (``"int32"``, ``"int64"``) for the ids of an ``Embedding``, which the model then
            keeps integer; layers that compute in floats receive floats whatever it says.
        name: the layer's name. Defaults to a unique ``"input"``, ``"input_1"``, …

    Raises:
        ValueError: a shape that is not positive ints.

    >>> nnx.Sequential([nnx.Input((64,)), nnx.Dense(10)])
    >>> nnx.Sequential([nnx.Input((20,), dtype="int32"), nnx.layers.Embedding(1000, 8)])
    """

    def __init__(self, shape: int | tuple[int, ...], dtype: str | None = None, name: str | None = None):
        super().__init__(name=name)
        self.shape = shape_tuple(shape)
        self.input_dtype = None if dtype is None else _data.real_dtype_name(dtype, "Input dtype")

    def forward(self, x, training=False):
        return x, None

    def backward(self, saved, dy, need_dx=True):
        return dy, {}

    def get_config(self) -> dict:
        return {"shape": list(self.shape), "dtype": self.input_dtype, "name": self.name}


class Dense(Layer):
    """A fully connected layer: ``y = activation(x @ kernel + bias)``.

    Args:
        units: the number of outputs (a positive int of any integer type).
        activation: an activation name (``"relu"``, ``"softmax"``, …), an
            ``nnx.activations.ActivationFunction``, or None (linear).
        use_bias: whether to add a bias vector.
        kernel_initializer, bias_initializer: initializer names or instances
            (default ``"glorot_uniform"`` and ``"zeros"``).
        kernel_regularizer, bias_regularizer: penalties added to the loss (e.g.
            ``nnx.regularizers.l2(1e-4)``, ``"l2"``), or None (the defaults).
        name, trainable, input_shape, input_dim: as every layer (``nnx.layers.Layer``).

    Weights: ``kernel`` of shape (input width, units), then ``bias`` of shape (units,).
    Inputs of more than two axes are mapped along the last axis: (batch, …, d) -> (batch, …, units).

    Raises:
        ValueError: ``units`` not a positive int; an unknown activation, initializer or
            regularizer name.

    >>> layer = nnx.Dense(128, activation="relu", kernel_initializer="he_normal")
    """

    defers_gradients = True  # the kernel's gradient comes from ``ops.weight_gradient``, untouched

    def __init__(
        self,
        units: int,
        activation: str | _activations.ActivationFunction | None = None,
        use_bias: bool = True,
        kernel_initializer: str | _initializers.Initializer = "glorot_uniform",
        bias_initializer: str | _initializers.Initializer = "zeros",
        kernel_regularizer: str | _regularizers.Regularizer | None = None,
        bias_regularizer: str | _regularizers.Regularizer | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.units = as_int(units, "Dense units")
        self.activation = _activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializers.get(kernel_initializer)
        self.bias_initializer = _initializers.get(bias_initializer)
        self.kernel_regularizer = _regularizers.get(kernel_regularizer)
        self.bias_regularizer = _regularizers.get(bias_regularizer)
        self.kernel = self.bias = None

    def build(self, input_shape):
        super().build(input_shape)
        self.kernel = self.add_weight("kernel", (int(input_shape[-1]), self.units), self.kernel_initializer,
                                      self.kernel_regularizer)
        if self.use_bias:
            self.bias = self.add_weight("bias", (self.units,), self.bias_initializer, self.bias_regularizer)

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:-1], self.units)

    @property
    def output_activation(self):
        return self.activation

    def forward(self, x, training=False):
        ops = self.backend.ops
        y, act_saved = ops.bias_activation(ops.matmul(x, self.kernel.value), self.bias.value if self.use_bias else None,
                                           self.activation)
        return y, (x, act_saved)

    def backward(self, saved, dy, need_dx=True):
        dz = self.backend.ops.activation_backward(self.activation, dy, saved[1])
        return self.backward_from_logits(saved, dz, need_dx)

    def backward_from_logits(self, saved: Any, dz: Any, need_dx: bool = True) -> tuple[Any, dict]:
        """Backward from the gradient of the pre-activation ``z = x @ kernel + bias``, skipping
        the activation's own backward (a loss fused with the activation computed ``dz``).

        Args:
            saved: what ``forward`` returned as its second value.
            dz: the gradient of the loss with respect to ``z``.
            need_dx: whether the input gradient is wanted. Defaults to True.

        Returns:
            ``(dx, grads)`` as ``backward``: ``dx`` is None when ``need_dx`` is false.

        >>> dx, grads = dense.backward_from_logits(saved, (p - y) / n)
        """
        x, ops = saved[0], self.backend.ops
        grads = {}
        if self._trainable:  # the property, read without its call
            x2, dz2 = x, dz
            if x.ndim != 2:  # (batch, ..., d): the kernel's gradient sums over every leading axis
                xp = self.xp
                x2, dz2 = xp.reshape(x, (-1, x.shape[-1])), xp.reshape(dz, (-1, self.units))
            grads[self.kernel] = ops.weight_gradient(x2, dz2)
            if self.use_bias:
                grads[self.bias] = ops.sum_rows(dz2)
        return (ops.matmul(dz, self.kernel.value.T) if need_dx else None), grads

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "units": self.units,
            "activation": self.activation.get_config(),
            "use_bias": self.use_bias,
            "kernel_initializer": self.kernel_initializer.get_config(),
            "bias_initializer": self.bias_initializer.get_config(),
            "kernel_regularizer": _regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": _regularizers.serialize(self.bias_regularizer),
        }


class Activation(Layer):
    """Applies an activation to its input: ``nnx.Activation("softmax")``. No weights.

    Args:
        activation: a name (``"relu"``, ``"softmax"``, …, case-insensitive), an
            ``nnx.activations.ActivationFunction`` instance, or None (linear).
        name, trainable, input_shape, input_dim: as every layer (``nnx.layers.Layer``).

    Raises:
        ValueError: an unknown activation name (the message lists the valid ones).

    >>> nnx.Sequential([nnx.Input(4), nnx.Dense(3), nnx.Activation("softmax")])
    """

    def __init__(self, activation: str | _activations.ActivationFunction | None, **kwargs: Any):
        super().__init__(**kwargs)
        self.activation = _activations.get(activation)

    @property
    def output_activation(self):
        return self.activation

    def forward(self, x, training=False):
        return self.ops.activation(self.activation, x)

    def backward(self, saved, dy, need_dx=True):
        return self.ops.activation_backward(self.activation, dy, saved), {}

    def backward_from_logits(self, saved: Any, dz: Any, need_dx: bool = True) -> tuple[Any, dict]:
        """Backward from the gradient of the activation's input, which a loss fused with the
        activation computed: that gradient is the input gradient itself.

        Args:
            saved: what ``forward`` returned as its second value (unused).
            dz: the gradient of the loss with respect to the layer's input.
            need_dx: whether the input gradient is wanted. Defaults to True.

        Returns:
            ``(dz, {})``: no weights, no weight gradients.

        >>> dx, grads = layer.backward_from_logits(saved, dz)
        """
        return dz, {}

    # -- followed by a max pooling ---------------------------------------------------------
    def pools_with(self, pool: Layer) -> bool:
        """Whether the model may run this layer and ``pool`` (the next layer) as one: the pooling
        first, then the activation on its smaller output. True for ReLU (or linear) before a
        Keras max pooling, since ``relu(max(x)) == max(relu(x))`` over each window.

        >>> nnx.Activation("relu").pools_with(nnx.MaxPooling2D())   # True
        """
        return (type(pool) in (pooling.MaxPooling1D, pooling.MaxPooling2D, pooling.GlobalMaxPooling1D,
                               pooling.GlobalMaxPooling2D)
                and type(self.activation) in (_activations.ReLU, _activations.Linear))

    def forward_pooled(self, x: Any, pool: Layer, training: bool = False) -> tuple[Any, Any]:
        """``act(pool(x))``, equal to ``pool(act(x))`` when ``pools_with(pool)``; the activation
        and its backward run on the pooled array.

        Args:
            x: the layer's input.
            pool: the max pooling layer that follows.
            training: keep what ``backward_pooled`` needs. Defaults to False.

        Returns:
            ``(y, saved)``: the pooled output and the saved contexts of both.

        >>> y, saved = nnx.Activation("relu").forward_pooled(x, pool, training=True)
        """
        p, pool_saved = pool.forward(x, training)
        y, act_saved = self.ops.bias_activation(p, None, self.activation)  # p is the pooling's own array
        return y, (pool_saved if training else None, act_saved)

    def backward_pooled(self, saved: Any, dy: Any, pool: Layer, need_dx: bool = True) -> tuple[Any, dict]:
        """The backward of ``forward_pooled``: through the activation, then the pooling.

        Args:
            saved: what ``forward_pooled`` saved.
            dy: the gradient of the pooled output.
            pool: the max pooling layer that follows.
            need_dx: whether to compute the input gradient.

        Returns:
            ``(dx, {})``: no weights.

        >>> dx, _ = layer.backward_pooled(saved, dy, pool)
        """
        if not need_dx:
            return None, {}
        pool_saved, act_saved = saved
        dp = self.ops.activation_backward(self.activation, dy, act_saved)
        return pool.backward(pool_saved, dp, True)[0], {}

    def get_config(self) -> dict:
        return {**super().get_config(), "activation": self.activation.get_config()}


class Dropout(Layer):
    """Zeroes a fraction ``rate`` of the inputs during training and scales the rest by
    1 / (1 - rate); the identity in inference (``predict``, ``evaluate``).

    The masks come from the random stream of the model being trained (each model has its own,
    seeded by ``nnx.seed`` and saved in its file), so a model resumed from a file draws the masks
    it would have drawn had it kept training.

    Args:
        rate: the fraction dropped, a float in [0, 1).
        name, trainable, input_shape, input_dim: as every layer (``nnx.layers.Layer``).

    Raises:
        ValueError: a rate outside [0, 1) or not a number.

    >>> nnx.Sequential([nnx.Input(64), nnx.Dense(128, activation="relu"), nnx.Dropout(0.2), nnx.Dense(10)])
    """

    def __init__(self, rate: float, **kwargs: Any):
        super().__init__(**kwargs)
        try:
            rate = float(rate)
        except (TypeError, ValueError):
            raise ValueError(f"Dropout rate must be a float in [0, 1); received {rate!r}.") from None
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"Dropout rate must be in [0, 1); received {rate!r}.")
        self.rate = rate

    def forward(self, x, training=False):
        if not training or self.rate == 0.0:
            return x, None
        keep = self.backend.uniform(tuple(x.shape), x.dtype) >= self.rate
        return self.xp.where(keep, x * (1.0 / (1.0 - self.rate)), 0.0), keep

    def backward(self, saved, dy, need_dx=True):
        keep = saved  # the mask forward drew (None: nothing was dropped)
        if keep is None:
            return dy, {}
        return self.xp.where(keep, dy * (1.0 / (1.0 - self.rate)), 0.0), {}

    def get_config(self) -> dict:
        return {**super().get_config(), "rate": self.rate}


class Flatten(Layer):
    """Flattens each sample to one axis: (batch, a, b) -> (batch, a*b). No weights.

    Args:
        name, trainable, input_shape, input_dim, dtype: as every layer (``nnx.layers.Layer``).

    >>> nnx.Sequential([nnx.Input((8, 8)), nnx.Flatten(), nnx.Dense(10)])
    """

    def compute_output_shape(self, input_shape):
        return (math.prod(input_shape),)

    def forward(self, x, training=False):
        return self.xp.reshape(x, (x.shape[0], -1)), None

    def backward(self, saved, dy, need_dx=True):
        return self.xp.reshape(dy, (dy.shape[0], *self.input_shape)), {}


class ReLU(Activation):
    """The ReLU activation as a layer: ``max(x, 0)``. No weights.

    Args:
        name, trainable, input_shape, input_dim: as every layer (``nnx.layers.Layer``).

    >>> nnx.Sequential([nnx.Input(4), nnx.Dense(8), nnx.layers.ReLU()])
    """

    def __init__(self, **kwargs: Any):
        kwargs.pop("activation", None)
        super().__init__("relu", **kwargs)

    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("activation")
        return config


class LeakyReLU(Activation):
    """``x`` for x > 0, else ``negative_slope * x`` (Keras's default slope 0.3).

    Args:
        negative_slope: the slope for negative inputs, a float >= 0. Defaults to 0.3 (Keras's
            layer; the ``"leaky_relu"`` activation name uses 0.01).
        name, trainable, input_shape, input_dim: as every layer (``nnx.layers.Layer``).

    Raises:
        ValueError: a negative (or NaN) slope.

    >>> nnx.layers.LeakyReLU(negative_slope=0.1)
    """

    def __init__(self, negative_slope: float = 0.3, **kwargs: Any):
        kwargs.pop("activation", None)
        slope = float(negative_slope)
        if not slope >= 0.0:
            raise ValueError(f"negative_slope must be a float >= 0; received {negative_slope!r}.")
        super().__init__(_activations.LeakyReLU(slope), **kwargs)
        self.negative_slope = slope

    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("activation")
        return {**config, "negative_slope": self.negative_slope}


class _AxisSoftmax(_activations.ActivationFunction):
    name, saves = "softmax", "y"

    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, xp, x):
        e = xp.exp(x - xp.max(x, axis=self.axis, keepdims=True))
        return e / xp.sum(e, axis=self.axis, keepdims=True)

    def backward(self, xp, dy, y):
        return y * (dy - xp.sum(dy * y, axis=self.axis, keepdims=True))


class Softmax(Activation):
    """Softmax over ``axis`` (default the last) as a layer.

    Args:
        axis: the axis normalised, an int. Defaults to -1. The batch axis 0 is not allowed.
        name, trainable, input_shape, input_dim: as every layer (``nnx.layers.Layer``).

    Raises:
        ValueError: ``axis`` 0 or not an int.

    >>> nnx.Sequential([nnx.Input(4), nnx.Dense(3), nnx.layers.Softmax()])
    """

    def __init__(self, axis: int = -1, **kwargs: Any):
        kwargs.pop("activation", None)
        axis = as_int(axis, "axis", minimum=-(2**31))
        if axis == 0:
            raise ValueError("Softmax axis must not be 0, the batch axis; received 0.")
        super().__init__(_activations.Softmax() if axis == -1 else _AxisSoftmax(axis), **kwargs)
        self.axis = axis

    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("activation")
        return {**config, "axis": self.axis}


class Reshape(Layer):
    """Reshapes each sample to ``target_shape`` (batch axis excluded; one entry may be -1).

    Args:
        target_shape: a tuple of positive ints, at most one of them -1 (inferred).
        name, trainable, input_shape, input_dim: as every layer (``nnx.layers.Layer``).

    Raises:
        ValueError: a target shape that is not such a tuple, or (when built) one that does not
            hold the input's number of values.

    >>> nnx.Sequential([nnx.Input(12), nnx.layers.Reshape((3, 4))])
    """

    def __init__(self, target_shape: tuple[int, ...], **kwargs: Any):
        super().__init__(**kwargs)
        try:
            dims = tuple(int(d) for d in target_shape)
        except TypeError:
            raise ValueError(f"target_shape must be a tuple of ints; received {target_shape!r}.") from None
        if not dims or dims.count(-1) > 1 or any(d == 0 or d < -1 for d in dims):
            raise ValueError(f"target_shape must be positive ints with at most one -1; received {target_shape!r}.")
        self.target_shape = dims

    def compute_output_shape(self, input_shape):
        total = math.prod(input_shape)
        known = math.prod(d for d in self.target_shape if d != -1)
        if -1 in self.target_shape:
            if total % known:
                raise ValueError(f"Cannot reshape samples of shape {tuple(input_shape)} to {self.target_shape}.")
            return tuple(total // known if d == -1 else d for d in self.target_shape)
        if known != total:
            raise ValueError(f"Cannot reshape samples of shape {tuple(input_shape)} ({total} values) to "
                             f"{self.target_shape} ({known} values).")
        return self.target_shape

    def build(self, input_shape):
        super().build(input_shape)
        self.compute_output_shape(input_shape)  # refuse a mismatch at build time

    def forward(self, x, training=False):
        return self.xp.reshape(x, (x.shape[0], *self.output_shape)), None

    def backward(self, saved, dy, need_dx=True):
        return self.xp.reshape(dy, (dy.shape[0], *self.input_shape)), {}

    def get_config(self) -> dict:
        return {**super().get_config(), "target_shape": list(self.target_shape)}
