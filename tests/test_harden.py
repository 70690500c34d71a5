"""Hardening: the fuzz run's findings, pinned one by one (each test fails on the code before its fix).

- a model file whose optimizer slots hold NaN or inf (or values that overflow the weights' dtype),
  or whose step count is not a non-negative int, is refused with ``ValueError``;
- finite data that overflows the model's float type: ``fit`` refuses it at the first step (before
  any weight changes), ``evaluate`` and ``predict`` raise instead of returning inf or NaN, and
  epoch sums are kept in float64 where the device has it;
- ``verbose`` given an array, ``evaluate(return_dict=...)`` given a non-bool;
- ``save`` to an empty path, a NUL byte, a missing folder or a folder; ``load_model`` of a missing
  file or a folder: ``ValueError`` naming the problem, nothing written.
"""
from __future__ import annotations

import io
import json
import math
import os

import numpy as np
import pytest

import nnx


def _regressor(lr: float = 0.01, units: int = 1):
    model = nnx.Sequential([nnx.Input(4), nnx.Dense(3, activation="relu"), nnx.Dense(units)])
    model.compile(optimizer=nnx.optimizers.Adam(learning_rate=lr), loss="mse")
    return model


def _trained(backend):
    model = _regressor()
    rng = np.random.default_rng(0)
    model.fit(rng.standard_normal((16, 4)).astype("float32"), rng.standard_normal(16).astype("float32"),
              epochs=1, batch_size=8, verbose=0)
    return model


def _state(model) -> tuple:
    """Weights, optimizer step count and slots, and the shuffle generator's state."""
    slots = [[nnx.to_numpy(a).tobytes() for a in s] for s in model.optimizer._slots.values()]
    rng = model._shuffle_rng
    return ([w.tobytes() for w in model.get_weights()], model.optimizer.iterations, slots,
            None if rng is None else repr(rng.bit_generator.state))


def _npz(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _saved_arrays(model, folder) -> dict:
    path = os.path.join(folder, "m.nnx")
    model.save(path)
    with np.load(path, allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files}


# -- (a) optimizer state in a model file ----------------------------------------------------------
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 1e39])
def test_load_model_refuses_non_finite_optimizer_slots(backend, tmp_path, value):
    arrays = _saved_arrays(_trained(backend), tmp_path)
    slot = arrays["slot_0_1"].astype("float64")
    slot.flat[0] = value  # 1e39 is finite in float64 and inf in the weights' float32
    arrays["slot_0_1"] = slot
    (tmp_path / "bad.nnx").write_bytes(_npz(arrays))
    with pytest.raises(ValueError, match=r"optimizer slot 1 of weight .*must be finite in float32"):
        nnx.load_model(tmp_path / "bad.nnx")


@pytest.mark.parametrize("iterations", [-1, 2.0, True, "3", None])
def test_load_model_refuses_a_step_count_that_is_not_a_non_negative_int(backend, tmp_path, iterations):
    arrays = _saved_arrays(_trained(backend), tmp_path)
    meta = json.loads(arrays["__nnx__"].tobytes().decode("utf-8"))
    meta["compile"]["iterations"] = iterations
    arrays["__nnx__"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    (tmp_path / "bad.nnx").write_bytes(_npz(arrays))
    with pytest.raises(ValueError, match="iterations"):
        nnx.load_model(tmp_path / "bad.nnx")


def test_set_state_checks_before_changing_anything(backend):
    model = _trained(backend)
    opt = model.optimizer
    good = opt.get_state(nnx.to_numpy, model.trainable_weights)
    before = _state(model)
    for iterations in (-1, 2.5, True, "2"):
        with pytest.raises(ValueError, match="non-negative int"):
            opt.set_state({**good, "iterations": iterations}, model.backend, model.trainable_weights)
    bad = [[a.copy() for a in s] for s in good["slots"]]
    bad[-1][0][...] = np.nan
    with pytest.raises(ValueError, match="must be finite"):
        opt.set_state({**good, "slots": bad}, model.backend, model.trainable_weights)
    assert _state(model) == before
    opt.set_state({**good, "iterations": np.int64(7)}, model.backend, model.trainable_weights)
    assert opt.iterations == 7 and type(opt.iterations) is int


# -- (b) finite data that overflows the model's float type -------------------------------------------
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("where", ["x", "y"])
def test_fit_refuses_data_that_overflows_at_the_first_step_and_changes_nothing(backend, where):
    model = _trained(backend)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((12, 4)).astype("float32")
    y = rng.standard_normal(12).astype("float32")
    if where == "x":
        x = x * np.float32(1e30)  # finite in float32; x @ kernel and the squared error are not
    else:
        y = y * np.float32(1e30)  # finite in float32; its squared error is not
    before = _state(model)
    with pytest.raises(ValueError, match=rf"overflow float32.*\|{where}\| up to \d\.\d+e\+30.*must be scaled"):
        model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    assert _state(model) == before
    # the same model still trains on sane data afterwards
    history = model.fit(x / 1e30 if where == "x" else x, y / 1e30 if where == "y" else y, epochs=1, verbose=0)
    assert math.isfinite(history.history["loss"][0])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_after_the_first_step_is_recorded_as_in_keras(backend):
    """A learning rate that blows the weights up is not the data's fault: fit records the inf/NaN
    loss in the history (TerminateOnNaN stops such runs) and raises nothing."""
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((64, 4)).astype("float32"), rng.standard_normal(64).astype("float32")
    model = nnx.Sequential([nnx.Input(4), nnx.Dense(3, activation="relu"), nnx.Dense(1)])
    model.compile(optimizer=nnx.optimizers.SGD(learning_rate=1e18), loss="mse")
    history = model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    assert not all(math.isfinite(v) for v in history.history["loss"])
    assert not all(np.isfinite(w).all() for w in model.get_weights())
    result = model.evaluate(x, y)  # a diverged model's NaN is reported, not refused
    assert not math.isfinite(result)


def test_epoch_sums_do_not_overflow_float32(backend):
    """Each batch's loss (one sample: 2.25e38) is finite in float32; the sum of two is not. Sums in
    float64 keep the mean; a device without float64 refuses instead of returning inf."""
    model = nnx.Sequential([nnx.Input(1), nnx.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer="sgd", loss="mse")
    x = np.zeros((64, 1), dtype="float32")
    y = np.full(64, 1.5e19, dtype="float32")
    if backend.has_float64:
        assert model.evaluate(x, y, batch_size=1) == pytest.approx(float(np.float32(1.5e19)) ** 2, rel=1e-6)
    else:
        with pytest.raises(ValueError, match="overflow float32"), np.errstate(over="ignore"):
            model.evaluate(x, y, batch_size=1)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_predict_and_evaluate_refuse_to_return_an_overflow(backend):
    model = nnx.Sequential([nnx.Input(4), nnx.Dense(2, kernel_initializer="ones")])
    model.compile(optimizer="sgd", loss="mse")
    x = np.full((3, 4), 1e38, dtype="float32")  # finite; each output sums four of them: 4e38 is not
    with pytest.raises(ValueError, match=r"A prediction is NaN or inf.*\|x\| up to 1e\+38"):
        model.predict(x)
    with pytest.raises(ValueError, match=r"The loss or a metric is NaN or inf"):
        model.evaluate(x, np.zeros((3, 2), dtype="float32"))
    assert np.isfinite(nnx.to_numpy(model.predict(x / 1e30))).all()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow itself, which the error then reports
def test_an_overflow_from_diverged_weights_blames_the_training_not_the_data(backend):
    """Weights beyond sqrt(float32 max) come from training that diverged: the error says so
    (and does not tell the user to scale data that are fine)."""
    model = nnx.Sequential([nnx.Input(4), nnx.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.set_weights([np.full((4, 1), 2e19, dtype="float32"), np.zeros(1, dtype="float32")])
    x, y = np.ones((3, 4), dtype="float32"), np.zeros(3, dtype="float32")
    with pytest.raises(ValueError, match=r"weights up to 2e\+19\. Weights this large come from training that "
                                         r"diverged.*lower it") as info:
        model.evaluate(x, y)
    assert "must be scaled" not in str(info.value)


# -- (c) verbose, (f) return_dict ------------------------------------------------------------------
@pytest.mark.parametrize("verbose", [np.array([0, 1]), np.array([1]), np.array(1), 1.0, None, "silent", 3])
def test_verbose_must_be_0_1_2_or_auto(backend, verbose):
    model = _regressor()
    x, y = np.ones((4, 4), dtype="float32"), np.zeros(4, dtype="float32")
    for call in (lambda: model.fit(x, y, verbose=verbose), lambda: model.evaluate(x, y, verbose=verbose),
                 lambda: model.predict(x, verbose=verbose)):
        with pytest.raises(ValueError, match=r"verbose must be 0, 1, 2 or 'auto'; received"):
            call()
    assert model.optimizer.iterations == 0
    model.fit(x, y, verbose=np.int64(0))  # any integer type


@pytest.mark.parametrize("value", ["yes", 1, None, np.array(True)])
def test_evaluate_return_dict_must_be_a_bool(backend, value):
    model = _regressor()
    x, y = np.ones((4, 4), dtype="float32"), np.zeros(4, dtype="float32")
    with pytest.raises(TypeError, match=r"return_dict must be True or False"):
        model.evaluate(x, y, return_dict=value)
    with pytest.raises(TypeError, match=r"return_dict must be True or False"):
        model.test_on_batch(x, y, return_dict=value)
    assert model.evaluate(x, y, return_dict=np.bool_(True)).keys() == {"loss"}


# -- (d) save paths, (e) load paths ------------------------------------------------------------------
def _listing(folder) -> list:
    return sorted(os.path.relpath(os.path.join(root, name), folder)
                  for root, dirs, files in os.walk(folder) for name in dirs + files)


@pytest.mark.parametrize("where, message", [
    ("", "must name a file; received an empty string"),
    ("a\x00b.nnx", "must not contain a NUL byte"),
    ("missing/m.nnx", "folder .*missing.* does not exist"),
    ("adir", "must name a file; received .*adir.*which is a folder"),
    ("file.txt/m.nnx", "folder .*file.txt.* is not a folder"),
])
@pytest.mark.parametrize("method", ["save", "save_weights"])
def test_save_refuses_a_path_that_cannot_be_a_file(backend, tmp_path, monkeypatch, where, message, method):
    model = _regressor()
    (tmp_path / "adir").mkdir()
    (tmp_path / "file.txt").write_text("x")
    monkeypatch.chdir(tmp_path)  # the empty path would be relative to here
    before = _listing(tmp_path)
    with pytest.raises(ValueError, match=message):
        getattr(model, method)(where if where == "" else str(tmp_path / where))
    assert _listing(tmp_path) == before


@pytest.mark.parametrize("method", ["load_model", "load_weights"])
def test_load_of_a_missing_file_is_a_value_error_naming_the_path(backend, tmp_path, method):
    model = _regressor()
    path = tmp_path / "nope.nnx"
    load = nnx.load_model if method == "load_model" else model.load_weights
    with pytest.raises(ValueError, match=r"No such file: '.*nope\.nnx'") as info:
        load(path)
    assert isinstance(info.value, FileNotFoundError)  # `except FileNotFoundError` keeps working
    assert info.value.filename == str(path)
    with pytest.raises(ValueError, match="which is a folder"):
        load(tmp_path)
    for bad in ("", "a\x00b"):
        with pytest.raises(ValueError, match="must"):
            load(bad)
    with pytest.raises(TypeError, match="filepath must be a str or os.PathLike; received NoneType"):
        load(None)


def test_use_floatx_is_exported_and_restores_on_exit(backend):
    assert "use_floatx" in nnx.__all__ and nnx.use_floatx is nnx.backend.use_floatx
    with pytest.raises(KeyError):
        with nnx.use_floatx("float64"):
            assert nnx.floatx() == "float64"
            raise KeyError
    assert nnx.floatx() == "float32"
