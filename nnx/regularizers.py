"""Weight penalties added to the loss: ``L1``, ``L2``, ``L1L2`` (Keras's formulas and defaults)."""
from __future__ import annotations

from typing import Any


class Regularizer:
    """A penalty ``__call__(xp, w)`` and its gradient ``gradient(xp, w)``.

    >>> nnx.Dense(10, kernel_regularizer=nnx.regularizers.L2(1e-4))
    """

    def __init__(self, l1: float = 0.0, l2: float = 0.0):
        self.l1, self.l2 = float(l1), float(l2)

    def __call__(self, xp: Any, w: Any) -> Any:
        penalty = 0.0
        if self.l1:
            penalty = penalty + self.l1 * xp.sum(xp.abs(w))
        if self.l2:
            penalty = penalty + self.l2 * xp.sum(w * w)
        return penalty

    def gradient(self, xp: Any, w: Any) -> Any:
        g = 0.0
        if self.l1:
            g = g + self.l1 * xp.sign(w)
        if self.l2:
            g = g + (2.0 * self.l2) * w
        return g

    def get_config(self) -> dict:
        return {"class_name": type(self).__name__, "config": {"l1": self.l1, "l2": self.l2}}


class L1(Regularizer):
    """l1 * sum(|w|).

    >>> nnx.Dense(8, kernel_regularizer=nnx.regularizers.L1(1e-4))
    """
    def __init__(self, l1: float = 0.01):
        super().__init__(l1=l1)

    def get_config(self):
        return {"class_name": "L1", "config": {"l1": self.l1}}


class L2(Regularizer):
    """l2 * sum(w^2).

    >>> nnx.Dense(8, kernel_regularizer=nnx.regularizers.L2(1e-4))
    """
    def __init__(self, l2: float = 0.01):
        super().__init__(l2=l2)

    def get_config(self):
        return {"class_name": "L2", "config": {"l2": self.l2}}


class L1L2(Regularizer):
    """Both penalties.

    >>> nnx.regularizers.L1L2(l1=1e-5, l2=1e-4)
    """
    pass


_REGISTRY = {"l1": L1, "l2": L2, "l1l2": L1L2, "l1_l2": L1L2}


def get(identifier: str | dict | Regularizer | None) -> Regularizer | None:
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _REGISTRY:
        return _REGISTRY[identifier.lower()]()
    if isinstance(identifier, dict) and str(identifier.get("class_name", "")).lower() in _REGISTRY:
        return _REGISTRY[identifier["class_name"].lower()](**identifier.get("config", {}))
    raise ValueError(f"Unknown regularizer {identifier!r}; expected 'l1', 'l2', 'l1_l2', a Regularizer or None.")
