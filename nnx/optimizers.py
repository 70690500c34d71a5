"""Optimizers: SGD (momentum, Nesterov), Adam and RMSprop, with Keras's update rules.

Updates are in place (``w -= ...``) so layers keep their arrays; state arrays live on the
parameters' device. One step counter, ``iterations``, counts steps (not parameters). A backend's
fused kernel (``backend.kernels["<name>_update"]``) replaces the portable update when present.
"""
from __future__ import annotations

import math
from typing import Any


class Optimizer:
    """Base class: ``apply(params, grads)`` updates ``params`` in place.

    >>> opt = nnx.optimizers.Adam(learning_rate=1e-3); opt.learning_rate = 1e-4
    """

    name = ""
    slots: tuple[str, ...] = ()  # names of the per-parameter state arrays
    linear_in_gradient = False  # True: the update takes gradients at any scale (``apply``'s grad_scale)

    def __init__(self, learning_rate: float = 0.01):
        self.learning_rate = learning_rate
        self.iterations = 0
        self._state: list[list[Any]] = []  # per parameter: one array per slot
        self._kernel = None

    @property
    def learning_rate(self) -> float:
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        value = float(value)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"learning_rate must be a finite non-negative float; received {value!r}.")
        self._learning_rate = value

    def build(self, params: list[Any], backend: Any) -> None:
        xp = backend.xp
        self._state = [[xp.zeros(w.shape, dtype=w.dtype, device=backend.device) for _ in self.slots] for w in params]
        self._kernel = backend.kernels.get(f"{self.name}_update")

    def gradient_scale(self) -> float:
        """A factor the model may fold into the loss gradient, so that gradients arrive already
        multiplied by it (``apply(..., grad_scale=...)``); 1.0 when folding gains nothing."""
        return 1.0

    def apply(self, params: list[Any], grads: list[Any], backend: Any, grad_scale: float = 1.0) -> None:
        """One step: update every parameter in place from its gradient.

        ``grad_scale``: the gradients arrive multiplied by this factor (see ``gradient_scale``).
        The gradient arrays are consumed: the update may overwrite them."""
        if len(self._state) != len(params):
            self.build(params, backend)
        self.iterations += 1
        xp = backend.xp
        if grad_scale != 1.0 and not self.linear_in_gradient:
            grads = [g * (1.0 / grad_scale) for g in grads]
            grad_scale = 1.0
        for w, g, state in zip(params, grads, self._state):
            if self._kernel is not None:
                self._kernel(self, w, g, state, grad_scale)
            else:
                self.update(xp, w, g, state, grad_scale)

    def update(self, xp: Any, w: Any, g: Any, state: list[Any], grad_scale: float = 1.0) -> None:
        """Update ``w`` in place from ``g`` (which holds ``grad_scale`` times the gradient)."""
        raise NotImplementedError

    # -- config and state ------------------------------------------------------------------
    def get_config(self) -> dict:
        return {"learning_rate": self.learning_rate}

    @classmethod
    def from_config(cls, config: dict) -> "Optimizer":
        return cls(**config)

    def get_state(self, to_numpy) -> dict:
        """Step count and slot arrays (host numpy) for saving."""
        return {"iterations": self.iterations, "slots": [[to_numpy(a) for a in s] for s in self._state]}

    def set_state(self, state: dict, backend: Any, params: list[Any]) -> None:
        """Restore ``get_state()`` output onto ``backend`` for ``params``."""
        slots = state["slots"]
        expected = [[tuple(w.shape)] * len(self.slots) for w in params]
        received = [[tuple(a.shape) for a in s] for s in slots]
        if slots and received != expected:
            raise ValueError(f"Optimizer state does not match the model's weights: expected slot shapes "
                             f"{expected}, received {received}.")
        self.build(params, backend)
        if slots:
            self._state = [[backend.from_host(a.astype(_dtype_name(w), copy=False)) for a in s]
                           for s, w in zip(slots, params)]
        self.iterations = int(state["iterations"])

    def to_backend(self, backend: Any, to_numpy) -> None:
        self._state = [[backend.from_host(to_numpy(a)) for a in s] for s in self._state]
        self._kernel = backend.kernels.get(f"{self.name}_update")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _dtype_name(w: Any) -> str:
    return str(w.dtype).split(".")[-1]


class SGD(Optimizer):
    """Stochastic gradient descent; with momentum: v = m v - lr g; w += v (Nesterov: w += m v - lr g).

    >>> nnx.optimizers.SGD(learning_rate=0.1, momentum=0.9, nesterov=True)
    """

    name = "sgd"
    linear_in_gradient = True

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0, nesterov: bool = False):
        super().__init__(learning_rate)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1]; received {momentum!r}.")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.slots = ("momentum",) if self.momentum else ()

    def gradient_scale(self) -> float:
        # every SGD update is linear in lr * g: gradients that arrive scaled by lr save a pass
        return self.learning_rate if self.learning_rate > 0 else 1.0

    def update(self, xp, w, g, state, grad_scale=1.0):
        lr = self.learning_rate / grad_scale
        step = g if lr == 1.0 else lr * g
        if not self.momentum:
            w -= step
            return
        (v,) = state
        v *= self.momentum
        v -= step
        if self.nesterov:
            w += self.momentum * v - step
        else:
            w += v

    def get_config(self):
        return {"learning_rate": self.learning_rate, "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam: m += (1-b1)(g - m); v += (1-b2)(g^2 - v); w -= lr sqrt(1-b2^t)/(1-b1^t) m/(sqrt(v)+eps).

    >>> nnx.optimizers.Adam(learning_rate=1e-3)
    """

    name = "adam"
    slots = ("m", "v")

    def __init__(self, learning_rate: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7):
        super().__init__(learning_rate)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def step_size(self) -> float:
        t = self.iterations
        return self.learning_rate * math.sqrt(1.0 - self.beta_2**t) / (1.0 - self.beta_1**t)

    def update(self, xp, w, g, state, grad_scale=1.0):
        m, v = state
        m += (1.0 - self.beta_1) * (g - m)
        v += (1.0 - self.beta_2) * (g * g - v)
        w -= self.step_size() * m / (xp.sqrt(v) + self.epsilon)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


class RMSprop(Optimizer):
    """RMSprop: v = rho v + (1 - rho) g^2; w -= lr g / sqrt(v + eps).

    >>> nnx.optimizers.RMSprop(learning_rate=1e-3, rho=0.9)
    """

    name = "rmsprop"
    slots = ("velocity",)

    def __init__(self, learning_rate: float = 0.001, rho: float = 0.9, epsilon: float = 1e-7):
        super().__init__(learning_rate)
        self.rho, self.epsilon = float(rho), float(epsilon)

    def update(self, xp, w, g, state, grad_scale=1.0):
        (v,) = state
        v *= self.rho
        v += (1.0 - self.rho) * (g * g)
        w -= self.learning_rate * g / xp.sqrt(v + self.epsilon)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "rho": self.rho, "epsilon": self.epsilon}


_REGISTRY = {"sgd": SGD, "adam": Adam, "rmsprop": RMSprop}


def get(identifier: str | dict | Optimizer) -> Optimizer:
    """An optimizer from its name (default arguments), a config dict, or an instance."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _REGISTRY:
        return _REGISTRY[identifier.lower()]()
    if isinstance(identifier, dict) and str(identifier.get("class_name", "")).lower() in _REGISTRY:
        return _REGISTRY[identifier["class_name"].lower()](**identifier.get("config", {}))
    raise ValueError(f"Unknown optimizer {identifier!r}; expected one of: {', '.join(_REGISTRY)} or an Optimizer.")


def serialize(optimizer: Optimizer) -> dict:
    return {"class_name": optimizer.name, "config": optimizer.get_config()}
