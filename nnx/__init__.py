"""nnx: a Keras-style neural-network library written once against the Python Array API standard,
running on NumPy (CPU), CuPy (CUDA GPU) or any Array API namespace with an adapter.

>>> import nnx
>>> model = nnx.Sequential([nnx.Input((4,)), nnx.Dense(8, activation="relu"), nnx.Dense(1)])
>>> model.compile(optimizer="adam", loss="mse")
"""
from __future__ import annotations


def _checkout_adapters() -> None:
    """Imported from a source checkout that was not installed, ``nnx.backends`` is the
    ``backends/`` folder beside ``nnx/``, as installing maps it."""
    import importlib.util
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    beside = os.path.join(os.path.dirname(here), "backends")
    name = f"{__name__}.backends"
    if (name in sys.modules or os.path.isdir(os.path.join(here, "backends"))
            or not os.path.isfile(os.path.join(beside, "__init__.py"))):
        return
    spec = importlib.util.spec_from_file_location(name, os.path.join(beside, "__init__.py"),
                                                  submodule_search_locations=[beside])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    setattr(sys.modules[__name__], "backends", module)


_checkout_adapters()

from . import activations, callbacks, distributed, initializers, layers, losses, metrics, models, ops, optimizers, regularizers
from .backend import (
    Backend,
    asarray,
    available_backends,
    floatx,
    get_backend,
    set_backend,
    set_floatx,
    to_numpy,
    use_backend,
    use_floatx,
)
from .layers import Activation, Dense, Dropout, Flatten, Input, Layer, Weight
from .layers import BatchNormalization, Embedding, LayerNormalization, LeakyReLU, ReLU, Reshape, Softmax
from .layers import (AveragePooling1D, AveragePooling2D, Conv1D, Conv2D, GlobalAveragePooling1D,
                     GlobalAveragePooling2D, GlobalMaxPooling1D, GlobalMaxPooling2D, MaxPooling1D, MaxPooling2D,
                     ZeroPadding2D)
from .models import Sequential
from .random import seed
from .registry import register
from .saving import load_model

models.load_model = load_model  # one function, as Keras's keras.models.load_model
from .plotting import plot_history

__version__ = "0.1.0"

__all__ = [
    "Backend", "asarray", "available_backends", "floatx", "get_backend", "set_backend", "set_floatx",
    "to_numpy", "use_backend", "use_floatx", "seed", "Sequential", "Input", "Dense", "Activation", "Dropout", "Flatten",
    "Layer", "Weight", "ReLU", "LeakyReLU", "Softmax", "Reshape", "BatchNormalization", "LayerNormalization", "Embedding", "Conv1D", "Conv2D", "ZeroPadding2D", "MaxPooling1D", "MaxPooling2D",
    "AveragePooling1D", "AveragePooling2D", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D",
    "GlobalMaxPooling2D", "load_model", "models", "ops", "plot_history", "activations", "callbacks", "distributed", "initializers", "layers", "losses",
    "metrics", "optimizers", "regularizers", "register", "wrappers", "__version__",
]


def __getattr__(name: str):
    # scikit-learn is imported only when the estimators are asked for
    if name == "wrappers":
        import importlib

        return importlib.import_module(".wrappers", __name__)
    raise AttributeError(f"module 'nnx' has no attribute {name!r}")
