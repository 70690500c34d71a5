"""Resuming from a file is bit-exact with Dropout in the model, also in a new process: the file
carries the model's own dropout stream (besides the weights, the optimizer state and the shuffle
generator), and a model draws its masks from that stream, not from a process-wide generator."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import nnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    import nnx

    name, device, folder = sys.argv[1], sys.argv[2], sys.argv[3]
    nnx.seed(12345)  # another seed: nothing of the first process's global streams is left to share
    nnx.set_backend(name, device=None if device == "None" else device)
    data = np.load(f"{folder}/data.npz")
    model = nnx.load_model(f"{folder}/m.nnx")
    model.fit(data["x"], data["y"], epochs=2, batch_size=16, verbose=0)
    np.savez(f"{folder}/child.npz", *model.get_weights())
""")


def _model():
    model = nnx.Sequential([nnx.Input(6), nnx.Dense(16, activation="relu"), nnx.Dropout(0.5),
                            nnx.Dense(8, activation="tanh"), nnx.Dropout(0.3), nnx.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _data():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((100, 6)).astype("float32")
    return x, (x[:, 0] + x[:, 1] > 0).astype("int64") + (x[:, 2] > 1).astype("int64")


def _device_arg(backend) -> str:
    if backend.name == "numpy":
        return "cpu-portable" if backend.key[1] == "cpu-portable" else "None"
    if backend.name == "cupy":
        return str(backend.device.id)
    return str(backend.device).split("'")[1]


def test_resume_with_dropout_in_a_new_process_is_bit_exact(backend, tmp_path):
    x, y = _data()
    np.savez(tmp_path / "data.npz", x=x, y=y)
    model = _model()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    model.save(tmp_path / "m.nnx")
    nnx.random.device_rng().random(1000)  # the global dropout stream moves on; the model's does not
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    expected = model.get_weights()

    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run([sys.executable, "-c", _CHILD, backend.name, _device_arg(backend), str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    with np.load(tmp_path / "child.npz") as child:
        resumed = [child[f"arr_{i}"] for i in range(len(child.files))]
    assert len(resumed) == len(expected)
    for a, b in zip(resumed, expected):
        assert a.dtype == b.dtype and np.array_equal(a, b), "resumed weights differ from the uninterrupted run"


def test_dropout_masks_come_from_the_models_own_stream(backend):
    """Two models built from one seed, trained in either order, get the same masks each; dropout
    really is in play (a different stream state gives different weights)."""
    x, y = _data()

    def train(order):
        nnx.seed(3)
        models = {"a": _model(), "b": _model()}
        for key in order:
            models[key].fit(x, y, epochs=1, batch_size=20, verbose=0, shuffle=False)
        return {k: m.get_weights() for k, m in models.items()}

    ab, ba = train("ab"), train("ba")
    for key in "ab":
        for u, v in zip(ab[key], ba[key]):
            assert np.array_equal(u, v)

    nnx.seed(3)
    model = _model()
    model._dropout_rng.host.random(10)  # another point of the model's stream: other masks
    model.fit(x, y, epochs=1, batch_size=20, verbose=0, shuffle=False)
    assert not all(np.array_equal(u, v) for u, v in zip(model.get_weights(), ab["a"]))


def test_a_file_with_a_damaged_dropout_state_is_refused(backend, tmp_path):
    import io
    import json

    model = _model()
    model.fit(*_data(), epochs=1, verbose=0)
    model.save(tmp_path / "m.nnx")
    with np.load(tmp_path / "m.nnx", allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(arrays["__nnx__"].tobytes().decode("utf-8"))
    assert meta["dropout_rng"]["bit_generator"] == "PCG64"
    meta["dropout_rng"] = {"bit_generator": "PCG64", "state": "x"}
    arrays["__nnx__"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    (tmp_path / "bad.nnx").write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="invalid dropout state"):
        nnx.load_model(tmp_path / "bad.nnx")
    del meta["dropout_rng"]  # a file from before the dropout stream was saved still loads
    arrays["__nnx__"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    (tmp_path / "old.nnx").write_bytes(buf.getvalue())
    assert nnx.load_model(tmp_path / "old.nnx")._dropout_rng is not None


def test_conv_batchnorm_dropout_save_load_resume_is_exact(backend, tmp_path):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((48, 6, 6, 1)).astype("float32")
    y = (x[:, :3].sum(axis=(1, 2, 3)) > 0).astype("int64")
    model = nnx.Sequential([nnx.Input((6, 6, 1)), nnx.Conv2D(4, 3, activation="relu"), nnx.BatchNormalization(),
                            nnx.Dropout(0.3), nnx.Flatten(), nnx.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    model.save(tmp_path / "c.nnx")
    loaded = nnx.load_model(tmp_path / "c.nnx")
    np.testing.assert_array_equal(nnx.to_numpy(loaded.predict(x)), nnx.to_numpy(model.predict(x)))
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    loaded.fit(x, y, epochs=2, batch_size=16, verbose=0)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
