"""Host-side random streams, seeded together by :func:`nnx.seed`.

Initial weights and the shuffle order are drawn here, on the host, so that every backend sees the
same numbers for the same seed; the weights are then moved to the device.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Callable, Iterator

import numpy as np  # host side: weight init, shuffle order, dropout masks of host backends

_streams: dict[str, np.random.Generator] = {}
_seed: list[int | None] = [None]


def seed(n: int) -> None:
    """Seed weight initialisation, shuffling and dropout on every backend.

    >>> nnx.seed(0)
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise ValueError(f"seed expects a non-negative int, received {n!r}.")
    _seed[0] = int(n)
    init, shuffle, device = np.random.SeedSequence(int(n)).spawn(3)
    _streams["init"] = np.random.default_rng(init)
    _streams["shuffle"] = np.random.default_rng(shuffle)
    _streams["device"] = np.random.default_rng(device)
    import sys

    for module in ("nnx.backends.cupy_backend",):  # adapters with a device-side generator
        if module in sys.modules:
            sys.modules[module].reseed(int(n))


def _stream(name: str) -> np.random.Generator:
    if name not in _streams:
        _streams[name] = np.random.default_rng()
    return _streams[name]


def init_rng() -> np.random.Generator:
    """The generator that draws initial weights."""
    return _stream("init")


def shuffle_rng() -> np.random.Generator:
    """The generator that models draw their own shuffle generators from."""
    return _stream("shuffle")


def device_rng() -> np.random.Generator:
    """Host generator behind backends that have no device-side one."""
    return _stream("device")


def current_seed() -> int | None:
    return _seed[0]


def host_full(shape: tuple[int, ...], value: float, dtype: str) -> np.ndarray:
    """A constant host array (for the deterministic initializers)."""
    return np.full(shape, value, dtype=dtype)


def new_generator() -> np.random.Generator:
    """A generator of its own (a model's shuffle order), drawn from the shuffle stream."""
    return np.random.default_rng(shuffle_rng().integers(2**63))


def generator_from_state(state: dict) -> np.random.Generator:
    """A numpy generator set to ``state`` (a ``bit_generator.state`` dict, as model files keep it)."""
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    return rng


class Stream:
    """A model's own stream of training-time randomness (dropout masks), so that a model saved and
    loaded in another process draws the very masks it would have drawn had it kept training.

    Args:
        generator: the host generator behind the stream. Defaults to a new one drawn from the
            dropout seed stream (seeded by :func:`nnx.seed`).

    On the numpy and array_api_strict backends the masks are drawn from ``host`` itself. A backend
    with a generator on the device (cupy) draws from a device generator that is seeded from
    ``host`` at the first draw of every epoch of ``fit``; a model file keeps ``host``'s state, so
    resuming from a file saved between epochs is exact there too.

    Layers draw from the stream of the model being trained through ``backend.uniform``; the model
    makes its stream the active one (:func:`using`) around its training forward pass.

    >>> stream = nnx.random.Stream(); model._dropout_rng.state()   # a JSON-able dict
    """

    def __init__(self, generator: np.random.Generator | None = None):
        self.host = generator if generator is not None else np.random.default_rng(_stream("device").integers(2**63))
        self._device: tuple[Any, Any] | None = None  # (backend key, device generator)

    def state(self) -> dict:
        """The host generator's state (a dict of ints and strings, as JSON holds it)."""
        return self.host.bit_generator.state

    def set_state(self, state: dict) -> None:
        """Restore ``state()`` output; a device generator is seeded afresh at the next draw."""
        self.host.bit_generator.state = state
        self._device = None

    def new_epoch(self) -> None:
        """Called by ``fit`` at the start of each epoch: a device generator is seeded afresh from
        the host generator at the epoch's first draw (nothing changes on host-drawing backends)."""
        self._device = None

    def device_generator(self, backend: Any, make: Callable[[int], Any]) -> Any:
        """The device generator for ``backend``, made by ``make(seed)`` with a seed drawn from the
        host generator when there is none yet this epoch (or the backend changed)."""
        if self._device is None or self._device[0] != backend.key:
            self._device = (backend.key, make(int(self.host.integers(2**63))))
        return self._device[1]


_active: contextvars.ContextVar[Stream | None] = contextvars.ContextVar("nnx_random_stream", default=None)


@contextlib.contextmanager
def using(stream: Stream | None) -> Iterator[Stream | None]:
    """Make ``stream`` the one ``backend.uniform`` draws from inside the ``with`` block (this thread
    and context only); ``None`` leaves the current one.

    >>> with nnx.random.using(model._dropout_rng): y = layer(x, training=True)
    """
    if stream is None:
        yield _active.get()
        return
    token = _active.set(stream)
    try:
        yield stream
    finally:
        _active.reset(token)


def active_stream() -> Stream | None:
    """The stream a model being trained made active (None outside training: the global one)."""
    return _active.get()


def host_generator() -> np.random.Generator:
    """The host generator dropout masks are drawn from: the active model stream's, else the
    global dropout stream (:func:`device_rng`)."""
    stream = _active.get()
    return device_rng() if stream is None else stream.host
