"""Backend selection: which array library (and device) nnx computes on.

The core asks the current :class:`Backend` for its Array API namespace ``xp`` and its ``device``;
everything library-specific (transfers, random masks, synchronisation, fused kernels) lives in the
adapters under ``nnx.backends``.

The current backend and floatx are per thread, over a process-wide default:

- ``set_backend`` called from the main thread outside any ``use_backend`` block sets the
  process-wide default; called from any other thread, or inside such a block, it sets the calling
  thread's own value only (inside a block: until the block ends). ``set_floatx`` likewise, with
  ``use_floatx`` blocks.
- A thread that has not set its own value follows the process-wide default, whatever the main
  thread last set outside any block; a thread never sees another thread's ``use_backend``.
- ``use_backend`` / ``use_floatx`` change the calling thread's value (its current context, so
  asyncio tasks are kept apart too) for the ``with`` block and restore it on exit, also on an
  exception.
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
import threading
from typing import Any, Callable, Iterator

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
        """The dtype object of this backend's namespace for ``name`` (``"float32"``, ``"int64"``, …)."""
        return getattr(self.xp, name)

    @property
    def has_float64(self) -> bool:
        """Whether this backend's device computes in float64 (array_api_strict's ``no_float64``
        device does not). Epoch sums are kept in float64 where it does."""
        cached = self.__dict__.get("_has_float64")
        if cached is None:
            try:
                kinds = self.xp.__array_namespace_info__().dtypes(device=self.device, kind="real floating")
                cached = "float64" in kinds
            except Exception:  # a namespace without the inspection API: assume the common case
                cached = hasattr(self.xp, "float64")
            self.__dict__["_has_float64"] = cached
        return cached

    # -- randomness and timing -------------------------------------------------------------
    def seed(self, n: int) -> None:
        """Seed the device-side generator (dropout masks)."""

    def uniform(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """Uniform [0, 1) samples on the device, from the stream of the model being trained
        (``nnx.random.active_stream()``), else from the global dropout stream. Default: drawn on
        the host, then moved.

        Args:
            shape: the shape of the samples.
            dtype: a float dtype of this backend.

        Returns:
            An array of ``shape`` and ``dtype`` on this backend's device.

        >>> keep = backend.uniform((32, 128), backend.xp.float32) >= 0.2
        """
        from . import random as _random

        host = _random.host_generator().random(shape, dtype=np.float32)
        return self.xp.astype(self.from_host(host), dtype)

    def synchronize(self) -> None:
        """Wait for queued device work (used only for timing)."""

    def memory_in_use(self) -> int | None:
        """Bytes of device memory this library holds, where it keeps count (None on the host)."""
        return None

    def free_memory(self) -> None:
        """Return cached device memory to the system, where the library keeps a pool."""


# -- current backend and floatx: per thread, over a process-wide default -----------------------
#
# The rule (as Python's decimal contexts, with a process-wide default underneath):
#
# 1. ``set_backend`` / ``set_floatx`` set the value of the calling thread. Called from the main
#    thread outside any ``use_backend`` (resp. ``use_floatx``) block, they set the process-wide
#    default instead (the main thread follows the default).
# 2. A thread that has not set its own value follows the process-wide default: whatever the main
#    thread last set outside any block ("numpy", or ``NNX_BACKEND``, and "float32" at first).
# 3. ``use_backend`` / ``use_floatx`` set the value for the calling thread only (the current
#    context, so asyncio tasks are kept apart too) and restore the previous one on exit, also on
#    an exception. A ``set_backend`` inside such a block lasts until the block ends.
#
# Each per-thread value is stored in a ``ContextVar`` together with a key of the thread that set
# it, so that a thread started with a copy of another thread's context (Python 3.14's
# ``thread_inherit_context``) still starts from the default, as rule 2 says.

_UNSET = object()
_backend_var: contextvars.ContextVar[tuple[object, "Backend"] | None] = contextvars.ContextVar(
    "nnx_backend", default=None)
_floatx_var: contextvars.ContextVar[tuple[object, str] | None] = contextvars.ContextVar("nnx_floatx", default=None)
_default: dict[str, Any] = {"backend": None, "floatx": "float32"}
_default_lock = threading.Lock()
_thread = threading.local()


def _thread_key() -> object:
    key = getattr(_thread, "key", None)
    if key is None:
        key = _thread.key = object()
    return key


def _own(var: contextvars.ContextVar) -> Any:
    """This thread's own value in ``var``, or ``_UNSET`` when it follows the default."""
    entry = var.get()
    if entry is not None and entry[0] is _thread_key():
        return entry[1]
    return _UNSET


def _assign(var: contextvars.ContextVar, slot: str, value: Any) -> None:
    """Rule 1: the main thread outside any block sets the default; otherwise the thread's own value."""
    if threading.current_thread() is threading.main_thread() and _own(var) is _UNSET:
        with _default_lock:
            _default[slot] = value
    else:
        var.set((_thread_key(), value))


@contextlib.contextmanager
def _scoped(var: contextvars.ContextVar, value: Any) -> Iterator[Any]:
    token = var.set((_thread_key(), value))
    try:
        yield value
    finally:
        try:
            var.reset(token)
        except ValueError:  # closed from another context (a generator finalised elsewhere): nothing of ours to undo there
            pass


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
    _assign(_backend_var, "backend", backend)
    return backend


def get_backend() -> Backend:
    """The current backend, with ``.name``, ``.xp`` and ``.device``: the calling thread's own, or
    else the process-wide default."""
    own = _own(_backend_var)
    if own is not _UNSET:
        return own
    backend = _default["backend"]
    if backend is None:
        with _default_lock:
            if _default["backend"] is None:
                _default["backend"] = _create(os.environ.get("NNX_BACKEND", "numpy"))
            backend = _default["backend"]
    return backend


@contextlib.contextmanager
def use_backend(name: str | Backend, device: Any = None) -> Iterator[Backend]:
    """Switch backend inside a ``with`` block, for the calling thread only; the previous one is
    restored on exit, also on an exception. Other threads keep theirs.

    >>> with nnx.use_backend("array_api_strict", device="device1"):
    ...     model = nnx.Sequential([nnx.Input(4), nnx.Dense(2)])   # lives on array_api_strict
    """
    backend = name if isinstance(name, Backend) else _create(name, device)
    with _scoped(_backend_var, backend):
        yield backend


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


def _check_floatx(name: str) -> str:
    if not isinstance(name, str) or name not in _FLOATX:
        raise ValueError(f"Unknown floatx {name!r}; expected one of: {', '.join(_FLOATX)}.")
    return name


def set_floatx(name: str) -> None:
    """Set the default float dtype of new layers and data: "float16", "float32" or "float64".

    Per thread, as ``set_backend``: from the main thread outside any block it sets the process-wide
    default, elsewhere the calling thread's own value."""
    _assign(_floatx_var, "floatx", _check_floatx(name))


def floatx() -> str:
    """The default float dtype name of the calling thread (``"float32"`` unless changed)."""
    own = _own(_floatx_var)
    return _default["floatx"] if own is _UNSET else own


@contextlib.contextmanager
def use_floatx(name: str) -> Iterator[str]:
    """Use float dtype ``name`` inside a ``with`` block, for the calling thread only; the previous
    one is restored on exit."""
    with _scoped(_floatx_var, _check_floatx(name)):
        yield name


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
