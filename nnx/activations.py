"""Activation functions, each a forward and the backward that mirrors it.

``backward(xp, dy, x, y)`` receives the input ``x`` and the output ``y`` of the forward pass and
returns ``dx``; an activation reads only what it declares in ``saves`` ("x" or "y"), so layers
keep only that in memory.
"""
from __future__ import annotations

import math
from typing import Any


class ActivationFunction:
    """An elementwise (or last-axis) nonlinearity with its derivative.

    >>> nnx.activations.get("relu").forward(xp, x)
    """

    name = "linear"
    saves = "y"  # what backward needs: the forward's output "y" or its input "x"

    def forward(self, xp: Any, x: Any) -> Any:
        return x

    def backward(self, xp: Any, dy: Any, x: Any, y: Any) -> Any:
        return dy

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
    """max(x, 0).

    >>> nnx.Dense(8, activation="relu")
    """

    name = "relu"

    def forward(self, xp, x):
        return xp.maximum(x, 0.0)

    def backward(self, xp, dy, x, y):
        return xp.where(y > 0, dy, 0.0)


class LeakyReLU(ActivationFunction):
    """x for x > 0, else 0.01 x.

    >>> nnx.Dense(8, activation="leaky_relu")
    """

    name = "leaky_relu"
    saves = "x"
    negative_slope = 0.01

    def forward(self, xp, x):
        return xp.where(x > 0, x, self.negative_slope * x)

    def backward(self, xp, dy, x, y):
        return xp.where(x > 0, dy, self.negative_slope * dy)


class Sigmoid(ActivationFunction):
    """1 / (1 + e^-x), computed as 0.5 tanh(x / 2) + 0.5.

    >>> nnx.Dense(8, activation="sigmoid")
    """

    name = "sigmoid"

    def forward(self, xp, x):
        return 0.5 * xp.tanh(0.5 * x) + 0.5  # no overflow for large |x|

    def backward(self, xp, dy, x, y):
        return dy * y * (1.0 - y)


class Tanh(ActivationFunction):
    """tanh(x); derivative 1 - tanh(x)^2.

    >>> nnx.Dense(8, activation="tanh")
    """

    name = "tanh"

    def forward(self, xp, x):
        return xp.tanh(x)

    def backward(self, xp, dy, x, y):
        return dy * (1.0 - y * y)


class Softmax(ActivationFunction):
    """Softmax over the last (class) axis, shifted by the row maximum.

    >>> nnx.Dense(8, activation="softmax")
    """

    name = "softmax"

    def forward(self, xp, x):
        e = xp.exp(x - xp.max(x, axis=-1, keepdims=True))
        return e / xp.sum(e, axis=-1, keepdims=True)

    def backward(self, xp, dy, x, y):
        return y * (dy - xp.sum(dy * y, axis=-1, keepdims=True))


class ELU(ActivationFunction):
    """x for x > 0, else alpha (e^x - 1).

    >>> nnx.Dense(8, activation="elu")
    """

    name = "elu"
    alpha = 1.0
    scale = 1.0

    def forward(self, xp, x):
        neg = self.alpha * xp.expm1(xp.minimum(x, 0.0))
        return self.scale * xp.where(x > 0, x, neg)

    def backward(self, xp, dy, x, y):
        # for x <= 0: d/dx scale*alpha*(e^x - 1) = y + scale*alpha
        return xp.where(x > 0, self.scale * dy, dy * (y + self.scale * self.alpha))


class SELU(ELU):
    """scale * elu(x, alpha) with the self-normalising constants.

    >>> nnx.Dense(8, activation="selu")
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

    def backward(self, xp, dy, x, y):
        t = xp.tanh(self._c * (x + 0.044715 * x * x * x))
        du = self._c * (1.0 + 3 * 0.044715 * x * x)
        return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)


class Softplus(ActivationFunction):
    """log(1 + e^x), computed without overflow.

    >>> nnx.Dense(8, activation="softplus")
    """

    name = "softplus"
    saves = "x"

    def forward(self, xp, x):
        return xp.log1p(xp.exp(-xp.abs(x))) + xp.maximum(x, 0.0)

    def backward(self, xp, dy, x, y):
        return dy * (0.5 * xp.tanh(0.5 * x) + 0.5)


class SiLU(ActivationFunction):
    """x * sigmoid(x) (also "swish").

    >>> nnx.Dense(8, activation="silu")
    """

    name = "silu"
    saves = "x"

    def forward(self, xp, x):
        return x * (0.5 * xp.tanh(0.5 * x) + 0.5)

    def backward(self, xp, dy, x, y):
        s = 0.5 * xp.tanh(0.5 * x) + 0.5
        return dy * s * (1.0 + x * (1.0 - s))


_REGISTRY: dict[str, type[ActivationFunction]] = {
    cls.name: cls for cls in (Linear, ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, ELU, SELU, GELU, Softplus, SiLU)
}
_ALIASES = {"swish": "silu", "leakyrelu": "leaky_relu"}


def names() -> list[str]:
    """Every activation name ``get`` accepts."""
    return sorted([*_REGISTRY, *_ALIASES])


def get(identifier: str | ActivationFunction | None) -> ActivationFunction:
    """An activation from its name (case-insensitive), an instance, or ``None`` (linear)."""
    if identifier is None:
        return Linear()
    if isinstance(identifier, ActivationFunction):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        key = _ALIASES.get(key, key)
        if key in _REGISTRY:
            return _REGISTRY[key]()
    raise ValueError(f"Unknown activation {identifier!r}; expected one of: {', '.join(names())} (or None).")
