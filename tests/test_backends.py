"""The backend selector: names, errors, context manager, floatx, seeding and transfers."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import nnx


def test_available_backends_lists_usable_ones():
    names = nnx.available_backends()
    assert names[0] == "numpy" and "array_api_strict" in names


def test_use_backend_restores_on_exception():
    before = nnx.get_backend()
    with pytest.raises(KeyError):
        with nnx.use_backend("array_api_strict", device="device2") as b:
            assert nnx.get_backend() is b and str(b.device).endswith("'device2')")
            raise KeyError("boom")
    assert nnx.get_backend() is before


def test_strict_unknown_device():
    with pytest.raises(RuntimeError, match="no device 'gpu7'"):
        nnx.set_backend("array_api_strict", device="gpu7")


def test_auto_picks_numpy_without_cuda():
    if "cupy" in nnx.available_backends():
        pytest.skip("a CUDA device is usable here: auto picks cupy")
    with nnx.use_backend("auto") as b:
        assert b.name == "numpy"


def test_nnx_backend_environment_variable():
    env = {**os.environ, "NNX_BACKEND": "array_api_strict"}
    out = subprocess.run([sys.executable, "-c", "import nnx; print(nnx.get_backend().name)"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "array_api_strict"


def test_floatx():
    assert nnx.floatx() == "float32"
    with pytest.raises(ValueError, match="float16, float32, float64"):
        nnx.set_floatx("float8")


def test_asarray_and_to_numpy_roundtrip(backend):
    a = nnx.asarray([[1.5, 2.0]])
    assert backend.owns(a) and a.dtype == backend.xp.float32 and a.device == backend.device
    np.testing.assert_array_equal(nnx.to_numpy(a), [[1.5, 2.0]])
    b = nnx.asarray(np.arange(3), dtype="float32")
    assert b.dtype == backend.xp.float32
    assert nnx.to_numpy(nnx.asarray(a)).tolist() == [[1.5, 2.0]]


def test_same_seed_same_initial_weights_on_every_backend(backend):
    def weights():
        nnx.seed(42)
        model = nnx.Sequential([nnx.Input(5), nnx.Dense(7, activation="relu"), nnx.Dense(3, kernel_initializer="he_normal")])
        return model.get_weights()

    here = weights()
    with nnx.use_backend("numpy"):
        reference = weights()
    for a, b in zip(here, reference):
        np.testing.assert_array_equal(a, b)  # bit-identical


def test_same_trajectory_on_numpy_and_strict():
    """Same seed: same shuffles and same weights after training, numpy vs array_api_strict."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(64, 4)).astype("float32"), rng.integers(0, 3, size=64)

    def train(name, device=None):
        with nnx.use_backend(name, device):
            nnx.seed(7)
            model = nnx.Sequential([nnx.Input(4), nnx.Dense(16, activation="tanh"), nnx.Dense(3, activation="softmax")])
            model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            history = model.fit(x, y, epochs=3, batch_size=16, verbose=0)
            return model.get_weights(), history.history

    w_np, h_np = train("numpy")
    w_st, h_st = train("array_api_strict", "device1")
    for a, b in zip(w_np, w_st):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_np["loss"], h_st["loss"], rtol=1e-5)
    assert h_np["accuracy"] == h_st["accuracy"]


def test_no_float64_in_float32_training(backend):
    """On strict's no_float64 device any float64 array raises; elsewhere, check the dtypes we hold."""
    model = nnx.Sequential([nnx.Input(3), nnx.Dense(4, activation="gelu"), nnx.Dense(2, activation="softmax")])
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
    x = np.random.default_rng(0).normal(size=(20, 3))  # float64 on the host: cast there before moving
    y = np.eye(2)[np.arange(20) % 2]
    model.fit(x, y, epochs=2, batch_size=8, validation_split=0.2, verbose=0)
    slots = [s for weight_slots in model.optimizer._slots.values() for s in weight_slots]
    assert len(slots) == len(model.weights)  # RMSprop: one slot per weight
    for a in [w.value for w in model.weights] + slots:
        assert a.dtype == backend.xp.float32
    assert model.predict(x).dtype == backend.xp.float32


def test_a_source_checkout_imports_its_adapters(tmp_path):
    """Run from a checkout that was not installed (``nnx/`` and ``backends/`` side by side), the
    adapters load from ``backends/`` as ``nnx.backends``, as installing maps them."""
    import shutil

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isdir(os.path.join(root, "backends")):
        pytest.skip("backends/ is not beside tests/ (the suite runs from a copy)")
    for folder in ("nnx", "backends"):
        shutil.copytree(os.path.join(root, folder), tmp_path / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    script = ("import nnx; b = nnx.set_backend('numpy'); "
              "print(nnx.backends.__file__); print(type(b.ops).__module__)")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert done.returncode == 0, done.stderr
    path, module = done.stdout.split()
    assert path == str(tmp_path / "backends" / "__init__.py") and module == "nnx.backends.numpy_ops"
