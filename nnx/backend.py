"""Backend selection: which array library (and device) nnx computes on.

The core asks the current :class:`Backend` for its Array API namespace ``xp`` and its ``device``;
everything library-specific (transfers, random masks, synchronisation, fused kernels) lives in the
adapters under ``nnx.backends``.
"""
from __future__ import annotations

import contextlib
import importlib
import os
from typing import Any, Iterator

import numpy as np  # host side only: data entering and leaving the device

_ADAPTERS = {
    "numpy": "numpy_backend",
    "cupy": "cupy_backend",
    "array_api_strict": "strict_backend",
}
_FLOATX = ("float16", "float32", "float64")


class Backend:
    """An array library and a device, as the core sees them.

    Adapters in ``nnx.backends`` subclass this. Example::

        b = nnx.get_backend()
        z = b.xp.zeros((2, 3), dtype=b.xp.float32, device=b.device)
    """

    name: str = ""

    def __init__(self, xp: Any, device: Any):
        self.xp = xp
        self.device = device
        self.ops = self.make_ops()

    def make_ops(self) -> Any:
        """The operations object layers, losses and optimizers call (``nnx.ops.Ops`` or a
        backend's subclass with faster kernels)."""
        from .ops import Ops

        return Ops(self.xp, self.device)

    # -- identity --------------------------------------------------------------------------
    @property
    def key(self) -> tuple[str, str]:
        return (self.name, str(self.device))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Backend) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"Backend(name={self.name!r}, device={self.device!r})"

    def describe(self) -> str:
        return f"{self.name} on {self.device}"

    # -- transfers -------------------------------------------------------------------------
    def owns(self, a: Any) -> bool:
        """True when ``a`` is an array of this backend's library."""
        raise NotImplementedError

    def from_host(self, x: np.ndarray) -> Any:
        """Move a host numpy array to this backend's device, keeping its dtype."""
        return self.xp.asarray(x, device=self.device)

    def to_numpy(self, a: Any) -> np.ndarray:
        raise NotImplementedError

    def dtype(self, name: str) -> Any:
        return getattr(self.xp, name)

    # -- randomness and timing -------------------------------------------------------------
    def seed(self, n: int) -> None:
        """Seed the device-side generator (dropout masks)."""

    def uniform(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """Uniform [0, 1) samples on the device. Default: drawn on the host, then moved."""
        from . import random as _random

        host = _random.device_rng().random(shape, dtype=np.float32)
        return self.xp.astype(self.from_host(host), dtype)

    def synchronize(self) -> None:
        """Wait for queued device work (used only for timing)."""

    def memory_in_use(self) -> int | None:
        """Bytes of device memory this library holds, where it keeps count (None on the host)."""
        return None

    def free_memory(self) -> None:
        """Return cached device memory to the system, where the library keeps a pool."""


class _State:
    current: Backend | None = None
    floatx: str = "float32"


_state = _State()


def _adapter(name: str):
    return importlib.import_module(f"nnx.backends.{_ADAPTERS[name]}")


def _check_name(name: str) -> str:
    key = str(name).lower()
    if key != "auto" and key not in _ADAPTERS:
        valid = ", ".join([*_ADAPTERS, "auto"])
        raise ValueError(f"Unknown backend {name!r}; expected one of: {valid}.")
    return key


def _create(name: str, device: Any = None) -> Backend:
    key = _check_name(name)
    if key == "auto":
        if _adapter("cupy").unavailable_reason() is None:
            return _adapter("cupy").create(device)
        return _adapter("numpy").create(None)
    return _adapter(key).create(device)


def set_backend(name: str, device: Any = None) -> Backend:
    """Make ``name`` the current backend: "numpy", "cupy", "array_api_strict" or "auto".

    Raises ``ValueError`` for an unknown name and ``RuntimeError`` when the backend cannot run
    here; in both cases the current backend is unchanged.
    """
    backend = _create(name, device)
    _state.current = backend
    return backend


def get_backend() -> Backend:
    """The current backend, with ``.name``, ``.xp`` and ``.device``."""
    if _state.current is None:
        set_backend(os.environ.get("NNX_BACKEND", "numpy"))
    return _state.current


@contextlib.contextmanager
def use_backend(name: str | Backend, device: Any = None) -> Iterator[Backend]:
    """Switch backend inside a ``with`` block; the previous one is restored on exit."""
    previous = _state.current
    backend = name if isinstance(name, Backend) else _create(name, device)
    _state.current = backend
    try:
        yield backend
    finally:
        _state.current = previous


def available_backends() -> list[str]:
    """Names of the backends that can run on this machine."""
    names = []
    for name in _ADAPTERS:
        try:
            usable = _adapter(name).unavailable_reason() is None
        except ImportError:
            usable = False
        if usable:
            names.append(name)
    return names


def set_floatx(name: str) -> None:
    """Set the default float dtype of new layers and data: "float16", "float32" or "float64"."""
    if name not in _FLOATX:
        raise ValueError(f"Unknown floatx {name!r}; expected one of: {', '.join(_FLOATX)}.")
    _state.floatx = name


def floatx() -> str:
    """The default float dtype name (``"float32"`` unless changed)."""
    return _state.floatx


def _owner(a: Any) -> Backend | None:
    current = get_backend()
    if current.owns(a):
        return current
    for name in _ADAPTERS:
        module = importlib.import_module(f"nnx.backends.{_ADAPTERS[name]}")
        if module.owns(a):
            return module.create_for(a)
    return None


def to_numpy(a: Any) -> np.ndarray:
    """Any backend array (or host data) -> ``numpy.ndarray`` on the host."""
    if isinstance(a, np.ndarray):
        return a
    owner = _owner(a) if not isinstance(a, (list, tuple, int, float, bool, np.generic)) else None
    if owner is None:
        return np.asarray(a)
    return owner.to_numpy(a)


def asarray(x: Any, dtype: Any = None) -> Any:
    """Host data (numpy array, nested list, scalar) or any backend array -> array on the current
    backend and device. Python floats become ``floatx()``; numpy arrays keep their dtype unless
    ``dtype`` is given (a name such as ``"float32"`` or a dtype of either library)."""
    backend = get_backend()
    if backend.owns(x):
        if _device_of(x) != backend.device:
            x = backend.xp.asarray(x, device=backend.device)
        return x if dtype is None else backend.xp.astype(x, backend.dtype(_dtype_name(dtype)))
    host = to_numpy(x) if not isinstance(x, (list, tuple, int, float, bool)) else np.asarray(x)
    if dtype is not None:
        host = host.astype(np.dtype(_dtype_name(dtype)), copy=False)
    elif host.dtype == np.float64 and not isinstance(x, np.ndarray):
        host = host.astype(floatx())
    return backend.from_host(host)


def _device_of(a: Any) -> Any:
    return getattr(a, "device", None)


def _dtype_name(dtype: Any) -> str:
    if isinstance(dtype, str):
        return dtype
    for name in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"):
        try:
            if dtype == getattr(get_backend().xp, name):
                return name
        except AttributeError:
            continue
    return str(np.dtype(dtype))
