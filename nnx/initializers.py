"""Weight initializers. Values are drawn on the host from the seeded ``nnx.random`` stream, so the
same seed gives bit-identical initial weights on every backend; layers then move them."""
from __future__ import annotations

import math
from typing import Any

from . import random as _random
from .registry import Registry

# std of a unit normal truncated to [-2, 2]; Keras divides by it so the truncated draw keeps the
# intended variance
_TRUNC_STD = 0.87962566103423978


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


class Initializer:
    """Base class: calling it draws a host array of a given shape and dtype name, from the
    ``nnx.seed``-seeded initialisation stream, so the same seed gives the same weights on every
    backend. Layers take one by name (``kernel_initializer="he_normal"``) or as an instance.

    >>> nnx.initializers.get("he_normal")((784, 128), "float32")
    """

    name = ""

    def __call__(self, shape: tuple[int, ...], dtype: str = "float32") -> Any:
        """Draw the initial values.

        Args:
            shape: the weight's shape, a tuple of ints (fans are computed from it: for a kernel
                (in, out), fan_in = in and fan_out = out).
            dtype: a float dtype name. Defaults to ``"float32"``.

        Returns:
            A host ``numpy.ndarray`` of that shape and dtype.

        >>> nnx.initializers.GlorotUniform()((4, 3))
        """
        raise NotImplementedError

    def get_config(self) -> dict | str:
        """The initializer as its name (no arguments) or ``{"class_name": name, "config": {...}}``,
        which ``nnx.initializers.get`` reads back.

        Returns:
            A str or a JSON-able dict.

        >>> nnx.initializers.get(nnx.initializers.Constant(0.1).get_config())
        """
        params = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return {"class_name": self.name, "config": params} if params else self.name


class Zeros(Initializer):
    """All zeros.

    >>> nnx.Dense(4, bias_initializer="zeros")
    """
    name = "zeros"

    def __call__(self, shape, dtype="float32"):
        return _random.host_full(shape, 0.0, dtype)


class Ones(Initializer):
    """All ones.

    >>> nnx.Dense(4, bias_initializer="ones")
    """
    name = "ones"

    def __call__(self, shape, dtype="float32"):
        return _random.host_full(shape, 1.0, dtype)


class Constant(Initializer):
    """Every entry ``value``.

    Args:
        value: the constant, a float. Defaults to 0.0.

    >>> nnx.Dense(4, bias_initializer=nnx.initializers.Constant(0.1))
    """
    name = "constant"

    def __init__(self, value: float = 0.0):
        self.value = float(value)

    def __call__(self, shape, dtype="float32"):
        return _random.host_full(shape, self.value, dtype)


class RandomUniform(Initializer):
    """Uniform on [minval, maxval).

    Args:
        minval: the lower bound. Defaults to -0.05.
        maxval: the upper bound (excluded). Defaults to 0.05.

    >>> nnx.initializers.RandomUniform(-0.1, 0.1)
    """
    name = "random_uniform"

    def __init__(self, minval: float = -0.05, maxval: float = 0.05):
        self.minval, self.maxval = float(minval), float(maxval)

    def __call__(self, shape, dtype="float32"):
        return _random.init_rng().uniform(self.minval, self.maxval, size=shape).astype(dtype)


class RandomNormal(Initializer):
    """Normal with ``mean`` and ``stddev``.

    Args:
        mean: the mean. Defaults to 0.0.
        stddev: the standard deviation. Defaults to 0.05.

    >>> nnx.initializers.RandomNormal(stddev=0.02)
    """
    name = "random_normal"

    def __init__(self, mean: float = 0.0, stddev: float = 0.05):
        self.mean, self.stddev = float(mean), float(stddev)

    def __call__(self, shape, dtype="float32"):
        return _random.init_rng().normal(self.mean, self.stddev, size=shape).astype(dtype)


def _truncated_normal(shape: tuple[int, ...], stddev: float, mean: float = 0.0) -> Any:
    """Normal draws, with those beyond two standard deviations drawn again."""
    rng = _random.init_rng()
    z = rng.standard_normal(size=shape)
    outside = abs(z) > 2.0
    while outside.any():
        z[outside] = rng.standard_normal(size=int(outside.sum()))
        outside = abs(z) > 2.0
    return mean + stddev * z


class TruncatedNormal(RandomNormal):
    """Normal, with draws beyond two standard deviations from the mean drawn again (as Keras).

    Args:
        mean: the mean. Defaults to 0.0.
        stddev: the standard deviation before truncation. Defaults to 0.05.

    >>> nnx.initializers.TruncatedNormal(stddev=0.02)
    """
    name = "truncated_normal"

    def __call__(self, shape, dtype="float32"):
        return _truncated_normal(shape, self.stddev, self.mean).astype(dtype)


class VarianceScaling(Initializer):
    """Draws with variance ``scale / fan``, as Keras's ``VarianceScaling``; the Glorot, He and
    LeCun initializers are its presets.

    Args:
        scale: the variance's numerator, a float. Defaults to 1.0.
        mode: the fan: ``"fan_in"`` (the default), ``"fan_out"`` or ``"fan_avg"`` (their mean).
        distribution: ``"truncated_normal"`` (the default; the standard deviation is corrected
            for the truncation at two), ``"untruncated_normal"`` or ``"uniform"`` (on
            [-limit, limit), limit = sqrt(3 scale / fan)).

    Raises:
        ValueError: an unknown mode or distribution.

    >>> nnx.initializers.VarianceScaling(2.0, "fan_in", "truncated_normal")  # he_normal
    """

    name = "variance_scaling"

    def __init__(self, scale: float = 1.0, mode: str = "fan_in", distribution: str = "truncated_normal"):
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"mode must be 'fan_in', 'fan_out' or 'fan_avg'; received {mode!r}.")
        if distribution not in ("uniform", "truncated_normal", "untruncated_normal"):
            raise ValueError(
                f"distribution must be 'uniform', 'truncated_normal' or 'untruncated_normal'; received {distribution!r}."
            )
        self.scale, self.mode, self.distribution = float(scale), mode, distribution

    def __call__(self, shape, dtype="float32"):
        fan_in, fan_out = _fans(tuple(shape))
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        variance = self.scale / max(1.0, fan)
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            return _random.init_rng().uniform(-limit, limit, size=shape).astype(dtype)
        if self.distribution == "untruncated_normal":
            return _random.init_rng().normal(0.0, math.sqrt(variance), size=shape).astype(dtype)
        return _truncated_normal(shape, math.sqrt(variance) / _TRUNC_STD).astype(dtype)


def _preset(class_name: str, name: str, scale: float, mode: str, distribution: str) -> type[VarianceScaling]:
    def __init__(self):
        VarianceScaling.__init__(self, scale, mode, distribution)

    def get_config(self):
        return name

    get_config.__doc__ = Initializer.get_config.__doc__
    doc = (f"{name}: variance {scale:g} / {mode}, {distribution.replace('_', ' ')}.\n\n"
           f"    >>> nnx.Dense(8, kernel_initializer=\"{name}\")\n    ")
    # Keras's class name, findable in this module: instances pickle (a layer holding one too)
    return type(class_name, (VarianceScaling,), {"name": name, "__init__": __init__, "get_config": get_config,
                                                 "__doc__": doc, "__module__": __name__})


GlorotUniform = _preset("GlorotUniform", "glorot_uniform", 1.0, "fan_avg", "uniform")
GlorotNormal = _preset("GlorotNormal", "glorot_normal", 1.0, "fan_avg", "truncated_normal")
HeUniform = _preset("HeUniform", "he_uniform", 2.0, "fan_in", "uniform")
HeNormal = _preset("HeNormal", "he_normal", 2.0, "fan_in", "truncated_normal")
LecunUniform = _preset("LecunUniform", "lecun_uniform", 1.0, "fan_in", "uniform")
LecunNormal = _preset("LecunNormal", "lecun_normal", 1.0, "fan_in", "truncated_normal")

registry = Registry("initializer", Initializer)
for _cls in (Zeros, Ones, Constant, RandomUniform, RandomNormal, TruncatedNormal, VarianceScaling,
             GlorotUniform, GlorotNormal, HeUniform, HeNormal, LecunUniform, LecunNormal):
    registry.add(_cls, _cls.name)  # and its class name
registry.add(RandomUniform, "uniform")  # Keras's aliases (Embedding's default is "uniform")
registry.add(RandomNormal, "normal")


def get(identifier: str | dict | Initializer) -> Initializer:
    """An initializer from its name, its config dict, or an instance.

    Args:
        identifier: a name (``"glorot_uniform"`` or ``"GlorotUniform"``, ``"zeros"``, …), a
            ``get_config()`` dict, or an ``Initializer`` (returned as is).

    Returns:
        An ``Initializer``.

    Raises:
        ValueError: an unknown name (the message lists the valid ones) or config.

    >>> nnx.initializers.get("he_normal")
    """
    return registry.get(identifier)
