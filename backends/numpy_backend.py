"""NumPy on the CPU, through ``array_api_compat.numpy``."""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import random as _random
from ..backend import Backend
from . import numpy_kernels


class NumpyBackend(Backend):
    name = "numpy"

    def __init__(self) -> None:
        import array_api_compat.numpy as xp

        super().__init__(xp, "cpu")
        self.kernels = numpy_kernels.KERNELS

    def owns(self, a: Any) -> bool:
        return owns(a)

    def from_host(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x)

    def to_numpy(self, a: Any) -> np.ndarray:
        return np.asarray(a)

    def uniform(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        # the same host stream as the portable default, so numpy and strict runs match
        return _random.device_rng().random(shape, dtype=np.float32).astype(dtype, copy=False)


_instance: list[NumpyBackend] = []


def _shared() -> NumpyBackend:
    if not _instance:
        _instance.append(NumpyBackend())
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
