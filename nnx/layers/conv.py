"""Convolutions (``Conv1D``, ``Conv2D``) and ``ZeroPadding2D``, channels-last as Keras's default.

A convolution is an im2col and one matrix product (``Ops.conv2d``); its backward is the two
products of the gradient and a col2im (``Ops.conv2d_backward``). ``Conv1D`` runs the same code on
inputs seen as images one row high.
"""
from __future__ import annotations

import numbers

from typing import Any


from .. import activations as _activations
from .. import initializers as _initializers
from .. import regularizers as _regularizers
from ..conv_ops import output_length, padding_amounts
from .base import Layer, as_int


def int_tuple(value: Any, rank: int, what: str, minimum: int = 1) -> tuple[int, ...]:
    """An int (repeated ``rank`` times) or a tuple of ``rank`` ints >= ``minimum``, or ValueError."""
    values = (value,) * rank if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value
    if not isinstance(values, (tuple, list)) or len(values) != rank or any(
            isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) < minimum for v in values):
        raise ValueError(f"{what} must be an int or a tuple of {rank} ints >= {minimum}; received {value!r}.")
    return tuple(int(v) for v in values)


def padding_mode(value: Any, allowed: tuple[str, ...] = ("valid", "same")) -> str:
    mode = value.lower() if isinstance(value, str) else value
    if mode not in allowed:
        raise ValueError(f"padding must be one of {', '.join(repr(a) for a in allowed)}; received {value!r}.")
    return mode


def check_data_format(value: Any) -> None:
    if value not in (None, "channels_last"):
        raise ValueError(f"nnx layers are channels-last: data_format must be 'channels_last' or None; "
                         f"received {value!r}.")


def check_input_rank(layer: Layer, input_shape: tuple[int, ...], rank: int) -> None:
    if len(input_shape) != rank + 1:
        axes = "(batch, steps, channels)" if rank == 1 else "(batch, height, width, channels)"
        raise ValueError(f"{type(layer).__name__} expects inputs of shape {axes}; received samples of shape "
                         f"{tuple(input_shape)} (inputs of shape {(None, *input_shape)}).")


class _Conv(Layer):
    """The shared part of ``Conv1D`` and ``Conv2D`` (``rank`` spatial axes)."""

    rank = 2
    paddings: tuple[str, ...] = ("valid", "same")

    def __init__(
        self,
        filters: int,
        kernel_size: int | tuple[int, ...],
        strides: int | tuple[int, ...] = 1,
        padding: str = "valid",
        dilation_rate: int | tuple[int, ...] = 1,
        activation: str | _activations.ActivationFunction | None = None,
        use_bias: bool = True,
        kernel_initializer: str | _initializers.Initializer = "glorot_uniform",
        bias_initializer: str | _initializers.Initializer = "zeros",
        kernel_regularizer: str | _regularizers.Regularizer | None = None,
        bias_regularizer: str | _regularizers.Regularizer | None = None,
        data_format: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.filters = as_int(filters, f"{name} filters")
        self.kernel_size = int_tuple(kernel_size, self.rank, f"{name} kernel_size")
        self.strides = int_tuple(strides, self.rank, f"{name} strides")
        self.padding = padding_mode(padding, self.paddings)
        self.dilation_rate = int_tuple(dilation_rate, self.rank, f"{name} dilation_rate")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(f"{name}: strides > 1 together with dilation_rate > 1 is not supported (as in Keras); "
                             f"received strides={self.strides} and dilation_rate={self.dilation_rate}.")
        check_data_format(data_format)
        self.activation = _activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializers.get(kernel_initializer)
        self.bias_initializer = _initializers.get(bias_initializer)
        self.kernel_regularizer = _regularizers.get(kernel_regularizer)
        self.bias_regularizer = _regularizers.get(bias_regularizer)
        self.kernel = self.bias = None

    # -- shapes ----------------------------------------------------------------------------
    def compute_output_shape(self, input_shape):
        check_input_rank(self, tuple(input_shape), self.rank)
        spatial = tuple(output_length(n, k, s, d, self.padding) for n, k, s, d in
                        zip(input_shape[:-1], self.kernel_size, self.strides, self.dilation_rate))
        if min(spatial) < 1:
            raise ValueError(f"{type(self).__name__} {self.name!r}: samples of shape {tuple(input_shape)} are smaller "
                             f"than the kernel ({self.kernel_size}, dilation_rate {self.dilation_rate}) with "
                             f"padding {self.padding!r}; expected at least "
                             f"{tuple((k - 1) * d + 1 for k, d in zip(self.kernel_size, self.dilation_rate))} "
                             f"along the spatial axes.")
        return (*spatial, self.filters)

    def kernel_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The kernel's shape, Keras's ``(*kernel_size, in_channels, filters)``.

        Args:
            input_shape: the sample shape (batch axis excluded), channels last.

        >>> nnx.Conv2D(8, 3).kernel_shape((28, 28, 1))   # (3, 3, 1, 8)
        """
        return (*self.kernel_size, int(input_shape[-1]), self.filters)

    def build(self, input_shape):
        self.compute_output_shape(input_shape)  # refuse a bad shape before creating anything
        super().build(input_shape)
        self.kernel = self.add_weight("kernel", self.kernel_shape(input_shape), self.kernel_initializer,
                                      self.kernel_regularizer)
        if self.use_bias:
            self.bias = self.add_weight("bias", (self.filters,), self.bias_initializer, self.bias_regularizer)
        pads = [padding_amounts(n, k, s, d, self.padding) for n, k, s, d in
                zip(input_shape[:-1], self.kernel_size, self.strides, self.dilation_rate)]
        self._pads = ((0, 0), *pads) if self.rank == 1 else tuple(pads)

    # -- the 2-D view both ranks run on -----------------------------------------------------
    def _as_2d(self, x: Any) -> Any:
        return x if self.rank == 2 else self.xp.reshape(x, (x.shape[0], 1, *x.shape[1:]))

    def _from_2d(self, y: Any) -> Any:
        return y if self.rank == 2 else self.xp.reshape(y, (y.shape[0], *y.shape[2:]))

    def _pairs(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int]]:
        if self.rank == 2:
            return self.strides, self.dilation_rate, self.kernel.shape
        return (1, *self.strides), (1, *self.dilation_rate), (1, *self.kernel.shape)

    # -- forward and backward --------------------------------------------------------------
    @property
    def output_activation(self):
        return self.activation

    def _kernel4(self) -> Any:
        return self.kernel.value if self.rank == 2 else self.xp.reshape(self.kernel.value, self._pairs()[2])

    def _convolve(self, x: Any) -> tuple[Any, Any]:
        """The convolution alone (no bias, no activation), in the layer's rank, and its context."""
        strides, dilation, _ = self._pairs()
        z, conv_saved = self.ops.conv2d(self._as_2d(x), self._kernel4(), strides, dilation, self._pads)
        return self._from_2d(z), conv_saved

    def forward(self, x, training=False):
        z, conv_saved = self._convolve(x)
        y, act_saved = self.ops.bias_activation(z, self.bias.value if self.use_bias else None, self.activation)
        return y, (conv_saved if training else None, act_saved)

    def backward(self, saved, dy, need_dx=True):
        dz = self.ops.activation_backward(self.activation, dy, saved[1])
        return self.backward_from_logits(saved, dz, need_dx)

    # -- followed by a max pooling ---------------------------------------------------------
    def pools_with(self, pool: Layer) -> bool:
        """Whether ``forward_pooled`` may run this layer and ``pool`` (the next layer) as one:
        ``pool`` is a max pooling (windowed or global) of the same rank and the activation is ReLU
        or linear, so
        ``act(max(z) + b) == max(act(z + b))`` for each window (``max`` commutes with adding a
        per-channel constant and with a non-decreasing activation).

        >>> conv.pools_with(nnx.MaxPooling2D(2))   # True for activation "relu"
        """
        from . import pooling  # (pooling imports this module)

        max_pools = ((pooling.MaxPooling1D, pooling.GlobalMaxPooling1D) if self.rank == 1 else
                     (pooling.MaxPooling2D, pooling.GlobalMaxPooling2D))
        return type(pool) in max_pools and type(self.activation) in (_activations.ReLU, _activations.Linear)

    def forward_pooled(self, x: Any, pool: Layer, training: bool = False) -> tuple[Any, Any]:
        """This layer and the max pooling ``pool`` after it, as ``act(pool(conv(x)) + bias)``:
        the bias and the activation run on the pooled array, a fraction of the convolution's
        output (a quarter for 2x2 windows), in the forward and in the backward. The model uses
        it when ``pools_with(pool)``. The output equals ``pool(layer(x))``, and so do the
        gradients, but for windows where adding the bias rounds distinct values to equal ones:
        the layers one by one send that window's gradient to the first of the tied values, the
        pair to the largest before rounding (both are gradients of the maximum; in float32 it
        needs two values closer than the bias's rounding step).

        Args:
            x: the layer's input.
            pool: the max pooling layer that follows.
            training: keep what ``backward_pooled`` needs. Defaults to False.

        Returns:
            ``(y, saved)``: the pooled output and the saved contexts of both.

        >>> y, saved = conv.forward_pooled(x, pool, training=True)
        """
        if self._tiles(pool):
            strides, dilation, _ = self._pairs()
            p, saved = self.ops.conv2d_max_pool(self._as_2d(x), self._kernel4(), strides, dilation, self._pads,
                                                pool._pairs()[0], training)
            p = self._from_2d(p)
        else:
            z, conv_saved = self._convolve(x)
            p, pool_saved = pool.forward(z, training)
            saved = (conv_saved, pool_saved)
        y, act_saved = self.ops.bias_activation(p, self.bias.value if self.use_bias else None, self.activation)
        return y, (saved if training else None, act_saved)

    @staticmethod
    def _tiles(pool: Layer) -> bool:
        """Whether ``pool``'s windows tile its input: strides equal to the pool size, no padding."""
        size = getattr(pool, "pool_size", None)  # None: a global pooling
        return size is not None and tuple(pool.strides) == tuple(size) and pool.padding == "valid"

    def backward_pooled(self, saved: Any, dy: Any, pool: Layer, need_dx: bool = True) -> tuple[Any, dict]:
        """The backward of ``forward_pooled``: through the activation and the bias on the pooled
        gradient, then the pooling, then the convolution.

        Args:
            saved: what ``forward_pooled`` saved.
            dy: the gradient of the pooled output.
            pool: the max pooling layer that follows.
            need_dx: whether to compute the input gradient.

        Returns:
            ``(dx, grads)`` for this layer's weights (the pooling has none).

        >>> dx, grads = conv.backward_pooled(saved, dy, pool)
        """
        pair_saved, act_saved = saved
        dp = self.ops.activation_backward(self.activation, dy, act_saved)
        grads = {}
        if self.trainable and self.use_bias:
            grads[self.bias] = self.ops.sum_rows(self.xp.reshape(dp, (-1, self.filters)))
        if not (need_dx or self.trainable):
            return None, grads
        if self._tiles(pool):
            strides, dilation, _ = self._pairs()
            dx, dkernel = self.ops.conv2d_max_pool_backward(
                pair_saved, self._as_2d(dp), self._kernel4(), strides, dilation, self._pads, pool._pairs()[0],
                need_dx=need_dx, need_dkernel=self.trainable)
            dx = self._from_2d(dx) if need_dx else None
            if dkernel is not None and self.rank != 2:
                dkernel = self.xp.reshape(dkernel, self.kernel.shape)
        else:
            conv_saved, pool_saved = pair_saved
            dz = pool.backward(pool_saved, dp, True)[0]
            dx, dkernel = self._conv_backward(conv_saved, dz, need_dx, need_dbias=False)[:2]
        if self.trainable:
            grads[self.kernel] = dkernel
        return dx, grads

    def _conv_backward(self, conv_saved: Any, dz: Any, need_dx: bool, need_dbias: bool) -> tuple[Any, Any, Any]:
        """``(dx, dkernel, dbias)`` in the layer's shapes (None where not asked for) from the
        gradient of the convolution's output (plus bias)."""
        strides, dilation, _ = self._pairs()
        dx, dkernel, dbias = self.ops.conv2d_backward(
            conv_saved, self._as_2d(dz), self._kernel4(), strides, dilation, self._pads, need_dx=need_dx,
            need_dkernel=self.trainable, need_dbias=need_dbias)
        if dkernel is not None and self.rank != 2:
            dkernel = self.xp.reshape(dkernel, self.kernel.shape)
        return (self._from_2d(dx) if need_dx else None), dkernel, dbias

    def backward_from_logits(self, saved: Any, dz: Any, need_dx: bool = True) -> tuple[Any, dict]:
        """Backward from the gradient of the pre-activation (convolution plus bias).

        Args:
            saved: what ``forward`` saved.
            dz: the gradient of the pre-activation.
            need_dx: whether to compute the input gradient (False for the first layer).

        Returns:
            ``(dx, grads)``.

        >>> dx, grads = layer.backward_from_logits(saved, dz)
        """
        grads = {}
        if not (need_dx or self.trainable):
            return None, grads
        dx, dkernel, dbias = self._conv_backward(saved[0], dz, need_dx, self.trainable and self.use_bias)
        if self.trainable:
            grads[self.kernel] = dkernel
            if self.use_bias:
                grads[self.bias] = dbias
        return dx, grads

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": list(self.kernel_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "dilation_rate": list(self.dilation_rate),
            "activation": self.activation.get_config(),
            "use_bias": self.use_bias,
            "kernel_initializer": self.kernel_initializer.get_config(),
            "bias_initializer": self.bias_initializer.get_config(),
            "kernel_regularizer": _regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": _regularizers.serialize(self.bias_regularizer),
        }


class Conv2D(_Conv):
    """A 2-D convolution (cross-correlation, as Keras) over channels-last images:
    ``y = activation(conv(x, kernel) + bias)``.

    Args:
        filters: the number of output channels.
        kernel_size: an int or a pair (rows, columns).
        strides: an int or a pair (default 1).
        padding: ``"valid"`` (no padding) or ``"same"`` (output ``ceil(size / stride)``, padded as
            TensorFlow does: the odd pixel at the bottom and right).
        dilation_rate: an int or a pair (default 1); strides and dilation cannot both exceed 1.
        activation: an activation name or instance, or None (linear).
        use_bias: whether to add a bias per filter.
        kernel_initializer, bias_initializer: initializer names or instances.
        kernel_regularizer, bias_regularizer: penalties added to the loss, or None.
        data_format: ``"channels_last"`` or None (channels-first is not supported).
        name, trainable, input_shape: as every layer.

    Inputs (batch, height, width, channels); weights ``kernel`` (kh, kw, channels, filters) and
    ``bias`` (filters,).

    >>> model = nnx.Sequential([nnx.Input((28, 28, 1)), nnx.Conv2D(32, 3, activation="relu"),
    ...                         nnx.MaxPooling2D(), nnx.Flatten(), nnx.Dense(10, activation="softmax")])
    """

    rank = 2

    def __init__(
        self,
        filters: int,
        kernel_size: int | tuple[int, int],
        strides: int | tuple[int, int] = (1, 1),
        padding: str = "valid",
        dilation_rate: int | tuple[int, int] = (1, 1),
        activation: str | _activations.ActivationFunction | None = None,
        use_bias: bool = True,
        kernel_initializer: str | _initializers.Initializer = "glorot_uniform",
        bias_initializer: str | _initializers.Initializer = "zeros",
        kernel_regularizer: str | _regularizers.Regularizer | None = None,
        bias_regularizer: str | _regularizers.Regularizer | None = None,
        data_format: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(filters, kernel_size, strides, padding, dilation_rate, activation, use_bias,
                         kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer, data_format,
                         **kwargs)


class Conv1D(_Conv):
    """A 1-D convolution over channels-last sequences: ``y = activation(conv(x, kernel) + bias)``.

    Args:
        filters: the number of output channels.
        kernel_size: an int (or a 1-tuple).
        strides: an int (default 1).
        padding: ``"valid"``, ``"same"`` or ``"causal"`` (left padding only: output t sees
            inputs up to t).
        dilation_rate: an int (default 1); strides and dilation cannot both exceed 1.
        activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer, data_format: as ``Conv2D``.

    Inputs (batch, steps, channels); weights ``kernel`` (kernel_size, channels, filters) and
    ``bias`` (filters,).

    >>> model = nnx.Sequential([nnx.Input((100, 8)), nnx.Conv1D(16, 5, padding="causal", activation="relu"),
    ...                         nnx.GlobalAveragePooling1D(), nnx.Dense(1)])
    """

    rank = 1
    paddings = ("valid", "same", "causal")

    def __init__(
        self,
        filters: int,
        kernel_size: int | tuple[int],
        strides: int | tuple[int] = 1,
        padding: str = "valid",
        dilation_rate: int | tuple[int] = 1,
        activation: str | _activations.ActivationFunction | None = None,
        use_bias: bool = True,
        kernel_initializer: str | _initializers.Initializer = "glorot_uniform",
        bias_initializer: str | _initializers.Initializer = "zeros",
        kernel_regularizer: str | _regularizers.Regularizer | None = None,
        bias_regularizer: str | _regularizers.Regularizer | None = None,
        data_format: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(filters, kernel_size, strides, padding, dilation_rate, activation, use_bias,
                         kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer, data_format,
                         **kwargs)


class ZeroPadding2D(Layer):
    """Adds rows and columns of zeros around channels-last images.

    Args:
        padding: an int (the same on every side), a pair ``(rows, columns)`` (symmetric), or
            ``((top, bottom), (left, right))``.
        data_format: ``"channels_last"`` or None.

    >>> nnx.Sequential([nnx.Input((28, 28, 1)), nnx.ZeroPadding2D(2), nnx.Conv2D(8, 5)])
    """

    def __init__(self, padding: int | tuple = (1, 1), data_format: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        check_data_format(data_format)
        bad = ValueError("ZeroPadding2D padding must be an int, a pair of ints, or a pair of (before, after) pairs "
                         f"of ints >= 0; received {padding!r}.")
        if isinstance(padding, (tuple, list)) and len(padding) == 2 and all(isinstance(p, (tuple, list)) for p in padding):
            try:
                pads = tuple(int_tuple(p, 2, "padding", minimum=0) for p in padding)
            except ValueError:
                raise bad from None
        else:
            try:
                rows, cols = int_tuple(padding, 2, "padding", minimum=0)
            except ValueError:
                raise bad from None
            pads = ((rows, rows), (cols, cols))
        self.padding = pads

    def compute_output_shape(self, input_shape):
        check_input_rank(self, tuple(input_shape), 2)
        (t, b), (l, r) = self.padding
        return (input_shape[0] + t + b, input_shape[1] + l + r, input_shape[2])

    def build(self, input_shape):
        self.compute_output_shape(input_shape)
        super().build(input_shape)

    def forward(self, x, training=False):
        return self.ops.pad2d(x, self.padding), None

    def backward(self, saved, dy, need_dx=True):
        return self.ops.crop2d(dy, self.padding), {}

    def get_config(self) -> dict:
        return {**super().get_config(), "padding": [list(p) for p in self.padding]}
