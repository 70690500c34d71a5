"""Model files: one ``.nnx`` file (a zip of ``.npy`` arrays, no pickle anywhere) holding the
architecture and compile config as JSON, every weight, and the optimizer's state, written
atomically (a temporary file in the same folder, then ``os.replace``)."""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from typing import Any

import numpy as np  # host side: files in, files out

from . import backend as _backend
from . import losses as _losses
from . import optimizers as _optimizers
from . import random as _random

FORMAT = "nnx-model"
WEIGHTS_FORMAT = "nnx-weights"
VERSION = 1
_META = "__nnx__"


def _write_atomic(path: str, arrays: dict[str, np.ndarray]) -> None:
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _meta_array(meta: dict) -> np.ndarray:
    return np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)


def _read(path: str, expected: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and check a file; anything not a complete nnx file raises ``ValueError``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such file: {path!r}.")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        raise ValueError(f"{path!r} is not an nnx file: it is not a zip archive of arrays (truncated or foreign).")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, UnicodeDecodeError) as e:
        raise ValueError(f"{path!r} is not a readable nnx file (truncated, corrupted or foreign): {e}") from None
    if _META not in arrays:
        raise ValueError(f"{path!r} is not an nnx file: it has no {_META} entry.")
    try:
        meta = json.loads(arrays.pop(_META).tobytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path!r} has a corrupted header: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != expected:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{path!r} is not an {expected} file (found format {found!r}).")
    if meta.get("version", 0) > VERSION:
        raise ValueError(f"{path!r} was written by a newer nnx (format version {meta['version']}, this reads {VERSION}).")
    return meta, arrays


def _weights_of(arrays: dict[str, np.ndarray], count: int, path: str) -> list[np.ndarray]:
    try:
        return [arrays[f"weight_{i}"] for i in range(count)]
    except KeyError as e:
        raise ValueError(f"{path!r} is incomplete: missing {e.args[0]}.") from None


# -- whole models ------------------------------------------------------------------------------
def save_model(model: Any, filepath: str) -> None:
    if not model.built:
        raise ValueError("Build the model (give it an Input, or fit it) before saving it.")
    weights = model.get_weights()
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "dtype": model._dtype,
        "config": model.get_config(),
        "weights": len(weights),
        "compile": None,
        "shuffle_rng": None if model._shuffle_rng is None else model._shuffle_rng.bit_generator.state,
    }
    arrays = {f"weight_{i}": w for i, w in enumerate(weights)}
    if model.compiled:
        state = model.optimizer.get_state(_backend.to_numpy)
        meta["compile"] = {
            "optimizer": _optimizers.serialize(model.optimizer),
            "loss": model.loss.get_config(),
            "metrics": [m if isinstance(m, str) else m.name for m in model._metric_specs],
            "iterations": state["iterations"],
            "slots": [len(s) for s in state["slots"]],
        }
        for i, slots in enumerate(state["slots"]):
            for j, a in enumerate(slots):
                arrays[f"slot_{i}_{j}"] = a
    arrays[_META] = _meta_array(meta)
    _write_atomic(filepath, arrays)


def load_model(filepath: str) -> Any:
    """Load a model saved with ``model.save`` onto the current backend, compiled and with its
    optimizer state, ready to resume training.

    >>> model = nnx.load_model("model.nnx")
    """
    from .models import Sequential

    meta, arrays = _read(filepath, FORMAT)
    previous = _backend.floatx()
    try:
        _backend.set_floatx(meta.get("dtype", "float32"))
        try:
            model = Sequential.from_config(meta["config"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{filepath!r} holds an invalid model config: {e}") from None
    finally:
        _backend.set_floatx(previous)
    try:
        model.set_weights(_weights_of(arrays, int(meta["weights"]), filepath))
    except (KeyError, ValueError) as e:
        raise ValueError(f"{filepath!r}: weights do not match the architecture: {e}") from None
    compile_cfg = meta.get("compile")
    if compile_cfg:
        try:
            model.compile(optimizer=_optimizers.get(compile_cfg["optimizer"]), loss=_losses.get(compile_cfg["loss"]),
                          metrics=compile_cfg["metrics"])
            slots = [[arrays[f"slot_{i}_{j}"] for j in range(n)] for i, n in enumerate(compile_cfg["slots"])]
            model.optimizer.set_state({"iterations": compile_cfg["iterations"], "slots": slots}, model.backend,
                                      model.trainable_weights)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{filepath!r} holds an invalid compile config or optimizer state: {e}") from None
    if meta.get("shuffle_rng") is not None:
        model._shuffle_rng = _random.generator_from_state(meta["shuffle_rng"])
    return model


# -- weights only ------------------------------------------------------------------------------
def save_weights(model: Any, filepath: str) -> None:
    weights = model.get_weights()
    arrays = {f"weight_{i}": w for i, w in enumerate(weights)}
    arrays[_META] = _meta_array({"format": WEIGHTS_FORMAT, "version": VERSION, "weights": len(weights),
                                 "shapes": [list(w.shape) for w in weights]})
    _write_atomic(filepath, arrays)


def load_weights(model: Any, filepath: str) -> None:
    meta, arrays = _read(filepath, WEIGHTS_FORMAT)
    model.set_weights(_weights_of(arrays, int(meta["weights"]), filepath))
