"""Activation functions, each a forward and the backward that mirrors it.

An activation declares in ``saves`` what its backward needs from the forward pass: ``"y"`` (the
output), ``"x"`` (the input) or ``None`` (nothing). ``backward(xp, dy, saved)`` receives exactly
that one array and nothing else, so a wrong declaration gives a wrong gradient in every test that
trains it. Backends speed up activations by their class (``nnx.ops``), never by name: a subclass
with its own ``forward`` runs its own code.
"""
from __future__ import annotations

import math
from typing import Any

from .registry import Registry


class ActivationFunction:
    """An elementwise (or last-axis) nonlinearity with its derivative.

    Subclass it for a custom activation: set ``saves`` and write ``forward`` and ``backward``::

        class Square(nnx.activations.ActivationFunction):
            name, saves = "square", "x"
            def forward(self, xp, x): return x * x
            def backward(self, xp, dy, x): return 2 * x * dy
    """

    name = "linear"
    saves: str | None = None  # what backward reads: "y", "x" or None

    def forward(self, xp: Any, x: Any) -> Any:
        return x

    def backward(self, xp: Any, dy: Any, saved: Any) -> Any:
        return dy

    def __call__(self, x: Any) -> Any:
        from .backend import get_backend

        return self.forward(get_backend().xp, x)

    def get_config(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<activation {self.name}>"


class Linear(ActivationFunction):
    """Identity: y = x.

    >>> nnx.Dense(8, activation="linear")
    """

    name = "linear"


class ReLU(ActivationFunction):
    """max(x, 0); backward from the output: dx = dy where y > 0.

    >>> nnx.Dense(8, activation="relu")
    """

    name = "relu"
    saves = "y"

    def forward(self, xp, x):
        return xp.maximum(x, 0.0)

    def backward(self, xp, dy, y):
        return xp.where(y > 0, dy, 0.0)


class LeakyReLU(ActivationFunction):
    """x for x > 0, else negative_slope * x (0.01 by default, as the name "leaky_relu").

    >>> nnx.Dense(8, activation="leaky_relu")
    """

    name = "leaky_relu"
    saves = "x"

    def __init__(self, negative_slope: float = 0.01):
        self.negative_slope = float(negative_slope)

    def forward(self, xp, x):
        return xp.where(x > 0, x, self.negative_slope * x)

    def backward(self, xp, dy, x):
        return xp.where(x > 0, dy, self.negative_slope * dy)


class Sigmoid(ActivationFunction):
    """1 / (1 + e^-x), computed as 0.5 tanh(x / 2) + 0.5; derivative y (1 - y).

    >>> nnx.Dense(8, activation="sigmoid")
    """

    name = "sigmoid"
    saves = "y"

    def forward(self, xp, x):
        return 0.5 * xp.tanh(0.5 * x) + 0.5  # no overflow for large |x|

    def backward(self, xp, dy, y):
        return dy * y * (1.0 - y)


class Tanh(ActivationFunction):
    """tanh(x); derivative 1 - y^2.

    >>> nnx.Dense(8, activation="tanh")
    """

    name = "tanh"
    saves = "y"

    def forward(self, xp, x):
        return xp.tanh(x)

    def backward(self, xp, dy, y):
        return dy * (1.0 - y * y)


class Softmax(ActivationFunction):
    """Softmax over the last (class) axis, shifted by the row maximum.

    >>> nnx.Dense(8, activation="softmax")
    """

    name = "softmax"
    saves = "y"

    def forward(self, xp, x):
        e = xp.exp(x - xp.max(x, axis=-1, keepdims=True))
        return e / xp.sum(e, axis=-1, keepdims=True)

    def backward(self, xp, dy, y):
        return y * (dy - xp.sum(dy * y, axis=-1, keepdims=True))


class ELU(ActivationFunction):
    """x for x > 0, else alpha (e^x - 1); backward from the output (y > 0 exactly where x > 0,
    and for x <= 0 the derivative is y + alpha).

    >>> nnx.Dense(8, activation="elu")
    """

    name = "elu"
    saves = "y"
    alpha = 1.0
    scale = 1.0

    def forward(self, xp, x):
        neg = self.alpha * xp.expm1(xp.minimum(x, 0.0))
        return self.scale * xp.where(x > 0, x, neg)

    def backward(self, xp, dy, y):
        return xp.where(y > 0, self.scale * dy, dy * (y + self.scale * self.alpha))


class SELU(ELU):
    """scale * elu(x, alpha) with the self-normalising constants.

    >>> nnx.Dense(8, activation="selu", kernel_initializer="lecun_normal")
    """

    name = "selu"
    alpha = 1.6732632423543772
    scale = 1.0507009873554805


class GELU(ActivationFunction):
    """GELU in its tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).

    >>> nnx.Dense(8, activation="gelu")
    """

    name = "gelu"
    saves = "x"
    _c = math.sqrt(2.0 / math.pi)

    def forward(self, xp, x):
        return 0.5 * x * (1.0 + xp.tanh(self._c * (x + 0.044715 * x * x * x)))

    def backward(self, xp, dy, x):
        t = xp.tanh(self._c * (x + 0.044715 * x * x * x))
        du = self._c * (1.0 + 3 * 0.044715 * x * x)
        return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)


class Softplus(ActivationFunction):
    """log(1 + e^x), computed without overflow; derivative sigmoid(x).

    >>> nnx.Dense(8, activation="softplus")
    """

    name = "softplus"
    saves = "x"

    def forward(self, xp, x):
        return xp.log1p(xp.exp(-xp.abs(x))) + xp.maximum(x, 0.0)

    def backward(self, xp, dy, x):
        return dy * (0.5 * xp.tanh(0.5 * x) + 0.5)


class SiLU(ActivationFunction):
    """x * sigmoid(x) (also "swish").

    >>> nnx.Dense(8, activation="silu")
    """

    name = "silu"
    saves = "x"

    def forward(self, xp, x):
        return x * (0.5 * xp.tanh(0.5 * x) + 0.5)

    def backward(self, xp, dy, x):
        s = 0.5 * xp.tanh(0.5 * x) + 0.5
        return dy * s * (1.0 + x * (1.0 - s))


ALL = (Linear, ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, ELU, SELU, GELU, Softplus, SiLU)
registry = Registry("activation", ActivationFunction)
for _cls in ALL:
    registry.add(_cls, _cls.name)
registry.add(SiLU, "swish")


def names() -> list[str]:
    """Every activation name ``get`` accepts."""
    return registry.names()


def get(identifier: str | ActivationFunction | None) -> ActivationFunction:
    """An activation from its name (case-insensitive), an instance, or ``None`` (linear)."""
    if identifier is None:
        return Linear()
    return registry.get(identifier)
