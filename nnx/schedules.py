"""Learning-rate schedules, as Keras's ``keras.optimizers.schedules`` (also ``nnx.optimizers.schedules``).

A schedule is a function of the optimizer's step count: an optimizer created with
``learning_rate=schedule`` takes its step number ``t`` (counted from 0, the steps completed before
it) with the rate ``schedule(t)``, as Keras evaluates ``schedule(optimizer.iterations)`` before the
step. The rate is computed on the host from the integer step count, so a schedule costs no
transfer from the device.

>>> lr = nnx.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1000, decay_rate=0.96)
>>> model.compile(optimizer=nnx.optimizers.SGD(learning_rate=lr), loss="mse")
"""
from __future__ import annotations

import bisect
import math
import numbers
from typing import Any

from .registry import Registry


def _real(value: Any, what: str, ok, expected: str) -> Any:
    try:
        v = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
    except OverflowError:  # an int beyond float's range
        v = math.nan
    if not math.isfinite(v) or not ok(v):
        raise ValueError(f"Argument `{what}` must be {expected}; received {what}={value!r}.")
    return value


def _rate(value: Any, what: str) -> float:
    return float(_real(value, what, lambda v: v >= 0.0, "a finite float >= 0"))


def _steps(value: Any, what: str, low_open: bool) -> int | float:
    """A step count: kept an int when given one (numpy ints included), so configs stay exact."""
    ok = (lambda v: v > 0.0) if low_open else (lambda v: v >= 0.0)
    _real(value, what, ok, "a number > 0" if low_open else "a number >= 0")
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def _name(value: Any, default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise ValueError(f"Argument `name` must be a string; received name={value!r}.")
    return value


def _step(step: Any) -> float:
    if isinstance(step, bool) or not isinstance(step, numbers.Real):
        try:  # a 0-d array from a user's own loop
            step = float(step)
        except (TypeError, ValueError):
            raise TypeError(f"A schedule's step must be a number; received {step!r}.") from None
    return float(step)


class LearningRateSchedule:
    """The base class of learning-rate schedules: a callable ``schedule(step) -> float``.

    A schedule of your own implements ``__call__(self, step)`` (``step`` is the number of steps
    completed) and, to be saved with a model, ``get_config`` returning its constructor arguments
    and registration through :func:`register`.

    >>> class InverseTime(nnx.optimizers.schedules.LearningRateSchedule):
    ...     def __init__(self, initial_learning_rate):
    ...         self.initial_learning_rate = initial_learning_rate
    ...     def __call__(self, step):
    ...         return self.initial_learning_rate / (step + 1)
    ...     def get_config(self):
    ...         return {"initial_learning_rate": self.initial_learning_rate}
    >>> nnx.optimizers.SGD(learning_rate=InverseTime(0.1))
    """

    def __call__(self, step: int) -> float:
        raise NotImplementedError(f"Learning rate schedule '{type(self).__name__}' must override "
                                  f"`__call__(self, step)`.")

    def get_config(self) -> dict:
        raise NotImplementedError(f"Learning rate schedule '{type(self).__name__}' must override "
                                  f"`get_config()` in order to be serializable.")

    @classmethod
    def from_config(cls, config: dict) -> "LearningRateSchedule":
        return cls(**config)

    def __repr__(self) -> str:
        try:
            args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        except NotImplementedError:
            args = "..."
        return f"{type(self).__name__}({args})"


class ExponentialDecay(LearningRateSchedule):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)``; with ``staircase=True`` the
    exponent is ``floor(step / decay_steps)``, so the rate drops every ``decay_steps`` steps.

    Args:
        initial_learning_rate: the rate at step 0, a float >= 0.
        decay_steps: the steps over which the rate is multiplied by ``decay_rate``, > 0.
        decay_rate: the factor per ``decay_steps`` steps, >= 0.
        staircase: decay at discrete intervals instead of continuously.
        name: the schedule's name (default ``"ExponentialDecay"``).

    >>> lr = nnx.optimizers.schedules.ExponentialDecay(0.1, decay_steps=100, decay_rate=0.5, staircase=True)
    >>> lr(0), lr(99), lr(100)
    (0.1, 0.1, 0.05)
    """

    def __init__(self, initial_learning_rate: float, decay_steps: int, decay_rate: float, staircase: bool = False,
                 name: str = "ExponentialDecay"):
        self.initial_learning_rate = _rate(initial_learning_rate, "initial_learning_rate")
        self.decay_steps = _steps(decay_steps, "decay_steps", low_open=True)
        self.decay_rate = float(_real(decay_rate, "decay_rate", lambda v: v >= 0.0, "a finite float >= 0"))
        if not isinstance(staircase, (bool, numbers.Integral)):
            raise ValueError(f"Argument `staircase` must be a bool; received staircase={staircase!r}.")
        self.staircase = bool(staircase)
        self.name = _name(name, "ExponentialDecay")

    def __call__(self, step: int) -> float:
        p = _step(step) / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        try:
            return self.initial_learning_rate * self.decay_rate**p
        except OverflowError:  # a decay_rate above 1, far along
            return math.inf

    def get_config(self) -> dict:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase, "name": self.name}


class CosineDecay(LearningRateSchedule):
    """Cosine decay, after an optional linear warmup (as Keras 3's ``CosineDecay``).

    Without warmup (``warmup_target=None``): with ``s = min(step, decay_steps)``,
    ``initial_learning_rate * ((1 - alpha) * 0.5 * (1 + cos(pi * s / decay_steps)) + alpha)``.
    With warmup: the rate rises linearly from ``initial_learning_rate`` to ``warmup_target`` over
    ``warmup_steps`` steps, then decays as above from ``warmup_target`` over ``decay_steps`` steps.

    Args:
        initial_learning_rate: the rate at step 0, a float >= 0.
        decay_steps: the steps to decay over, > 0.
        alpha: the final rate as a fraction of the decay's starting rate, in [0, 1] (default 0).
        name: the schedule's name (default ``"CosineDecay"``).
        warmup_target: the rate the warmup reaches, or None for no warmup (default).
        warmup_steps: the steps of warmup, >= 0 (default 0).

    >>> lr = nnx.optimizers.schedules.CosineDecay(0.1, decay_steps=1000, alpha=0.01)
    >>> lr = nnx.optimizers.schedules.CosineDecay(0.0, 1000, warmup_target=0.1, warmup_steps=100)
    """

    def __init__(self, initial_learning_rate: float, decay_steps: int, alpha: float = 0.0, name: str = "CosineDecay",
                 warmup_target: float | None = None, warmup_steps: int = 0):
        self.initial_learning_rate = _rate(initial_learning_rate, "initial_learning_rate")
        self.decay_steps = _steps(decay_steps, "decay_steps", low_open=True)
        self.alpha = float(_real(alpha, "alpha", lambda v: 0.0 <= v <= 1.0, "a float in [0, 1]"))
        self.name = _name(name, "CosineDecay")
        self.warmup_target = None if warmup_target is None else _rate(warmup_target, "warmup_target")
        self.warmup_steps = _steps(warmup_steps, "warmup_steps", low_open=False)

    def _decay(self, step: float, start: float) -> float:
        cosine = 0.5 * (1.0 + math.cos(math.pi * step / self.decay_steps))
        return start * ((1.0 - self.alpha) * cosine + self.alpha)

    def __call__(self, step: int) -> float:
        step = _step(step)
        if self.warmup_target is None:
            return self._decay(min(step, self.decay_steps), self.initial_learning_rate)
        step = min(step, self.decay_steps + self.warmup_steps)
        if step < self.warmup_steps:
            fraction = step / self.warmup_steps
            return (self.warmup_target - self.initial_learning_rate) * fraction + self.initial_learning_rate
        return self._decay(step - self.warmup_steps, self.warmup_target)

    def get_config(self) -> dict:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "alpha": self.alpha, "name": self.name, "warmup_target": self.warmup_target,
                "warmup_steps": self.warmup_steps}


class PiecewiseConstantDecay(LearningRateSchedule):
    """A constant rate between boundaries: ``values[0]`` while ``step <= boundaries[0]``,
    ``values[i]`` while ``boundaries[i-1] < step <= boundaries[i]``, ``values[-1]`` after the last.

    Args:
        boundaries: strictly increasing step numbers.
        values: the rates, floats >= 0, one more than ``boundaries``.
        name: the schedule's name (default ``"PiecewiseConstant"``).

    >>> lr = nnx.optimizers.schedules.PiecewiseConstantDecay([1000, 2000], [0.1, 0.01, 0.001])
    >>> lr(1000), lr(1001)
    (0.1, 0.01)
    """

    def __init__(self, boundaries: list, values: list, name: str = "PiecewiseConstant"):
        if not isinstance(boundaries, (list, tuple)) or not isinstance(values, (list, tuple)):
            raise ValueError(f"Arguments `boundaries` and `values` must be lists; received "
                             f"boundaries={boundaries!r}, values={values!r}.")
        if len(boundaries) != len(values) - 1:
            raise ValueError(f"The length of boundaries should be 1 less than the length of values. Received: "
                             f"boundaries={list(boundaries)} of length {len(boundaries)}, and "
                             f"values={list(values)} of length {len(values)}.")
        self.boundaries = [_number(b) for b in boundaries]
        if any(b >= c for b, c in zip(self.boundaries, self.boundaries[1:])):
            raise ValueError(f"Argument `boundaries` must be strictly increasing; received {list(boundaries)}.")
        self.values = [_rate(v, "values") for v in values]
        self.name = _name(name, "PiecewiseConstant")

    def __call__(self, step: int) -> float:
        return self.values[bisect.bisect_left(self.boundaries, _step(step))]

    def get_config(self) -> dict:
        return {"boundaries": list(self.boundaries), "values": list(self.values), "name": self.name}


def _number(value: Any) -> int | float:
    _real(value, "boundaries", lambda v: True, "a list of finite numbers")
    return int(value) if isinstance(value, numbers.Integral) else float(value)


registry = Registry("learning rate schedule", LearningRateSchedule)
registry.add(ExponentialDecay, "exponential_decay")
registry.add(CosineDecay, "cosine_decay")
registry.add(PiecewiseConstantDecay, "piecewise_constant_decay")


def register(cls: type) -> type:
    """Register a schedule class of your own so that models whose optimizer holds it load.

    >>> @nnx.optimizers.schedules.register
    ... class InverseTime(nnx.optimizers.schedules.LearningRateSchedule): ...
    """
    if not (isinstance(cls, type) and issubclass(cls, LearningRateSchedule)):
        raise TypeError(f"register expects a LearningRateSchedule subclass; received {cls!r}.")
    registry.add(cls)
    return cls


def serialize(schedule: LearningRateSchedule) -> dict:
    """``{"class_name": ..., "config": ...}``, JSON-ready."""
    return {"class_name": type(schedule).__name__, "config": schedule.get_config()}


def deserialize(config: dict) -> LearningRateSchedule:
    """A schedule from :func:`serialize`'s output (extra keys, such as Keras's ``module``, are ignored)."""
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise ValueError(f"A serialized learning rate schedule is a dict with 'class_name' and 'config'; "
                         f"received {config!r}.")
    cls = registry.lookup(config["class_name"])
    inner = config.get("config") or {}
    if cls is None or not isinstance(inner, dict):
        return registry.get(config)  # raises, listing the known names
    try:
        return cls.from_config(dict(inner))
    except TypeError as e:
        raise ValueError(f"Invalid config for learning rate schedule {config['class_name']!r}: {e}") from None


def get(identifier: LearningRateSchedule | dict) -> LearningRateSchedule:
    """A schedule from an instance (returned as is) or a serialized dict."""
    if isinstance(identifier, LearningRateSchedule):
        return identifier
    return deserialize(identifier)


__all__ = ["LearningRateSchedule", "ExponentialDecay", "CosineDecay", "PiecewiseConstantDecay", "register",
           "serialize", "deserialize", "get"]
