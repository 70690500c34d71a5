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


class _PooledConv:
    """What ``conv2d_max_pool`` keeps for its backward: the patches of the window-covered output
    positions, rows ordered (window position, sample, row, column), and the mask of each
    window's maximum over those rows."""

    __slots__ = ("cols", "mask", "padded_shape", "pooled_hw")

    def __init__(self, cols: np.ndarray, mask: np.ndarray, padded_shape: tuple[int, ...], pooled_hw: tuple[int, int]):
        self.cols, self.mask, self.padded_shape, self.pooled_hw = cols, mask, padded_shape, pooled_hw


def _pooled_taps(window, pool, strides, dilation, pooled_hw):
    """For each kernel tap (i, j) and window position (a, b), in that order: the (rows, columns)
    slices of the padded input that output positions (ph R + a, pw C + b) read at that tap."""
    (kh, kw), (ph, pw), (sh, sw), (dh, dw), (hq, wq) = window, pool, strides, dilation, pooled_hw
    out = []
    for i in range(kh):
        for j in range(kw):
            row = []
            for a in range(ph):
                for b in range(pw):
                    r0, c0 = a * sh + i * dh, b * sw + j * dw
                    row.append((slice(r0, r0 + ph * sh * (hq - 1) + 1, ph * sh),
                                slice(c0, c0 + pw * sw * (wq - 1) + 1, pw * sw)))
            out.append(row)
    return out


def _conv_out(padded_shape, kernel_shape, strides, dilation) -> tuple[int, int]:
    """The (rows, columns) of a convolution's output over an already padded input."""
    (kh, kw), (hp, wp) = kernel_shape[:2], padded_shape[1:3]
    return ((hp - (kh - 1) * dilation[0] - 1) // strides[0] + 1, (wp - (kw - 1) * dilation[1] - 1) // strides[1] + 1)


def _patches(xpad, kernel_shape, strides, dilation, window, pooled_hw, tap_major):
    """The (rows, kh*kw*c) patch matrix of the convolution outputs that whole ``window`` tiles
    cover, rows ordered (window position, sample, row, column); window (1, 1) is every output.
    ``tap_major`` (few channels): one contiguous copy per tap and window position into a
    (kh*kw*c, rows) buffer, returned transposed (a view); else a strided view's copy."""
    kh, kw, c, _ = kernel_shape
    (ph, pw), (hq, wq), n = window, pooled_hw, xpad.shape[0]
    positions = ph * pw
    if tap_major:
        taps = np.empty((kh * kw, c, positions, n, hq, wq), dtype=xpad.dtype)
        for k, per_position in enumerate(_pooled_taps((kh, kw), window, strides, dilation, pooled_hw)):
            for q, (r, s) in enumerate(per_position):
                np.copyto(taps[k, :, q], xpad[:, r, s, :].transpose(3, 0, 1, 2))
        return taps.reshape(kh * kw * c, positions * n * hq * wq).T
    (sh, sw), (dh, dw) = strides, dilation
    view = sliding_window_view(xpad, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(1, 2))
    view = view[:, ::sh, ::sw, :, ::dh, ::dw]  # (n, >=ho, >=wo, c, kh, kw)
    blocks = np.empty((positions, n, hq, wq, kh, kw, c), dtype=xpad.dtype)
    for q in range(positions):
        a, b = divmod(q, pw)
        np.copyto(blocks[q], view[:, a:a + ph * (hq - 1) + 1:ph, b:b + pw * (wq - 1) + 1:pw].transpose(0, 1, 2, 4, 5, 3))
    return blocks.reshape(positions * n * hq * wq, kh * kw * c)


def _first_marks(marks: list[np.ndarray]) -> None:
    """Keep only the first True across ``marks`` (same-shape views of one bool mask), in place."""
    marks = [m.view(np.uint8) for m in marks]
    seen = marks[0].copy()
    for k in range(1, len(marks)):
        np.greater(marks[k], seen, out=marks[k])  # a mark survives only where no earlier position was marked
        if k < len(marks) - 1:
            np.bitwise_or(seen, marks[k], out=seen)


class NumpyConvOps:
    """The NumPy overrides of ``nnx.conv_ops.ConvOps`` (mixed into ``NumpyOps``)."""

    def im2col(self, x, window, strides, dilation, out_hw):
        (kh, kw), (ho, wo), (n, c) = window, out_hw, (x.shape[0], x.shape[-1])
        if kh * kw == 1:
            return super().im2col(x, window, strides, dilation, out_hw)
        cols = _patches(x, (kh, kw, c, 0), strides, dilation, (1, 1), (ho, wo), tap_major=False)
        return cols.reshape(n, ho, wo, kh * kw * c)

    #: input channels up to which ``conv2d`` lays its patches out tap-major (see there)
    tap_major_channels = 4

    def conv2d(self, x, kernel, strides, dilation, pads):
        kh, kw, c, f = kernel.shape
        if c > self.tap_major_channels or kh * kw == 1:
            return super().conv2d(x, kernel, strides, dilation, pads)
        # few channels (a first layer's images): tap-major patches (1.4 ms -> 0.2 ms for
        # (128, 28, 28, 1) and a 3x3 kernel); every output is one window of its own
        xpad = self.pad2d(x, pads)
        ho, wo = _conv_out(xpad.shape, kernel.shape, strides, dilation)
        cols = _patches(xpad, kernel.shape, strides, dilation, (1, 1), (ho, wo), tap_major=True)
        z = cols @ kernel.reshape(kh * kw * c, f)
        return z.reshape(xpad.shape[0], ho, wo, f), (cols, tuple(xpad.shape))

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

    def conv2d_max_pool(self, x, kernel, strides, dilation, pads, window, training=True):
        # the convolution at the output positions some window covers, its patch rows ordered by
        # window position first: each position's outputs are one contiguous block, so the
        # pooling is elementwise over ph*pw blocks, and its backward writes them contiguously
        kh, kw, c, f = kernel.shape
        ph, pw = window
        xpad = self.pad2d(x, pads)
        ho, wo = _conv_out(xpad.shape, kernel.shape, strides, dilation)
        hq, wq = ho // ph, wo // pw
        if min(hq, wq) < 1 or x.dtype.itemsize not in _BITS:
            return super().conv2d_max_pool(x, kernel, strides, dilation, pads, window, training)
        n = xpad.shape[0]
        positions, rows = ph * pw, n * hq * wq
        cols = _patches(xpad, kernel.shape, strides, dilation, window, (hq, wq),
                        tap_major=c <= self.tap_major_channels)
        z = (cols @ kernel.reshape(kh * kw * c, f)).reshape(positions, rows, f)
        y = z[0].copy() if positions == 1 else np.maximum(z[0], z[1])
        for block in z[2:]:
            np.maximum(y, block, out=y)
        if not training:
            return y.reshape(n, hq, wq, f), None
        mask = np.equal(z, y)
        if np.count_nonzero(mask) != y.size or np.isnan(np.add.reduce(y, axis=None)):
            _first_marks(list(mask))  # ties: each window's first maximum, as the portable code
        return y.reshape(n, hq, wq, f), _PooledConv(cols, mask, tuple(xpad.shape), (hq, wq))

    def conv2d_max_pool_backward(self, saved, dp, kernel, strides, dilation, pads, window, need_dx=True,
                                 need_dkernel=True):
        if not isinstance(saved, _PooledConv):
            return super().conv2d_max_pool_backward(saved, dp, kernel, strides, dilation, pads, window, need_dx,
                                                    need_dkernel)
        kh, kw, c, f = kernel.shape
        positions, rows, _ = saved.mask.shape
        dz = np.empty(saved.mask.shape, dtype=dp.dtype)
        _select(saved.mask, np.broadcast_to(dp.reshape(1, rows, f), dz.shape), dz)
        dz2 = dz.reshape(positions * rows, f)
        dkernel = (saved.cols.T @ dz2).reshape(kernel.shape) if need_dkernel else None
        if not need_dx:
            return None, dkernel
        # the input gradient: dz back in spatial order (one copy), then one product per kernel
        # tap and one add of whole rows, as conv2d_backward (adding the window-ordered blocks
        # at stride-2 positions instead: 6.3 ms against 4.2 for the convnet's second layer)
        (ph, pw), n, (hq, wq) = window, dp.shape[0], saved.pooled_hw
        spatial = np.empty((n, hq, ph, wq, pw, f), dtype=dp.dtype)
        np.copyto(spatial, dz.reshape(ph, pw, n, hq, wq, f).transpose(2, 3, 0, 4, 1, 5))
        spatial = spatial.reshape(n * hq * ph * wq * pw, f)
        per_tap = kernel.reshape(kh * kw, c, f)
        block = np.empty((n, hq * ph, wq * pw, c), dtype=dp.dtype)
        dx = np.zeros(saved.padded_shape, dtype=dp.dtype)
        for k, (r, s) in enumerate(_taps((kh, kw), strides, dilation, (hq * ph, wq * pw))):
            np.matmul(spatial, per_tap[k].T, out=block.reshape(-1, c))
            part = dx[:, r, s, :]
            np.add(part, block, out=part)
        return self.crop2d(dx, pads), dkernel

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
            _first_marks([mask[:, :, i, :, j, :] for i in range(ph) for j in range(pw)])
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
