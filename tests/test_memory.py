"""Memory: no growth across epochs, and predict that holds one batch of activations at a time."""
from __future__ import annotations

import sys
import tracemalloc

import numpy as np
import pytest

import nnx


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class MemoryPerEpoch(nnx.callbacks.Callback):
    def __init__(self, backend):
        super().__init__()
        self.backend, self.readings = backend, []

    def on_epoch_end(self, epoch, logs=None):
        device = self.backend.memory_in_use()
        self.readings.append(device if device is not None else _rss_bytes())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads resident memory from /proc (Linux only)")
def test_memory_does_not_grow_across_epochs(backend):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2000, 100)).astype("float32"), rng.integers(0, 10, size=2000)
    model = nnx.Sequential([nnx.Input(100), nnx.Dense(256, activation="relu"), nnx.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    probe = MemoryPerEpoch(backend)
    model.fit(x, y, epochs=10, batch_size=64, validation_split=0.1, verbose=0, callbacks=[probe])
    second, tenth = probe.readings[1], probe.readings[9]
    assert tenth <= 1.05 * second, f"memory grew from {second} to {tenth} bytes between epochs 2 and 10"


def test_predict_holds_one_batch_of_activations():
    """1,000,000 rows through a 256-unit layer: the activations of all rows would take 1 GB."""
    with nnx.use_backend("numpy"):
        model = nnx.Sequential([nnx.Input(8), nnx.Dense(256, activation="relu"), nnx.Dense(1)])
        x = np.ones((1_000_000, 8), dtype="float32")
        tracemalloc.start()
        try:
            out = model.predict(x, batch_size=4096)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert out.shape == (1_000_000, 1)
    # outputs (4 MB), their concatenation (4 MB) and one batch of activations (4 MB) fit in 32 MB
    assert peak < 32 * 2**20, f"predict peaked at {peak / 2**20:.0f} MB"
