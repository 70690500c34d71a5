"""Portable convolution and pooling operations (channels-last), part of ``nnx.ops.Ops``.

The Array API has no convolution, ``as_strided``, ``pad`` or scatter-add, so everything here is
built from slices:

- padding is a slice assignment into a buffer filled with the pad value;
- ``im2col`` copies the ``kh * kw`` strided slices ``x[:, i:i + s*Ho:s, j:j + s*Wo:s, :]``
  (dilation scales ``i`` and ``j``) into consecutive blocks of the channel axis, in the order (i, j, channel) that a
  kernel of shape (kh, kw, in, filters) has when reshaped to (kh * kw * in, filters);
- a convolution is then one matrix product, and its input gradient is ``col2im``: the same
  slices, added (``+=``) into a zero buffer.

Shapes: ``x`` is (n, height, width, channels); ``pads`` is ((top, bottom), (left, right));
``window``, ``strides`` and ``dilation`` are (rows, columns) pairs. Backends override these
methods with strided views or fused kernels (``NumpyOps``, ``CupyOps``) and fall back to
``super()`` for what they do not handle.
"""
from __future__ import annotations

import math
from typing import Any

Pair = tuple[int, int]
Pads = tuple[Pair, Pair]


def output_length(n: int, k: int, stride: int, dilation: int, padding: str) -> int:
    """Output length of a window of ``k`` taps (``dilation`` apart) slid by ``stride`` over ``n``
    inputs, as Keras: ``ceil(n / stride)`` for "same" and "causal", and for "valid" the number
    of whole windows (0 when none fits)."""
    if padding in ("same", "causal"):
        return -(-n // stride)
    span = (k - 1) * dilation + 1
    return max((n - span) // stride + 1, 0)


def padding_amounts(n: int, k: int, stride: int, dilation: int, padding: str) -> Pair:
    """(before, after) zero padding of one axis, as TensorFlow and Keras: for "same" the total is
    ``max((ceil(n/s) - 1) s + (k - 1) d + 1 - n, 0)`` with the extra one after; "causal" pads
    ``(k - 1) d`` before; "valid" pads nothing."""
    if padding == "valid":
        return 0, 0
    if padding == "causal":
        return (k - 1) * dilation, 0
    total = max((output_length(n, k, stride, dilation, "same") - 1) * stride + (k - 1) * dilation + 1 - n, 0)
    return total // 2, total - total // 2


def _taps(window: Pair, strides: Pair, dilation: Pair, out_hw: Pair) -> list[tuple[slice, slice]]:
    """The (rows, columns) slices of each window position (i, j), row-major."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = window, strides, dilation, out_hw
    return [(slice(i * dh, i * dh + sh * (ho - 1) + 1, sh), slice(j * dw, j * dw + sw * (wo - 1) + 1, sw))
            for i in range(kh) for j in range(kw)]


class ConvOps:
    """The portable convolution and pooling methods (mixed into ``nnx.ops.Ops``)."""

    xp: Any
    device: Any

    # -- padding ---------------------------------------------------------------------------
    def pad2d(self, x: Any, pads: Pads, value: float = 0.0) -> Any:
        """``x`` (n, h, w, c) inside a buffer filled with ``value``; ``x`` itself when ``pads`` are zero."""
        (top, bottom), (left, right) = pads
        if not (top or bottom or left or right):
            return x
        n, h, w, c = x.shape
        out = self.xp.full((n, h + top + bottom, w + left + right, c), value, dtype=x.dtype, device=self.device)
        out[:, top:top + h, left:left + w, :] = x
        return out

    def crop2d(self, x: Any, pads: Pads) -> Any:
        """The inverse of ``pad2d``: the part of ``x`` inside ``pads``."""
        (top, bottom), (left, right) = pads
        if not (top or bottom or left or right):
            return x
        return x[:, top:x.shape[1] - bottom, left:x.shape[2] - right, :]

    # -- im2col / col2im -------------------------------------------------------------------
    def im2col(self, x: Any, window: Pair, strides: Pair, dilation: Pair, out_hw: Pair) -> Any:
        """Patches of the (already padded) ``x``: (n, Ho, Wo, kh * kw * c), columns ordered
        (i, j, channel)."""
        taps = _taps(window, strides, dilation, out_hw)
        if len(taps) == 1:
            return x[:, taps[0][0], taps[0][1], :]
        n, c = x.shape[0], x.shape[-1]
        # each tap copied into its column block (CuPy's concatenate of more than 8 arrays copies
        # a table of pointers from the host, which a step recorded as a CUDA graph cannot hold)
        out = self.xp.empty((n, *out_hw, len(taps) * c), dtype=x.dtype, device=self.device)
        for k, (rows, cols) in enumerate(taps):
            out[..., k * c:(k + 1) * c] = x[:, rows, cols, :]
        return out

    def col2im(self, cols: Any, padded_shape: tuple[int, ...], window: Pair, strides: Pair, dilation: Pair) -> Any:
        """The adjoint of ``im2col``: each column block of ``cols`` (n, Ho, Wo, kh * kw * c)
        added into a zero buffer of ``padded_shape`` (n, Hp, Wp, c) at its slice."""
        c = padded_shape[-1]
        out = self.xp.zeros(padded_shape, dtype=cols.dtype, device=self.device)
        for k, (rows, columns) in enumerate(_taps(window, strides, dilation, tuple(cols.shape[1:3]))):
            out[:, rows, columns, :] += cols[..., k * c:(k + 1) * c]
        return out

    # -- convolution -----------------------------------------------------------------------
    def conv2d(self, x: Any, kernel: Any, strides: Pair, dilation: Pair, pads: Pads) -> tuple[Any, Any]:
        """``(z, saved)``: the cross-correlation of ``x`` (n, h, w, c) with ``kernel``
        (kh, kw, c, filters), shape (n, Ho, Wo, filters), and what ``conv2d_backward`` needs.
        ``z`` is a fresh array the caller owns."""
        xp = self.xp
        kh, kw, c, f = kernel.shape
        xpad = self.pad2d(x, pads)
        n, hp, wp, _ = xpad.shape
        ho = (hp - (kh - 1) * dilation[0] - 1) // strides[0] + 1
        wo = (wp - (kw - 1) * dilation[1] - 1) // strides[1] + 1
        cols = xp.reshape(self.im2col(xpad, (kh, kw), strides, dilation, (ho, wo)), (n * ho * wo, kh * kw * c))
        z = self.matmul(cols, xp.reshape(kernel, (kh * kw * c, f)))
        return xp.reshape(z, (n, ho, wo, f)), (cols, tuple(xpad.shape))

    def conv2d_backward(self, saved: Any, dz: Any, kernel: Any, strides: Pair, dilation: Pair, pads: Pads,
                        need_dx: bool = True, need_dkernel: bool = True,
                        need_dbias: bool = False) -> tuple[Any, Any, Any]:
        """``(dx, dkernel, dbias)`` from ``conv2d``'s ``saved`` and the output gradient ``dz``
        (read-only); each is None when not asked for."""
        xp = self.xp
        cols, padded_shape = saved
        kh, kw, c, f = kernel.shape
        n, ho, wo, _ = dz.shape
        dz2 = xp.reshape(dz, (n * ho * wo, f))
        dkernel = xp.reshape(self.matmul(cols.T, dz2), kernel.shape) if need_dkernel else None
        dbias = self.sum_rows(dz2) if need_dbias else None
        if not need_dx:
            return None, dkernel, dbias
        dcols = xp.reshape(self.matmul(dz2, xp.reshape(kernel, (kh * kw * c, f)).T), (n, ho, wo, kh * kw * c))
        dx = self.col2im(dcols, padded_shape, (kh, kw), strides, dilation)
        return self.crop2d(dx, pads), dkernel, dbias

    # -- pooling ---------------------------------------------------------------------------
    @staticmethod
    def _pool_out(shape: tuple[int, ...], window: Pair, strides: Pair) -> Pair:
        return ((shape[1] - window[0]) // strides[0] + 1, (shape[2] - window[1]) // strides[1] + 1)

    def max_pool2d(self, x: Any, window: Pair, strides: Pair, pads: Pads) -> tuple[Any, Any]:
        """``(y, saved)``: the maximum over each window (padding never wins) and, for the
        backward, the position in its window of each first maximum."""
        xp = self.xp
        xpad = self.pad2d(x, pads, -math.inf)
        out_hw = self._pool_out(xpad.shape, window, strides)
        taps = [xpad[:, r, c, :] for r, c in _taps(window, strides, (1, 1), out_hw)]
        y, index = taps[0], xp.zeros(tuple(taps[0].shape), dtype=xp.int32, device=self.device)
        for k, tap in enumerate(taps[1:], 1):
            better = tap > y
            y = xp.where(better, tap, y)
            index = xp.where(better, k, index)
        return y, (index, tuple(xpad.shape))

    def max_pool2d_backward(self, saved: Any, dy: Any, window: Pair, strides: Pair, pads: Pads) -> Any:
        """``dx``: ``dy`` routed to the first maximum of each window."""
        xp = self.xp
        index, padded_shape = saved
        dx = xp.zeros(padded_shape, dtype=dy.dtype, device=self.device)
        for k, (rows, cols) in enumerate(_taps(window, strides, (1, 1), tuple(dy.shape[1:3]))):
            dx[:, rows, cols, :] += xp.where(index == k, dy, 0.0)
        return self.crop2d(dx, pads)

    def _pool_counts(self, shape: tuple[int, ...], window: Pair, strides: Pair, pads: Pads, dtype: Any) -> Any:
        """How many inputs (padding excluded) each window of an average pooling covers,
        (1, Ho, Wo, 1); a Python float when every window is whole."""
        if not any(pads[0] + pads[1]):
            return float(window[0] * window[1])
        xp = self.xp
        ones = self.pad2d(xp.ones((1, shape[1], shape[2], 1), dtype=dtype, device=self.device), pads)
        out_hw = self._pool_out(ones.shape, window, strides)
        total = None
        for r, c in _taps(window, strides, (1, 1), out_hw):
            total = ones[:, r, c, :] if total is None else total + ones[:, r, c, :]
        return total

    def avg_pool2d(self, x: Any, window: Pair, strides: Pair, pads: Pads) -> Any:
        """The mean over each window, padding excluded from the count (as Keras)."""
        xp = self.xp
        (ph, pw), (sh, sw) = window, strides
        if (ph, pw) == (sh, sw) and not any(pads[0] + pads[1]):  # tiles: a reshape and a mean
            n, h, w, c = x.shape
            ho, wo = h // ph, w // pw
            tiles = xp.reshape(x[:, :ho * ph, :wo * pw, :], (n, ho, ph, wo, pw, c))
            return xp.mean(tiles, axis=(2, 4))
        xpad = self.pad2d(x, pads)
        out_hw = self._pool_out(xpad.shape, window, strides)
        total = None
        for r, c in _taps(window, strides, (1, 1), out_hw):
            total = xpad[:, r, c, :] if total is None else total + xpad[:, r, c, :]
        return total / self._pool_counts(tuple(x.shape), window, strides, pads, x.dtype)

    def avg_pool2d_backward(self, dy: Any, x_shape: tuple[int, ...], window: Pair, strides: Pair, pads: Pads) -> Any:
        """``dx``: each window's gradient spread evenly over the inputs it covers."""
        xp = self.xp
        (ph, pw), (sh, sw) = window, strides
        n, h, w, c = x_shape
        if (ph, pw) == (sh, sw) and not any(pads[0] + pads[1]):
            ho, wo = dy.shape[1], dy.shape[2]
            spread = xp.broadcast_to(xp.reshape(dy * (1.0 / (ph * pw)), (n, ho, 1, wo, 1, c)), (n, ho, ph, wo, pw, c))
            dx = xp.reshape(spread, (n, ho * ph, wo * pw, c))
            return self.pad2d(dx, ((0, h - ho * ph), (0, w - wo * pw)))
        share = dy / self._pool_counts(x_shape, window, strides, pads, dy.dtype)
        padded = (n, h + pads[0][0] + pads[0][1], w + pads[1][0] + pads[1][1], c)
        dx = xp.zeros(padded, dtype=dy.dtype, device=self.device)
        for rows, cols in _taps(window, strides, (1, 1), tuple(dy.shape[1:3])):
            dx[:, rows, cols, :] += share
        return self.crop2d(dx, pads)

    # -- a convolution and the max pooling of its output -----------------------------------
    def conv2d_max_pool(self, x: Any, kernel: Any, strides: Pair, dilation: Pair, pads: Pads,
                        window: Pair, training: bool = True) -> tuple[Any, Any]:
        """``(p, saved)``: ``conv2d`` (no bias) followed by a max pooling over whole ``window``
        tiles (strides equal to the window, no padding), which backends may compute without the
        convolution's full output; ``saved`` may be None when not ``training``."""
        z, conv_saved = self.conv2d(x, kernel, strides, dilation, pads)
        p, pool_saved = self.max_pool2d(z, window, window, ((0, 0), (0, 0)))
        return p, (conv_saved, pool_saved)

    def conv2d_max_pool_backward(self, saved: Any, dp: Any, kernel: Any, strides: Pair, dilation: Pair, pads: Pads,
                                 window: Pair, need_dx: bool = True, need_dkernel: bool = True) -> tuple[Any, Any]:
        """``(dx, dkernel)`` from ``conv2d_max_pool``'s ``saved`` and the pooled gradient ``dp``
        (read-only); each is None when not asked for."""
        conv_saved, pool_saved = saved
        dz = self.max_pool2d_backward(pool_saved, dp, window, window, ((0, 0), (0, 0)))
        dx, dkernel, _ = self.conv2d_backward(conv_saved, dz, kernel, strides, dilation, pads, need_dx=need_dx,
                                              need_dkernel=need_dkernel)
        return dx, dkernel
