"""NumPy convolution and pooling: im2col as one copy of a strided view, col2im over contiguous
blocks, and tiled max pooling with a mask of each window's maximum. Mixed into ``NumpyOps``; every case these
do not handle goes to the portable code (``nnx.conv_ops``) through ``super()``.

Measured on a 2-core x86-64 VM for the MNIST convnet's shapes (batch 128), per call:

- im2col of (128, 13, 13, 32) by a 3x3 kernel: 0.8 ms from ``sliding_window_view`` against 2.9 ms
  for the portable concatenation of nine slices;
- col2im: 2.0 ms when each kernel position's block is contiguous (one product per position),
  against 4.4 ms adding strided column blocks of the one big product;
- the bias gradient of a (86528, 32) gradient: 0.4 ms as a matrix-vector product, 1.4 ms
  through ``np.add.reduce``;
- 2x2 max pooling of (128, 26, 26, 32): 2.2 ms with the mask of each window's maximum (3.0 ms
  building a position index tap by tap, 18 ms for ``argmax`` over the stacked windows), and its
  backward 1.5 ms (2.6 ms from the index).
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from ..conv_ops import _taps

_BITS = {2: np.int16, 4: np.int32, 8: np.int64}


def _select(mask: np.ndarray, dy: np.ndarray, out: np.ndarray) -> None:
    """``out = dy where mask else +0`` (inf and NaN blocked too), branch-free: dy's bits and an
    all-ones mask. ``out`` may be a strided view."""
    ints = _BITS[dy.dtype.itemsize]
    bits = out.view(ints)
    np.negative(mask.view(np.uint8), out=bits, dtype=ints)
    np.bitwise_and(bits, dy.view(ints), out=bits)


def _tiles(x: np.ndarray, window: tuple[int, int]) -> np.ndarray:
    """The whole ``ph x pw`` tiles of ``x`` (n, h, w, c) as axes of their own: a view
    (n, ho, ph, wo, pw, c), whatever ``x``'s strides."""
    ph, pw = window
    n, h, w, c = x.shape
    s0, s1, s2, s3 = x.strides
    return as_strided(x, (n, h // ph, ph, w // pw, pw, c), (s0, s1 * ph, s1, s2 * pw, s2, s3))


class _TiledMax:
    """What tiled max pooling keeps for its backward: a mask of each window's first maximum."""

    __slots__ = ("mask", "shape")

    def __init__(self, mask: np.ndarray, shape: tuple[int, ...]):
        self.mask, self.shape = mask, shape


class NumpyConvOps:
    """The NumPy overrides of ``nnx.conv_ops.ConvOps`` (mixed into ``NumpyOps``)."""

    def im2col(self, x, window, strides, dilation, out_hw):
        (kh, kw), (sh, sw), (dh, dw), (ho, wo) = window, strides, dilation, out_hw
        if kh * kw == 1:
            return super().im2col(x, window, strides, dilation, out_hw)
        view = sliding_window_view(x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(1, 2))
        view = view[:, :sh * (ho - 1) + 1:sh, :sw * (wo - 1) + 1:sw, :, ::dh, ::dw]  # (n, ho, wo, c, kh, kw)
        n, c = x.shape[0], x.shape[-1]
        cols = np.empty((n, ho, wo, kh, kw, c), dtype=x.dtype)
        np.copyto(cols, view.transpose(0, 1, 2, 4, 5, 3))
        return cols.reshape(n, ho, wo, kh * kw * c)

    #: input channels up to which ``conv2d`` lays its patches out tap-major (see there)
    tap_major_channels = 4

    def conv2d(self, x, kernel, strides, dilation, pads):
        kh, kw, c, f = kernel.shape
        if c > self.tap_major_channels or kh * kw == 1:
            return super().conv2d(x, kernel, strides, dilation, pads)
        # few channels (a first layer's images): the patches as (kh*kw*c, rows), one contiguous
        # copy of each tap (1.4 ms -> 0.2 ms for (128, 28, 28, 1) and a 3x3 kernel); their
        # transpose is the (rows, kh*kw*c) matrix the products and conv2d_backward expect
        xpad = self.pad2d(x, pads)
        n, hp, wp, _ = xpad.shape
        ho = (hp - (kh - 1) * dilation[0] - 1) // strides[0] + 1
        wo = (wp - (kw - 1) * dilation[1] - 1) // strides[1] + 1
        taps = np.empty((kh * kw, c, n, ho, wo), dtype=x.dtype)
        for k, (rows, columns) in enumerate(_taps((kh, kw), strides, dilation, (ho, wo))):
            np.copyto(taps[k], xpad[:, rows, columns, :].transpose(3, 0, 1, 2))
        cols = taps.reshape(kh * kw * c, n * ho * wo).T
        z = cols @ kernel.reshape(kh * kw * c, f)
        return z.reshape(n, ho, wo, f), (cols, tuple(xpad.shape))

    def conv2d_backward(self, saved, dz, kernel, strides, dilation, pads, need_dx=True, need_dkernel=True,
                        need_dbias=False):
        cols, padded_shape = saved
        kh, kw, c, f = kernel.shape
        n, ho, wo, _ = dz.shape
        dz2 = dz.reshape(n * ho * wo, f)
        dkernel = (cols.T @ dz2).reshape(kernel.shape) if need_dkernel else None
        dbias = np.ones(dz2.shape[0], dtype=dz.dtype) @ dz2 if need_dbias else None
        if not need_dx:
            return None, dkernel, dbias
        # one product per kernel position into one reused buffer: each block is contiguous, so
        # col2im's additions run over whole rows instead of c-wide column blocks, and no
        # (rows, kh*kw*c) temporary is written and read back
        per_tap = kernel.reshape(kh * kw, c, f)
        block = np.empty((n, ho, wo, c), dtype=dz.dtype)
        dx = np.zeros(padded_shape, dtype=dz.dtype)
        for k, (rows, columns) in enumerate(_taps((kh, kw), strides, dilation, (ho, wo))):
            np.matmul(dz2, per_tap[k].T, out=block.reshape(n * ho * wo, c))
            part = dx[:, rows, columns, :]
            np.add(part, block, out=part)
        return self.crop2d(dx, pads), dkernel, dbias

    def max_pool2d(self, x, window, strides, pads):
        ph, pw = window
        if tuple(window) != tuple(strides) or any(pads[0] + pads[1]) or x.dtype.itemsize not in _BITS:
            return super().max_pool2d(x, window, strides, pads)
        tiles = _tiles(x, window)
        taps = [tiles[:, :, i, :, j, :] for i in range(ph) for j in range(pw)]
        y = taps[0].copy() if len(taps) == 1 else np.maximum(taps[0], taps[1])
        for tap in taps[2:]:
            np.maximum(y, tap, out=y)
        # the backward's mask in one contiguous pass: every position equal to its window's maximum
        # (1.5x faster than building a position index tap by tap, and the backward needs no
        # comparison); each window has one such position unless its maximum is tied
        mask = np.equal(tiles, y[:, :, None, :, None, :])
        # ties: keep each window's first maximum, as the portable code (a NaN window has no mark, so
        # NaN could hide a tie from the count)
        if np.count_nonzero(mask) != y.size or np.isnan(np.add.reduce(y, axis=None)):
            bits = mask.view(np.uint8)
            marks = [bits[:, :, i, :, j, :] for i in range(ph) for j in range(pw)]
            seen = marks[0].copy()
            for k, mark in enumerate(marks[1:], 1):
                np.greater(mark, seen, out=mark)  # a mark survives only where no earlier position was marked
                if k < len(marks) - 1:
                    np.bitwise_or(seen, mark, out=seen)
        return y, _TiledMax(mask, tuple(x.shape))

    def max_pool2d_backward(self, saved, dy, window, strides, pads):
        if not isinstance(saved, _TiledMax):
            return super().max_pool2d_backward(saved, dy, window, strides, pads)
        ph, pw = window
        ho, wo = dy.shape[1], dy.shape[2]
        dx = np.empty(saved.shape, dtype=dy.dtype)
        dx[:, ho * ph:, :, :] = 0  # the rows and columns no window covers
        dx[:, :, wo * pw:, :] = 0
        # one contiguous pass over the tiles copies dy where the mask is set
        tiles = _tiles(dx, window)
        _select(saved.mask, np.broadcast_to(dy[:, :, None, :, None, :], tiles.shape), tiles)
        return dx
