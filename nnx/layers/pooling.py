"""Pooling layers, channels-last: ``MaxPooling1D/2D``, ``AveragePooling1D/2D`` and the global
poolings. Max pooling keeps the index of each window's maximum for its backward; average pooling
is a reshape and a mean when the windows tile the input."""
from __future__ import annotations

from typing import Any

from ..conv_ops import output_length, padding_amounts
from .base import Layer
from .conv import check_data_format, check_input_rank, int_tuple, padding_mode


class _Pooling(Layer):
    """The shared part of the windowed poolings (``rank`` spatial axes)."""

    rank = 2
    mode = "max"

    def __init__(self, pool_size: int | tuple[int, ...] = 2, strides: int | tuple[int, ...] | None = None,
                 padding: str = "valid", data_format: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.pool_size = int_tuple(pool_size, self.rank, f"{name} pool_size")
        self.strides = self.pool_size if strides is None else int_tuple(strides, self.rank, f"{name} strides")
        self.padding = padding_mode(padding)
        check_data_format(data_format)

    def compute_output_shape(self, input_shape):
        check_input_rank(self, tuple(input_shape), self.rank)
        spatial = tuple(output_length(n, p, s, 1, self.padding)
                        for n, p, s in zip(input_shape[:-1], self.pool_size, self.strides))
        if min(spatial) < 1:
            raise ValueError(f"{type(self).__name__} {self.name!r}: samples of shape {tuple(input_shape)} are smaller "
                             f"than pool_size {self.pool_size} with padding 'valid'.")
        return (*spatial, int(input_shape[-1]))

    def build(self, input_shape):
        self.compute_output_shape(input_shape)
        super().build(input_shape)
        pads = [padding_amounts(n, p, s, 1, self.padding)
                for n, p, s in zip(input_shape[:-1], self.pool_size, self.strides)]
        self._pads = ((0, 0), *pads) if self.rank == 1 else tuple(pads)

    def _pairs(self) -> tuple[tuple[int, int], tuple[int, int]]:
        if self.rank == 2:
            return self.pool_size, self.strides
        return (1, *self.pool_size), (1, *self.strides)

    def _as_2d(self, x: Any) -> Any:
        return x if self.rank == 2 else self.xp.reshape(x, (x.shape[0], 1, *x.shape[1:]))

    def _from_2d(self, y: Any) -> Any:
        return y if self.rank == 2 else self.xp.reshape(y, (y.shape[0], *y.shape[2:]))

    def forward(self, x, training=False):
        window, strides = self._pairs()
        x2 = self._as_2d(x)
        if self.mode == "max":
            y, saved = self.ops.max_pool2d(x2, window, strides, self._pads)
            return self._from_2d(y), (saved if training else None)
        return self._from_2d(self.ops.avg_pool2d(x2, window, strides, self._pads)), None

    def backward(self, saved, dy, need_dx=True):
        window, strides = self._pairs()
        dy2 = self._as_2d(dy)
        if self.mode == "max":
            dx = self.ops.max_pool2d_backward(saved, dy2, window, strides, self._pads)
        else:
            shape = (dy.shape[0], *((1,) if self.rank == 1 else ()), *self.input_shape)
            dx = self.ops.avg_pool2d_backward(dy2, shape, window, strides, self._pads)
        return self._from_2d(dx), {}

    def get_config(self) -> dict:
        return {**super().get_config(), "pool_size": list(self.pool_size), "strides": list(self.strides),
                "padding": self.padding}


class MaxPooling2D(_Pooling):
    """The maximum over each window of channels-last images.

    Args:
        pool_size: an int or a pair (default (2, 2)).
        strides: an int, a pair, or None (the pool size).
        padding: ``"valid"`` or ``"same"`` (padding never wins the maximum).
        data_format: ``"channels_last"`` or None.

    >>> nnx.Sequential([nnx.Input((28, 28, 8)), nnx.MaxPooling2D((2, 2))])
    """

    rank, mode = 2, "max"

    def __init__(self, pool_size: int | tuple[int, int] = (2, 2), strides: int | tuple[int, int] | None = None,
                 padding: str = "valid", data_format: str | None = None, **kwargs: Any):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


class AveragePooling2D(_Pooling):
    """The mean over each window of channels-last images (with ``"same"`` padding, the padding is
    left out of the mean, as Keras).

    Args:
        pool_size, strides, padding, data_format: as ``MaxPooling2D``.

    >>> nnx.Sequential([nnx.Input((28, 28, 8)), nnx.AveragePooling2D(2)])
    """

    rank, mode = 2, "average"

    def __init__(self, pool_size: int | tuple[int, int] = (2, 2), strides: int | tuple[int, int] | None = None,
                 padding: str = "valid", data_format: str | None = None, **kwargs: Any):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


class MaxPooling1D(_Pooling):
    """The maximum over each window of channels-last sequences.

    Args:
        pool_size: an int (default 2).
        strides: an int, or None (the pool size).
        padding: ``"valid"`` or ``"same"``.
        data_format: ``"channels_last"`` or None.

    >>> nnx.Sequential([nnx.Input((100, 8)), nnx.MaxPooling1D(4)])
    """

    rank, mode = 1, "max"

    def __init__(self, pool_size: int | tuple[int] = 2, strides: int | tuple[int] | None = None,
                 padding: str = "valid", data_format: str | None = None, **kwargs: Any):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


class AveragePooling1D(_Pooling):
    """The mean over each window of channels-last sequences.

    Args:
        pool_size, strides, padding, data_format: as ``MaxPooling1D``.

    >>> nnx.Sequential([nnx.Input((100, 8)), nnx.AveragePooling1D(4)])
    """

    rank, mode = 1, "average"

    def __init__(self, pool_size: int | tuple[int] = 2, strides: int | tuple[int] | None = None,
                 padding: str = "valid", data_format: str | None = None, **kwargs: Any):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


class _GlobalPooling(Layer):
    """The mean or maximum over every spatial axis: (batch, *spatial, channels) -> (batch, channels)."""

    rank = 2
    mode = "average"

    def __init__(self, data_format: str | None = None, keepdims: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        check_data_format(data_format)
        self.keepdims = bool(keepdims)

    def compute_output_shape(self, input_shape):
        check_input_rank(self, tuple(input_shape), self.rank)
        return (*((1,) * self.rank if self.keepdims else ()), int(input_shape[-1]))

    def build(self, input_shape):
        self.compute_output_shape(input_shape)
        super().build(input_shape)

    def forward(self, x, training=False):
        xp = self.xp
        n, c = x.shape[0], x.shape[-1]
        flat = xp.reshape(x, (n, -1, c))
        if self.mode == "average":
            y = xp.mean(flat, axis=1)
            saved = None
        else:
            y = xp.max(flat, axis=1)
            saved = xp.argmax(flat, axis=1) if training else None
        return (xp.reshape(y, (n, *self.output_shape)) if self.keepdims else y), saved

    def backward(self, saved, dy, need_dx=True):
        xp = self.xp
        n, c = dy.shape[0], dy.shape[-1]
        steps = 1
        for d in self.input_shape[:-1]:
            steps *= d
        dy = xp.reshape(dy, (n, 1, c))
        if self.mode == "average":
            dx = xp.broadcast_to(dy * (1.0 / steps), (n, steps, c))
        else:
            positions = xp.reshape(xp.arange(steps, dtype=saved.dtype, device=self.backend.device), (1, steps, 1))
            dx = xp.where(positions == xp.reshape(saved, (n, 1, c)), dy, 0.0)
        return xp.reshape(dx, (n, *self.input_shape)), {}

    def get_config(self) -> dict:
        return {**super().get_config(), "keepdims": self.keepdims}


class GlobalAveragePooling2D(_GlobalPooling):
    """The mean over height and width: (batch, h, w, c) -> (batch, c).

    Args:
        data_format: ``"channels_last"`` or None.
        keepdims: keep the spatial axes, as size 1 (output (batch, 1, 1, c)).

    >>> nnx.Sequential([nnx.Input((7, 7, 64)), nnx.GlobalAveragePooling2D(), nnx.Dense(10)])
    """

    rank, mode = 2, "average"

    def __init__(self, data_format: str | None = None, keepdims: bool = False, **kwargs: Any):
        super().__init__(data_format, keepdims, **kwargs)


class GlobalMaxPooling2D(_GlobalPooling):
    """The maximum over height and width: (batch, h, w, c) -> (batch, c).

    Args:
        data_format, keepdims: as ``GlobalAveragePooling2D``.

    >>> nnx.Sequential([nnx.Input((7, 7, 64)), nnx.GlobalMaxPooling2D(), nnx.Dense(10)])
    """

    rank, mode = 2, "max"

    def __init__(self, data_format: str | None = None, keepdims: bool = False, **kwargs: Any):
        super().__init__(data_format, keepdims, **kwargs)


class GlobalAveragePooling1D(_GlobalPooling):
    """The mean over the steps: (batch, steps, c) -> (batch, c).

    Args:
        data_format: ``"channels_last"`` or None.
        keepdims: keep the steps axis, as size 1 (output (batch, 1, c)).

    >>> nnx.Sequential([nnx.Input((100, 8)), nnx.Conv1D(16, 3), nnx.GlobalAveragePooling1D()])
    """

    rank, mode = 1, "average"

    def __init__(self, data_format: str | None = None, keepdims: bool = False, **kwargs: Any):
        super().__init__(data_format, keepdims, **kwargs)


class GlobalMaxPooling1D(_GlobalPooling):
    """The maximum over the steps: (batch, steps, c) -> (batch, c).

    Args:
        data_format, keepdims: as ``GlobalAveragePooling1D``.

    >>> nnx.Sequential([nnx.Input((100, 8)), nnx.Conv1D(16, 3, activation="relu"), nnx.GlobalMaxPooling1D()])
    """

    rank, mode = 1, "max"

    def __init__(self, data_format: str | None = None, keepdims: bool = False, **kwargs: Any):
        super().__init__(data_format, keepdims, **kwargs)
