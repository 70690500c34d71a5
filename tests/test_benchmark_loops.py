"""The benchmark's training loops do the same work: the portable hand-written loop and the tuned
NumPy loop reach the same loss and weights from the same start, and the floor runs."""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MLP = os.path.join(ROOT, "benchmarks", "mlp.py")
pytestmark = pytest.mark.skipif(not os.path.isfile(MLP), reason="benchmarks/ is not beside tests/ (the suite runs from a copy)")


@pytest.fixture(scope="module")
def mlp():
    spec = importlib.util.spec_from_file_location("nnx_benchmark_mlp", MLP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hand_and_tuned_loops_train_alike(backend, mlp):
    """Same data, initial weights, shuffle and learning rate: the hand loop on this backend and the
    tuned NumPy loop end an epoch at the same mean loss (float32, so to 1e-4 relative)."""
    x, y = mlp.make_data(320, seed=3)
    _, hand = mlp.run_hand(x, y, 64, 2, backend)
    _, tuned = mlp.run_tuned(x, y, 64, 2, backend)
    assert np.isfinite(hand) and 0.0 < hand < np.log(10) + 0.5
    assert hand == pytest.approx(tuned, rel=1e-4)


def test_floor_runs_with_and_without_the_weight_write(backend, mlp):
    x, y = mlp.make_data(128, seed=4)
    for write in (False, True):
        seconds, loss = mlp.run_floor(x, y, 64, 1, backend, write_kernel=write)
        assert seconds > 0 and np.isnan(loss)
