"""Host-side random streams, seeded together by :func:`nnx.seed`.

Initial weights and the shuffle order are drawn here, on the host, so that every backend sees the
same numbers for the same seed; the weights are then moved to the device.
"""
from __future__ import annotations

import numpy as np  # host side: weight init and shuffle order

_streams: dict[str, np.random.Generator] = {}
_seed: list[int | None] = [None]
_rank = [0]  # this process's rank in data-parallel training (nnx.distributed): dropout differs per rank


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
    a number derived from it and the rank on other ranks."""
    n = _seed[0]
    if n is None or not _rank[0]:
        return n
    return int(np.random.SeedSequence(n, spawn_key=(2, _rank[0])).generate_state(1, np.uint64)[0] >> 1)


def set_rank(rank: int) -> None:
    """Called by ``nnx.distributed.init``: re-seed the dropout streams for this rank (when seeded)."""
    _rank[0] = int(rank)
    if _seed[0] is not None:
        _seed_device(np.random.SeedSequence(_seed[0]).spawn(3)[2])


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
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    return rng
