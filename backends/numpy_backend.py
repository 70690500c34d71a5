"""NumPy on the CPU, through ``array_api_compat.numpy``."""
from __future__ import annotations

import os
import platform
import sys
from typing import Any

import numpy as np

from .. import random as _random
from ..backend import Backend


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse (arrays up to 64 MiB from the heap, up to
    256 MiB of free heap kept) instead of unmapping it and faulting fresh zeroed pages in on the
    next step. A training step allocates and frees the same large arrays every step (a CNN's
    patch matrices: tens of MB), and the page faults cost about 30% of the step on the 2-core VM
    of ``benchmarks/cnn.py``. Once per process, on glibc only; ``NNX_MALLOPT=0`` turns it off.
    Returns whether it applied."""
    global _malloc_tuned
    if _malloc_tuned is not None:
        return _malloc_tuned
    _malloc_tuned = False
    if os.environ.get("NNX_MALLOPT", "1") != "0" and sys.platform.startswith("linux") \
            and platform.libc_ver()[0] == "glibc":
        try:
            import ctypes

            libc = ctypes.CDLL(None)
            _malloc_tuned = bool(libc.mallopt(_M_MMAP_THRESHOLD, 64 << 20)) and \
                bool(libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20))
        except (OSError, AttributeError):
            pass
    return _malloc_tuned


_malloc_tuned: bool | None = None


class NumpyBackend(Backend):
    """NumPy on the CPU; ``fast=False`` runs the portable operations only (used by the tests to
    cover the portable code on NumPy too)."""

    name = "numpy"

    def __init__(self, fast: bool = True) -> None:
        import array_api_compat.numpy as xp

        self.fast = fast
        super().__init__(xp, "cpu")
        keep_freed_memory()

    def make_ops(self):
        if not self.fast:
            return super().make_ops()
        from .numpy_ops import NumpyOps

        return NumpyOps(self.xp, self.device)

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, "cpu" if self.fast else "cpu-portable")

    def describe(self) -> str:
        return "numpy on cpu" if self.fast else "numpy on cpu (portable operations only)"

    def owns(self, a: Any) -> bool:
        return owns(a)

    def from_host(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x)

    def to_numpy(self, a: Any) -> np.ndarray:
        return np.asarray(a)

    def uniform(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        # the same host stream as the portable default, so numpy and strict runs match
        return _random.host_generator().random(shape, dtype=np.float32).astype(dtype, copy=False)


_instances: dict[bool, NumpyBackend] = {}


def _shared(fast: bool = True) -> NumpyBackend:
    if fast not in _instances:
        _instances[fast] = NumpyBackend(fast)
    return _instances[fast]


def unavailable_reason() -> str | None:
    return None


def create(device: Any = None) -> NumpyBackend:
    if device == "cpu-portable":
        return _shared(fast=False)
    if device not in (None, "cpu"):
        raise RuntimeError(f"The numpy backend runs on 'cpu' only; received device={device!r}.")
    return _shared()


def owns(a: Any) -> bool:
    return isinstance(a, (np.ndarray, np.generic))


def create_for(a: Any) -> NumpyBackend:
    return _shared()
