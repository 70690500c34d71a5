"""CuPy on a CUDA GPU, through ``array_api_compat.cupy``. CuPy is imported only when asked for."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import Backend


class CupyBackend(Backend):
    name = "cupy"

    def __init__(self, device_id: int) -> None:
        import array_api_compat.cupy as xp
        import cupy

        self._cupy = cupy
        super().__init__(xp, cupy.cuda.Device(device_id))
        from ..random import device_seed

        self._rng = cupy.random.default_rng(device_seed())

    def make_ops(self):
        from .cupy_ops import CupyOps

        return CupyOps(self.xp, self.device)

    def for_local_rank(self, local_rank: int) -> "CupyBackend":
        device_id = int(local_rank) % self._cupy.cuda.runtime.getDeviceCount()
        self._cupy.cuda.Device(device_id).use()
        return self if device_id == self.device.id else create(device_id)

    def gradient_reducer(self, comm: Any) -> Any:
        from . import cupy_nccl

        if not cupy_nccl.available():
            import warnings

            warnings.warn("NCCL is not available to CuPy (pip install 'nnx-arrayapi[cuda12]' or '[cuda13]' "
                          "brings nvidia-nccl-cu12 / -cu13): gradients are summed through host memory "
                          "and MPI instead.", RuntimeWarning, stacklevel=4)
            return None
        return cupy_nccl.NcclReducer(comm, self)

    captures_steps = True

    def capture(self, fn: Any) -> Any:
        from .cupy_graph import CapturedStep

        return CapturedStep(fn, self.device)

    def describe(self) -> str:
        return f"cupy on CUDA device {self.device.id}"

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, str(self.device.id))

    def owns(self, a: Any) -> bool:
        return owns(a)

    def from_host(self, x: np.ndarray) -> Any:
        with self.device:
            return self._cupy.asarray(x)

    def to_numpy(self, a: Any) -> np.ndarray:
        return self._cupy.asnumpy(a)

    def seed(self, n: int) -> None:
        with self.device:
            self._rng = self._cupy.random.default_rng(n)

    def uniform(self, shape: tuple[int, ...], dtype: Any) -> Any:
        from ..random import active_stream
        from .cupy_graph import capturing

        if capturing():  # a replayed draw would not follow the model's dropout stream
            raise NotImplementedError("random draws (Dropout) cannot be recorded in a CUDA graph")
        stream = active_stream()
        with self.device:
            rng = self._rng if stream is None else stream.device_generator(self, self._cupy.random.default_rng)
            return rng.random(shape, dtype=self._cupy.float32).astype(dtype, copy=False)

    def synchronize(self) -> None:
        self._cupy.cuda.Device(self.device.id).synchronize()

    def memory_in_use(self) -> int:
        return int(self._cupy.get_default_memory_pool().used_bytes())

    def free_memory(self) -> None:
        self._cupy.get_default_memory_pool().free_all_blocks()
        self._cupy.get_default_pinned_memory_pool().free_all_blocks()


def unavailable_reason() -> str | None:
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed (pip install 'nnx-arrayapi[cuda12]' or 'nnx-arrayapi[cuda13]')"
    except Exception as e:  # a broken CUDA install raises at import
        return f"CuPy failed to import: {e}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return f"no usable CUDA device ({type(e).__name__}: {e})"
    if count < 1:
        return "no CUDA device found"
    return None


_instances: dict[int, CupyBackend] = {}


def create(device: Any = None) -> CupyBackend:
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(f"Cannot use the cupy backend: {reason}.")
    import cupy

    device_id = 0 if device is None else int(getattr(device, "id", device))
    count = cupy.cuda.runtime.getDeviceCount()
    if not 0 <= device_id < count:
        raise RuntimeError(f"CUDA device {device_id} does not exist; this machine has {count}.")
    if device_id not in _instances:  # one per device, so its generator is not re-seeded
        _instances[device_id] = CupyBackend(device_id)
    return _instances[device_id]


def reseed(n: int) -> None:
    """Re-seed the device generator of every CuPy backend created so far."""
    for backend in _instances.values():
        backend.seed(n)


def owns(a: Any) -> bool:
    return type(a).__module__.startswith("cupy")


def create_for(a: Any) -> CupyBackend:
    return create(a.device.id)
