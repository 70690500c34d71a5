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
_rank = [0]  # this process's rank in data-parallel training (nnx.distributed): dropout differs per rank


def seed(n: int) -> None:
    """Seed weight initialisation, shuffling and dropout on every backend: the same seed gives
    bit-identical initial weights and shuffle orders on every backend (both drawn on the host),
    and each model built afterwards its own dropout stream.

    Args:
        n: a non-negative int.

    Raises:
        ValueError: a negative number, a bool or not an int.

    >>> nnx.seed(0)
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise ValueError(f"seed expects a non-negative int, received {n!r}.")
    _seed[0] = int(n)
    init, shuffle, device = np.random.SeedSequence(int(n)).spawn(3)
    _streams["init"] = np.random.default_rng(init)
    _streams["shuffle"] = np.random.default_rng(shuffle)
    _seed_device(device)


def _seed_device(device: np.random.SeedSequence) -> None:
    """Seed the dropout streams (host and device-side) from ``device``: on rank 0 (and in one
    process) ``device`` itself, on rank r > 0 its child ``(2, r)``, so each rank draws its own masks."""
    n = _seed[0]
    if _rank[0]:
        device = np.random.SeedSequence(n, spawn_key=(2, _rank[0]))
    _streams["device"] = np.random.default_rng(device)
    import sys

    for module in ("nnx.backends.cupy_backend",):  # adapters with a device-side generator
        if module in sys.modules:
            sys.modules[module].reseed(device_seed())


def device_seed() -> int | None:
    """The seed of device-side generators: the ``nnx.seed`` value on rank 0 (None when unseeded),
    a number derived from it and the rank on other ranks.

    >>> nnx.random.device_seed()
    """
    n = _seed[0]
    if n is None or not _rank[0]:
        return n
    return int(np.random.SeedSequence(n, spawn_key=(2, _rank[0])).generate_state(1, np.uint64)[0] >> 1)


def set_rank(rank: int) -> None:
    """Called by ``nnx.distributed.init``: re-seed the dropout streams for this rank (when seeded).

    Args:
        rank: this process's rank.

    >>> nnx.random.set_rank(0)
    """
    _rank[0] = int(rank)
    if _seed[0] is not None:
        _seed_device(np.random.SeedSequence(_seed[0]).spawn(3)[2])


def _stream(name: str) -> np.random.Generator:
    if name not in _streams:
        _streams[name] = np.random.default_rng()
    return _streams[name]


def init_rng() -> np.random.Generator:
    """The generator that draws initial weights (seeded by ``nnx.seed``).

    >>> nnx.random.init_rng().standard_normal(3)
    """
    return _stream("init")


def shuffle_rng() -> np.random.Generator:
    """The generator that models draw their own shuffle generators from (seeded by ``nnx.seed``).

    >>> nnx.random.shuffle_rng().integers(10)
    """
    return _stream("shuffle")


def device_rng() -> np.random.Generator:
    """The global dropout stream (seeded by ``nnx.seed``): layers used outside a model draw their
    masks from it on host-drawing backends, and models draw their own streams from it at build.

    >>> nnx.random.device_rng().random(3)
    """
    return _stream("device")


def current_seed() -> int | None:
    """The last seed given to ``nnx.seed``, or None.

    Returns:
        An int or None.

    >>> nnx.seed(3); nnx.random.current_seed()   # 3
    """
    return _seed[0]


def host_full(shape: tuple[int, ...], value: float, dtype: str) -> np.ndarray:
    """A constant host array (for the deterministic initializers).

    Args:
        shape: the array's shape.
        value: every entry's value.
        dtype: a dtype name.

    Returns:
        A ``numpy.ndarray``.

    >>> host_full((2, 3), 0.0, "float32")
    """
    return np.full(shape, value, dtype=dtype)


def new_generator() -> np.random.Generator:
    """A generator of its own (a model's shuffle order), drawn from the shuffle stream.

    >>> rng = nnx.random.new_generator(); rng.permutation(5)
    """
    return np.random.default_rng(shuffle_rng().integers(2**63))


def generator_from_state(state: dict) -> np.random.Generator:
    """A numpy generator set to ``state`` (a ``bit_generator.state`` dict, as model files keep it).

    Args:
        state: the state dict.

    Returns:
        A ``numpy.random.Generator``.

    Raises:
        ValueError, TypeError: a state numpy does not accept.

    >>> rng = nnx.random.generator_from_state(model._shuffle_rng.bit_generator.state)
    """
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
        """The host generator's state (a dict of ints and strings, as JSON holds it).

        >>> json.dumps(model._dropout_rng.state())
        """
        return self.host.bit_generator.state

    def set_state(self, state: dict) -> None:
        """Restore ``state()`` output; a device generator is seeded afresh at the next draw.

        Args:
            state: what ``state()`` returned.

        >>> stream.set_state(saved)
        """
        self.host.bit_generator.state = state
        self._device = None

    def new_epoch(self) -> None:
        """Called by ``fit`` at the start of each epoch: a device generator is seeded afresh from
        the host generator at the epoch's first draw (nothing changes on host-drawing backends).

        >>> model._dropout_rng.new_epoch()
        """
        self._device = None

    def device_generator(self, backend: Any, make: Callable[[int], Any]) -> Any:
        """The device generator for ``backend``, made by ``make(seed)`` with a seed drawn from the
        host generator when there is none yet this epoch (or the backend changed).

        Args:
            backend: the backend drawing (its ``key`` identifies it).
            make: makes a device generator from an int seed (``cupy.random.default_rng``).

        Returns:
            What ``make`` returned.

        >>> rng = stream.device_generator(backend, cupy.random.default_rng)
        """
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


def activate(stream: Stream) -> contextvars.Token:
    """Make ``stream`` the active one until ``deactivate(token)``: ``using`` without a generator,
    for the model's forward pass (called once per training step).

    >>> token = nnx.random.activate(stream); ...; nnx.random.deactivate(token)
    """
    return _active.set(stream)


def deactivate(token: contextvars.Token) -> None:
    """Restore the stream that was active before ``activate`` returned ``token``.

    >>> nnx.random.deactivate(token)
    """
    _active.reset(token)


def active_stream() -> Stream | None:
    """The stream a model being trained made active (None outside training: the global one).

    >>> nnx.random.active_stream() is None   # True outside fit
    """
    return _active.get()


def host_generator() -> np.random.Generator:
    """The host generator dropout masks are drawn from: the active model stream's, else the
    global dropout stream (:func:`device_rng`).

    >>> mask = nnx.random.host_generator().random((32, 64), dtype=np.float32) >= 0.5
    """
    stream = _active.get()
    return device_rng() if stream is None else stream.host
