"""Where data enters: conversion of user inputs and their validation, once per call, before any
weight changes. Host numpy is used here; arrays already on the model's device stay there."""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import numpy as np

from . import backend as _backend
from .losses import CategoricalCrossentropy


def _shape_str(shape: tuple) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _is_real(dtype: np.dtype) -> bool:
    """int, uint, float or bool; not timedelta64 / datetime64 (which NumPy files under integer),
    complex, object, strings or records."""
    return dtype.kind in "biuf"


def real_dtype_name(dtype: Any, what: str) -> str:
    """The name of an integer or float dtype (``"int32"``, ``"float32"``), or ValueError."""
    try:
        kind, name = np.dtype(dtype).kind, np.dtype(dtype).name
    except (TypeError, ValueError):
        kind = name = ""
    if not kind or kind not in "iuf":
        raise ValueError(f"{what} must be an integer or float dtype name (e.g. 'int32', 'float32'); "
                         f"received {dtype!r}.")
    return name


def host_copy(a: Any, dtype: str | None = None) -> np.ndarray:
    """``a`` as a fresh host numpy array (in ``dtype`` when given): weights leaving or entering."""
    host = np.array(_backend.to_numpy(a) if not isinstance(a, (list, tuple, int, float)) else a, copy=True)
    return host if dtype is None else host.astype(dtype, copy=False)


def to_array(a: Any, backend: _backend.Backend, what: str) -> Any:
    """A user input as either a host numpy array or an array already on ``backend``'s device."""
    if a is None:
        raise ValueError(f"{what} is required; received None.")
    if backend.owns(a) and not isinstance(a, (np.ndarray, np.generic)):
        if not (backend.xp.isdtype(a.dtype, "integral") or backend.xp.isdtype(a.dtype, "real floating")
                or a.dtype == backend.xp.bool):
            raise ValueError(f"{what} must hold real numbers (int, float or bool); received an array of dtype {a.dtype}.")
        return a if getattr(a, "device", backend.device) == backend.device else backend.xp.asarray(a, device=backend.device)
    if isinstance(a, np.ma.MaskedArray):
        raise ValueError(f"{what} must be a plain array; received a masked array (fill or drop the masked "
                         f"entries first, e.g. a.filled(...)).")
    if isinstance(a, (list, tuple, int, float, np.ndarray, np.generic)):
        try:
            host = np.asarray(a)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{what} must be a rectangular numeric array; received {type(a).__name__} ({e}).") from None
    else:
        host = _backend.to_numpy(a)  # an array of another backend: through the host
    if not _is_real(host.dtype):
        raise ValueError(f"{what} must hold real numbers (int, float or bool); received an array of dtype {host.dtype}.")
    return host


def is_host(a: Any) -> bool:
    return isinstance(a, np.ndarray)


def _total(a: np.ndarray) -> Any:
    """The sum of a host array's entries: row sums as one matrix-vector product (multi-threaded
    BLAS, about twice as fast as ``a.sum()`` on 2 cores), then their sum."""
    if a.ndim < 2 or a.size == 0 or a.dtype not in (np.float32, np.float64) or not a.flags.c_contiguous:
        return a.sum()
    rows = a.reshape(a.shape[0], -1)
    return np.add.reduce(rows @ np.ones(rows.shape[1], dtype=a.dtype))


def check_finite(a: Any, backend: _backend.Backend, what: str, before: Any = None) -> None:
    """ValueError when ``a`` holds NaN or inf; ``before``: the array ``a`` was cast from, to say
    so when only the cast made values infinite."""
    if is_host(a):
        # a finite sum proves every entry finite in one pass without a temporary; NaN and inf
        # propagate into it (an overflowing sum of finite values falls through to the full check)
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(_total(a)) and not np.isfinite(a).all():
            if is_host(before) and before.dtype.kind == "f" and np.isfinite(before).all():
                raise ValueError(
                    f"{what} holds values beyond the range of {a.dtype} (|{what}| up to {float(np.abs(before).max()):.3g}; "
                    f"the largest finite {a.dtype} is {float(np.finfo(a.dtype).max):.3g}), which become inf in "
                    f"{a.dtype}: scale the data, or build the model in float64 (nnx.set_floatx('float64')).")
            bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
            raise ValueError(f"{what} must be finite; received {bad} NaN or inf values.")
        return
    xp = backend.xp
    if xp.isdtype(a.dtype, "real floating") and not bool(xp.all(xp.isfinite(a))):
        raise ValueError(f"{what} must be finite; received NaN or inf values.")


def host_weight(a: Any, shape: tuple[int, ...], dtype: str, what: str) -> np.ndarray:
    """A weight array from the user, as a host copy in ``dtype``, checked: real numbers, the
    expected shape, finite after the cast."""
    plain = isinstance(a, np.ndarray) and not isinstance(a, np.ma.MaskedArray)
    host = a if plain else to_array(a, _backend.get_backend(), what)  # masked arrays refused there
    if is_host(host) and not _is_real(host.dtype):  # device arrays were checked by to_array
        raise ValueError(f"{what} must hold real numbers (int, float or bool); received an array of dtype {host.dtype}.")
    if not is_host(host):
        host = _backend.to_numpy(host)
    if tuple(host.shape) != tuple(shape):
        raise ValueError(f"{what} expects shape {_shape_str(tuple(shape))}, received {_shape_str(tuple(host.shape))}.")
    with np.errstate(over="ignore", invalid="ignore"):  # an overflowing cast gives inf, refused just below
        out = np.array(host, dtype=dtype, copy=True)
    if not np.isfinite(out).all():
        raise ValueError(f"{what} must be finite in {dtype}; received NaN or inf values.")
    return out


def check_x(x: Any, input_shape: tuple[int, ...] | None, backend: _backend.Backend, what: str = "",
            before: Any = None) -> None:
    if x.ndim < 2:
        expected = f"(n, {', '.join(map(str, input_shape))})" if input_shape else "(n, features)"
        raise ValueError(f"Expected {what}x of shape {expected}: one row per sample; received shape "
                         f"{_shape_str(tuple(x.shape))}.")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(
            f"Expected {what}x with sample shape {_shape_str(tuple(input_shape))} ({what}x of shape (n, "
            f"{', '.join(map(str, input_shape))})), received {what}x of shape {_shape_str(tuple(x.shape))}."
        )
    check_finite(x, backend, f"{what}x", before)


def check_y(y: Any, n: int, loss: Any, output_shape: tuple[int, ...], backend: _backend.Backend,
            what: str = "") -> Any:
    """Validate ``y`` against ``n`` samples and the model output; returns y in its final layout
    (a column for a 1-D target of a one-unit model)."""
    if y.ndim == 0 or int(y.shape[0]) != n:
        received = "a scalar" if y.ndim == 0 else f"{int(y.shape[0])} samples in y"
        raise ValueError(f"{what}x and {what}y must have the same number of samples: {n} samples in x, "
                         f"received {received}.")
    check_finite(y, backend, f"{what}y")
    bounds = getattr(loss, "target_range", None)
    if bounds is not None and int(y.shape[0]) > 0:
        lo, hi = _min_max(y, backend)
        if lo < bounds[0] or hi > bounds[1]:
            raise ValueError(f"{loss.name} expects targets in [{bounds[0]}, {bounds[1]}]; received {what}y from "
                             f"{lo:g} to {hi:g}.")
    if loss.sparse_labels:
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(
                f"{loss.name} expects integer class labels of shape (n,); received {what}y of shape "
                f"{_shape_str(tuple(y.shape))} (for one-hot rows use categorical_crossentropy)."
            )
        units = int(output_shape[-1])
        lo, hi, integral = _label_stats(y, backend)
        if not integral:
            raise ValueError(f"{loss.name} expects integer class labels; received non-integer values in {what}y.")
        if lo < 0 or hi >= units:
            hint = " (0/1 labels with one sigmoid output need binary_crossentropy)" if units == 1 else ""
            raise ValueError(
                f"Labels must lie in [0, {units - 1}] for a model with {units} output unit{'s' * (units != 1)}; "
                f"received {what}labels from {lo} to {hi}{hint}."
            )
        return y
    if tuple(output_shape)[-1:] == (1,) and isinstance(loss, CategoricalCrossentropy):
        # as Keras: each one-entry row normalises to 1, so the loss is 0 and nothing trains
        warnings.warn(f"categorical_crossentropy expects the model's output to have shape (batch_size, num_classes) "
                      f"with num_classes > 1; received output shape {_shape_str((None, *output_shape))}. The loss "
                      f"is 0 for every prediction and nothing trains: for two classes use binary_crossentropy.",
                      UserWarning, stacklevel=4)
    if y.ndim == 1 and tuple(output_shape) == (1,):
        y = y[:, None]
    if tuple(y.shape[1:]) != tuple(output_shape):
        hint = " (integer labels need sparse_categorical_crossentropy)" if y.ndim == 1 else ""
        raise ValueError(
            f"Expected {what}y of shape (n, {', '.join(map(str, output_shape))}) to match the model output, "
            f"received {what}y of shape {_shape_str(tuple(y.shape))}{hint}."
        )
    return y


def _min_max(y: Any, backend: _backend.Backend) -> tuple[float, float]:
    if is_host(y):
        return float(np.min(y)), float(np.max(y))
    return float(backend.xp.min(y)), float(backend.xp.max(y))


def _label_stats(y: Any, backend: _backend.Backend) -> tuple[int, int, bool]:
    if is_host(y):
        if y.size == 0:
            return 0, 0, True
        integral = bool(np.issubdtype(y.dtype, np.integer) or np.all(np.equal(np.floor(y), y)))
        return int(y.min()), int(y.max()), integral
    xp = backend.xp
    integral = xp.isdtype(y.dtype, "integral") or bool(xp.all(xp.floor(y) == y))
    return int(xp.min(y)), int(xp.max(y)), integral


def cast(a: Any, dtype: str, backend: _backend.Backend) -> Any:
    """Cast on the host (before the move) or on the device, whichever side ``a`` is on. Values
    beyond the dtype's range become inf here, which the finite check after the cast refuses."""
    if is_host(a):
        with np.errstate(over="ignore"):
            return a.astype(dtype, copy=False)
    target = backend.dtype(dtype)
    return a if a.dtype == target else backend.xp.astype(a, target)


def as_ids(a: Any, dtype: str, input_dim: int, backend: _backend.Backend, what: str) -> Any:
    """Integer ids (an Embedding's input) in the integer ``dtype``, checked before the cast: whole
    numbers (integer or bool arrays, or floats without a fraction) in [0, input_dim); ValueError
    otherwise."""
    host = is_host(a)
    xp = None if host else backend.xp
    if (a.dtype.kind == "b") if host else (a.dtype == xp.bool):
        a = cast(a, dtype, backend)
    if host and a.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            whole = bool(np.all(np.floor(a) == a))  # NaN and inf are not
    else:
        whole = host or not xp.isdtype(a.dtype, "real floating") or bool(xp.all(xp.floor(a) == a))
    if not whole:
        raise ValueError(f"{what} must be integer ids; received non-integer values.")
    if int(np.prod(a.shape)) > 0:
        lo, hi = _min_max(a, backend)
        if lo < 0 or hi >= input_dim:
            raise ValueError(f"{what} must lie in [0, {input_dim - 1}] (input_dim={input_dim}); received ids "
                             f"from {lo:g} to {hi:g}.")
    return cast(a, dtype, backend)


def slice_rows(a: Any, start: int, stop: int) -> Any:
    return a[start:stop, ...]


def take_rows(a: Any, idx_host: Any, idx_device: Any, backend: _backend.Backend) -> Any:
    if is_host(a):
        return a[idx_host]
    return backend.xp.take(a, idx_device, axis=0)




def check_weight_shape(w: Any, n: int, name: str = "sample_weight") -> Any:
    """``w`` as shape (n,) (a column (n, 1) is accepted); anything else is refused."""
    if w.ndim == 2 and int(w.shape[1]) == 1:
        w = w[:, 0]
    if w.ndim != 1 or int(w.shape[0]) != n:
        raise ValueError(f"{name} must have shape ({n},), one weight per sample; received shape "
                         f"{_shape_str(tuple(w.shape))}.")
    return w


def sample_weight(w: Any, n: int, dtype: str, backend: _backend.Backend, like: Any, what: str = "") -> Any:
    """Per-sample loss weights from the user, checked (real numbers, shape (n,) or (n, 1), finite,
    non-negative), cast to ``dtype`` and placed on the same side as ``like`` (host or device)."""
    name = f"{what}sample_weight"
    w = check_weight_shape(to_array(w, backend, name), n, name)
    w = cast(w, dtype, backend)
    check_finite(w, backend, name)
    if n and _min_max(w, backend)[0] < 0:
        raise ValueError(f"{name} must be non-negative; received a minimum of {_min_max(w, backend)[0]:g}.")
    if is_host(w) and not is_host(like):
        w = backend.from_host(w)
    elif not is_host(w) and is_host(like):
        w = backend.to_numpy(w)
    return w


def _class_key(key: Any) -> int | None:
    """A class_weight key as an int, or None when it is not an integer (bools refused)."""
    if isinstance(key, (bool, np.bool_)):
        return None
    if isinstance(key, (int, np.integer)):
        return int(key)
    if isinstance(key, (float, np.floating)) and float(key).is_integer():
        return int(key)
    return None


def class_weight_to_sample_weight(class_weight: Any, y: Any, loss: Any, output_shape: tuple[int, ...],
                                  backend: _backend.Backend) -> np.ndarray:
    """Keras's conversion of ``class_weight`` ({label: weight}) into one weight per sample, on the
    host: the label of a sample is its integer label (sparse losses), the argmax of a one-hot
    row, or the rounded value of a one-column target (binary 0/1). Keys must be integer labels
    the model can produce; weights finite and non-negative. A label without a key weighs 1, as
    in Keras."""
    if not isinstance(class_weight, dict):
        raise ValueError(f"class_weight must be a dict {{label: weight}}; received {type(class_weight).__name__}.")
    y = y if is_host(y) else backend.to_numpy(y)
    if loss.sparse_labels:
        labels, classes = y.reshape(-1), int(output_shape[-1])
    elif y.ndim == 2 and int(y.shape[1]) > 1:
        labels, classes = np.argmax(y, axis=-1), int(y.shape[1])
    elif y.ndim == 2:
        labels = np.round(y[:, 0])
        classes = 2 if getattr(loss, "target_range", None) == (0.0, 1.0) else None
    else:
        raise ValueError(f"class_weight needs class labels: y of shape (n,), (n, 1) or (n, classes); "
                         f"received y of shape {_shape_str(tuple(y.shape))}.")
    table: dict[int, float] = {}
    for key, value in class_weight.items():
        label = _class_key(key)
        if label is None or (classes is not None and not 0 <= label < classes):
            expected = f"an int in [0, {classes - 1}]" if classes is not None else "an int"
            raise ValueError(f"class_weight keys must be class labels ({expected}); received the unknown "
                             f"label {key!r}.")
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.number)) \
                or not math.isfinite(float(value)) or float(value) < 0:
            raise ValueError(f"class_weight values must be finite non-negative numbers; received {value!r} "
                             f"for label {key!r}.")
        table[label] = float(value)
    present, inverse = np.unique(labels.astype(np.int64), return_inverse=True)
    return np.array([table.get(int(c), 1.0) for c in present], dtype=np.float64)[inverse.reshape(-1)]


# -- finite in, finite out ---------------------------------------------------------------------
class NonFiniteResult(ValueError):
    """Finite data and finite weights gave a NaN or inf loss, gradient or output: the data's
    magnitude overflows the model's float type. Raised before any weight changes."""


def all_finite(arrays: list[Any], backend: _backend.Backend) -> bool:
    xp = backend.xp
    for a in arrays:
        if isinstance(a, (int, float)):
            if not np.isfinite(a):
                return False
        elif xp.isdtype(a.dtype, "real floating") and not bool(xp.all(xp.isfinite(a))):
            return False
    return True


def _max_abs(a: Any, backend: _backend.Backend) -> float:
    if is_host(a):
        return float(np.max(np.abs(a))) if a.size else 0.0
    xp = backend.xp
    return float(xp.max(xp.abs(a))) if a.size else 0.0


def overflow_error(model: Any, backend: _backend.Backend, what: str, data: dict[str, Any]) -> NonFiniteResult | None:
    """The error to raise when ``what`` came out NaN or inf from finite ``data`` (name -> array),
    or None when the model's own weights are not finite (a model whose training diverged earlier:
    its NaN is not the data's fault, and is reported as Keras does, in the results)."""
    weights = [w.value for w in model.weights]
    if not all_finite(weights, backend):
        return None
    dtype = model.dtype
    limit = float(np.finfo(dtype).max)
    seen = ", ".join(f"|{name}| up to {_max_abs(a, backend):.3g}" for name, a in data.items())
    largest = max((_max_abs(w, backend) for w in weights), default=0.0)
    hint = "." if str(dtype) == "float64" else ", or the model built in float64 (nnx.set_floatx('float64'))."
    if largest > math.sqrt(limit):  # weights no initializer gives: an earlier training diverged
        cause = (f"Weights this large come from training that diverged (a learning rate too high for this model "
                 f"and data): lower it and train again from fresh weights{hint}")
    else:
        cause = f"The data must be scaled (e.g. standardized) to magnitudes the model can square and sum in {dtype}{hint}"
    return NonFiniteResult(
        f"{what} is NaN or inf although the data and the weights are finite: the values computed from "
        f"them overflow {dtype} (largest finite value {limit:.3g}); received {seen}, and weights up to "
        f"{largest:.3g}. {cause}")


def check_first_step(model: Any, backend: _backend.Backend, loss: Any, grads: dict, x: Any, y: Any) -> None:
    """Before ``fit`` applies its first step: raise ``ValueError`` when a gradient's shape is not
    its weight's (a layer's backward of one's own), ``NonFiniteResult`` when the loss or a gradient
    of the first batch is NaN or inf while the weights are finite (one device read per ``fit``)."""
    for w, g in grads.items():
        if tuple(getattr(g, "shape", ())) != tuple(w.value.shape):
            raise ValueError(f"The gradient a layer's backward returned for {w.path!r} has shape "
                             f"{_shape_str(tuple(getattr(g, 'shape', ())))}; expected the weight's shape "
                             f"{_shape_str(tuple(w.value.shape))}. No weight was changed.")
    if all_finite([loss, *grads.values()], backend):
        return
    error = overflow_error(model, backend, "The loss or a gradient of the first training batch", {"x": x, "y": y})
    if error is not None:
        raise error


def check_metrics(model: Any, xp: Any, y: Any, p: Any) -> None:
    """Before ``fit`` applies its first step: each compiled metric computed once on the first
    batch, so a metric that cannot read these targets fails with a ValueError naming it, before
    any weight changes (not with a broadcasting error after the step)."""
    for metric in model.metrics:
        try:
            if metric.stateful:
                metric.fresh().update(xp, y, p)
            else:
                metric.batch_total(xp, y, p)
        except (ValueError, TypeError, IndexError) as e:
            raise ValueError(
                f"The metric {metric.name!r} ({type(metric).__name__}) cannot be computed for targets of shape "
                f"{_shape_str(tuple(y.shape))} and outputs of shape {_shape_str(tuple(p.shape))}: {e}. Expected "
                f"targets it can compare with the outputs (integer labels go with 'accuracy' or "
                f"'sparse_categorical_accuracy'); no weight was changed.") from None
