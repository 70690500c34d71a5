"""A training step captured as a CUDA graph and replayed per batch (``compile(jit_compile=True)``).

A step of a small model is a few dozen kernel launches, each costing microseconds of Python and
CuPy dispatch while the GPU work behind it may be shorter: the GPU waits for the host. Recorded
once as a graph, the whole step is one launch.

CuPy refuses cuBLAS calls while a stream is capturing (its ``setStream`` raises), so the matrix
products of a captured step go to ``cublasSgemm_v2`` / ``cublasDgemm_v2`` directly through ctypes,
on the cuBLAS handle CuPy itself uses, whose stream is set to the capturing stream beforehand.

Rules a captured step follows (checked where they can be):

- Every array the graph reads or writes across replays stays referenced: the weights, optimizer
  slots and the caller's static buffers; the temporaries come from a memory pool owned by the
  capture, so nothing else ever receives their addresses.
- No host synchronisation and no host data inside the step: ``cupy.asarray``/``cupy.array`` of
  host values raise while capturing (a recorded host copy would re-read a freed staging buffer).
- The graph runs on a blocking stream, so it is ordered with the work the caller issues on the
  default (legacy) stream before and after each replay (copying the next batch's indices,
  reading sums); recording refuses to start when another stream is current.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
from typing import Any, Callable

_capturing = False


def capturing() -> bool:
    """True while a step is being recorded (``CupyOps.matmul`` then calls cuBLAS directly)."""
    return _capturing


@functools.lru_cache(maxsize=None)
def _cublas() -> Any:
    import cupy as cp

    major = cp.cuda.runtime.runtimeGetVersion() // 1000  # the cuBLAS of CuPy's own CUDA, not another
    for name in (f"libcublas.so.{major}", f"cublas64_{major}.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        scalar = {"cublasSgemm_v2": ctypes.c_float, "cublasDgemm_v2": ctypes.c_double}
        for fname, ctype in scalar.items():
            f = getattr(lib, fname)
            f.restype = ctypes.c_int
            f.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                          ctypes.POINTER(ctype), ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                          ctypes.POINTER(ctype), ctypes.c_void_p, ctypes.c_int]
        return lib
    raise NotImplementedError(f"the cuBLAS library of CUDA {major} could not be loaded through ctypes, so matrix "
                              f"products cannot be recorded in a CUDA graph")


def _column_major(a: Any, cp: Any) -> tuple[int, int, Any]:
    """(op, leading dimension, array) presenting the row-major matrix ``a`` (r, c) to cuBLAS as
    its transpose (c, r) in column-major order: a C-ordered array as it is, an F-ordered one (a
    transposed view) with the transpose flag; anything else is copied to C order first."""
    if a.flags.c_contiguous:
        return 0, max(a.shape[1], 1), a
    if a.flags.f_contiguous:
        return 1, max(a.shape[0], 1), a
    a = cp.ascontiguousarray(a)
    return 0, max(a.shape[1], 1), a


def gemm(a: Any, b: Any) -> Any:
    """``a @ b`` through cuBLAS on the current stream, for a 2-D ``b`` and an ``a`` of at least
    two dimensions (leading axes are batch axes), float32 or float64. Usable during capture."""
    import cupy as cp

    if b.ndim != 2 or a.ndim < 2 or a.shape[-1] != b.shape[0]:
        raise NotImplementedError(f"a captured matrix product takes (..., k) @ (k, n); received shapes "
                                  f"{tuple(a.shape)} and {tuple(b.shape)}")
    if a.dtype != b.dtype or a.dtype.char not in "fd":
        raise NotImplementedError(f"a captured matrix product takes float32 or float64 operands of one dtype; "
                                  f"received {a.dtype} and {b.dtype}")
    lead = a.shape[:-1]
    a2 = a.reshape(-1, a.shape[-1]) if a.ndim > 2 else a
    m, k = a2.shape
    n = b.shape[1]
    out = cp.empty((m, n), dtype=a.dtype)
    if m and n:
        if k == 0:
            out.fill(0)
        else:
            op_b, ld_b, b = _column_major(b, cp)
            op_a, ld_a, a2 = _column_major(a2, cp)
            lib = _cublas()
            single = a.dtype.char == "f"
            f, ctype = (lib.cublasSgemm_v2, ctypes.c_float) if single else (lib.cublasDgemm_v2, ctypes.c_double)
            one, zero = ctype(1.0), ctype(0.0)
            # row-major out (m, n) is column-major out^T (n, m) = b^T (n, k) @ a^T (k, m)
            status = f(cp.cuda.device.get_cublas_handle(), op_b, op_a, n, m, k, ctypes.byref(one), b.data.ptr, ld_b,
                       a2.data.ptr, ld_a, ctypes.byref(zero), out.data.ptr, n)
            if status != 0:
                raise RuntimeError(f"cuBLAS gemm failed with status {status}")
    return out.reshape(*lead, n)


@contextlib.contextmanager
def _no_host_arrays(cp: Any):
    """``cupy.array``/``cupy.asarray`` of host data raise while the step is recorded."""
    real_array, real_asarray = cp.array, cp.asarray

    def guard(real):
        def call(obj, *args, **kwargs):
            if not isinstance(obj, cp.ndarray):
                raise NotImplementedError(f"the step creates a device array from host data ({type(obj).__name__}) "
                                          f"while it is being captured")
            return real(obj, *args, **kwargs)
        return call

    cp.array, cp.asarray = guard(real_array), guard(real_asarray)
    try:
        yield
    finally:
        cp.array, cp.asarray = real_array, real_asarray


class CapturedStep:
    """``fn`` recorded once as a CUDA graph on ``device``; ``launch()`` replays it.

    >>> step = CapturedStep(lambda: w.__isub__(0.1 * g), cupy.cuda.Device(0)); step.launch()
    """

    def __init__(self, fn: Callable[[], Any], device: Any):
        import cupy as cp
        from cupy_backends.cuda.libs import cublas

        global _capturing
        self._cp = cp
        self.pool = cp.cuda.MemoryPool()  # the graph's temporaries: their addresses stay the graph's
        if cp.cuda.get_current_stream().ptr != 0:
            raise NotImplementedError("a recorded step is ordered with CuPy's default stream; fit was called with "
                                      "another stream current (a `with cupy.cuda.Stream()` block, or "
                                      "CUPY_CUDA_PER_THREAD_DEFAULT_STREAM)")
        with device:
            self.stream = cp.cuda.Stream()  # blocking: ordered with the default stream
            handle = cp.cuda.device.get_cublas_handle()
            cp.cuda.Device().synchronize()
            cublas.setPointerMode(handle, getattr(cublas, "CUBLAS_POINTER_MODE_HOST", 0))
            cublas.setStream(handle, self.stream.ptr)
            with self.stream, cp.cuda.using_allocator(self.pool.malloc), _no_host_arrays(cp):
                self.stream.begin_capture()
                _capturing = True
                try:
                    self.result = fn()
                except BaseException:
                    _capturing = False
                    with contextlib.suppress(Exception):
                        self.stream.end_capture()
                    raise
                _capturing = False
                self.graph = self.stream.end_capture()
            self.graph.upload(self.stream)

    def launch(self) -> None:
        """Replay the recorded step (asynchronously, after the default stream's earlier work)."""
        self.graph.launch(self.stream)
