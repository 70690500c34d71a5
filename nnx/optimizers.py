"""Optimizers: SGD (momentum, Nesterov), Adam, AdamW, RMSprop and Adagrad, with Keras's update rules.

``apply(grads)`` takes a dict from weight record to gradient and updates each weight in place
(layers keep their arrays); the gradients are consumed (the update may overwrite them). Slot
arrays (momentum, moments) are keyed by weight record and live on the weights' device. One step
counter, ``iterations``, counts steps. The arithmetic is the backend's (``backend.ops``).

Every optimizer takes Keras's ``clipnorm``, ``clipvalue`` and ``global_clipnorm`` (at most one of
them), applied to the gradients before the update, on the device. ``learning_rate`` may be a
schedule from ``nnx.optimizers.schedules``, evaluated at ``iterations`` (the steps completed before
this one), as Keras does.
"""
from __future__ import annotations

import contextlib
import math
import numbers
import sys
from typing import Any, Iterator

from array_api_compat import array_namespace

from . import ops as _ops
from . import schedules
from .registry import Registry

# ``from nnx.optimizers.schedules import ExponentialDecay`` works, as in Keras
sys.modules.setdefault(__name__ + ".schedules", schedules)


def _check_float(value: Any, what: str, low: float, high: float, low_open: bool = False, high_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        v = math.nan
    if isinstance(value, bool) or not math.isfinite(v) or v < low or v > high or (low_open and v == low) or (high_open and v == high):
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"{what} must be a float in {lo}{low}, {high}{hi}; received {value!r}.")
    return v


def _check_clip(value: Any, what: str) -> float | None:
    if value is None:
        return None
    return _check_float(value, what, 0.0, math.inf, low_open=True, high_open=True)


def _like(value: Any, w: Any) -> Any:
    """A rate or step size for ``w``'s update: a Python float as it is, a 0-d device array (a
    captured step's) in ``w``'s dtype."""
    if type(value) is float or isinstance(value, numbers.Real):  # the exact type first: the ABC check is slow
        return value
    return array_namespace(w).astype(value, w.dtype)


def _sum_of_squares(xp: Any, g: Any) -> Any:
    """sum(g^2) as a 0-d array on g's device; float16 is summed in float32 (its squares overflow at 256)."""
    half = getattr(xp, "float16", None)  # not in the Array API standard
    if half is not None and g.dtype == half:
        g = xp.astype(g, xp.float32)
    return xp.sum(g * g)


class Optimizer:
    """Base class: ``apply(grads, backend)`` updates each weight record in ``grads`` in place.
    Subclasses name their per-weight state arrays in ``slots`` and write ``update``.

    Args:
        learning_rate: the step size, a finite float >= 0; settable at any time
            (``optimizer.learning_rate = 1e-4``). Defaults to 0.01.

    Attributes: ``iterations``, the number of steps applied (one per step, not per weight).

    Raises:
        ValueError: a learning rate that is negative, NaN, inf or not a number.

    Args (every optimizer):
        learning_rate: a float >= 0, or a schedule from ``nnx.optimizers.schedules``.
        clipnorm: clip each weight's gradient to this L2 norm (``g * c / max(|g|, c)``).
        clipvalue: clip each gradient element to ``[-clipvalue, clipvalue]``.
        global_clipnorm: scale all the gradients together so that their joint L2 norm is at most
            this (a non-finite joint norm makes every gradient NaN, as in Keras).
        At most one of the three clipping arguments may be given; each is > 0 or None (default).

    ``learning_rate`` reads as the float the next step will use. With a float rate it can be set
    at any time; an optimizer holding a schedule refuses a float (``TypeError``, as Keras does),
    and so refuses callbacks that set the rate; assigning another schedule replaces it.

    >>> opt = nnx.optimizers.Adam(learning_rate=1e-3, global_clipnorm=1.0); opt.learning_rate = 1e-4
    """

    name = ""
    slots: tuple[str, ...] = ()  # names of the per-weight state arrays

    def __init__(self, learning_rate: float | schedules.LearningRateSchedule = 0.01, *, clipnorm: float | None = None,
                 clipvalue: float | None = None, global_clipnorm: float | None = None):
        self._learning_rate: float | schedules.LearningRateSchedule = 0.0
        self.learning_rate = learning_rate
        self.iterations = 0
        given = {k: v for k, v in (("clipnorm", clipnorm), ("clipvalue", clipvalue),
                                   ("global_clipnorm", global_clipnorm)) if v is not None}
        if len(given) > 1:
            raise ValueError(f"Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. Received: "
                             f"{', '.join(f'{k}={v!r}' for k, v in given.items())}.")
        self.clipnorm = _check_clip(clipnorm, "clipnorm")
        self.clipvalue = _check_clip(clipvalue, "clipvalue")
        self.global_clipnorm = _check_clip(global_clipnorm, "global_clipnorm")
        self._slots: dict[Any, list[Any]] = {}  # weight record -> one array per slot
        self._device_scalars: tuple[Any, Any] | None = None  # (rate, step) of a captured step

    # -- learning rate ---------------------------------------------------------------------
    @property
    def learning_rate(self) -> float:
        """The rate of the next step: the float, or the schedule at ``iterations``."""
        lr = self._learning_rate
        if isinstance(lr, schedules.LearningRateSchedule):
            return self._scheduled(lr, self.iterations)
        return lr

    @learning_rate.setter
    def learning_rate(self, value: float | schedules.LearningRateSchedule) -> None:
        if isinstance(value, dict):  # a serialized schedule, from get_config
            value = schedules.deserialize(value)
        if isinstance(value, schedules.LearningRateSchedule):
            self._learning_rate = value
            return
        if isinstance(self._learning_rate, schedules.LearningRateSchedule):
            raise TypeError(f"This optimizer was created with a learning-rate schedule "
                            f"({type(self._learning_rate).__name__}), so its learning_rate cannot be set to a "
                            f"number (received {value!r}), as in Keras; callbacks that set the rate "
                            f"(LearningRateScheduler, ReduceLROnPlateau) cannot drive it either. Create the "
                            f"optimizer with a float learning_rate, or assign a new schedule.")
        try:
            self._learning_rate = _check_float(value, "learning_rate", 0.0, math.inf, high_open=True)
        except ValueError:
            raise ValueError(f"learning_rate must be a finite float >= 0 or a LearningRateSchedule; received "
                             f"{value!r}.") from None

    @staticmethod
    def _scheduled(schedule: schedules.LearningRateSchedule, step: int) -> float:
        value = schedule(step)
        try:
            rate = float(value)
        except (TypeError, ValueError, OverflowError):
            rate = math.nan
        if isinstance(value, bool) or not math.isfinite(rate) or rate < 0.0:
            raise ValueError(f"The learning-rate schedule {type(schedule).__name__} returned {value!r} at step "
                             f"{step}; a learning rate must be a finite float >= 0.")
        return rate

    # -- the step --------------------------------------------------------------------------
    @property
    def takes_deferred(self) -> bool:
        """Whether ``update`` hands ``nnx.ops.DeferredMatmul`` gradients to a backend operation that
        consumes them, so ``fit`` may leave Dense kernel gradients as products (only SGD's does)."""
        return False

    def _slots_for(self, weight: Any, backend: Any) -> list[Any]:
        slots = self._slots.get(weight)
        if slots is None:
            xp, w = backend.xp, weight.value
            slots = self._slots[weight] = [xp.full(w.shape, self._initial_slot_value(name), dtype=w.dtype,
                                                   device=backend.device) for name in self.slots]
        return slots

    def _initial_slot_value(self, name: str) -> float:
        """The value a slot array starts at (0; Adagrad's accumulator starts elsewhere)."""
        return 0.0

    def apply(self, grads: dict[Any, Any], backend: Any) -> None:
        """One step: update every weight record in ``grads`` in place, creating its slot arrays
        at its first step, and count the step in ``iterations``.

        The rate is the one at ``iterations`` before the step (a schedule's ``schedule(t)`` for
        the step taken when ``t`` steps are done); the gradients are clipped first, on the device.

        Args:
            grads: a dict from weight record to gradient; consumed (the update may overwrite the
                arrays).
            backend: the weights' backend (its ``ops`` do the arithmetic).

        >>> model.optimizer.apply(step.grads, model.backend)
        """
        lr = self.learning_rate if self._device_scalars is None else self._device_scalars[0]
        ops = backend.ops
        if self.clipnorm is not None or self.clipvalue is not None or self.global_clipnorm is not None:
            grads = self._clip_gradients({w: ops.materialize(g) for w, g in grads.items()}, backend.xp)
        self.iterations += 1
        self._update_all(ops, grads, backend, lr)

    def _update_all(self, ops: Any, grads: dict[Any, Any], backend: Any, lr: Any) -> None:
        """``update`` for each weight record of ``grads``, with its slot arrays."""
        for weight, g in grads.items():
            self.update(ops, weight.value, g, self._slots_for(weight, backend), lr)

    @contextlib.contextmanager
    def device_scalars(self, learning_rate: Any, step: Any) -> Iterator[None]:
        """Within the block, ``apply`` reads the rate and the step count from 0-d device arrays
        instead of Python numbers, and ``update`` receives the rate as an array: how a step
        recorded once as a device graph stays right when the rate or the count changes.

        Args:
            learning_rate: a 0-d device array holding the step's rate.
            step: a 0-d device array holding the count after the step (``iterations`` once it
                is applied).

        >>> with opt.device_scalars(lr_array, t_array): opt.apply(grads, backend)
        """
        saved = self._device_scalars
        self._device_scalars = (learning_rate, step)
        try:
            yield
        finally:
            self._device_scalars = saved

    def _clip_gradients(self, grads: dict[Any, Any], xp: Any) -> dict[Any, Any]:
        """Keras's clipping, with the norms and scale factors kept on the device (no host sync)."""
        if self.clipvalue is not None:
            v = self.clipvalue
            return {w: _ops.clip(xp, g, -v, v) for w, g in grads.items()}
        if self.clipnorm is not None:
            c = self.clipnorm
            return {w: g * xp.astype(c / xp.maximum(xp.sqrt(_sum_of_squares(xp, g)), c), g.dtype)
                    for w, g in grads.items()}
        if not grads:
            return grads
        c = self.global_clipnorm
        total = None
        for g in grads.values():
            s = _sum_of_squares(xp, g)
            total = s if total is None else total + s
        norm = xp.sqrt(total)
        scale = c / xp.maximum(norm, c)
        scale = xp.where(xp.isfinite(norm), scale, xp.full_like(scale, math.nan))
        return {w: g * xp.astype(scale, g.dtype) for w, g in grads.items()}

    def update(self, ops: Any, w: Any, g: Any, slots: list[Any], lr: float) -> None:
        """Update the array ``w`` in place from its gradient and its slots (subclasses write it).

        Args:
            ops: the backend's operations object (``backend.ops``).
            w: the weight's array, updated in place.
            g: its gradient; consumed.
            slots: its state arrays, one per name in ``slots``, updated in place.
            lr: the step's learning rate.

        >>> ops.sgd_update(w, g, None, lr, 0.0, False)   # what SGD.update does
        """
        raise NotImplementedError

    # -- config and state ------------------------------------------------------------------
    def get_config(self) -> dict:
        """The constructor arguments, JSON-ready (a schedule as ``{"class_name", "config"}``).

        Returns:
            A dict that ``from_config`` reads.

        >>> nnx.optimizers.Adam().get_config()["beta_1"]   # 0.9
        """
        return {"learning_rate": self._learning_rate_config(), **self._own_config(), "clipnorm": self.clipnorm,
                "clipvalue": self.clipvalue, "global_clipnorm": self.global_clipnorm}

    def _learning_rate_config(self) -> float | dict:
        lr = self._learning_rate
        return schedules.serialize(lr) if isinstance(lr, schedules.LearningRateSchedule) else lr

    def _own_config(self) -> dict:
        """The subclass's own arguments."""
        return {}

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
        config = self.get_config()
        config["learning_rate"] = self._learning_rate
        args = ", ".join(f"{k}={v!r}" for k, v in config.items()
                         if v is not None or k not in ("clipnorm", "clipvalue", "global_clipnorm"))
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent; with momentum: v = m v - lr g; w += v (Nesterov: w += m v - lr g).

    Args:
        learning_rate: the step size, a float or a schedule (default 0.01).
        momentum: in [0, 1] (default 0, plain SGD).
        nesterov: Nesterov momentum.
        clipnorm, clipvalue, global_clipnorm: gradient clipping (see ``Optimizer``).

    >>> nnx.optimizers.SGD(learning_rate=0.1, momentum=0.9, nesterov=True)
    """

    name = "sgd"

    def __init__(self, learning_rate: float | schedules.LearningRateSchedule = 0.01, momentum: float = 0.0,
                 nesterov: bool = False, *, clipnorm: float | None = None,
                 clipvalue: float | None = None, global_clipnorm: float | None = None):
        super().__init__(learning_rate, clipnorm=clipnorm, clipvalue=clipvalue, global_clipnorm=global_clipnorm)
        self.momentum = _check_float(momentum, "momentum", 0.0, 1.0)
        self.nesterov = bool(nesterov)
        self.slots = ("momentum",) if self.momentum else ()

    @property
    def takes_deferred(self) -> bool:
        # ``sgd_updates`` adds a product into the weight or the momentum; Nesterov's step needs the
        # gradient twice, clipping needs its values, and a subclass's own code may need the arrays
        own = self.__dict__
        return (type(self) is SGD and not self.nesterov and self.clipnorm is None and self.clipvalue is None
                and self.global_clipnorm is None and "apply" not in own and "_update_all" not in own
                and "update" not in own)

    def update(self, ops, w, g, slots, lr):
        ops.sgd_update(w, g, slots[0] if slots else None, _like(lr, w), self.momentum, self.nesterov)

    def _update_all(self, ops, grads, backend, lr):
        # every weight in one backend call; a subclass's own ``update`` and a captured step's device
        # rate (converted per weight by ``_like``) go weight by weight
        if type(self).update is not SGD.update or type(lr) is not float:
            super()._update_all(ops, grads, backend, lr)
            return
        if self.momentum:
            updates = [(weight.value, g, self._slots_for(weight, backend)[0]) for weight, g in grads.items()]
        else:
            updates = [(weight.value, g, None) for weight, g in grads.items()]
        ops.sgd_updates(updates, lr, self.momentum, self.nesterov)

    def _own_config(self):
        return {"momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam: m += (1-b1)(g - m); v += (1-b2)(g^2 - v); w -= lr sqrt(1-b2^t)/(1-b1^t) m/(sqrt(v)+eps).

    Args:
        learning_rate: a float or a schedule (default 0.001).
        beta_1, beta_2: the moments' decay rates, in [0, 1) (defaults 0.9, 0.999).
        epsilon: added to sqrt(v), > 0 (default 1e-7).
        clipnorm, clipvalue, global_clipnorm: gradient clipping (see ``Optimizer``).

    >>> nnx.optimizers.Adam(learning_rate=1e-3)
    """

    name = "adam"
    slots = ("m", "v")

    def __init__(self, learning_rate: float | schedules.LearningRateSchedule = 0.001, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7, *, clipnorm: float | None = None,
                 clipvalue: float | None = None, global_clipnorm: float | None = None):
        super().__init__(learning_rate, clipnorm=clipnorm, clipvalue=clipvalue, global_clipnorm=global_clipnorm)
        self.beta_1 = _check_float(beta_1, "beta_1", 0.0, 1.0, high_open=True)
        self.beta_2 = _check_float(beta_2, "beta_2", 0.0, 1.0, high_open=True)
        self.epsilon = _check_float(epsilon, "epsilon", 0.0, math.inf, low_open=True, high_open=True)

    def step_size(self, lr: float | None = None, t: int | None = None) -> float:
        """The bias-corrected step ``lr sqrt(1 - b2^t) / (1 - b1^t)``.

        Args:
            lr: the rate (default: the current one).
            t: the step (default: the step just counted, ``iterations``).

        >>> nnx.optimizers.Adam(0.1).step_size(t=1)   # 0.1
        """
        if t is None:
            t = self.iterations if self._device_scalars is None else self._device_scalars[1]
        lr = self.learning_rate if lr is None else lr
        if isinstance(t, numbers.Real):
            return lr * math.sqrt(1.0 - self.beta_2**t) / (1.0 - self.beta_1**t)
        xp = array_namespace(t)  # a captured step: the count is a device array
        return lr * xp.sqrt(1.0 - self.beta_2**t) / (1.0 - self.beta_1**t)

    def update(self, ops, w, g, slots, lr):
        ops.adam_update(w, g, slots[0], slots[1], _like(self.step_size(lr), w), self.beta_1, self.beta_2,
                        self.epsilon)

    def _own_config(self):
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as Keras 3's ``AdamW``: before the
    Adam step each weight shrinks by ``w -= lr * weight_decay * w``, with the step's learning rate.

    Args:
        learning_rate: a float or a schedule (default 0.001).
        weight_decay: the decay per unit of learning rate, a float >= 0 (default 0.004).
        beta_1, beta_2: the moments' decay rates, in [0, 1) (defaults 0.9, 0.999).
        epsilon: added to sqrt(v), > 0 (default 1e-7).
        clipnorm, clipvalue, global_clipnorm: gradient clipping (see ``Optimizer``).

    >>> nnx.optimizers.AdamW(learning_rate=1e-3, weight_decay=0.01)
    """

    name = "adamw"

    def __init__(self, learning_rate: float | schedules.LearningRateSchedule = 0.001, weight_decay: float = 0.004,
                 beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7, *, clipnorm: float | None = None,
                 clipvalue: float | None = None, global_clipnorm: float | None = None):
        super().__init__(learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, clipnorm=clipnorm,
                         clipvalue=clipvalue, global_clipnorm=global_clipnorm)
        self.weight_decay = _check_float(weight_decay, "weight_decay", 0.0, math.inf, high_open=True)

    def update(self, ops, w, g, slots, lr):
        ops.adamw_update(w, g, slots[0], slots[1], _like(self.step_size(lr), w), _like(lr * self.weight_decay, w),
                         self.beta_1, self.beta_2, self.epsilon)

    def _own_config(self):
        return {"weight_decay": self.weight_decay, **super()._own_config()}


class RMSprop(Optimizer):
    """RMSprop: v = rho v + (1 - rho) g^2; w -= lr g / sqrt(v + eps).

    Args:
        learning_rate: a float or a schedule (default 0.001).
        rho: the decay rate of the squared-gradient average, in [0, 1) (default 0.9).
        epsilon: > 0 (default 1e-7).
        clipnorm, clipvalue, global_clipnorm: gradient clipping (see ``Optimizer``).

    >>> nnx.optimizers.RMSprop(learning_rate=1e-3, rho=0.9)
    """

    name = "rmsprop"
    slots = ("velocity",)

    def __init__(self, learning_rate: float | schedules.LearningRateSchedule = 0.001, rho: float = 0.9,
                 epsilon: float = 1e-7, *, clipnorm: float | None = None,
                 clipvalue: float | None = None, global_clipnorm: float | None = None):
        super().__init__(learning_rate, clipnorm=clipnorm, clipvalue=clipvalue, global_clipnorm=global_clipnorm)
        self.rho = _check_float(rho, "rho", 0.0, 1.0, high_open=True)
        self.epsilon = _check_float(epsilon, "epsilon", 0.0, math.inf, low_open=True, high_open=True)

    def update(self, ops, w, g, slots, lr):
        ops.rmsprop_update(w, g, slots[0], _like(lr, w), self.rho, self.epsilon)

    def _own_config(self):
        return {"rho": self.rho, "epsilon": self.epsilon}


class Adagrad(Optimizer):
    """Adagrad, as Keras 3: accumulator += g^2; w -= lr g / sqrt(accumulator + eps).

    Args:
        learning_rate: a float or a schedule (default 0.001).
        initial_accumulator_value: where every accumulator starts, a float >= 0 (default 0.1).
        epsilon: added under the square root, > 0 (default 1e-7).
        clipnorm, clipvalue, global_clipnorm: gradient clipping (see ``Optimizer``).

    >>> nnx.optimizers.Adagrad(learning_rate=0.01, initial_accumulator_value=0.1)
    """

    name = "adagrad"
    slots = ("accumulator",)

    def __init__(self, learning_rate: float | schedules.LearningRateSchedule = 0.001,
                 initial_accumulator_value: float = 0.1, epsilon: float = 1e-7, *, clipnorm: float | None = None,
                 clipvalue: float | None = None, global_clipnorm: float | None = None):
        super().__init__(learning_rate, clipnorm=clipnorm, clipvalue=clipvalue, global_clipnorm=global_clipnorm)
        self.initial_accumulator_value = _check_float(initial_accumulator_value, "initial_accumulator_value", 0.0,
                                                      math.inf, high_open=True)
        self.epsilon = _check_float(epsilon, "epsilon", 0.0, math.inf, low_open=True, high_open=True)

    def _initial_slot_value(self, name):
        return self.initial_accumulator_value

    def update(self, ops, w, g, slots, lr):
        ops.adagrad_update(w, g, slots[0], _like(lr, w), self.epsilon)

    def _own_config(self):
        return {"initial_accumulator_value": self.initial_accumulator_value, "epsilon": self.epsilon}


registry = Registry("optimizer", Optimizer)
registry.add(SGD, "sgd")
registry.add(Adam, "adam")
registry.add(RMSprop, "rmsprop")
registry.add(AdamW, "adamw")
registry.add(Adagrad, "adagrad")


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
    """``{"class_name": ..., "config": ...}``, JSON-ready (a schedule nested as its own dict).

    Args:
        optimizer: the optimizer to describe.

    >>> nnx.optimizers.serialize(nnx.optimizers.SGD())["class_name"]   # "SGD"
    """
    return {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}
