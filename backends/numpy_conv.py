"""NumPy convolution and pooling: im2col as one copy of a strided view, col2im over contiguous
blocks, and tiled max pooling with a one-byte index. Mixed into ``NumpyOps``; every case these
do not handle goes to the portable code (``nnx.conv_ops``) through ``super()``.

Measured on a 2-core x86-64 VM for the MNIST convnet's shapes (batch 128), per call:

- im2col of (128, 13, 13, 32) by a 3x3 kernel: 0.8 ms from ``sliding_window_view`` against 2.9 ms
  for the portable concatenation of nine slices;
- col2im: 2.0 ms when each kernel position's block is contiguous (one product per position),
  against 4.4 ms adding strided column blocks of the one big product;
- the bias gradient of a (86528, 32) gradient: 0.4 ms as a matrix-vector product, 1.4 ms
  through ``np.add.reduce``;
- 2x2 max pooling of (128, 26, 26, 32): 2.8 ms with its index, against 18 ms for ``argmax`` over
  the stacked windows.
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


class _TiledMax:
    """What tiled max pooling keeps for its backward: each output's position in its window."""

    __slots__ = ("index", "shape")

    def __init__(self, index: np.ndarray, shape: tuple[int, ...]):
        self.index, self.shape = index, shape


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
        if tuple(window) != tuple(strides) or any(pads[0] + pads[1]) or ph * pw > 255 or x.dtype.itemsize not in _BITS:
            return super().max_pool2d(x, window, strides, pads)
        ho, wo = x.shape[1] // ph, x.shape[2] // pw
        taps = [x[:, i:ho * ph:ph, j:wo * pw:pw, :] for i in range(ph) for j in range(pw)]
        y = taps[0].copy()
        index = np.zeros(y.shape, dtype=np.uint8)
        better, marks = np.empty(y.shape, bool), np.empty(y.shape, np.uint8)
        for k in range(1, len(taps)):
            np.greater(taps[k], y, out=better)
            np.maximum(y, taps[k], out=y)
            np.multiply(better.view(np.uint8), np.uint8(k), out=marks)
            np.maximum(index, marks, out=index)  # a later position wins only where strictly greater
        return y, _TiledMax(index, tuple(x.shape))

    def max_pool2d_backward(self, saved, dy, window, strides, pads):
        if not isinstance(saved, _TiledMax):
            return super().max_pool2d_backward(saved, dy, window, strides, pads)
        ph, pw = window
        n, h, w, c = saved.shape
        ho, wo = dy.shape[1], dy.shape[2]
        dx = np.empty(saved.shape, dtype=dy.dtype)
        dx[:, ho * ph:, :, :] = 0  # the rows and columns no window covers
        dx[:, :, wo * pw:, :] = 0
        # the tiles as axes of their own, (n, ho, ph, wo, pw, c): one contiguous pass compares each
        # position with its window's index and copies dy there (strided per-position passes: 1.8x slower)
        s0, s1, s2, s3 = dx.strides
        tiles = as_strided(dx, (n, ho, ph, wo, pw, c), (s0, s1 * ph, s1, s2 * pw, s2, s3))  # a view, always
        positions = np.arange(ph * pw, dtype=np.uint8).reshape(1, 1, ph, 1, pw, 1)
        mask = np.equal(saved.index[:, :, None, :, None, :], positions)
        _select(mask, np.broadcast_to(dy[:, :, None, :, None, :], tiles.shape), tiles)
        return dx
