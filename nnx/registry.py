"""One lookup for every kind of named object (activations, losses, optimizers, metrics,
initializers, regularizers, layers): a name in any of Keras's spellings, a config dict, or an
instance."""
from __future__ import annotations

from typing import Any, Callable


_REGISTRIES: list["Registry"] = []  # every kind, for ``register``


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


_BUILTIN: dict[type, bool] = {}  # class -> whether nnx defines it (asked at training steps: cached)


def builtin(cls: type) -> bool:
    """Whether ``cls`` is one of nnx's own classes (defined in an ``nnx`` module), not a user's.

    >>> builtin(nnx.Dense)   # True
    """
    known = _BUILTIN.get(cls)
    if known is None:
        known = _BUILTIN[cls] = getattr(cls, "__module__", "").partition(".")[0] == "nnx"
    return known


def normalize(name: str) -> str:
    """``"GlorotUniform"``, ``"glorot_uniform"`` and ``"Glorot_Uniform"`` all become ``"glorotuniform"``."""
    return str(name).replace("_", "").replace("-", "").lower()


class Registry:
    """Classes of one kind, found by any of their names.

    >>> r = Registry("activation", Base); r.add(ReLU, "relu"); r.get("ReLU")
    """

    def __init__(self, kind: str, base: type):
        self.kind = kind
        self.base = base
        self._classes: dict[str, Callable[..., Any]] = {}
        self._names: list[str] = []  # the canonical names, for error messages
        _REGISTRIES.append(self)

    def add(self, factory: Callable[..., Any], *names: str) -> Callable[..., Any]:
        """Register ``factory`` (a class or a function returning an instance) under ``names`` and,
        for a class, its class name."""
        if names and names[0] not in self._names:
            self._names.append(names[0])
        all_names = list(names)
        if isinstance(factory, type):
            all_names.append(factory.__name__)
        for n in all_names:
            self._classes[normalize(n)] = factory
        return factory

    def names(self) -> list[str]:
        return sorted(self._names)

    def lookup(self, name: str) -> Callable[..., Any] | None:
        return self._classes.get(normalize(name))

    def get(self, identifier: Any) -> Any:
        """An instance from a name (default arguments), a ``{"class_name", "config"}`` dict, or an
        instance (returned as is)."""
        if isinstance(identifier, self.base):
            return identifier
        if isinstance(identifier, str):
            factory = self.lookup(identifier)
            if factory is not None:
                return factory()
        elif isinstance(identifier, dict) and isinstance(identifier.get("class_name"), str):
            factory = self.lookup(identifier["class_name"])
            config = identifier.get("config") or {}
            if factory is not None and isinstance(config, dict):
                try:
                    return factory(**config)
                except TypeError as e:
                    raise ValueError(f"Invalid config for {self.kind} {identifier['class_name']!r}: {e}") from None
        base = self.base.__name__
        raise ValueError(f"Unknown {self.kind} {identifier!r}; expected one of: {', '.join(self.names())}"
                         f" (or {_article(base)} {base} instance).")


def register(cls: type) -> type:
    """Make a class of your own (a layer, activation, loss, metric, optimizer, initializer,
    regularizer or learning-rate schedule) known by its class name and the ``name`` it defines
    itself, so that ``load_model`` and ``from_config`` can rebuild models that use it. Use it as
    a decorator. Registering a class again (or a new class under the same names) replaces it.

    Raises:
        TypeError: ``cls`` is not a subclass of one of those base classes.
        ValueError: one of its names is a built-in one (``"relu"``, ``"Adam"``, …); nothing is
            registered then.

    >>> @nnx.register
    ... class Square(nnx.activations.ActivationFunction): ...
    """
    kinds = [r for r in _REGISTRIES if isinstance(cls, type) and issubclass(cls, r.base)]
    if not kinds:
        bases = ", ".join(sorted({r.base.__name__ for r in _REGISTRIES}))
        raise TypeError(f"register expects a subclass of one of {bases}; received {cls!r}.")
    own = cls.__dict__.get("name")  # the name configs hold (an activation's, a loss's, ...): its own, not inherited
    names = [own] if isinstance(own, str) and own else []
    for r in kinds:
        for n in [*names, cls.__name__]:
            taken = r.lookup(n)
            if taken is not None and taken is not cls and builtin(taken):
                raise ValueError(f"register: the {r.kind} name {n!r} belongs to nnx's {taken.__name__}; give "
                                 f"{cls.__name__} a name (and a class name) of its own.")
    for r in kinds:
        r.add(cls, *names)
    return cls
