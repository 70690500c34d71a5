"""scikit-learn estimators around nnx models, as Keras 3's ``keras.wrappers``.

``SKLearnClassifier`` and ``SKLearnRegressor`` turn a compiled :class:`nnx.Sequential` (or a
function that builds one) into a scikit-learn estimator: ``fit`` / ``predict`` / ``score``,
``get_params`` / ``set_params``, ``clone``, ``Pipeline``, ``GridSearchCV``, ``cross_val_score``
with ``n_jobs`` and pickling all work, and scikit-learn's own ``check_estimator`` passes.

>>> from sklearn.datasets import load_iris
>>> import nnx
>>> def build(X, y, hidden=32):
...     model = nnx.Sequential([nnx.Input((X.shape[1],)), nnx.Dense(hidden, activation="relu"),
...                             nnx.Dense(len(set(y)), activation="softmax")])
...     model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
...     return model
>>> X, y = load_iris(return_X_y=True)
>>> clf = nnx.wrappers.SKLearnClassifier(model=build, model_kwargs={"hidden": 16},
...                                      fit_kwargs={"epochs": 50}, random_state=0)
>>> clf.fit(X, y).predict(X[:3])

scikit-learn is needed only by this module: ``import nnx`` works without it, and the first use of
one of these classes raises ``ImportError`` saying how to install it.
"""
from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable
from numbers import Integral
from typing import Any

import numpy as np  # host side: scikit-learn speaks numpy

from . import losses as _losses
from .callbacks import Callback, EarlyStopping
from . import optimizers as _optimizers
from .backend import floatx, set_floatx, to_numpy
from .layers import Dense, Input
from .models import Sequential
from .random import seed as _seed
from .saving import load_model, save_model

#: epochs the built-in MLP (``model=None``) trains for when ``fit_kwargs`` gives none
DEFAULT_EPOCHS = 200

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
    from sklearn.preprocessing import LabelEncoder
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets, type_of_target
    from sklearn.utils.validation import check_is_fitted, validate_data

    _SKLEARN_ERROR: ImportError | None = None
except ImportError as e:  # pragma: no cover - exercised only without scikit-learn
    _SKLEARN_ERROR = e

    class BaseEstimator:  # type: ignore[no-redef]
        pass

    class ClassifierMixin:  # type: ignore[no-redef]
        pass

    class RegressorMixin:  # type: ignore[no-redef]
        pass


__all__ = ["SKLearnClassifier", "SKLearnRegressor"]

_MODEL_FILE = "model.nnx"


# -- the default model (``model=None``) -----------------------------------------------------
def _mlp(X: np.ndarray, units: int, activation_out: str, loss: str, hidden_layer_sizes=(100,),
         activation: str = "relu", learning_rate: float = 0.001) -> Sequential:
    if isinstance(hidden_layer_sizes, Integral):
        hidden_layer_sizes = (hidden_layer_sizes,)
    layers: list[Any] = [Input((int(X.shape[1]),))]
    layers += [Dense(int(n), activation=activation) for n in hidden_layer_sizes]
    layers.append(Dense(units, activation=activation_out))
    model = Sequential(layers)
    model.compile(optimizer=_optimizers.Adam(learning_rate=learning_rate), loss=loss)
    return model


def _default_classifier(X: np.ndarray, y: np.ndarray, **kwargs: Any) -> Sequential:
    n_classes = int(np.max(y)) + 1
    return _mlp(X, n_classes, "softmax", "sparse_categorical_crossentropy", **kwargs)


def _default_regressor(X: np.ndarray, y: np.ndarray, **kwargs: Any) -> Sequential:
    n_outputs = 1 if y.ndim == 1 else int(y.shape[1])
    return _mlp(X, n_outputs, "linear", "mean_squared_error", **kwargs)


# -- models as bytes, and clones of a compiled model ----------------------------------------
class _SavedModel:
    """A Sequential as plain data inside a pickle: the bytes of its ``.nnx`` file when it is built,
    else its config and compile settings (an unbuilt model has no weights or optimizer state)."""

    __slots__ = ("data", "recipe")

    def __init__(self, data: bytes | None = None, recipe: dict | None = None):
        self.data = data
        self.recipe = recipe

    def __getstate__(self) -> tuple:
        return self.data, self.recipe

    def __setstate__(self, state: tuple) -> None:
        self.data, self.recipe = state

    @classmethod
    def of(cls, model: Sequential) -> "_SavedModel":
        if not getattr(model, "built", True):
            return cls(recipe={
                "config": model.get_config(),
                "optimizer": None if model.optimizer is None else
                {"class_name": type(model.optimizer).__name__, "config": model.optimizer.get_config()},
                "loss": None if model.loss is None else _loss_config(model.loss),
                "metrics": _metric_names(model),
            })
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, _MODEL_FILE)
            save_model(model, path)  # on every rank (model.save writes on rank 0 only)
            with open(path, "rb") as f:
                return cls(data=f.read())

    def restore(self) -> Sequential:
        if self.data is None:
            recipe = self.recipe
            model = Sequential.from_config(recipe["config"])
            if recipe["optimizer"] is not None and recipe["loss"] is not None:
                _compile_like(model, _optimizers.get(recipe["optimizer"]), _losses.get(recipe["loss"]),
                              recipe["metrics"])
            return model
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, _MODEL_FILE)
            with open(path, "wb") as f:
                f.write(self.data)
            return load_model(path)


def _loss_config(loss: Any) -> dict:
    config = loss.get_config()
    return config if "class_name" in config else {"class_name": type(loss).__name__, "config": config}


def _metric_names(model: Sequential) -> list[str]:
    names = getattr(model, "metrics_names", None)
    if names:
        return [str(n) for n in list(names)[1:]]
    return [str(getattr(m, "name", m)) for m in getattr(model, "metrics", None) or []]


def _compile_like(model: Sequential, optimizer: Any, loss: Any, metrics: list[str]) -> None:
    try:
        model.compile(optimizer=optimizer, loss=loss, metrics=list(metrics))
    except (ValueError, TypeError):
        # a metric known to the original only by an instance or a suffixed name: the wrapper
        # never reads metrics, so the clone trains without it rather than failing
        model.compile(optimizer=optimizer, loss=loss)


def _fresh_optimizer(optimizer: Any) -> Any:
    config = optimizer.get_config()
    from_config = getattr(type(optimizer), "from_config", None)
    return from_config(config) if from_config is not None else type(optimizer)(**config)


def _check_compiled(model: Any, where: str) -> None:
    if getattr(model, "optimizer", None) is None or getattr(model, "loss", None) is None:
        raise ValueError(
            f"{where} must be a compiled nnx.Sequential: call model.compile(optimizer=..., loss=...) "
            f"before handing it to the wrapper."
        )


def _clone_compiled(model: Sequential) -> Sequential:
    """Same config, fresh weights, a fresh optimizer of the same config, the same loss and metrics."""
    _check_compiled(model, "model")
    weights = model.get_weights() if model.built else []
    dtype = str(weights[0].dtype) if weights and np.issubdtype(weights[0].dtype, np.floating) else floatx()
    previous = floatx()
    set_floatx(dtype)
    try:
        clone_ = type(model).from_config(model.get_config())
    finally:
        set_floatx(previous)
    _compile_like(clone_, _fresh_optimizer(model.optimizer), copy.deepcopy(model.loss), _metric_names(model))
    return clone_


def _detach_callbacks(callbacks: Any, model: Sequential) -> None:
    """``fit`` hands each callback the model; take it back, so that callbacks kept in
    ``fit_kwargs`` do not tie the estimator's parameters to a fitted model (clone and pickle
    copy parameters, and would copy the model with them)."""
    if callbacks is None:
        return
    for cb in callbacks if isinstance(callbacks, (list, tuple)) else [callbacks]:
        if getattr(cb, "model", None) is model:
            cb.model = None


def _loss_name(model: Sequential) -> str:
    loss = model.loss
    return str(getattr(loss, "name", "") or type(loss).__name__).lower()


def _sparse_labels(model: Sequential) -> bool:
    """Whether the model's loss reads integer class indices (sparse_categorical_crossentropy)."""
    return "sparse" in _loss_name(model) or bool(getattr(model.loss, "sparse_labels", False))


def _is_model(obj: Any) -> bool:
    """An nnx model object (a Sequential, or anything that trains and describes itself like one),
    as opposed to a function that builds one."""
    return isinstance(obj, Sequential) or all(
        callable(getattr(obj, name, None)) for name in ("compile", "fit", "predict", "get_config"))


# -- the shared base ------------------------------------------------------------------------
class SKLBase(BaseEstimator):
    """Shared base of :class:`SKLearnClassifier` and :class:`SKLearnRegressor`.

    Args:
        model: a callable ``model(X, y, **model_kwargs)`` that returns a compiled
            ``nnx.Sequential``, or a compiled ``nnx.Sequential`` that each ``fit`` clones (same
            config, fresh weights, a fresh optimizer of the same config, the same loss and
            metrics; the original is never trained). ``None`` (the default) builds a small MLP:
            one hidden layer of 100 ReLU units and Adam; ``model_kwargs`` may then set
            ``hidden_layer_sizes`` (default ``(100,)``), ``activation`` (default ``"relu"``)
            and ``learning_rate`` (default ``0.001``). Unless ``fit_kwargs`` gives ``epochs``, it
            trains as scikit-learn's MLPs: up to 200 epochs, stopping once the training loss has
            improved by less than 1e-4 for 10 epochs.
        warm_start: bool, defaults to ``False``. ``True``: a second ``fit`` keeps training the
            already fitted ``model_`` from its current weights and optimizer state instead of
            starting from a fresh model.
        model_kwargs: dict, defaults to ``None``. Keyword arguments for a callable ``model``.
        fit_kwargs: dict, defaults to ``None``. Keyword arguments for ``model_.fit`` (``epochs``,
            ``batch_size``, ``callbacks``, ...); keywords given to the wrapper's ``fit`` take
            precedence. ``verbose`` defaults to 0 here (no progress output).
        random_state: int, ``numpy.random.RandomState`` or ``None``, defaults to ``None``.
            An int (or a value drawn from a ``RandomState``) is passed to ``nnx.seed`` at the
            start of each ``fit``, which makes the fit reproducible (initial weights, shuffle
            order, dropout) and reseeds nnx's global random streams. ``None`` leaves nnx's
            random streams as they are (seed them with ``nnx.seed``).

    Attributes:
        model_: the fitted ``nnx.Sequential``.
        history_: dict, the ``History.history`` of the last ``fit`` (one float per epoch and key).
        n_features_in_: int, the number of features seen in ``fit``.
        feature_names_in_: array of str, the column names seen in ``fit`` (a DataFrame only).
    """

    _default_builder: Callable[..., Sequential]

    def __init__(self, model: Callable[..., Sequential] | Sequential | None = None, warm_start: bool = False,
                 model_kwargs: dict[str, Any] | None = None, fit_kwargs: dict[str, Any] | None = None,
                 random_state: int | np.random.RandomState | None = None):
        if _SKLEARN_ERROR is not None:
            raise ImportError(f"nnx.wrappers needs scikit-learn >= 1.6 (pip install 'scikit-learn>=1.6'): "
                              f"{_SKLEARN_ERROR}")
        self.model = model
        self.warm_start = warm_start
        self.model_kwargs = model_kwargs
        self.fit_kwargs = fit_kwargs
        self.random_state = random_state

    # -- scikit-learn protocol -------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    def __sklearn_clone__(self) -> "SKLBase":
        # A Sequential given as ``model`` is shared, not deep-copied: fit only ever trains a
        # clone of it, so the original is never changed.
        params = self.get_params(deep=False)
        model = params.pop("model")
        if not _is_model(model):
            model = clone(model, safe=False)
        new = type(self)(model=model, **{k: clone(v, safe=False) for k, v in params.items()})
        for attr in ("_metadata_request", "_sklearn_output_config"):
            if attr in self.__dict__:
                setattr(new, attr, copy.deepcopy(self.__dict__[attr]))
        return new

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        for key in ("model", "model_"):
            if _is_model(state.get(key)):
                state[key] = _SavedModel.of(state[key])
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        for key in ("model", "model_"):
            if isinstance(state.get(key), _SavedModel):
                state[key] = state[key].restore()
        super().__setstate__(state)

    # -- fit / predict ---------------------------------------------------------------------
    def fit(self, X: Any, y: Any, **kwargs: Any) -> "SKLBase":
        """Train ``model_`` on (X, y).

        Args:
            X: array-like of shape (n_samples, n_features), the inputs.
            y: array-like of shape (n_samples,) (or (n_samples, n_outputs) for a regressor),
                the targets.
            **kwargs: keyword arguments for ``model_.fit`` (``epochs``, ``batch_size``, ...);
                they take precedence over ``fit_kwargs``.

        Returns:
            self, fitted.

        Raises:
            ValueError: invalid inputs (NaN or inf, wrong shapes, a classifier target with one
                class, a model whose outputs do not fit the targets), or a ``model`` that is
                neither a callable nor a compiled ``nnx.Sequential``.
            TypeError: sparse inputs.
        """
        warm = bool(self.warm_start) and hasattr(self, "model_")
        # a warm fit continues the fitted model: X must have the features it was fitted on
        X, y = validate_data(self, X, y, reset=not warm, **self._validate_kwargs(), **self._validate_y_kwargs())
        y = self._encode_target(y, reset=not warm)
        if isinstance(self.random_state, Integral) and not isinstance(self.random_state, bool):
            _seed(int(self.random_state))
        elif self.random_state is not None:
            _seed(int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max)))
        if warm:
            model = self.model_
        else:
            model = self._build_model(X, y)
            self._check_model_output(model, X)
        options = {"verbose": 0, **(self.fit_kwargs or {}), **kwargs}
        if self.model is None and "epochs" not in options:
            # the built-in MLP trains as scikit-learn's MLPs do by default (max_iter=200, tol=1e-4,
            # n_iter_no_change=10): up to 200 epochs, until the training loss stops improving
            callbacks = options.get("callbacks")
            callbacks = [] if callbacks is None else [callbacks] if isinstance(callbacks, Callback) else list(callbacks)
            options["epochs"] = DEFAULT_EPOCHS
            options["callbacks"] = [*callbacks, EarlyStopping(monitor="loss", min_delta=1e-4, patience=10)]
        validation_data = options.get("validation_data")
        if isinstance(validation_data, (tuple, list)) and len(validation_data) == 2:
            options["validation_data"] = self._validation_data(model, *validation_data)
        try:
            history = model.fit(X, self._model_target(model, y), **options)
        finally:
            _detach_callbacks(options.get("callbacks"), model)
        self.model_ = model
        self.history_ = {str(k): [float(v) for v in vs] for k, vs in getattr(history, "history", {}).items()}
        return self

    def _build_model(self, X: np.ndarray, y: np.ndarray) -> Sequential:
        if self.model is None:
            model = type(self)._default_builder(X, y, **(self.model_kwargs or {}))
        elif _is_model(self.model):
            if self.model_kwargs:
                raise ValueError("model_kwargs apply to a callable model; received a Sequential as model "
                                 f"and model_kwargs={self.model_kwargs!r}.")
            model = _clone_compiled(self.model)
        elif callable(self.model):
            model = self.model(X, y, **(self.model_kwargs or {}))
        else:
            raise ValueError("model must be a callable model(X, y, **model_kwargs) returning a compiled "
                             f"nnx.Sequential, a compiled nnx.Sequential, or None; received {self.model!r}.")
        if not _is_model(model):
            raise ValueError(f"The model callable must return a compiled nnx.Sequential; it returned "
                             f"{type(model).__name__}.")
        _check_compiled(model, "The model callable's result")
        return model

    def _raw_predict(self, X: Any) -> np.ndarray:
        """The fitted model's outputs for X, as a float64 numpy array of shape (n_samples, units)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, **self._validate_kwargs())
        out = np.asarray(to_numpy(self.model_.predict(X, verbose=0)), dtype=np.float64)
        return out.reshape(len(X), -1)

    @staticmethod
    def _validate_kwargs() -> dict[str, Any]:
        return {"dtype": [np.float64, np.float32], "accept_sparse": False}

    @staticmethod
    def _validate_y_kwargs() -> dict[str, Any]:
        return {}

    # hooks the two estimators fill in
    def _encode_target(self, y: np.ndarray, reset: bool) -> np.ndarray:
        """Validated y -> what the model builder receives; ``reset``: a fresh fit, not a warm one."""
        return y

    def _check_model_output(self, model: Sequential, X: np.ndarray) -> None:
        """Check a new model's output against the targets (before any training)."""

    def _model_target(self, model: Sequential, y: np.ndarray) -> np.ndarray:
        """The encoded y -> what ``model.fit`` is trained on."""
        return y

    def _validation_data(self, model: Sequential, X_val: Any, y_val: Any) -> tuple[Any, Any]:
        return X_val, y_val


class SKLearnClassifier(ClassifierMixin, SKLBase):
    """A scikit-learn classifier around an nnx model.

    Labels may be any values scikit-learn accepts (ints, strings, ...); they are encoded with a
    ``LabelEncoder`` and ``model(X, y, **model_kwargs)`` receives ``y`` as integer class indices
    ``0 .. n_classes - 1``. What the model is trained on follows its loss: the indices for
    ``sparse_categorical_crossentropy``, one-hot rows for ``categorical_crossentropy`` (and for
    any loss with one output unit per class), a column of 0/1 for a single output unit (binary
    problems only, e.g. a sigmoid unit with ``binary_crossentropy``). The model's outputs are read
    as probabilities (softmax or sigmoid), or as logits when the loss has ``from_logits=True``.

    Args:
        model: a callable ``model(X, y, **model_kwargs)`` that returns a compiled
            ``nnx.Sequential``, or a compiled ``nnx.Sequential`` that each ``fit`` clones (same
            config, fresh weights, a fresh optimizer of the same config, the same loss and
            metrics; the original is never trained). ``None`` (the default) builds an MLP with one
            hidden layer of 100 ReLU units, a softmax output and Adam; ``model_kwargs`` may then
            set ``hidden_layer_sizes`` (default ``(100,)``), ``activation`` (default ``"relu"``)
            and ``learning_rate`` (default ``0.001``). Unless ``fit_kwargs`` gives ``epochs``, it
            trains as scikit-learn's MLPs: up to 200 epochs, stopping once the training loss has
            improved by less than 1e-4 for 10 epochs.
        warm_start: bool, defaults to ``False``. ``True``: a second ``fit`` keeps training the
            fitted ``model_`` (its weights and optimizer state); its labels must be among
            ``classes_``.
        model_kwargs: dict, defaults to ``None``. Keyword arguments for ``model``.
        fit_kwargs: dict, defaults to ``None``. Keyword arguments for ``model_.fit`` (``epochs``,
            ``batch_size``, ``validation_data`` with labels as given to ``fit``, ...); keywords
            given to ``fit`` take precedence. ``verbose`` defaults to 0 here.
        random_state: int, ``numpy.random.RandomState`` or ``None``, defaults to ``None``. An int
            seeds nnx (``nnx.seed``) at the start of each ``fit``: same data, same fitted model.
            ``None`` leaves nnx's global random streams as they are.

    Attributes:
        model_: the fitted ``nnx.Sequential``.
        classes_: ndarray of shape (n_classes,), the labels in the order of ``predict_proba``'s
            columns.
        n_features_in_: int, the number of features seen in ``fit``.
        feature_names_in_: ndarray of str, the column names seen in ``fit`` (DataFrames only).
        n_outputs_: int, always 1 (one label per sample).
        history_: dict, the ``History.history`` of the last ``fit``.

    Example:

    ```python
    import nnx
    from sklearn.datasets import load_iris
    from sklearn.model_selection import GridSearchCV

    def build(X, y, hidden=32):
        model = nnx.Sequential([nnx.Input((X.shape[1],)), nnx.Dense(hidden, activation="relu"),
                                nnx.Dense(len(set(y)), activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        return model

    X, y = load_iris(return_X_y=True)
    clf = nnx.wrappers.SKLearnClassifier(model=build, fit_kwargs={"epochs": 100}, random_state=0)
    search = GridSearchCV(clf, {"model_kwargs": [{"hidden": 8}, {"hidden": 32}]}, cv=3).fit(X, y)
    search.best_estimator_.predict_proba(X[:2])   # rows sum to 1, columns in classes_ order
    ```
    """

    _default_builder = staticmethod(_default_classifier)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        tags.classifier_tags.multi_label = False
        tags.target_tags.multi_output = False
        tags.target_tags.single_output = True
        return tags

    def _encode_target(self, y: np.ndarray, reset: bool) -> np.ndarray:
        check_classification_targets(y)
        if type_of_target(y) not in ("binary", "multiclass"):
            raise ValueError(f"SKLearnClassifier supports binary and multiclass targets; received a "
                             f"{type_of_target(y)!r} target.")
        if reset:
            encoder = LabelEncoder().fit(y)
            if len(encoder.classes_) < 2:
                raise ValueError(
                    f"SKLearnClassifier needs samples of at least 2 classes; received one class only "
                    f"({encoder.classes_[0]!r}): a classifier can't train when only one class is present."
                )
            self._encoder = encoder
            self.classes_ = encoder.classes_
            self.n_outputs_ = 1
        else:
            unseen = np.setdiff1d(np.unique(y), self.classes_)
            if unseen.size:
                raise ValueError(f"warm_start=True keeps the classes of the first fit {list(self.classes_)}; "
                                 f"received new labels {list(unseen)}.")
        return self._encoder.transform(y).astype(np.int64)

    def _check_model_output(self, model: Sequential, X: np.ndarray) -> None:
        units = int(np.prod(np.shape(to_numpy(model.predict(X[:1], verbose=0)))[1:]))
        n_classes = len(self.classes_)
        if units != n_classes and not (units == 1 and n_classes == 2):
            raise ValueError(
                f"The model has {units} output units; {n_classes} classes need {n_classes} units "
                f"(e.g. softmax){' or 1 sigmoid unit' if n_classes == 2 else ''}."
            )
        if units == 1 and _sparse_labels(model):
            raise ValueError("sparse_categorical_crossentropy needs one output unit per class; the model has 1 "
                             "(for one sigmoid unit use binary_crossentropy).")
        self._units = units

    def _model_target(self, model: Sequential, y: np.ndarray) -> np.ndarray:
        if _sparse_labels(model):
            return y
        if self._units == 1:
            return y.astype(np.float64)
        return np.eye(self._units, dtype=np.float64)[y]

    def fit(self, X: Any, y: Any, **kwargs: Any) -> "SKLearnClassifier":
        """Train ``model_`` on (X, y).

        Args:
            X: array-like of shape (n_samples, n_features), the inputs.
            y: array-like of shape (n_samples,), the labels (any values scikit-learn accepts;
                at least 2 classes).
            **kwargs: keyword arguments for ``model_.fit`` (``epochs``, ``batch_size``, ...);
                they take precedence over ``fit_kwargs``.

        Returns:
            self, fitted.

        Raises:
            ValueError: NaN or inf in X, mismatched lengths, a continuous or multi-output
                target, a single class, a model whose output width fits neither the number of
                classes nor a single binary unit, or an invalid ``model``.
            TypeError: sparse X.

        Example:

        >>> clf = nnx.wrappers.SKLearnClassifier(model=build, fit_kwargs={"epochs": 20}).fit(X, y)
        """
        return super().fit(X, y, **kwargs)

    def _validation_data(self, model: Sequential, X_val: Any, y_val: Any) -> tuple[Any, Any]:
        y_val = np.asarray(y_val)
        if y_val.ndim == 2 and y_val.shape[1] == 1:
            y_val = y_val[:, 0]
        if y_val.ndim != 1:
            return X_val, y_val  # already in the model's layout
        return X_val, self._model_target(model, self._encoder.transform(y_val).astype(np.int64))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities.

        Args:
            X: array-like of shape (n_samples, n_features).

        Returns:
            ndarray of shape (n_samples, n_classes), float64; column ``j`` is the probability of
            ``classes_[j]`` and each row sums to 1. A single sigmoid unit ``p`` gives the two
            columns ``[1 - p, p]``.

        Raises:
            NotFittedError: before ``fit``.
            ValueError: NaN or inf in X, or a number of features other than ``n_features_in_``.

        Example:

        >>> clf.predict_proba(X[:2])        # doctest: +SKIP
        array([[0.97, 0.02, 0.01],
               [0.01, 0.98, 0.01]])
        """
        out = self._raw_predict(X)
        from_logits = bool(getattr(self.model_.loss, "from_logits", False))
        if out.shape[1] == 1:
            p = out[:, 0]
            if from_logits:
                p = _sigmoid(p)
            p = np.clip(p, 0.0, 1.0)
            return np.column_stack([1.0 - p, p])
        if from_logits:
            out = _sigmoid(out) if "binary" in _loss_name(self.model_) else _softmax(out)
        out = np.clip(out, 0.0, None)
        total = out.sum(axis=1, keepdims=True)
        bad = ~(total > 0)
        out = np.where(bad, 1.0, out)
        return out / np.where(bad, out.shape[1], total)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Natural logarithm of :meth:`predict_proba` (``-inf`` where a probability is 0).

        Args:
            X: array-like of shape (n_samples, n_features).

        Returns:
            ndarray of shape (n_samples, n_classes).

        Raises:
            NotFittedError: before ``fit``.
            ValueError: NaN or inf in X, or a number of features other than ``n_features_in_``.
        """
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels: the class of highest probability.

        Args:
            X: array-like of shape (n_samples, n_features).

        Returns:
            ndarray of shape (n_samples,) holding values of ``classes_``.

        Raises:
            NotFittedError: before ``fit``.
            ValueError: NaN or inf in X, or a number of features other than ``n_features_in_``.

        Example:

        >>> clf.fit(X, ["cat", "dog", "dog", "cat"]).predict(X[:2])   # doctest: +SKIP
        array(['cat', 'dog'], dtype='<U3')
        """
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class SKLearnRegressor(RegressorMixin, SKLBase):
    """A scikit-learn regressor around an nnx model.

    One target (``y`` of shape (n_samples,)) or several (``y`` of shape (n_samples, n_outputs));
    the model needs as many output units as targets. ``predict`` returns the shape ``y`` had in
    ``fit``.

    Args:
        model: a callable ``model(X, y, **model_kwargs)`` that returns a compiled
            ``nnx.Sequential``, or a compiled ``nnx.Sequential`` that each ``fit`` clones (same
            config, fresh weights, a fresh optimizer of the same config, the same loss and
            metrics; the original is never trained). ``None`` (the default) builds an MLP with one
            hidden layer of 100 ReLU units, a linear output, mean squared error and Adam;
            ``model_kwargs`` may then set ``hidden_layer_sizes`` (default ``(100,)``),
            ``activation`` (default ``"relu"``) and ``learning_rate`` (default ``0.001``). Unless
            ``fit_kwargs`` gives ``epochs``, it trains as scikit-learn's MLPs: up to 200 epochs,
            stopping once the training loss has improved by less than 1e-4 for 10 epochs.
        warm_start: bool, defaults to ``False``. ``True``: a second ``fit`` keeps training the
            fitted ``model_`` (its weights and optimizer state).
        model_kwargs: dict, defaults to ``None``. Keyword arguments for ``model``.
        fit_kwargs: dict, defaults to ``None``. Keyword arguments for ``model_.fit`` (``epochs``,
            ``batch_size``, ``callbacks``, ...); keywords given to ``fit`` take precedence.
            ``verbose`` defaults to 0 here.
        random_state: int, ``numpy.random.RandomState`` or ``None``, defaults to ``None``. An int
            seeds nnx (``nnx.seed``) at the start of each ``fit``: same data, same fitted model.
            ``None`` leaves nnx's global random streams as they are.

    Attributes:
        model_: the fitted ``nnx.Sequential``.
        n_features_in_: int, the number of features seen in ``fit``.
        feature_names_in_: ndarray of str, the column names seen in ``fit`` (DataFrames only).
        n_outputs_: int, the number of targets.
        history_: dict, the ``History.history`` of the last ``fit``.

    Example:

    ```python
    import nnx
    from sklearn.datasets import load_diabetes
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def build(X, y, hidden=32):
        n_outputs = 1 if y.ndim == 1 else y.shape[1]
        model = nnx.Sequential([nnx.Input((X.shape[1],)), nnx.Dense(hidden, activation="relu"),
                                nnx.Dense(n_outputs)])
        model.compile(optimizer=nnx.optimizers.Adam(0.01), loss="mse")
        return model

    X, y = load_diabetes(return_X_y=True)
    reg = make_pipeline(StandardScaler(), nnx.wrappers.SKLearnRegressor(
        model=build, fit_kwargs={"epochs": 50}, random_state=0))
    reg.fit(X, y / y.std()).score(X, y / y.std())   # R^2
    ```
    """

    _default_builder = staticmethod(_default_regressor)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    @staticmethod
    def _validate_y_kwargs() -> dict[str, Any]:
        return {"multi_output": True, "y_numeric": True}

    def _encode_target(self, y: np.ndarray, reset: bool) -> np.ndarray:
        n_outputs = 1 if y.ndim == 1 else int(y.shape[1])
        if reset:
            self.n_outputs_ = n_outputs
            self._y_ndim = int(y.ndim)
        elif n_outputs != self.n_outputs_:
            raise ValueError(f"warm_start=True continues a model of {self.n_outputs_} outputs; received y "
                             f"with {n_outputs}.")
        return y

    def fit(self, X: Any, y: Any, **kwargs: Any) -> "SKLearnRegressor":
        """Train ``model_`` on (X, y).

        Args:
            X: array-like of shape (n_samples, n_features), the inputs.
            y: array-like of shape (n_samples,) or (n_samples, n_outputs), the targets.
            **kwargs: keyword arguments for ``model_.fit`` (``epochs``, ``batch_size``, ...);
                they take precedence over ``fit_kwargs``.

        Returns:
            self, fitted.

        Raises:
            ValueError: NaN or inf in X or y, mismatched lengths, a model whose output width is
                not the number of targets, or an invalid ``model``.
            TypeError: sparse X.

        Example:

        >>> reg = nnx.wrappers.SKLearnRegressor(model=build, fit_kwargs={"epochs": 20}).fit(X, y)
        """
        return super().fit(X, y, **kwargs)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets.

        Args:
            X: array-like of shape (n_samples, n_features).

        Returns:
            ndarray of float64, of shape (n_samples,) when ``fit`` saw a 1-D ``y``, else
            (n_samples, n_outputs).

        Raises:
            NotFittedError: before ``fit``.
            ValueError: NaN or inf in X, or a number of features other than ``n_features_in_``.

        Example:

        >>> reg.fit(X, Y).predict(X[:2]).shape   # Y of shape (n, 3)    # doctest: +SKIP
        (2, 3)
        """
        out = self._raw_predict(X)
        return out[:, 0] if self._y_ndim == 1 and out.shape[1] == 1 else out
