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
    """An array library and a device, as the core sees them. Get one with ``nnx.get_backend()``
    (or ``set_backend`` / ``use_backend``); adapters in ``nnx.backends`` subclass this.

    Args:
        xp: the library's Array API namespace (``array_api_compat.numpy``,
            ``array_api_compat.cupy``, ``array_api_strict``).
        device: the device arrays are created on (``"cpu"``, a ``cupy.cuda.Device``, an
            ``array_api_strict.Device``).

    Attributes: ``name`` (``"numpy"``, ``"cupy"``, ``"array_api_strict"``), ``xp``, ``device``,
    and ``ops``, the operations object layers, losses and optimizers call.

    >>> b = nnx.get_backend()
    >>> z = b.xp.zeros((2, 3), dtype=b.xp.float32, device=b.device)
    """

    name: str = ""

    def __init__(self, xp: Any, device: Any):
        self.xp = xp
        self.device = device
        self.ops = self.make_ops()

    def make_ops(self) -> Any:
        """The operations object layers, losses and optimizers call (``nnx.ops.Ops`` or a
        backend's subclass with faster kernels); made once, kept as ``self.ops``.

        Returns:
            An ``nnx.ops.Ops``.

        >>> nnx.get_backend().ops
        """
        from .ops import Ops

        return Ops(self.xp, self.device)

    # -- identity --------------------------------------------------------------------------
    @property
    def key(self) -> tuple[str, str]:
        """``(name, device)`` as strings: two backends with equal keys are the same backend."""
        return (self.name, str(self.device))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Backend) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"Backend(name={self.name!r}, device={self.device!r})"

    def describe(self) -> str:
        """A short description for messages, e.g. ``"numpy on cpu"``.

        Returns:
            A str.

        >>> nnx.get_backend().describe()
        """
        return f"{self.name} on {self.device}"

    # -- transfers -------------------------------------------------------------------------
    def owns(self, a: Any) -> bool:
        """Whether ``a`` is an array of this backend's library.

        Args:
            a: any object.

        Returns:
            A bool.

        >>> nnx.get_backend().owns(nnx.asarray([1.0]))   # True
        """
        raise NotImplementedError

    def from_host(self, x: np.ndarray) -> Any:
        """Move a host numpy array to this backend's device, keeping its dtype.

        Args:
            x: a ``numpy.ndarray``.

        Returns:
            An array of this backend on its device.

        >>> a = nnx.get_backend().from_host(np.ones(3, dtype="float32"))
        """
        return self.xp.asarray(x, device=self.device)

    def to_numpy(self, a: Any) -> np.ndarray:
        """Copy an array of this backend to the host.

        Args:
            a: an array of this backend.

        Returns:
            A ``numpy.ndarray``.

        >>> host = backend.to_numpy(model.predict(x))
        """
        raise NotImplementedError

    def dtype(self, name: str) -> Any:
        """The dtype object of this backend's namespace for a dtype name.

        Args:
            name: ``"float32"``, ``"int64"``, …

        Returns:
            The namespace's dtype, e.g. ``xp.float32``.

        Raises:
            AttributeError: a dtype the namespace does not have (array_api_strict has no float16).

        >>> nnx.get_backend().dtype("float32")
        """
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
        """Seed the device-side generator of this backend, where it has one (cupy: the global
        dropout generator of layers used outside a model). ``nnx.seed`` calls it.

        Args:
            n: a non-negative int.

        >>> backend.seed(0)
        """

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

    def for_local_rank(self, local_rank: int) -> "Backend":
        """The backend a data-parallel rank uses, given its rank among the processes on its
        machine (default: this one; CuPy picks GPU ``local_rank % device count``).

        Args:
            local_rank: the rank among the processes on this machine.

        >>> nnx.get_backend().for_local_rank(0)
        """
        return self

    def gradient_reducer(self, comm: Any) -> Any:
        """A device-side reducer for data-parallel gradient sums (CuPy: NCCL), or None to sum
        through host memory and MPI.

        Args:
            comm: the MPI communicator of the ranks.

        >>> nnx.get_backend().gradient_reducer(MPI.COMM_WORLD)   # None on the host backends
        """
        return None

    #: whether ``capture`` can record a training step as a device graph (CuPy: a CUDA graph)
    captures_steps: bool = False

    def capture(self, fn: Any) -> Any:
        """Record ``fn()`` once as a device graph; the returned object's ``launch()`` replays the
        recorded work and its ``result`` is what ``fn`` returned (arrays the replays rewrite).
        Used by ``compile(jit_compile=True)``; only backends with ``captures_steps`` have it.

        Raises:
            NotImplementedError: this backend runs each step as it comes (NumPy,
                array_api_strict), or ``fn`` did something a graph cannot hold.

        >>> step = backend.capture(train_one_batch); step.launch()
        """
        raise NotImplementedError(f"the {self.name} backend does not record device graphs")

    def synchronize(self) -> None:
        """Wait for queued device work (used only for timing); nothing to wait for on the host.

        >>> backend.synchronize(); t = time.perf_counter()
        """

    def memory_in_use(self) -> int | None:
        """Bytes of device memory this library holds, where it keeps count.

        Returns:
            An int, or None on the host.

        >>> nnx.get_backend().memory_in_use()
        """
        return None

    def free_memory(self) -> None:
        """Return cached device memory to the system, where the library keeps a pool (cupy).

        >>> nnx.get_backend().free_memory()
        """


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
    """Make ``name`` the current backend. From the main thread outside any ``use_backend`` block
    this sets the process-wide default; from another thread, or inside such a block, the calling
    thread's own backend only.

    Args:
        name: ``"numpy"``, ``"cupy"``, ``"array_api_strict"`` or ``"auto"`` (cupy when a CUDA
            device is usable, else numpy).
        device: the device: a CUDA device number for cupy (default 0), a device name for
            array_api_strict (e.g. ``"device1"``), ``"cpu"`` for numpy. Defaults to None: the
            backend's default.

    Returns:
        The new current ``Backend``.

    Raises:
        ValueError: an unknown name (the message lists the valid ones).
        RuntimeError: a backend that cannot run here (CuPy not installed, no CUDA device, no
            such device); the current backend is unchanged.

    >>> nnx.set_backend("cupy", device=1)
    """
    backend = _create(name, device)
    _assign(_backend_var, "backend", backend)
    return backend


def get_backend() -> Backend:
    """The current backend, with ``.name``, ``.xp`` and ``.device``: the calling thread's own, or
    else the process-wide default (numpy, or the ``NNX_BACKEND`` environment variable's).

    Returns:
        A ``Backend``.

    >>> nnx.get_backend().name   # 'numpy'
    """
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

    Args:
        name: a backend name, as for ``set_backend``, or a ``Backend``.
        device: the device, as for ``set_backend``. Defaults to None.

    Yields:
        The ``Backend`` in use inside the block.

    Raises:
        ValueError, RuntimeError: as ``set_backend``, before the block runs.

    >>> with nnx.use_backend("array_api_strict", device="device1"):
    ...     model = nnx.Sequential([nnx.Input(4), nnx.Dense(2)])   # lives on array_api_strict
    """
    backend = name if isinstance(name, Backend) else _create(name, device)
    with _scoped(_backend_var, backend):
        yield backend


def available_backends() -> list[str]:
    """Names of the backends that can run on this machine.

    Returns:
        A list such as ``["numpy", "array_api_strict"]`` (``"cupy"`` too where a CUDA device is
        usable).

    >>> nnx.available_backends()
    """
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
    """Set the float type of the layers built from now on (and of the data they take).

    Per thread, as ``set_backend``: from the main thread outside any ``use_floatx`` block it sets
    the process-wide default, elsewhere the calling thread's own value.

    Args:
        name: ``"float16"``, ``"float32"`` (the default) or ``"float64"``.

    Raises:
        ValueError: another name.

    >>> nnx.set_floatx("float64")
    """
    _assign(_floatx_var, "floatx", _check_floatx(name))


def floatx() -> str:
    """The float type new layers are built in, for the calling thread.

    Returns:
        ``"float16"``, ``"float32"`` (unless changed) or ``"float64"``.

    >>> nnx.floatx()   # 'float32'
    """
    own = _own(_floatx_var)
    return _default["floatx"] if own is _UNSET else own


@contextlib.contextmanager
def use_floatx(name: str) -> Iterator[str]:
    """Use float type ``name`` inside a ``with`` block, for the calling thread only; the previous
    one is restored on exit, also on an exception. Other threads keep theirs.

    Args:
        name: ``"float16"``, ``"float32"`` or ``"float64"``.

    Yields:
        ``name``.

    Raises:
        ValueError: another name, before the block runs.

    >>> with nnx.use_floatx("float16"):
    ...     half = nnx.Sequential.from_config(model.get_config())
    """
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
    """Any backend array (or host data) as a ``numpy.ndarray`` on the host.

    Args:
        a: an array of any backend, a numpy array (returned as is), a list or a scalar.

    Returns:
        A ``numpy.ndarray``.

    >>> nnx.to_numpy(model.predict(x))
    """
    if isinstance(a, np.ndarray):
        return a
    owner = _owner(a) if not isinstance(a, (list, tuple, int, float, bool, np.generic)) else None
    if owner is None:
        return np.asarray(a)
    return owner.to_numpy(a)


def asarray(x: Any, dtype: Any = None) -> Any:
    """Host data or any backend's array as an array on the current backend and device.

    Args:
        x: a numpy array, nested lists, a scalar, or an array of any backend.
        dtype: the dtype, a name such as ``"float32"`` or a dtype of either library. Defaults to
            None: numpy arrays keep theirs, Python floats become ``floatx()``.

    Returns:
        An array of the current backend.

    >>> x = nnx.asarray(np.ones((4, 3)), dtype="float32")
    """
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
        try:
            np.dtype(dtype)
        except TypeError:
            raise ValueError(f"Unknown dtype {dtype!r}; expected a name such as 'float32', 'float64' or "
                             f"'int64', or a dtype of the backend's library.") from None
        return dtype
    for name in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"):
        try:
            if dtype == getattr(get_backend().xp, name):
                return name
        except AttributeError:
            continue
    try:
        return str(np.dtype(dtype))
    except TypeError:
        raise ValueError(f"Unknown dtype {dtype!r}; expected a name such as 'float32', 'float64' or 'int64', "
                         f"or a dtype of the backend's library.") from None
