"""One suite for every backend. The ``backend`` fixture yields, in turn:

- numpy;
- numpy without fast paths (the portable operations only), so every test covers both the
  portable code and the NumPy kernels;
- array_api_strict on "device1" (arrays created without ``device=`` would fail to combine);
- array_api_strict on "no_float64" (any float64 creeping into float32 code raises);
- cupy, when a CUDA device is usable.

``NNX_TEST_BACKENDS=numpy,array_api_strict,cupy`` selects among them (``numpy`` covers both numpy
configurations). Without it, cupy joins only where it can run; a backend the variable asks for
that cannot run here is an error, not a pass with no tests.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import nnx

_ALL = [("numpy", None), ("numpy", "cpu-portable"), ("array_api_strict", "device1"),
        ("array_api_strict", "no_float64"), ("cupy", 0)]


def _unusable(name: str) -> str | None:
    from nnx import backend as _backend

    try:
        return _backend._adapter(name).unavailable_reason()
    except ImportError as e:
        return str(e)


def _selected() -> list[tuple[str, object]]:
    asked = os.environ.get("NNX_TEST_BACKENDS")
    names = [n.strip() for n in (asked or "numpy,array_api_strict,cupy").split(",") if n.strip()]
    unknown = set(names) - {n for n, _ in _ALL}
    if unknown:
        raise pytest.UsageError(f"NNX_TEST_BACKENDS: unknown backends {sorted(unknown)}")
    chosen = []
    for name in dict.fromkeys(names):
        reason = _unusable(name)
        if reason is not None:
            if asked:
                raise pytest.UsageError(f"NNX_TEST_BACKENDS asks for {name}, which cannot run here: {reason}")
            continue
        chosen += [(n, d) for n, d in _ALL if n == name]
    return chosen


def _id(param: tuple[str, object]) -> str:
    name, device = param
    if name == "numpy":
        return "numpy" if device is None else "numpy-portable"
    return "cupy" if name == "cupy" else f"strict-{device}"


@pytest.fixture(params=_selected(), ids=_id)
def backend(request):
    name, device = request.param
    previous = nnx.floatx()
    nnx.set_floatx("float32")
    nnx.seed(0)
    with nnx.use_backend(name, device) as b:
        yield b
    nnx.set_floatx(previous)


@pytest.fixture
def backend64(backend):
    """The backend, with float64 as the default float type (for finite-difference checks)."""
    if "no_float64" in str(backend.device):
        pytest.skip("float64 gradient check: the no_float64 device refuses float64 by design")
    nnx.set_floatx("float64")
    yield backend
    nnx.set_floatx("float32")


def assert_close(actual, expected, dtype: str = "float32", scale: float = 100.0) -> None:
    """Compare through numpy, with a tolerance tied to the dtype's eps."""
    a = nnx.to_numpy(actual)
    e = nnx.to_numpy(expected) if not isinstance(expected, (list, float, int)) else np.asarray(expected)
    tol = scale * float(np.finfo(dtype).eps)
    np.testing.assert_allclose(a, e, rtol=tol, atol=tol)
