"""Layers: ``Input``, ``Dense``, ``Activation``, ``Dropout``, ``Flatten``, and the ``Layer`` base."""
from __future__ import annotations

from .base import Layer
from .core import Activation, Dense, Dropout, Flatten, Input

_CLASSES = {cls.__name__: cls for cls in (Input, Dense, Activation, Dropout, Flatten)}


def register(cls: type[Layer]) -> type[Layer]:
    """Make a user layer class loadable by ``from_config`` / ``load_model`` (use as a decorator)."""
    _CLASSES[cls.__name__] = cls
    return cls


def serialize(layer: Layer) -> dict:
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def deserialize(config: dict) -> Layer:
    name = config.get("class_name") if isinstance(config, dict) else None
    if name not in _CLASSES:
        raise ValueError(f"Unknown layer class {name!r}; expected one of: {', '.join(sorted(_CLASSES))}.")
    return _CLASSES[name](**config.get("config", {}))


__all__ = ["Layer", "Input", "Dense", "Activation", "Dropout", "Flatten", "register", "serialize", "deserialize"]
