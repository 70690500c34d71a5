"""Weight penalties added to the loss: ``L1``, ``L2``, ``L1L2`` (Keras's formulas and defaults)."""
from __future__ import annotations

import math
from typing import Any

from .registry import Registry


def _factor(value: Any, name: str) -> float:
    """A penalty factor: a finite float >= 0 (ValueError naming ``name`` otherwise)."""
    try:
        factor = float(value)
    except (TypeError, ValueError):
        factor = math.nan
    if isinstance(value, bool) or not (math.isfinite(factor) and factor >= 0.0):
        raise ValueError(f"The regularization factor {name} must be a finite float >= 0; received {value!r}.")
    return factor


class Regularizer:
    """A weight penalty ``l1 * sum(|w|) + l2 * sum(w^2)``: ``__call__(xp, w)`` and its gradient
    ``gradient(xp, w)``. The model adds the penalty to the loss and its gradient to the weight's.

    Args:
        l1: the L1 factor. Defaults to 0.0.
        l2: the L2 factor. Defaults to 0.0.

    >>> nnx.Dense(10, kernel_regularizer=nnx.regularizers.L2(1e-4))
    """

    def __init__(self, l1: float = 0.0, l2: float = 0.0):
        self.l1, self.l2 = _factor(l1, "l1"), _factor(l2, "l2")

    def __call__(self, xp: Any, w: Any) -> Any:
        """The penalty of a weight array.

        Args:
            xp: the Array API namespace of ``w``.
            w: the weight's array.

        Returns:
            A 0-d array (the float 0.0 when both factors are 0).

        >>> nnx.regularizers.L2(0.01)(backend.xp, layer.kernel.value)
        """
        penalty = 0.0
        if self.l1:
            penalty = penalty + self.l1 * xp.sum(xp.abs(w))
        if self.l2:
            penalty = penalty + self.l2 * xp.sum(w * w)
        return penalty

    def gradient(self, xp: Any, w: Any) -> Any:
        """The penalty's gradient with respect to ``w``: ``l1 * sign(w) + 2 * l2 * w``.

        Args:
            xp: the Array API namespace of ``w``.
            w: the weight's array.

        Returns:
            An array of ``w``'s shape (the float 0.0 when both factors are 0).

        >>> g = nnx.regularizers.L2(0.01).gradient(backend.xp, layer.kernel.value)
        """
        g = 0.0
        if self.l1:
            g = g + self.l1 * xp.sign(w)
        if self.l2:
            g = g + (2.0 * self.l2) * w
        return g

    def get_config(self) -> dict:
        """The regularizer as ``{"class_name": ..., "config": {...}}``, which
        ``nnx.regularizers.get`` reads back.

        Returns:
            A JSON-able dict.

        >>> nnx.regularizers.get(nnx.regularizers.L2(0.01).get_config())
        """
        return {"class_name": type(self).__name__, "config": {"l1": self.l1, "l2": self.l2}}


class L1(Regularizer):
    """The penalty ``l1 * sum(|w|)``.

    Args:
        l1: the factor. Defaults to 0.01.

    >>> nnx.Dense(8, kernel_regularizer=nnx.regularizers.L1(1e-4))
    """
    def __init__(self, l1: float = 0.01):
        super().__init__(l1=l1)

    def get_config(self):
        return {"class_name": "L1", "config": {"l1": self.l1}}


class L2(Regularizer):
    """The penalty ``l2 * sum(w^2)``.

    Args:
        l2: the factor. Defaults to 0.01.

    >>> nnx.Dense(8, kernel_regularizer=nnx.regularizers.L2(1e-4))
    """
    def __init__(self, l2: float = 0.01):
        super().__init__(l2=l2)

    def get_config(self):
        return {"class_name": "L2", "config": {"l2": self.l2}}


class L1L2(Regularizer):
    """Both penalties: ``l1 * sum(|w|) + l2 * sum(w^2)``.

    Args:
        l1: the L1 factor. Defaults to 0.0.
        l2: the L2 factor. Defaults to 0.0.

    >>> nnx.regularizers.L1L2(l1=1e-5, l2=1e-4)
    """

    def __init__(self, l1: float = 0.0, l2: float = 0.0):
        super().__init__(l1=l1, l2=l2)


def l1(l1: float = 0.01) -> L1:
    """Keras's ``regularizers.l1``: ``l1 * sum(|w|)``.

    Args:
        l1: the factor. Defaults to 0.01.

    Returns:
        An ``L1``.

    >>> nnx.Dense(8, kernel_regularizer=nnx.regularizers.l1(0.01))
    """
    return L1(l1)


def l2(l2: float = 0.01) -> L2:
    """Keras's ``regularizers.l2``: ``l2 * sum(w^2)``.

    Args:
        l2: the factor. Defaults to 0.01.

    Returns:
        An ``L2``.

    >>> nnx.Dense(8, kernel_regularizer=nnx.regularizers.l2(0.01))
    """
    return L2(l2)


def l1_l2(l1: float = 0.01, l2: float = 0.01) -> L1L2:
    """Keras's ``regularizers.l1_l2``: both penalties, ``l1 * sum(|w|) + l2 * sum(w^2)``.

    Args:
        l1: the L1 factor. Defaults to 0.01.
        l2: the L2 factor. Defaults to 0.01.

    Returns:
        An ``L1L2``.

    >>> nnx.Dense(8, kernel_regularizer=nnx.regularizers.l1_l2(l1=1e-5, l2=1e-4))
    """
    return L1L2(l1=l1, l2=l2)


registry = Registry("regularizer", Regularizer)
registry.add(L1, "l1")
registry.add(L2, "l2")
registry.add(L1L2, "l1_l2")


def get(identifier: str | dict | Regularizer | None) -> Regularizer | None:
    """A regularizer from its name, a config dict, an instance, or None.

    Args:
        identifier: a name (``"l1"``, ``"l2"``, ``"l1_l2"``, ``"L2"``: default factors), a
            ``get_config()`` dict, a ``Regularizer`` (returned as is), or None.

    Returns:
        A ``Regularizer``, or None for None.

    Raises:
        ValueError: an unknown name (the message lists the valid ones) or config.

    >>> nnx.regularizers.get("l2").l2   # 0.01
    """
    if identifier is None:
        return None
    return registry.get(identifier)


def serialize(regularizer: Regularizer | None) -> dict | None:
    """A regularizer's ``get_config()``, or None for None (as layer configs hold it).

    Args:
        regularizer: a ``Regularizer`` or None.

    Returns:
        A JSON-able dict, or None.

    >>> nnx.regularizers.serialize(nnx.regularizers.l2(0.01))
    """
    return None if regularizer is None else regularizer.get_config()
