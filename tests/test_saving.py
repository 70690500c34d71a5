"""save / load_model / save_weights: exact resume, no pickle, atomic writes, hostile files."""
from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import pytest

import nnx


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype("float32")
    return x, (x[:, 0] + x[:, 1] > 0).astype("int64") + (x[:, 2] > 1)


def _model():
    model = nnx.Sequential([nnx.Input(5), nnx.Dense(12, activation="relu"), nnx.Dropout(0.1),
                            nnx.Dense(3, activation="softmax")])
    model.compile(optimizer=nnx.optimizers.Adam(0.01, beta_1=0.8), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def test_resume_is_exact(backend, tmp_path):
    """fit 2 epochs, save, load, fit 2 more == fit 4 epochs straight (same seed)."""
    x, y = _data()
    nnx.seed(11)
    straight = _model()
    straight.fit(x, y, epochs=4, batch_size=16, verbose=0)

    nnx.seed(11)
    first = _model()
    first.fit(x, y, epochs=2, batch_size=16, verbose=0)
    first.save(tmp_path / "half.nnx")
    nnx.seed(99)  # a different global state: the file alone must carry what resuming needs
    resumed = nnx.load_model(tmp_path / "half.nnx")
    assert resumed.optimizer.iterations == 2 * 6
    assert resumed.optimizer.get_config() == first.optimizer.get_config()
    # dropout masks come from the global device stream: give both runs the same one for the last 2 epochs
    nnx.seed(5)
    resumed.fit(x, y, epochs=2, batch_size=16, verbose=0)
    nnx.seed(11)
    again = _model()
    again.fit(x, y, epochs=2, batch_size=16, verbose=0)
    nnx.seed(5)
    again.fit(x, y, epochs=2, batch_size=16, verbose=0)
    for a, b in zip(resumed.get_weights(), again.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_resume_without_dropout_matches_straight_run(backend, tmp_path):
    x, y = _data()

    def model():
        m = nnx.Sequential([nnx.Input(5), nnx.Dense(12, activation="tanh"), nnx.Dense(3, activation="softmax")])
        m.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy")
        return m

    nnx.seed(3)
    straight = model()
    straight.fit(x, y, epochs=4, batch_size=16, verbose=0)
    nnx.seed(3)
    half = model()
    half.fit(x, y, epochs=2, batch_size=16, verbose=0)
    half.save(tmp_path / "m.nnx")
    resumed = nnx.load_model(tmp_path / "m.nnx")
    resumed.fit(x, y, epochs=2, batch_size=16, verbose=0)
    for a, b in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_file_holds_no_pickle(backend, tmp_path):
    model = _model()
    model.fit(*_data(), epochs=1, verbose=0)
    path = tmp_path / "m.nnx"
    model.save(path)
    with zipfile.ZipFile(path) as z:
        assert all(name.endswith(".npy") for name in z.namelist())
    with np.load(path, allow_pickle=False) as archive:  # would raise on any object array
        assert all(archive[k].dtype != object for k in archive.files)


def test_loads_on_current_backend_from_any_backend(backend, tmp_path):
    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=1, verbose=0)
    expected = nnx.to_numpy(model.predict(x))
    model.save(tmp_path / "m.nnx")
    for name, device in (("numpy", None), ("array_api_strict", "device2")):
        with nnx.use_backend(name, device) as target:
            loaded = nnx.load_model(tmp_path / "m.nnx")
            assert loaded.backend == target and target.owns(loaded.layers[0].kernel.value)
            assert set(loaded.optimizer._slots) == set(loaded.trainable_weights)
            assert all(target.owns(s) for slots in loaded.optimizer._slots.values() for s in slots)
            np.testing.assert_allclose(nnx.to_numpy(loaded.predict(x)), expected, rtol=1e-5, atol=1e-6)
            loaded.fit(x, y, epochs=1, verbose=0)


def test_interrupted_save_leaves_earlier_file_intact(backend, tmp_path, monkeypatch):
    model = _model()
    path = tmp_path / "m.nnx"
    model.save(path)
    original = path.read_bytes()
    model.fit(*_data(), epochs=1, verbose=0)

    real_savez = np.savez

    def savez_then_fail(f, **arrays):
        real_savez(f, **dict(list(arrays.items())[:2]))  # part of the file is written ...
        raise KeyboardInterrupt("interrupted")  # ... then the process is interrupted

    monkeypatch.setattr(np, "savez", savez_then_fail)
    with pytest.raises(KeyboardInterrupt):
        model.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == original
    assert os.listdir(tmp_path) == ["m.nnx"]  # no temporary file left behind
    nnx.load_model(path)


def _saved(tmp_path):
    model = _model()
    path = tmp_path / "good.nnx"
    model.save(path)
    return path.read_bytes()


def test_truncated_file(backend, tmp_path):
    data = _saved(tmp_path)
    for cut in (10, len(data) // 2, len(data) - 30):
        bad = tmp_path / "bad.nnx"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="not a readable nnx file|incomplete|corrupted"):
            nnx.load_model(bad)


def test_corrupted_file(backend, tmp_path):
    data = bytearray(_saved(tmp_path))
    for i in range(len(data) // 3, len(data) // 3 + 64):
        data[i] ^= 0xFF
    bad = tmp_path / "bad.nnx"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError):
        nnx.load_model(bad)


def test_foreign_files(backend, tmp_path):
    text = tmp_path / "notes.nnx"
    text.write_text("hello, not a model")
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.ones(3))
    single = tmp_path / "single.npy"
    np.save(single, np.ones(3))
    for path in (text, plain, single):
        with pytest.raises(ValueError, match="not"):
            nnx.load_model(path)
    weights = tmp_path / "w.npz"
    _model().save_weights(weights)
    with pytest.raises(ValueError, match="not an nnx-model file"):
        nnx.load_model(weights)


class _Exploit:
    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_files_execute_nothing(backend, tmp_path):
    marker = tmp_path / "pwned"
    _Exploit.marker = str(marker)
    raw = tmp_path / "raw.nnx"
    raw.write_bytes(pickle.dumps(_Exploit()))
    inside = tmp_path / "inside.nnx"
    with open(inside, "wb") as f:
        np.savez(f, __nnx__=np.array([_Exploit()], dtype=object))
    for path in (raw, inside):
        with pytest.raises(ValueError):
            nnx.load_model(path)
    assert not marker.exists()


def test_save_and_load_weights(backend, tmp_path):
    model, other = _model(), _model()
    path = tmp_path / "w.npz"
    model.save_weights(path)
    other.load_weights(path)
    for a, b in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    small = nnx.Sequential([nnx.Input(5), nnx.Dense(2)])
    before = small.get_weights()
    with pytest.raises(ValueError, match="expects 2 weight arrays|Expected a list of 2"):
        small.load_weights(path)
    for a, b in zip(small.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_uncompiled_model_roundtrip(backend, tmp_path):
    model = nnx.Sequential([nnx.Input(3), nnx.Dense(2, activation="selu", kernel_initializer="lecun_normal")])
    model.save(tmp_path / "m.nnx")
    loaded = nnx.load_model(tmp_path / "m.nnx")
    assert not loaded.compiled and loaded.layers[0].activation.name == "selu"
    np.testing.assert_array_equal(loaded.get_weights()[0], model.get_weights()[0])


def test_load_model_without_compiling_and_one_load_model(backend, tmp_path):
    """``compile=False`` (Keras's keyword) gives the architecture and the weights only;
    ``nnx.models.load_model`` is ``nnx.load_model``."""
    assert nnx.models.load_model is nnx.load_model
    model = nnx.Sequential([nnx.Input((3,)), nnx.Dense(2)])
    model.compile("adam", "mse", metrics=["mae"])
    x = np.random.default_rng(0).normal(size=(6, 3)).astype("float32")
    model.fit(x, np.ones((6, 2), "float32"), verbose=0)
    path = tmp_path / "m.nnx"
    model.save(path)
    bare = nnx.load_model(path, compile=False)
    assert not bare.compiled and bare.optimizer is None
    np.testing.assert_array_equal(nnx.to_numpy(bare.predict(x)), nnx.to_numpy(model.predict(x)))
    assert nnx.models.load_model(path).compiled
