"""Layers: ``Input``, ``Dense``, ``Activation``, ``Dropout``, ``Flatten``, the convolutions and
poolings, normalization, ``Embedding``, and the ``Layer`` base."""
from __future__ import annotations

from ..registry import Registry
from .base import Layer, Weight
from .conv import Conv1D, Conv2D, ZeroPadding2D
from .core import Activation, Dense, Dropout, Flatten, Input, LeakyReLU, ReLU, Reshape, Softmax
from .embedding import Embedding
from .normalization import BatchNormalization, LayerNormalization
from .pooling import (AveragePooling1D, AveragePooling2D, GlobalAveragePooling1D, GlobalAveragePooling2D,
                      GlobalMaxPooling1D, GlobalMaxPooling2D, MaxPooling1D, MaxPooling2D)

#: the convolution and pooling layers (``nnx.saving`` knows their weight shapes)
CONV_LAYERS = (Conv1D, Conv2D, ZeroPadding2D, MaxPooling1D, MaxPooling2D, AveragePooling1D, AveragePooling2D,
               GlobalAveragePooling1D, GlobalAveragePooling2D, GlobalMaxPooling1D, GlobalMaxPooling2D)

registry = Registry("layer class", Layer)
for _cls in (Input, Dense, Activation, Dropout, Flatten, ReLU, LeakyReLU, Softmax, Reshape,
             BatchNormalization, LayerNormalization, Embedding, *CONV_LAYERS):
    registry.add(_cls, _cls.__name__)


def conv_architecture(class_name: str, config: dict,
                      input_shape: tuple[int, ...]) -> tuple[list[tuple[int, ...]], tuple[int, ...]]:
    """(weight shapes, output shape) of one of ``CONV_LAYERS`` made from ``config`` for samples of
    ``input_shape``, without creating weights (``nnx.saving`` checks files against them).
    Raises ValueError for a config or an input shape the layer refuses."""
    cls = {c.__name__: c for c in CONV_LAYERS}[class_name]
    try:
        layer = cls(**config)
    except TypeError as e:
        raise ValueError(f"invalid {class_name} config: {e}") from None
    output_shape = tuple(layer.compute_output_shape(tuple(input_shape)))
    weights = []
    if isinstance(layer, (Conv1D, Conv2D)):
        weights = [layer.kernel_shape(input_shape), *([(layer.filters,)] if layer.use_bias else [])]
    return weights, output_shape


def register(cls: type[Layer]) -> type[Layer]:
    """Make a user layer class loadable by ``from_config`` / ``load_model`` (use as a decorator)."""
    registry.add(cls, cls.__name__)
    return cls


def serialize(layer: Layer) -> dict:
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def deserialize(config: dict) -> Layer:
    name = config.get("class_name") if isinstance(config, dict) else None
    cls = registry.lookup(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"Unknown layer class {name!r}; expected one of: {', '.join(registry.names())}.")
    layer_config = config.get("config", {})
    if not isinstance(layer_config, dict):
        raise ValueError(f"The config of layer class {name!r} must be a dict; received {type(layer_config).__name__}.")
    if name == "Sequential":
        return cls.from_config(layer_config)
    return cls(**layer_config)


__all__ = ["Layer", "Weight", "Input", "Dense", "Activation", "Dropout", "Flatten", "ReLU", "LeakyReLU", "Softmax",
           "Reshape", "BatchNormalization", "LayerNormalization", "Embedding", "Conv1D", "Conv2D", "ZeroPadding2D",
           "MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D", "GlobalAveragePooling1D",
           "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "register", "serialize", "deserialize"]
