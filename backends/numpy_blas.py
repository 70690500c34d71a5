"""BLAS updates for NumPy arrays, from the CBLAS that NumPy itself links.

NumPy has no fused ``y += a * x``: ``w -= lr * g`` is two passes over the gradient (scale it, then
subtract it), where BLAS's ``axpy`` is one pass (and OpenBLAS runs it on every core). Nor can
``np.matmul`` add its product to an existing array: BLAS's ``gemm`` computes
``c = alpha * a.T @ b + beta * c`` in place, so a Dense kernel's SGD step ``w -= lr * x.T @ dz``
needs no gradient array at all. ``find()``
looks for the CBLAS library NumPy loaded (its wheels bundle OpenBLAS with renamed symbols,
``scipy_cblas_saxpy64_``), checks that the functions compute what they should on a probe, and
returns ``None`` when there is no such library: the caller keeps NumPy's ufuncs then.

>>> blas = find(); blas.axpy(-0.01, g, w)   # w -= 0.01 * g, in one pass
>>> blas.gemm_tn(-0.01, x, dz, 1.0, w)       # w -= 0.01 * x.T @ dz, in place
"""
from __future__ import annotations

import ctypes
import glob
import os
import sys

import numpy as np

# symbol spellings, most specific first: NumPy's wheels (scipy-openblas, 64-bit ints), then plain
# OpenBLAS / reference CBLAS with and without the 64-bit-int suffix
_SPELLINGS = ("scipy_cblas_{}64_", "cblas_{}64_", "scipy_cblas_{}", "cblas_{}")
_LIBRARY_WORDS = ("openblas", "blas", "mkl_rt", "accelerate")


def _loaded_libraries() -> list[str]:
    """Shared libraries the process has mapped whose name says BLAS (Linux), then those bundled
    beside NumPy (its wheels' ``numpy.libs`` / ``.dylibs``)."""
    paths: list[str] = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1] if "/" in line else ""
                name = os.path.basename(path).lower()
                if path not in paths and any(w in name for w in _LIBRARY_WORDS) and ".so" in name:
                    paths.append(path)
    except OSError:
        pass
    root = os.path.dirname(os.path.abspath(np.__file__))
    for pattern in ("../numpy.libs/*blas*", ".dylibs/*blas*", "../numpy.libs/*.dll"):
        for path in sorted(glob.glob(os.path.join(root, pattern))):
            if path not in paths:
                paths.append(path)
    return paths


_READ_POINTER = ctypes.c_void_p.from_address
# NumPy's array struct starts with the object header, then the data pointer
# (``PyArrayObject_fields.data``), a layout NumPy keeps across versions: reading it there is about
# a microsecond faster per array than ``__array_interface__`` (a dict built on every access) or
# ``ndarray.ctypes`` (a Python object). ``find`` checks it (``_layout_ok``) before any BLAS call.
_DATA_OFFSET = object.__basicsize__
_FLOAT32, _FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)


def _address(a: np.ndarray) -> int:
    """The address of ``a``'s first element."""
    return _READ_POINTER(id(a) + _DATA_OFFSET).value or 0


def _layout_ok() -> bool:
    """Whether ``_address`` reads what ``__array_interface__`` says, on arrays, views and offsets;
    only asked on CPython, where ``id`` is the object's address."""
    if sys.implementation.name != "cpython":
        return False
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    return all(_address(a) == a.__array_interface__["data"][0]
               for a in (base, base[1:], base[:, 2:], base.T, base.reshape(-1)[5:], np.empty(0), np.float32([1, 2])))


class Blas:
    """``axpy`` (``y += a x``) and ``axpby`` (``y = a x + b y``) on contiguous float32 / float64
    NumPy arrays of one size, in place on ``y``, and ``gemm_tn`` (``c = alpha a.T @ b + beta c``)
    on C-ordered matrices. The integer arguments are passed as 64-bit slots, which both 32- and
    64-bit-int CBLAS builds read correctly for sizes below 2**31 (``usable`` and ``gemm_usable``
    refuse larger ones). The data pointers are read from the array objects (see ``_address``),
    inline: a call per pointer would cost more than the read."""

    def __init__(self, functions: dict[tuple[str, type], ctypes._CFuncPtr]):
        self._f = functions

    @staticmethod
    def usable(x: np.ndarray, y: np.ndarray) -> bool:
        """Whether ``x`` and ``y`` can go to BLAS: same float32/float64 dtype, same shape, both
        C-contiguous, ``y`` writeable, fewer than 2**31 entries."""
        return (x.dtype == y.dtype and x.dtype.type in (np.float32, np.float64) and x.shape == y.shape
                and x.flags.c_contiguous and y.flags.c_contiguous and y.flags.writeable and x.size < 2 ** 31)

    @staticmethod
    def gemm_usable(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> bool:
        """Whether ``gemm_tn(alpha, a, b, beta, c)`` can run: ``a`` (k, m), ``b`` (k, n) and ``c``
        (m, n) of one float32/float64 dtype, all C-contiguous, each dimension below 2**31, ``c``
        writeable and sharing no memory with ``a`` or ``b``. (Once per kernel and step: the
        cheapest tests first, and memory compared only when an array is a view.)"""
        dt = c.dtype
        if (dt is not _FLOAT32 and dt is not _FLOAT64) or a.ndim != 2 or b.ndim != 2:
            return False
        k, m = a.shape
        n = b.shape[1]
        if not (a.dtype == dt and b.dtype == dt and b.shape[0] == k and c.shape == (m, n) and (k | m | n) < 2 ** 31
                and a.flags.c_contiguous and b.flags.c_contiguous and c.flags.c_contiguous and c.flags.writeable):
            return False
        if a.base is None and b.base is None and c.base is None:  # three arrays owning their memory: apart
            return True
        read, offset = _READ_POINTER, _DATA_OFFSET  # contiguous: each spans [address, address + nbytes)
        pa, pb, pc = read(id(a) + offset).value or 0, read(id(b) + offset).value or 0, read(id(c) + offset).value or 0
        return (pc + c.nbytes <= pa or pa + a.nbytes <= pc) and (pc + c.nbytes <= pb or pb + b.nbytes <= pc)

    def axpy(self, a: float, x: np.ndarray, y: np.ndarray) -> None:
        """``y += a * x`` in one pass (check ``usable`` first)."""
        read, offset = _READ_POINTER, _DATA_OFFSET
        self._f["axpy", x.dtype.type](x.size, a, read(id(x) + offset).value, 1, read(id(y) + offset).value, 1)

    def axpby(self, a: float, x: np.ndarray, b: float, y: np.ndarray) -> None:
        """``y = a * x + b * y`` in one pass (check ``usable`` first)."""
        read, offset = _READ_POINTER, _DATA_OFFSET
        self._f["axpby", x.dtype.type](x.size, a, read(id(x) + offset).value, 1, b, read(id(y) + offset).value, 1)

    def gemm_tn(self, alpha: float, a: np.ndarray, b: np.ndarray, beta: float, c: np.ndarray) -> None:
        """``c = alpha * a.T @ b + beta * c`` in place (check ``gemm_usable`` first)."""
        (k, m), n, read, offset = a.shape, b.shape[1], _READ_POINTER, _DATA_OFFSET
        self._f["gemm", a.dtype.type](_ROW_MAJOR, _TRANS, _NO_TRANS, m, n, k, alpha, read(id(a) + offset).value, m,
                                      read(id(b) + offset).value, n, beta, read(id(c) + offset).value, n)


_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112  # CBLAS's enum values


def _bind(lib: ctypes.CDLL, spelling: str) -> dict | None:
    """The six functions under ``spelling`` (``"cblas_{}"``: ``cblas_saxpy``, …), or None."""
    i, p = ctypes.c_int64, ctypes.c_void_p
    out = {}
    for op in ("axpy", "axpby", "gemm"):
        for dtype, letter, real in ((np.float32, "s", ctypes.c_float), (np.float64, "d", ctypes.c_double)):
            f = getattr(lib, spelling.format(letter + op), None)
            if f is None:
                return None
            f.argtypes = {"axpy": [i, real, p, i, p, i], "axpby": [i, real, p, i, real, p, i],
                          "gemm": [i, i, i, i, i, i, real, p, i, p, i, real, p, i]}[op]
            f.restype = None
            out[op, dtype] = f
    return out


def _probe(blas: Blas) -> bool:
    """The functions give NumPy's answer on a small case of each dtype (exactly representable)."""
    for dtype in (np.float32, np.float64):
        x = np.arange(1, 38, dtype=dtype)
        y = np.full(37, 3.0, dtype=dtype)
        blas.axpy(-0.5, x, y)
        z = np.full(37, 2.0, dtype=dtype)
        blas.axpby(0.25, x, -2.0, z)
        if not (np.array_equal(y, 3.0 - 0.5 * x) and np.array_equal(z, 0.25 * x - 4.0)):
            return False
        a = np.arange(15, dtype=dtype).reshape(5, 3)
        b = np.arange(10, dtype=dtype).reshape(5, 2) - 4
        c = np.ones((3, 2), dtype=dtype)
        blas.gemm_tn(-0.5, a, b, 2.0, c)
        if not np.array_equal(c, -0.5 * (a.T @ b) + 2.0):
            return False
    return True


_found: list = []


def find() -> Blas | None:
    """The process's CBLAS as a ``Blas``, or None (not found, wrong on the probe, or NumPy's
    arrays laid out otherwise than ``_address`` reads them). Searched once; ``NNX_NUMPY_BLAS=0``
    turns it off."""
    if _found:
        return _found[0]
    blas = None
    # 64-bit integer arguments read as 32-bit ones only on a little-endian machine
    if os.environ.get("NNX_NUMPY_BLAS", "1") != "0" and sys.byteorder == "little" and _layout_ok():
        for path in _loaded_libraries():
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for spelling in _SPELLINGS:
                functions = _bind(lib, spelling)
                if functions is not None:
                    candidate = Blas(functions)
                    if _probe(candidate):
                        blas = candidate
                    break
            if blas is not None:
                break
    _found.append(blas)
    return blas
