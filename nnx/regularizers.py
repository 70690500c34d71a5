"""Weight penalties added to the loss: ``L1``, ``L2``, ``L1L2`` (Keras's formulas and defaults)."""
from __future__ import annotations

from typing import Any

from .registry import Registry


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
    """Both penalties: ``l1 * sum(|w|) + l2 * sum(w^2)``.

    >>> nnx.regularizers.L1L2(l1=1e-5, l2=1e-4)
    """

    def __init__(self, l1: float = 0.0, l2: float = 0.0):
        super().__init__(l1=l1, l2=l2)


def l1(l1: float = 0.01) -> L1:
    """Keras's ``regularizers.l1``: ``l1 * sum(|w|)``.

    >>> nnx.Dense(8, kernel_regularizer=nnx.regularizers.l1(0.01))
    """
    return L1(l1)


def l2(l2: float = 0.01) -> L2:
    """Keras's ``regularizers.l2``: ``l2 * sum(w^2)``.

    >>> nnx.Dense(8, kernel_regularizer=nnx.regularizers.l2(0.01))
    """
    return L2(l2)


def l1_l2(l1: float = 0.01, l2: float = 0.01) -> L1L2:
    """Keras's ``regularizers.l1_l2``: both penalties.

    >>> nnx.Dense(8, kernel_regularizer=nnx.regularizers.l1_l2(l1=1e-5, l2=1e-4))
    """
    return L1L2(l1=l1, l2=l2)


registry = Registry("regularizer", Regularizer)
registry.add(L1, "l1")
registry.add(L2, "l2")
registry.add(L1L2, "l1_l2")


def get(identifier: str | dict | Regularizer | None) -> Regularizer | None:
    """A regularizer from its name (``"l1"``, ``"l2"``, ``"l1_l2"``, ``"L2"``), a config dict, an
    instance, or None."""
    if identifier is None:
        return None
    return registry.get(identifier)


def serialize(regularizer: Regularizer | None) -> dict | None:
    return None if regularizer is None else regularizer.get_config()
