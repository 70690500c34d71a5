"""BatchNormalization and LayerNormalization, for inputs of any rank, with exact backward passes.

Both normalise ``x`` to ``xhat = (x - mean) / sqrt(var + epsilon)`` (biased variance) and return
``gamma * xhat + beta``. Their backward is the full gradient through the mean and the variance:
with ``g = dy * gamma`` and means taken over the normalised axes,

    dx = (g - mean(g) - xhat * mean(g * xhat)) / sqrt(var + epsilon)

BatchNormalization takes its statistics over every axis but ``axis`` (the batch included) while
training, and its moving statistics in inference; LayerNormalization takes them over ``axis`` for
each sample, the same way in training and inference.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

from .. import initializers as _initializers
from .. import regularizers as _regularizers
from ..ops import clip as _clip
from .base import Layer, as_int


def _positive_axis(axis: int, rank: int, layer: str, input_shape: tuple[int, ...]) -> int:
    """``axis`` of a batch of rank ``rank`` as a positive index; never 0, the batch axis."""
    a = axis + rank if axis < 0 else axis
    if not 1 <= a < rank:
        raise ValueError(f"{layer} axis {axis} is out of range for inputs of shape (batch, "
                         f"{', '.join(map(str, input_shape))}); expected an axis in [1, {rank - 1}] or "
                         f"[-{rank - 1}, -1] (0 is the batch axis).")
    return a


def _float(value: Any, what: str, low: float, high: float = math.inf, closed_high: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not (low <= v < high or (closed_high and v == high)) or isinstance(value, bool):
        bound = "]" if closed_high else ")"
        raise ValueError(f"{what} must be a float in [{low}, {high}{bound}; received {value!r}.")
    return v


class _Normalized(NamedTuple):
    """What a training forward saves: the normalised input and 1 / sqrt(var + epsilon)
    (broadcastable against x), and, for BatchNormalization, the batch statistics (C,)."""

    xhat: Any
    inv_std: Any
    mean: Any = None
    var: Any = None


class _Affine(NamedTuple):
    """What an inference-mode forward during training (a frozen BatchNormalization) saves: the
    per-channel factor of its linear map ``y = x * factor + offset``."""

    factor: Any


def _normalize(xp: Any, x: Any, axes: tuple[int, ...], epsilon: float) -> tuple[Any, Any, Any, Any]:
    """``(xhat, inv_std, mean, var)`` over ``axes`` (kept as size-1 axes), in ``x``'s dtype. A
    float16 ``x`` is normalised in float32, its statistics clipped to float16's range (as Keras:
    squares of float16 values overflow at 256)."""
    half = getattr(xp, "float16", None)  # not in the Array API standard
    wide = half is not None and x.dtype == half
    xs = xp.astype(x, xp.float32) if wide else x
    mean = xp.mean(xs, axis=axes, keepdims=True)
    xc = xs - mean
    var = xp.mean(xc * xc, axis=axes, keepdims=True)
    inv_std = 1.0 / xp.sqrt(var + epsilon)
    xhat = xc * inv_std
    if wide:
        top = float(xp.finfo(half).max)
        xhat, inv_std = xp.astype(xhat, half), xp.astype(inv_std, half)
        mean, var = xp.astype(_clip(xp, mean, -top, top), half), xp.astype(_clip(xp, var, 0.0, top), half)
    return xhat, inv_std, mean, var


def _normalized_backward(xp: Any, saved: _Normalized, dy: Any, gamma: Any, axes: tuple[int, ...]) -> Any:
    """dx of ``y = gamma * xhat + beta`` through the statistics over ``axes``."""
    g = dy if gamma is None else dy * gamma
    mean_g = xp.mean(g, axis=axes, keepdims=True)
    mean_gx = xp.mean(g * saved.xhat, axis=axes, keepdims=True)
    return (g - mean_g - saved.xhat * mean_gx) * saved.inv_std


class BatchNormalization(Layer):
    """Normalises each channel (the entries along ``axis``) with statistics over the batch (and
    every other axis), then scales by ``gamma`` and shifts by ``beta``.

    Training (``fit``): the batch's mean and biased variance; after each optimizer step the moving
    statistics follow them, ``moving = moving * momentum + batch * (1 - momentum)``. Inference
    (``predict``, ``evaluate``, validation): the moving statistics. A frozen layer
    (``trainable=False``) runs in inference mode in ``fit`` too, and its moving statistics stay
    (as Keras).

    Args:
        axis: the channel axis (default -1, the last: channels-last images, Dense features).
        momentum: the moving statistics' momentum, in [0, 1].
        epsilon: added to the variance before the square root (> 0).
        center: learn ``beta`` (an offset); scale: learn ``gamma`` (a factor).
        beta_initializer, gamma_initializer, moving_mean_initializer,
        moving_variance_initializer: initializer names or instances.
        beta_regularizer, gamma_regularizer: penalties on ``beta`` / ``gamma``, or None.
        name, trainable, input_shape, input_dim: as every layer.

    Weights, in Keras order: ``gamma`` (if ``scale``), ``beta`` (if ``center``), then the
    non-trainable ``moving_mean`` and ``moving_variance``, each of shape (channels,).

    >>> model = nnx.Sequential([nnx.Input((28, 28, 3)), nnx.layers.BatchNormalization(),
    ...                         nnx.Flatten(), nnx.Dense(10, activation="softmax")])
    """

    def __init__(
        self,
        axis: int = -1,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        beta_initializer: Any = "zeros",
        gamma_initializer: Any = "ones",
        moving_mean_initializer: Any = "zeros",
        moving_variance_initializer: Any = "ones",
        beta_regularizer: Any = None,
        gamma_regularizer: Any = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.axis = as_int(axis, "BatchNormalization axis", minimum=-(2**31))
        if self.axis == 0:
            raise ValueError("BatchNormalization axis must not be 0, the batch axis; received 0.")
        self.momentum = _float(momentum, "BatchNormalization momentum", 0.0, 1.0, closed_high=True)
        self.epsilon = _float(epsilon, "BatchNormalization epsilon", 0.0)
        if self.epsilon <= 0.0:
            raise ValueError(f"BatchNormalization epsilon must be > 0; received {epsilon!r}.")
        self.center, self.scale = bool(center), bool(scale)
        self.beta_initializer = _initializers.get(beta_initializer)
        self.gamma_initializer = _initializers.get(gamma_initializer)
        self.moving_mean_initializer = _initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = _initializers.get(moving_variance_initializer)
        self.beta_regularizer = _regularizers.get(beta_regularizer)
        self.gamma_regularizer = _regularizers.get(gamma_regularizer)
        self.gamma = self.beta = self.moving_mean = self.moving_variance = None

    def build(self, input_shape):
        super().build(input_shape)
        rank = len(input_shape) + 1
        a = _positive_axis(self.axis, rank, "BatchNormalization", tuple(input_shape))
        channels = int(input_shape[a - 1])
        self._reduce = tuple(i for i in range(rank) if i != a)  # statistics over these axes
        self._bshape = tuple(channels if i == a else 1 for i in range(rank))
        self._channels = channels
        if self.scale:
            self.gamma = self.add_weight("gamma", (channels,), self.gamma_initializer, self.gamma_regularizer)
        if self.center:
            self.beta = self.add_weight("beta", (channels,), self.beta_initializer, self.beta_regularizer)
        self.moving_mean = self.add_weight("moving_mean", (channels,), self.moving_mean_initializer, trainable=False)
        self.moving_variance = self.add_weight("moving_variance", (channels,), self.moving_variance_initializer,
                                               trainable=False)

    def _b(self, w: Any) -> Any:
        """A (channels,) array shaped to broadcast against the input."""
        return self.xp.reshape(w, self._bshape)

    def forward(self, x, training=False):
        xp = self.xp
        if not (training and self.trainable):  # the moving statistics: an affine map per channel
            factor = 1.0 / xp.sqrt(self._b(self.moving_variance.value) + self.epsilon)
            if self.scale:
                factor = factor * self._b(self.gamma.value)
            y = (x - self._b(self.moving_mean.value)) * factor
            if self.center:
                y = y + self._b(self.beta.value)
            return y, (_Affine(factor) if training else None)
        xhat, inv_std, mean, var = _normalize(xp, x, self._reduce, self.epsilon)
        y = xhat * self._b(self.gamma.value) if self.scale else xhat
        if self.center:
            y = y + self._b(self.beta.value)
        c = (self._channels,)
        return y, _Normalized(xhat, inv_std, xp.reshape(mean, c), xp.reshape(var, c))

    def backward(self, saved, dy, need_dx=True):
        xp = self.xp
        if isinstance(saved, _Affine):  # frozen: no statistics to differentiate through
            return (dy * saved.factor if need_dx else None), {}
        grads = {}
        c = (self._channels,)
        if self.scale:
            grads[self.gamma] = xp.reshape(xp.sum(dy * saved.xhat, axis=self._reduce), c)
        if self.center:
            grads[self.beta] = xp.reshape(xp.sum(dy, axis=self._reduce), c)
        if not need_dx:
            return None, grads
        gamma = self._b(self.gamma.value) if self.scale else None
        return _normalized_backward(xp, saved, dy, gamma, self._reduce), grads

    def update_state(self, saved):
        """The moving statistics follow the batch's (called by the model after the optimizer step).

        Args:
            saved: what ``forward`` saved: the batch mean and variance.

        >>> layer.update_state(saved)
        """
        if not isinstance(saved, _Normalized):
            return
        m = self.momentum  # in place: a step recorded as a device graph keeps updating these arrays
        mean, var = self.moving_mean.value, self.moving_variance.value
        mean *= m
        mean += saved.mean * (1.0 - m)
        var *= m
        var += saved.var * (1.0 - m)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "axis": self.axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": self.beta_initializer.get_config(),
            "gamma_initializer": self.gamma_initializer.get_config(),
            "moving_mean_initializer": self.moving_mean_initializer.get_config(),
            "moving_variance_initializer": self.moving_variance_initializer.get_config(),
            "beta_regularizer": _regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": _regularizers.serialize(self.gamma_regularizer),
        }


class LayerNormalization(Layer):
    """Normalises each sample over ``axis`` (mean and biased variance of that sample), then scales
    by ``gamma`` and shifts by ``beta``; the same in training and inference.

    Args:
        axis: the axis normalised (default -1), or a list of axes (never 0, the batch axis).
        epsilon: added to the variance before the square root (> 0).
        center: learn ``beta``; scale: learn ``gamma``.
        beta_initializer, gamma_initializer: initializer names or instances.
        beta_regularizer, gamma_regularizer: penalties on ``beta`` / ``gamma``, or None.
        name, trainable, input_shape, input_dim: as every layer.

    Weights, in Keras order: ``gamma`` (if ``scale``) and ``beta`` (if ``center``), each of the
    shape of the normalised axes ((features,) for the default axis).

    >>> model = nnx.Sequential([nnx.Input((16, 32)), nnx.layers.LayerNormalization(), nnx.Dense(8)])
    """

    def __init__(
        self,
        axis: int | list[int] | tuple[int, ...] = -1,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        beta_initializer: Any = "zeros",
        gamma_initializer: Any = "ones",
        beta_regularizer: Any = None,
        gamma_regularizer: Any = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if isinstance(axis, (list, tuple)):
            if not axis:
                raise ValueError("LayerNormalization axis must be an int or a non-empty list of ints; received [].")
            self.axis = [as_int(a, "LayerNormalization axis", minimum=-(2**31)) for a in axis]
        else:
            self.axis = as_int(axis, "LayerNormalization axis", minimum=-(2**31))
        if 0 in (self.axis if isinstance(self.axis, list) else [self.axis]):
            raise ValueError(f"LayerNormalization axis must not include 0, the batch axis; received {axis!r}.")
        self.epsilon = _float(epsilon, "LayerNormalization epsilon", 0.0)
        if self.epsilon <= 0.0:
            raise ValueError(f"LayerNormalization epsilon must be > 0; received {epsilon!r}.")
        self.center, self.scale = bool(center), bool(scale)
        self.beta_initializer = _initializers.get(beta_initializer)
        self.gamma_initializer = _initializers.get(gamma_initializer)
        self.beta_regularizer = _regularizers.get(beta_regularizer)
        self.gamma_regularizer = _regularizers.get(gamma_regularizer)
        self.gamma = self.beta = None

    def build(self, input_shape):
        super().build(input_shape)
        rank = len(input_shape) + 1
        axes = self.axis if isinstance(self.axis, list) else [self.axis]
        positive = sorted({_positive_axis(a, rank, "LayerNormalization", tuple(input_shape)) for a in axes})
        if len(positive) != len(axes):
            raise ValueError(f"LayerNormalization axis {self.axis!r} names an axis twice.")
        self._axes = tuple(positive)  # statistics over these, per sample
        self._others = tuple(i for i in range(rank) if i not in positive)  # gamma's gradient sums these
        self._pshape = tuple(int(input_shape[a - 1]) for a in positive)
        self._bshape = tuple(int(input_shape[i - 1]) if i in positive else 1 for i in range(rank))
        if self.scale:
            self.gamma = self.add_weight("gamma", self._pshape, self.gamma_initializer, self.gamma_regularizer)
        if self.center:
            self.beta = self.add_weight("beta", self._pshape, self.beta_initializer, self.beta_regularizer)

    def _b(self, w: Any) -> Any:
        return self.xp.reshape(w, self._bshape)

    def forward(self, x, training=False):
        xp = self.xp
        xhat, inv_std, _, _ = _normalize(xp, x, self._axes, self.epsilon)
        y = xhat * self._b(self.gamma.value) if self.scale else xhat
        if self.center:
            y = y + self._b(self.beta.value)
        return y, (_Normalized(xhat, inv_std) if training else None)

    def backward(self, saved, dy, need_dx=True):
        xp = self.xp
        grads = {}
        if self.trainable:
            if self.scale:
                grads[self.gamma] = xp.reshape(xp.sum(dy * saved.xhat, axis=self._others), self._pshape)
            if self.center:
                grads[self.beta] = xp.reshape(xp.sum(dy, axis=self._others), self._pshape)
        if not need_dx:
            return None, grads
        gamma = self._b(self.gamma.value) if self.scale else None
        return _normalized_backward(xp, saved, dy, gamma, self._axes), grads

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "axis": list(self.axis) if isinstance(self.axis, list) else self.axis,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": self.beta_initializer.get_config(),
            "gamma_initializer": self.gamma_initializer.get_config(),
            "beta_regularizer": _regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": _regularizers.serialize(self.gamma_regularizer),
        }
