"""NumPy on the CPU, through ``array_api_compat.numpy``."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import Backend
from . import numpy_kernels


class NumpyBackend(Backend):
    name = "numpy"

    def __init__(self) -> None:
        import array_api_compat.numpy as xp

        super().__init__(xp, "cpu")
        self._rng = np.random.default_rng()
        self.kernels = numpy_kernels.KERNELS

    def owns(self, a: Any) -> bool:
        return owns(a)

    def from_host(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x)

    def to_numpy(self, a: Any) -> np.ndarray:
        return np.asarray(a)

    def seed(self, n: int) -> None:
        self._rng = np.random.default_rng(n)

    def uniform(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return self._rng.random(shape, dtype=np.dtype(dtype) if dtype != np.float16 else np.float32).astype(dtype, copy=False)


_instance: list[NumpyBackend] = []


def _shared() -> NumpyBackend:
    if not _instance:
        _instance.append(NumpyBackend())
        from ..random import current_seed

        if current_seed() is not None:
            _instance[0].seed(current_seed())
    return _instance[0]


def unavailable_reason() -> str | None:
    return None


def create(device: Any = None) -> NumpyBackend:
    if device not in (None, "cpu"):
        raise RuntimeError(f"The numpy backend runs on 'cpu' only; received device={device!r}.")
    return _shared()


def owns(a: Any) -> bool:
    return isinstance(a, (np.ndarray, np.generic))


def create_for(a: Any) -> NumpyBackend:
    return _shared()
