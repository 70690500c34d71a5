"""``array_api_strict``: the reference namespace, used to prove the core is portable.

Its devices ("CPU_DEVICE", "device1", "device2", "no_float64", ...) refuse to mix, so any array the
core creates without ``device=`` shows up as an error in the tests.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import Backend


class StrictBackend(Backend):
    name = "array_api_strict"

    def __init__(self, xp: Any, device: Any) -> None:
        super().__init__(xp, device)

    def owns(self, a: Any) -> bool:
        return owns(a)

    def from_host(self, x: np.ndarray) -> Any:
        return self.xp.asarray(np.ascontiguousarray(x), device=self.device)

    def to_numpy(self, a: Any) -> np.ndarray:
        cpu = self.xp.asarray(a, device=self.xp.Device("CPU_DEVICE"))
        return np.array(np.from_dlpack(cpu), copy=True)


def unavailable_reason() -> str | None:
    try:
        import array_api_strict  # noqa: F401
    except ImportError:
        return "array_api_strict is not installed (pip install array-api-strict)"
    return None


def create(device: Any = None) -> StrictBackend:
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(f"Cannot use the array_api_strict backend: {reason}.")
    import array_api_strict as xp

    if device is None:
        device = xp.Device("CPU_DEVICE")
    elif not isinstance(device, xp.Device):
        names = [str(d).split("'")[1] for d in xp.__array_namespace_info__().devices()]
        if str(device) not in names:
            raise RuntimeError(f"array_api_strict has no device {device!r}; expected one of {names}.")
        device = xp.Device(str(device))
    return StrictBackend(xp, device)


def owns(a: Any) -> bool:
    return type(a).__module__.startswith("array_api_strict")


def create_for(a: Any) -> StrictBackend:
    return create(a.device)
