"""The current backend and floatx are per thread, over a process-wide default (see nnx.backend)."""
from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

import nnx
from nnx.backend import use_floatx  # not exported at the top level (yet)


@pytest.fixture
def numpy_default():
    """Start from the process default numpy / float32 and put back what was there."""
    assert threading.current_thread() is threading.main_thread()
    backend, dtype = nnx.get_backend(), nnx.floatx()
    nnx.set_backend("numpy")
    nnx.set_floatx("float32")
    yield
    nnx.set_backend(backend.name, backend.device)
    nnx.set_floatx(dtype)


def _key(name, device=None):
    with nnx.use_backend(name, device) as b:
        return b.key


def _run(*targets, timeout=60):
    """Run each target in its own thread; re-raise the first failure in the caller."""
    errors: list[BaseException] = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - reported to the test
                errors.append(e)
        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a thread hung"
    if errors:
        raise errors[0]


def test_interleaved_use_backend_blocks_stay_in_their_threads(numpy_default):
    barrier = threading.Barrier(2, timeout=20)
    seen: dict[str, list] = {"a": [], "b": []}

    def a():
        with nnx.use_backend("array_api_strict", "device1"):
            barrier.wait()  # 1: both threads inside their blocks
            seen["a"].append(nnx.get_backend().key)
            barrier.wait()  # 2
        seen["a"].append(nnx.get_backend().key)  # a left first, b still inside
        barrier.wait()  # 3
        barrier.wait()  # 4: b has left too
        seen["a"].append(nnx.get_backend().key)

    def b():
        barrier.wait()  # 1 (b enters after a)
        with nnx.use_backend("array_api_strict", "device2"):
            seen["b"].append(nnx.get_backend().key)
            barrier.wait()  # 2
            barrier.wait()  # 3: a has left its block
            seen["b"].append(nnx.get_backend().key)
        barrier.wait()  # 4
        seen["b"].append(nnx.get_backend().key)

    _run(a, b)
    numpy_key, key1, key2 = _key("numpy"), _key("array_api_strict", "device1"), _key("array_api_strict", "device2")
    assert seen["a"] == [key1, numpy_key, numpy_key]
    assert seen["b"] == [key2, key2, numpy_key]
    assert nnx.get_backend().name == "numpy"


def test_model_built_beside_another_threads_block_lands_on_the_default(numpy_default):
    barrier = threading.Barrier(2, timeout=20)
    built = {}

    def strict():
        with nnx.use_backend("array_api_strict", "device1"):
            barrier.wait()  # the other thread builds now
            barrier.wait()
            built["strict"] = nnx.Sequential([nnx.Input(3), nnx.Dense(2)])

    def plain():
        barrier.wait()
        built["plain"] = nnx.Sequential([nnx.Input(3), nnx.Dense(2)])
        barrier.wait()

    _run(strict, plain)
    assert built["plain"].backend.name == "numpy"
    assert isinstance(built["plain"].layers[0].kernel.value, np.ndarray)
    assert built["strict"].backend.name == "array_api_strict"
    assert not isinstance(built["strict"].layers[0].kernel.value, np.ndarray)


@pytest.mark.parametrize("loader_in", ["worker", "main"])
def test_load_model_keeps_every_threads_floatx(numpy_default, tmp_path, loader_in):
    with use_floatx("float64"):
        model64 = nnx.Sequential([nnx.Input(4), nnx.Dense(3)])
    assert model64.get_weights()[0].dtype == np.float64 and nnx.floatx() == "float32"
    path = tmp_path / "m64.nnx"
    model64.save(path)
    stop = threading.Event()
    bad: list[str] = []
    counts = {"built": 0, "loaded": 0}

    def loader():
        try:
            for _ in range(40):
                loaded = nnx.load_model(path)
                assert loaded.get_weights()[0].dtype == np.float64
                assert nnx.floatx() == "float32"
                counts["loaded"] += 1
        finally:
            stop.set()

    def builder():
        while not stop.is_set() or counts["built"] < 20:
            m = nnx.Sequential([nnx.Input(4), nnx.Dense(3)])
            dtypes = {str(w.dtype) for w in m.get_weights()}
            if dtypes != {"float32"} or m._dtype != "float32" or nnx.floatx() != "float32":
                bad.append(f"{dtypes} {m._dtype} {nnx.floatx()}")
            counts["built"] += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, so that builds land inside loads
    try:
        if loader_in == "worker":
            _run(loader, builder)
        else:  # the main thread loads: what it sets there must not become the other threads' default
            t = threading.Thread(target=builder)
            t.start()
            try:
                loader()
            finally:
                t.join(60)
    finally:
        sys.setswitchinterval(old)
    assert counts["loaded"] == 40 and counts["built"] >= 20
    assert bad == []
    assert nnx.floatx() == "float32"


def test_set_backend_in_a_thread_stays_in_that_thread(numpy_default):
    seen = {}

    def worker():
        nnx.set_backend("array_api_strict", "device1")
        nnx.set_floatx("float64")
        seen["worker"] = (nnx.get_backend().name, nnx.floatx())

    _run(worker)
    assert seen["worker"] == ("array_api_strict", "float64")
    assert (nnx.get_backend().name, nnx.floatx()) == ("numpy", "float32")


def test_threads_follow_the_main_threads_default_not_its_blocks(numpy_default):
    seen = []

    def worker():
        seen.append((nnx.get_backend().key, nnx.floatx()))

    nnx.set_backend("array_api_strict", "device2")
    nnx.set_floatx("float64")
    _run(worker)
    with nnx.use_backend("numpy"), use_floatx("float16"):
        nnx.set_backend("array_api_strict", "device1")  # inside a block: this thread, until the block ends
        assert nnx.get_backend().key == _key("array_api_strict", "device1")
        _run(worker)
    assert seen == [(_key("array_api_strict", "device2"), "float64")] * 2
    assert nnx.get_backend().key == _key("array_api_strict", "device2") and nnx.floatx() == "float64"


def test_a_thread_without_its_own_value_follows_later_default_changes(numpy_default):
    go, changed = threading.Event(), threading.Event()
    seen = []

    def worker():
        seen.append(nnx.get_backend().name)
        go.set()
        assert changed.wait(20)
        seen.append(nnx.get_backend().name)

    t = threading.Thread(target=worker)
    t.start()
    assert go.wait(20)
    nnx.set_backend("array_api_strict", "device1")
    changed.set()
    t.join(20)
    assert seen == ["numpy", "array_api_strict"]


def test_use_backend_restores_on_exception_in_a_thread(numpy_default):
    seen = []

    def worker():
        with pytest.raises(RuntimeError, match="boom"):
            with nnx.use_backend("array_api_strict", "device1"), use_floatx("float64"):
                raise RuntimeError("boom")
        seen.append((nnx.get_backend().name, nnx.floatx()))

    _run(worker)
    assert seen == [("numpy", "float32")]


def test_an_unknown_name_changes_nothing(numpy_default):
    with pytest.raises(ValueError, match="Unknown backend"):
        with nnx.use_backend("nope"):
            pass
    with pytest.raises(ValueError, match="Unknown floatx"):
        nnx.set_floatx("float8")
    assert (nnx.get_backend().name, nnx.floatx()) == ("numpy", "float32")


def test_a_thread_started_with_a_copy_of_a_blocks_context_starts_from_the_default(numpy_default):
    """Python 3.14 can start threads with a copy of the starting thread's context: the rule holds."""
    import contextvars

    seen = []
    with nnx.use_backend("array_api_strict", "device1"), use_floatx("float64"):
        ctx = contextvars.copy_context()
    _run(lambda: seen.append(ctx.run(lambda: (nnx.get_backend().name, nnx.floatx()))))
    assert seen == [("numpy", "float32")]
