"""Optimizers: SGD (momentum, Nesterov), Adam and RMSprop, with Keras's update rules.

``apply(grads)`` takes a dict from weight record to gradient and updates each weight in place
(layers keep their arrays); the gradients are consumed (the update may overwrite them). Slot
arrays (momentum, moments) are keyed by weight record and live on the weights' device. One step
counter, ``iterations``, counts steps. The arithmetic is the backend's (``backend.ops``).
"""
from __future__ import annotations

import math
import numbers
from typing import Any

from .registry import Registry


def _check_float(value: Any, what: str, low: float, high: float, low_open: bool = False, high_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if isinstance(value, bool) or not math.isfinite(v) or v < low or v > high or (low_open and v == low) or (high_open and v == high):
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"{what} must be a float in {lo}{low}, {high}{hi}; received {value!r}.")
    return v


class Optimizer:
    """Base class: ``apply(grads, backend)`` updates each weight record in ``grads`` in place.
    Subclasses name their per-weight state arrays in ``slots`` and write ``update``.

    Args:
        learning_rate: the step size, a finite float >= 0; settable at any time
            (``optimizer.learning_rate = 1e-4``). Defaults to 0.01.

    Attributes: ``iterations``, the number of steps applied (one per step, not per weight).

    Raises:
        ValueError: a learning rate that is negative, NaN, inf or not a number.

    >>> opt = nnx.optimizers.Adam(learning_rate=1e-3); opt.learning_rate = 1e-4
    """

    name = ""
    slots: tuple[str, ...] = ()  # names of the per-weight state arrays

    def __init__(self, learning_rate: float = 0.01):
        self.learning_rate = learning_rate
        self.iterations = 0
        self._slots: dict[Any, list[Any]] = {}  # weight record -> one array per slot

    @property
    def learning_rate(self) -> float:
        """The step size, a float; setting it checks it (finite, >= 0) and takes effect at the
        next step."""
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self._learning_rate = _check_float(value, "learning_rate", 0.0, math.inf, high_open=True)

    def _slots_for(self, weight: Any, backend: Any) -> list[Any]:
        slots = self._slots.get(weight)
        if slots is None:
            xp, w = backend.xp, weight.value
            slots = self._slots[weight] = [xp.zeros(w.shape, dtype=w.dtype, device=backend.device) for _ in self.slots]
        return slots

    def apply(self, grads: dict[Any, Any], backend: Any) -> None:
        """One step: update every weight record in ``grads`` in place, creating its slot arrays
        (zeros, on the weight's device) at its first step, and count the step in ``iterations``.

        Args:
            grads: a dict from weight record to gradient; consumed (the update may overwrite the
                arrays).
            backend: the weights' backend (its ``ops`` do the arithmetic).

        >>> model.optimizer.apply(step.grads, model.backend)
        """
        self.iterations += 1
        ops = backend.ops
        for weight, g in grads.items():
            self.update(ops, weight.value, g, self._slots_for(weight, backend))

    def update(self, ops: Any, w: Any, g: Any, slots: list[Any]) -> None:
        """Update the array ``w`` in place from its gradient and its slots (subclasses write it).

        Args:
            ops: the backend's operations object (``backend.ops``).
            w: the weight's array, updated in place.
            g: its gradient; consumed.
            slots: its state arrays, one per name in ``slots``, updated in place.

        >>> ops.sgd_update(w, g, None, self.learning_rate, 0.0, False)   # what SGD.update does
        """
        raise NotImplementedError

    # -- config and state ------------------------------------------------------------------
    def get_config(self) -> dict:
        """The constructor arguments, as JSON-able values (no state).

        Returns:
            A dict that ``from_config`` reads.

        >>> nnx.optimizers.Adam().get_config()["beta_1"]   # 0.9
        """
        return {"learning_rate": self.learning_rate}

    @classmethod
    def from_config(cls, config: dict) -> "Optimizer":
        """A new optimizer (no state) from ``get_config()``.

        Args:
            config: the constructor arguments.

        Returns:
            The optimizer.

        Raises:
            TypeError: an argument the class does not take.
            ValueError: a value out of range.

        >>> nnx.optimizers.SGD.from_config({"learning_rate": 0.1, "momentum": 0.9})
        """
        return cls(**config)

    def get_state(self, to_numpy, weights: list[Any] | None = None) -> dict:
        """The step count and the slot arrays, on the host, for saving.

        Args:
            to_numpy: a function that copies an array to the host (``nnx.to_numpy``).
            weights: the weight records, in the order wanted (a weight without slots yet is
                left out). Defaults to None: the order the weights were first updated.

        Returns:
            ``{"iterations": int, "slots": [[numpy arrays of one weight], ...]}``.

        >>> state = model.optimizer.get_state(nnx.to_numpy, model.trainable_weights)
        """
        order = list(self._slots) if weights is None else [w for w in weights if w in self._slots]
        return {"iterations": self.iterations, "slots": [[to_numpy(a) for a in self._slots[w]] for w in order]}

    def set_state(self, state: dict, backend: Any, params: list[Any]) -> None:
        """Restore ``get_state()`` output onto ``backend`` for the weight records ``params``.
        Everything is checked before anything changes.

        Args:
            state: ``{"iterations": int, "slots": [[host arrays of one weight], ...]}``, as
                ``get_state`` returns it.
            backend: the backend the slot arrays go to.
            params: the weight records the slot lists belong to, in order.

        Raises:
            ValueError: slot shapes that do not match the weights, a slot value that is NaN or
                inf in the weight's dtype, or ``iterations`` that is not a non-negative int.

        >>> model.optimizer.set_state(state, model.backend, model.trainable_weights)
        """
        slots = state["slots"]
        if slots:
            expected = [[tuple(w.shape)] * len(self.slots) for w in params]
            received = [[tuple(a.shape) for a in s] for s in slots]
            if received != expected:
                raise ValueError(f"Optimizer state does not match the model's weights: expected slot shapes "
                                 f"{expected}, received {received}.")
        iterations = state["iterations"]
        if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral) or iterations < 0:
            raise ValueError(f"Optimizer iterations must be a non-negative int; received {iterations!r}.")
        from .data import host_weight  # cast to the weight's dtype, then refuse NaN / inf (1e39 in float32)

        hosts = [[host_weight(a, w.shape, str(w.numpy().dtype), f"optimizer slot {j} of weight {w.path!r}")
                  for j, a in enumerate(s)] for s, w in zip(slots, params)]
        self._slots = {w: [backend.from_host(a) for a in s] for s, w in zip(hosts, params)}
        self.iterations = int(iterations)

    def to_backend(self, backend: Any, to_numpy) -> None:
        """Move the slot arrays (through the host) onto ``backend``.

        Args:
            backend: the target ``nnx.Backend``.
            to_numpy: a function that copies an array to the host (``nnx.to_numpy``).

        >>> model.optimizer.to_backend(nnx.get_backend(), nnx.to_numpy)
        """
        self._slots = {w: [backend.from_host(to_numpy(a)) for a in s] for w, s in self._slots.items()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent; with momentum: v = m v - lr g; w += v (Nesterov: w += m v - lr g).

    Args:
        learning_rate: the step size, a float >= 0. Defaults to 0.01.
        momentum: a float in [0, 1]. Defaults to 0.0 (plain SGD, no slot array).
        nesterov: use Nesterov momentum. Defaults to False.

    Raises:
        ValueError: a value out of range.

    >>> nnx.optimizers.SGD(learning_rate=0.1, momentum=0.9, nesterov=True)
    """

    name = "sgd"

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0, nesterov: bool = False):
        super().__init__(learning_rate)
        self.momentum = _check_float(momentum, "momentum", 0.0, 1.0)
        self.nesterov = bool(nesterov)
        self.slots = ("momentum",) if self.momentum else ()

    def update(self, ops, w, g, slots):
        ops.sgd_update(w, g, slots[0] if slots else None, self.learning_rate, self.momentum, self.nesterov)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam: m += (1-b1)(g - m); v += (1-b2)(g^2 - v); w -= lr sqrt(1-b2^t)/(1-b1^t) m/(sqrt(v)+eps).

    Args:
        learning_rate: the step size, a float >= 0. Defaults to 0.001.
        beta_1: the first moment's decay rate, in [0, 1). Defaults to 0.9.
        beta_2: the second moment's decay rate, in [0, 1). Defaults to 0.999.
        epsilon: added to sqrt(v), > 0. Defaults to 1e-7.

    Raises:
        ValueError: a value out of range.

    >>> nnx.optimizers.Adam(learning_rate=1e-3)
    """

    name = "adam"
    slots = ("m", "v")

    def __init__(self, learning_rate: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7):
        super().__init__(learning_rate)
        self.beta_1 = _check_float(beta_1, "beta_1", 0.0, 1.0, high_open=True)
        self.beta_2 = _check_float(beta_2, "beta_2", 0.0, 1.0, high_open=True)
        self.epsilon = _check_float(epsilon, "epsilon", 0.0, math.inf, low_open=True, high_open=True)

    def step_size(self) -> float:
        """The bias-corrected step of the current iteration, from the current learning rate.

        Returns:
            ``learning_rate * sqrt(1 - beta_2**t) / (1 - beta_1**t)`` with t = ``iterations``.

        >>> opt.iterations = 1; opt.step_size()
        """
        t = self.iterations
        return self.learning_rate * math.sqrt(1.0 - self.beta_2**t) / (1.0 - self.beta_1**t)

    def update(self, ops, w, g, slots):
        ops.adam_update(w, g, slots[0], slots[1], self.step_size(), self.beta_1, self.beta_2, self.epsilon)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


class RMSprop(Optimizer):
    """RMSprop: v = rho v + (1 - rho) g^2; w -= lr g / sqrt(v + eps).

    Args:
        learning_rate: the step size, a float >= 0. Defaults to 0.001.
        rho: the decay rate of the squared-gradient average, in [0, 1). Defaults to 0.9.
        epsilon: added to v under the square root, > 0 (as Keras 3). Defaults to 1e-7.

    Raises:
        ValueError: a value out of range.

    >>> nnx.optimizers.RMSprop(learning_rate=1e-3, rho=0.9)
    """

    name = "rmsprop"
    slots = ("velocity",)

    def __init__(self, learning_rate: float = 0.001, rho: float = 0.9, epsilon: float = 1e-7):
        super().__init__(learning_rate)
        self.rho = _check_float(rho, "rho", 0.0, 1.0, high_open=True)
        self.epsilon = _check_float(epsilon, "epsilon", 0.0, math.inf, low_open=True, high_open=True)

    def update(self, ops, w, g, slots):
        ops.rmsprop_update(w, g, slots[0], self.learning_rate, self.rho, self.epsilon)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "rho": self.rho, "epsilon": self.epsilon}


registry = Registry("optimizer", Optimizer)
registry.add(SGD, "sgd")
registry.add(Adam, "adam")
registry.add(RMSprop, "rmsprop")


def get(identifier: str | dict | Optimizer) -> Optimizer:
    """An optimizer from its name, a config dict, or an instance.

    Args:
        identifier: a name (``"adam"`` or ``"Adam"``, ``"sgd"``, ``"rmsprop"``: default
            arguments), a ``{"class_name": ..., "config": {...}}`` dict, or an ``Optimizer``
            (returned as is).

    Returns:
        An ``Optimizer``.

    Raises:
        ValueError: an unknown name (the message lists the valid ones) or a bad config.

    >>> nnx.optimizers.get("adam").learning_rate   # 0.001
    """
    return registry.get(identifier)


def serialize(optimizer: Optimizer) -> dict:
    """An optimizer as ``{"class_name": ..., "config": {...}}`` (no state), which ``get`` reads.

    Args:
        optimizer: the ``Optimizer``.

    Returns:
        A JSON-able dict.

    >>> nnx.optimizers.get(nnx.optimizers.serialize(model.optimizer))
    """
    return {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}
