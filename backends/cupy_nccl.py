"""Gradient sums between GPUs through NCCL (``cupy.cuda.nccl``), for ``nnx.distributed`` on the
cupy backend: one device buffer, one allreduce per step, no host copy."""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def available() -> bool:
    """Whether CuPy can reach an NCCL library (the ``nvidia-nccl-cu12/13`` wheels bring one)."""
    try:
        from cupy.cuda import nccl
    except ImportError:
        return False
    return bool(getattr(nccl, "available", False))


class NcclReducer:
    """Sums through one device buffer and an NCCL communicator (``cupy.cuda.nccl``), on the
    backend's GPU; the communicator is created once, with a unique id broadcast over MPI."""

    def __init__(self, comm: Any, backend: Any):
        import cupy
        from cupy.cuda import nccl

        self._cupy, self._nccl, self.backend = cupy, nccl, backend
        uid = nccl.get_unique_id() if comm.Get_rank() == 0 else None
        uid = comm.bcast(uid, root=0)
        with backend.device:
            self.comm = nccl.NcclCommunicator(comm.Get_size(), uid, comm.Get_rank())
        self._types = {np.dtype("float32"): nccl.NCCL_FLOAT32, np.dtype("float64"): nccl.NCCL_FLOAT64}
        self._buffers: dict = {}

    def allreduce(self, backend: Any, grads: list | None, weights: list, scale: float, extras: list,
                  dtype: np.dtype) -> tuple[list, list]:
        cp = self._cupy
        sizes = [math.prod(w.shape) for w in weights]
        n = sum(sizes)
        with backend.device:
            key = (n + len(extras), dtype)
            buf = self._buffers.get(key)
            if buf is None:
                buf = self._buffers[key] = cp.empty(n + len(extras), dtype=dtype)
            offset = 0
            for i, k in enumerate(sizes):
                part = buf[offset:offset + k]
                if grads is None:
                    part.fill(0)
                else:
                    cp.multiply(cp.reshape(grads[i], (-1,)), scale, out=part, casting="same_kind")
                offset += k
            for i, e in enumerate(extras):
                buf[n + i] = e
            stream = cp.cuda.get_current_stream()
            self.comm.allReduce(buf.data.ptr, buf.data.ptr, n + len(extras), self._types[np.dtype(dtype)],
                                self._nccl.NCCL_SUM, stream.ptr)
            out, offset = [], 0
            for w, k in zip(weights, sizes):
                part = cp.reshape(buf[offset:offset + k], w.shape)
                out.append(part if part.dtype == w.dtype else part.astype(w.dtype))
                offset += k
            totals = buf[n:].copy()
        return out, [totals[i] for i in range(len(extras))]
