"""``Sequential``: a chain of layers, with Keras's ``compile`` / ``fit`` / ``evaluate`` / ``predict``.

The chain itself (forward, backward to the first layer that needs a gradient, weights) lives here;
batching, the step, sums, callbacks and progress output live in ``nnx.training``.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import numpy as np  # argument checks only (numpy scalar types)

from . import backend as _backend
from . import callbacks as _callbacks
from . import data as _data
from . import layers as _layers
from . import losses as _losses
from . import metrics as _metrics
from . import optimizers as _optimizers
from . import progbar as _progbar
from . import random as _random
from . import training as _training
from .layers.base import Layer, as_int


class Step(NamedTuple):
    """What ``compute_gradients`` returns: the batch loss (regularization included), the
    predictions, the gradients keyed by weight record, and each layer's saved context."""

    loss: Any
    predictions: Any
    grads: dict
    saved: list


class Sequential(Layer):
    """A linear stack of layers with Keras's ``compile`` / ``fit`` / ``evaluate`` / ``predict``.

    Args:
        layers: the layers, first to last; an ``nnx.Input`` first (or ``input_shape=`` on the first
            layer) builds the model at once, otherwise it builds on the first data it sees.
        name: optional name.
        trainable: False freezes every layer.

    A ``Sequential`` is itself a layer, so it can be a layer of another ``Sequential``.

    >>> model = nnx.Sequential([nnx.Input((64,)), nnx.Dense(128, activation="relu"),
    ...                         nnx.Dense(10, activation="softmax")])
    >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    >>> history = model.fit(x, y, epochs=10)
    """

    def __init__(self, layers: list[Layer] | None = None, name: str | None = None, trainable: bool = True):
        self.layers: list[Layer] = []
        super().__init__(name=name, trainable=trainable)
        self.optimizer: _optimizers.Optimizer | None = None
        self.loss: _losses.Loss | None = None
        self.metrics: list[_metrics.Metric] = []
        self._metric_specs: list[Any] = []
        self.stop_training = False
        self._stop_now = False
        self._shuffle_rng = None
        self._fused = False
        self.history = None
        for layer in layers or []:
            self.add(layer)

    # -- construction ----------------------------------------------------------------------
    def add(self, layer: Layer) -> None:
        """Append a layer; an ``Input`` (or a first layer given ``input_shape=``) builds the model."""
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add expects a Layer; received {type(layer).__name__}.")
        if isinstance(layer, _layers.Input):
            if self.layers or self.input_shape is not None:
                raise ValueError("Input must be the first entry of a Sequential model.")
            self._input_layer = layer
            self.build(layer.shape)
            return
        if layer is self or any(layer is other for other in self.layers):
            raise ValueError(f"Layer {layer.name!r} is already in this model.")
        if not self.layers and not self.built and layer._declared_input_shape is not None:
            self.layers.append(layer)
            self.build(layer._declared_input_shape)
            return
        self.layers.append(layer)
        if self.built:
            try:
                self._build_layer(layer, self.layers[-2].output_shape if len(self.layers) > 1 else self.input_shape)
            except Exception:
                self.layers.pop()
                raise
        self._after_change()

    def pop(self) -> Layer:
        """Remove and return the last layer."""
        if not self.layers:
            raise ValueError("There are no layers to pop.")
        layer = self.layers.pop()
        self._after_change()
        return layer

    def get_layer(self, name: str | None = None, index: int | None = None) -> Layer:
        """A layer by ``name`` or by ``index`` (position in ``layers``)."""
        if (name is None) == (index is None):
            raise ValueError("get_layer needs exactly one of name= or index=.")
        if index is not None:
            i = as_int(index, "index", minimum=-len(self.layers)) if self.layers else None
            if i is None or i >= len(self.layers):
                raise ValueError(f"index {index!r} is out of range for a model of {len(self.layers)} layers.")
            return self.layers[i]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"No layer named {name!r}; the layers are: {', '.join(l.name for l in self.layers)}.")

    def build(self, input_shape: tuple[int, ...]) -> None:
        """Create every layer's weights on the current backend, for samples of ``input_shape``."""
        input_shape = tuple(input_shape)
        backend = _backend.get_backend()
        shape = input_shape
        for layer in self.layers:
            self._build_layer(layer, shape, backend)
            shape = layer.output_shape
        self.input_shape = input_shape
        self.backend = backend
        self.dtype = self.layers[0].dtype if self.layers else _backend.floatx()
        self.built = True
        self._after_change()

    def _build_layer(self, layer: Layer, shape: tuple[int, ...], backend: Any = None) -> None:
        backend = backend or self.backend
        if layer.built and layer.backend != backend:
            layer.to_backend(backend)
        if not layer.built:
            layer.build(shape)
        elif tuple(layer.input_shape) != tuple(shape):
            raise ValueError(f"Layer {layer.name!r} was built for inputs {layer.input_shape}, received {shape}.")

    def _after_change(self) -> None:
        """Recompute what depends on the chain: loss fusion."""
        last = self.layers[-1] if self.layers else None
        act = last.output_activation if last is not None else None
        self._fused = bool(self.loss is not None and act is not None and self.loss.fuses_with(act))

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.layers:
            shape = layer.compute_output_shape(shape)
        return shape

    @property
    def output_shape(self) -> tuple[int, ...] | None:
        if not self.built:
            return None
        return self.layers[-1].output_shape if self.layers else self.input_shape

    @property
    def trainable(self) -> bool:
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        self._trainable = bool(value)
        for layer in getattr(self, "layers", []):
            layer.trainable = value
        if hasattr(self, "_fused"):
            self._after_change()

    @property
    def weights(self) -> list[Any]:
        return [w for layer in self.layers for w in layer.weights]

    @property
    def trainable_weights(self) -> list[Any]:
        return [w for layer in self.layers for w in layer.trainable_weights] if self.trainable else []

    @property
    def non_trainable_weights(self) -> list[Any]:
        trainable = {id(w) for w in self.trainable_weights}
        return [w for w in self.weights if id(w) not in trainable]

    @property
    def output_activation(self):
        return None

    @property
    def integer_input(self) -> bool:
        """Whether the first layer takes integer ids (an ``Embedding``): a model nested as the
        first layer of another passes that on."""
        return bool(self.layers) and bool(getattr(self.layers[0], "integer_input", False))

    def prepare_ids(self, x: Any, dtype: str, backend: _backend.Backend, what: str = "x") -> Any:
        return self.layers[0].prepare_ids(x, dtype, backend, what)

    @property
    def _first_backward(self) -> int:
        """The first layer with trainable weights (read at each step: ``trainable`` may change)."""
        return self._trainable_plan()[1]

    def _trainable_plan(self) -> tuple[list, int]:
        """The trainable weight records and the index of the first layer holding one, in one pass."""
        weights: list = []
        first = len(self.layers)
        if self._trainable:
            for i, layer in enumerate(self.layers):
                own = layer.trainable_weights
                if own:
                    if not weights:
                        first = i
                    weights += own
        return weights, first

    @property
    def _dtype(self) -> str:
        return self.dtype

    # -- the chain -------------------------------------------------------------------------
    def forward(self, x: Any, training: bool = False) -> tuple[Any, Any]:
        """``(y, saved)``: the output, and each layer's saved context (None in inference, where
        nothing is kept)."""
        if not training:
            for layer in self.layers:
                x = layer.forward(x, training=False)[0]
            return x, None
        saved = []
        for layer in self.layers:
            x, s = layer.forward(x, training=True)
            saved.append(s)
        return x, saved

    def backward(self, saved: list, dy: Any, need_dx: bool = True, dz: Any = None,
                 stop: int | None = None) -> tuple[Any, dict]:
        """``(dx, grads)``: back through the layers, stopping at the first one whose input gradient
        nobody needs. ``dz``: the gradient of the last layer's pre-activation (fused loss);
        ``stop``: that first layer, when the caller knows it already."""
        grads: dict = {}
        if need_dx:
            stop = 0
        elif stop is None:
            stop = self._first_backward
        last = len(self.layers) - 1
        for i in range(last, stop - 1, -1):
            layer, want_dx = self.layers[i], need_dx or i > stop
            if i == last and dz is not None:
                dy, g = layer.backward_from_logits(saved[i], dz, want_dx)
            else:
                dy, g = layer.backward(saved[i], dy, want_dx)
            grads.update(g)
        return dy, grads

    def update_state(self, saved: list) -> None:
        for layer, s in zip(self.layers, saved):
            layer.update_state(s)

    def regularization_loss(self) -> Any:
        total = 0.0
        for layer in self.layers:
            penalty = layer.regularization_loss()
            if not (isinstance(penalty, float) and penalty == 0.0):
                total = total + penalty
        return total

    def compute_gradients(self, x: Any, y: Any, backend: _backend.Backend | None = None,
                          sample_weight: Any = None) -> Step:
        """Forward and backward on one batch of device arrays, without an update: the loss (with
        the weight penalties), the predictions, the gradient of every trainable weight (penalty
        gradients included), and the saved contexts ``apply_gradients`` hands to ``update_state``.
        ``sample_weight`` (n,) weighs each sample's loss: ``sum(w * loss) / n``, as Keras."""
        backend = backend or self.backend
        xp = backend.xp
        p, saved = self.forward(x, training=True)
        weighted = {} if sample_weight is None else {"sample_weight": sample_weight}
        if self._fused:
            loss, dz = self.loss.logits_value_and_gradient(backend.ops, y, p, **weighted)
            dy = None
        else:
            loss, dy, dz = self.loss.forward(xp, y, p, **weighted), self.loss.backward(xp, y, p, **weighted), None
        penalty = self.regularization_loss()
        if not (isinstance(penalty, float) and penalty == 0.0):
            loss = loss + penalty
        trainable, first = self._trainable_plan()
        grads = self.backward(saved, dy, need_dx=False, dz=dz, stop=first)[1] if trainable else {}
        out = {}
        for w in trainable:
            g = grads[w]
            if w.regularizer is not None:
                g = g + w.regularizer.gradient(xp, w.value)
            out[w] = g
        return Step(loss, p, out, saved)

    def apply_gradients(self, grads: dict, saved: list | None = None) -> None:
        """One optimizer step from ``grads`` (consumed), then the layers' non-trainable state."""
        self.optimizer.apply(grads, self.backend)
        if saved is not None:
            self.update_state(saved)

    # -- compile ---------------------------------------------------------------------------
    def compile(self, optimizer: str | _optimizers.Optimizer = "rmsprop", loss: str | _losses.Loss | None = None,
                metrics: list[str | _metrics.Metric] | None = None) -> None:
        """Choose the optimizer, the loss and the metrics.

        Args:
            optimizer: a name (``"adam"``, ``"Adam"``, ``"sgd"``, ``"rmsprop"``) or an instance.
            loss: a name (``"mse"``, ``"sparse_categorical_crossentropy"``, or Keras's class name)
                or an ``nnx.losses.Loss``.
            metrics: a list of names (``"accuracy"``, ``"mae"``, …) or ``Metric`` instances.

        Raises:
            ValueError: an unknown name, a missing loss, or ``metrics`` not a list; nothing changes
                then (the previous optimizer and its state stay).

        >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        """
        if loss is None:
            raise ValueError("compile() needs a loss, e.g. loss='mse' or loss='sparse_categorical_crossentropy'.")
        if metrics is not None and not isinstance(metrics, (list, tuple)):
            raise ValueError(f"metrics must be a list, e.g. metrics=['accuracy']; received {metrics!r}.")
        new_optimizer = _optimizers.get(optimizer)
        new_loss = _losses.get(loss)
        specs = list(metrics or [])
        new_metrics = self._resolve_metrics(specs, new_loss)
        self.optimizer, self.loss, self._metric_specs, self.metrics = new_optimizer, new_loss, specs, new_metrics
        self._after_change()

    def _resolve_metrics(self, specs: list, loss: _losses.Loss) -> list[_metrics.Metric]:
        units = self.output_shape[-1] if self.built and self.output_shape else None
        if units is None and self.layers and hasattr(self.layers[-1], "units"):
            units = self.layers[-1].units
        resolved = [_metrics.get(m, loss, units) for m in specs]
        return _metrics.unique_names(resolved)

    @property
    def compiled(self) -> bool:
        return self.optimizer is not None and self.loss is not None

    @property
    def metrics_names(self) -> list[str]:
        """``["loss", *metric names]``, in the order ``evaluate`` returns them."""
        return ["loss", *(m.name for m in self.metrics)]

    # -- checks shared by fit / evaluate / predict ----------------------------------------
    def _require_compiled(self, what: str) -> None:
        if not self.compiled:
            raise RuntimeError(f"The model must be compiled before {what}: call compile() first, "
                               f"e.g. model.compile(optimizer='adam', loss='mse').")

    def _check_backend(self) -> _backend.Backend:
        current = _backend.get_backend()
        if self.backend is not None and self.built and self.backend != current:
            raise RuntimeError(
                f"This model lives on {self.backend.describe()}, but the current backend is "
                f"{current.describe()}. Call model.to_backend() to move it to the current backend, "
                f"or switch back with nnx.set_backend({self.backend.name!r})."
            )
        return current

    def _ensure_built(self, x: Any) -> None:
        if not self.built:
            if not self.layers:
                raise ValueError("This model has no layers; add some before using it.")
            if x.ndim < 2:
                raise ValueError(f"Expected x of shape (n, features), received shape {tuple(x.shape)}.")
            self.build(tuple(int(d) for d in x.shape[1:]))
            if self.loss is not None:
                self.metrics = self._resolve_metrics(self._metric_specs, self.loss)

    def _expected_shapes(self, x: Any) -> tuple[tuple[int, ...], tuple[int, ...], str]:
        """(sample shape, output shape, dtype) that data must match: the model's own, or for a
        model not built yet the ones it would get from ``x``, without building it (a call that
        fails validation must not leave the model built for its bad data)."""
        if self.built:
            return tuple(self.input_shape), tuple(self.output_shape), self.dtype
        if not self.layers:
            raise ValueError("This model has no layers; add some before using it.")
        if x.ndim < 2:
            raise ValueError(f"Expected x of shape (n, features), received shape {tuple(x.shape)}.")
        shape = tuple(int(d) for d in x.shape[1:])
        return shape, tuple(self.compute_output_shape(shape)), _backend.floatx()

    def _prepare(self, x: Any, y: Any, backend: _backend.Backend, what: str = "",
                 shapes: tuple | None = None) -> tuple[Any, Any]:
        """Validate and convert (x, y) once; device-resident results, or host when too large.
        Builds nothing: callers build (``_ensure_built``) once every check has passed."""
        x = _data.to_array(x, backend, f"{what}x")
        y = _data.to_array(y, backend, f"{what}y")
        input_shape, output_shape, dtype = shapes or self._expected_shapes(x)
        x = self._cast_x(x, dtype, backend, what)
        _data.check_x(x, input_shape, backend, what)
        y = _data.check_y(y, int(x.shape[0]), self.loss, output_shape, backend, what)
        y = _data.cast(y, "int64" if self.loss.sparse_labels else dtype, backend)
        if _data.is_host(y) and not self.loss.sparse_labels:
            _data.check_finite(y, backend, f"{what}y")
        if _data.is_host(x) and backend.ops.fits_in_memory(x.nbytes + y.nbytes):
            x, y = backend.from_host(x), backend.from_host(y)
        return x, y

    def _cast_x(self, x: Any, dtype: str, backend: _backend.Backend, what: str = "") -> Any:
        """x in the dtype the first layer computes on: the float ``dtype``, or, for a first layer
        that takes integer ids (``Embedding``), the ``Input``'s integer dtype (default int64), the
        ids checked by that layer."""
        first = self.layers[0] if self.layers else None
        if not getattr(first, "integer_input", False):
            return _data.cast(x, dtype, backend)
        declared = getattr(getattr(self, "_input_layer", None), "input_dtype", None)
        ids = declared if declared is not None and np.dtype(declared).kind in "iu" else "int64"
        return first.prepare_ids(x, ids, backend, f"{what}x")

    def _prepare_x(self, x: Any, backend: _backend.Backend) -> Any:
        x = _data.to_array(x, backend, "x")
        input_shape, _, dtype = self._expected_shapes(x)
        x = self._cast_x(x, dtype, backend)
        _data.check_x(x, input_shape, backend)
        self._ensure_built(x)
        if _data.is_host(x) and backend.ops.fits_in_memory(x.nbytes):
            x = backend.from_host(x)
        return x

    def _prepare_weights(self, x: Any, y: Any, sample_weight: Any, class_weight: Any, backend: _backend.Backend,
                         what: str = "") -> Any:
        """The loss weights for prepared (x, y), on x's side (host or device), or None:
        ``sample_weight`` checked, or ``class_weight`` turned into one weight per sample."""
        if class_weight is None and sample_weight is None:
            return None
        shapes = self._expected_shapes(x)
        if class_weight is not None:
            sample_weight = _data.class_weight_to_sample_weight(class_weight, y, self.loss, shapes[1], backend)
        return _data.sample_weight(sample_weight, int(x.shape[0]), shapes[2], backend, like=x, what=what)

    # -- training --------------------------------------------------------------------------
    def fit(self, x: Any, y: Any, batch_size: int | None = None, epochs: int = 1, verbose: int | str = "auto",
            callbacks: list[_callbacks.Callback] | _callbacks.Callback | None = None, validation_split: float = 0.0,
            validation_data: tuple | None = None, shuffle: bool = True, class_weight: dict | None = None,
            sample_weight: Any = None, initial_epoch: int = 0) -> _callbacks.History:
        """Train for ``epochs`` passes over (x, y) in mini-batches.

        Args:
            x: inputs, shape (n, *input_shape): a numpy array, nested lists, or an array of the
                current backend.
            y: targets: (n, units), (n,) for one unit, or integer labels (n,) for a sparse loss.
            batch_size: samples per step (None means 32).
            epochs: the epoch to stop at (epochs run: ``epochs - initial_epoch``).
            verbose: 0 silent, 1 a live progress bar, 2 one line per epoch, "auto" (1 on a
                terminal, else 2).
            callbacks: a ``Callback`` or a list of them.
            validation_split: the fraction of the samples held out for validation, taken from the
                *end* of x and y before any shuffling (as Keras: the training part is the first
                ``floor(n * (1 - validation_split))`` samples). Shuffle class-sorted data first.
            validation_data: ``(x_val, y_val)`` or ``(x_val, y_val, val_sample_weight)``; takes
                precedence over ``validation_split``.
            shuffle: reshuffle the training samples before each epoch.
            class_weight: ``{label: weight}``: each training sample's loss is multiplied by the
                weight of its class (its integer label, the argmax of a one-hot row, or a 0/1
                target). Keys must be labels of the model and cover every label in ``y``.
            sample_weight: one non-negative weight per sample, shape (n,): each sample's loss is
                multiplied by it, and the batch loss is ``sum(w * loss) / batch size`` (Keras's
                default reduction). ``validation_split`` splits it with x and y. Metrics stay
                unweighted. Not together with ``class_weight``.
            initial_epoch: the epoch to start from (for resuming).

        Returns:
            A ``History`` whose ``history`` maps "loss", the metric names and their "val_"
            versions to one float per epoch.

        Raises:
            RuntimeError: the model is not compiled, or lives on another backend.
            ValueError: bad arguments or data (wrong width, mismatched lengths, NaN or inf, labels
                out of range), before any weight changes.

        >>> history = model.fit(x, y, epochs=10, batch_size=32, validation_split=0.2)
        """
        self._require_compiled("training")
        backend = self._check_backend()
        batch_size = 32 if batch_size is None else as_int(batch_size, "batch_size")
        epochs = as_int(epochs, "epochs", minimum=0)
        initial_epoch = as_int(initial_epoch, "initial_epoch", minimum=0)
        # numbers.Real: Python and NumPy ints and floats (np.float32(0.2) too), not bools
        if isinstance(validation_split, (bool, np.bool_)) or not isinstance(validation_split, numbers.Real) \
                or not 0.0 <= float(validation_split) < 1.0:
            raise ValueError(f"validation_split must be a float in [0, 1); received {validation_split!r}.")
        if not isinstance(shuffle, (bool, np.bool_)):
            raise ValueError(f"shuffle must be True or False; received {shuffle!r}.")
        verbose = _progbar.resolve_verbose(verbose)
        _training._as_list(callbacks)  # checked here, before anything (the shuffle generator) is created
        if class_weight is not None and sample_weight is not None:
            raise ValueError("fit takes class_weight or sample_weight, not both; received both (multiply the "
                             "class weights into sample_weight instead).")
        x_all = _data.to_array(x, backend, "x")
        y_all = _data.to_array(y, backend, "y")
        w_all = None if sample_weight is None else _data.to_array(sample_weight, backend, "sample_weight")
        if validation_split and validation_data is None:
            if x_all.ndim == 0:
                raise ValueError(f"Expected x with one row per sample; received a scalar ({x_all!r}).")
            n_all = int(x_all.shape[0])
            if y_all.ndim == 0 or int(y_all.shape[0]) != n_all:
                received = "a scalar" if y_all.ndim == 0 else f"{int(y_all.shape[0])} in y"
                raise ValueError(f"x and y must have the same number of samples: {n_all} in x, received {received}.")
            split = int(math.floor(n_all * (1.0 - float(validation_split))))
            if split == 0 or split == n_all:
                raise ValueError(f"validation_split={validation_split} must leave samples for both training and "
                                 f"validation; received {n_all} samples, which it splits into {split} for training "
                                 f"and {n_all - split} for validation.")
            validation_data = (x_all[split:, ...], y_all[split:, ...])
            x_all, y_all = x_all[:split, ...], y_all[:split, ...]
            if w_all is not None:  # split with x and y, as Keras
                w_all = _data.check_weight_shape(w_all, n_all)
                validation_data, w_all = (*validation_data, w_all[split:]), w_all[:split]
        shapes = self._expected_shapes(x_all)  # the validation data must match the training data
        xt, yt = self._prepare(x_all, y_all, backend, shapes=shapes)
        if int(xt.shape[0]) == 0:
            raise ValueError("fit needs at least one sample; received x with 0 samples.")
        wt = self._prepare_weights(xt, yt, w_all, class_weight, backend)
        validation = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("validation_data must be a tuple (x_val, y_val) or (x_val, y_val, val_sample_weight).")
            xv, yv = self._prepare(validation_data[0], validation_data[1], backend, what="validation ", shapes=shapes)
            if int(xv.shape[0]) == 0:
                raise ValueError("validation_data needs at least one sample; received 0.")
            wv = validation_data[2] if len(validation_data) == 3 else None
            wv = self._prepare_weights(xv, yv, wv, None, backend, what="validation ")
            validation = _training.Batches([xv, yv] + ([] if wv is None else [wv]), batch_size, backend)
        self._ensure_built(xt)
        if self._shuffle_rng is None:
            self._shuffle_rng = _random.new_generator()
        train = _training.Batches([xt, yt] + ([] if wt is None else [wt]), batch_size, backend,
                                  rng=self._shuffle_rng if shuffle else None)
        loop = _training.Loop(self, backend, callbacks, verbose,
                              {"fit": True, "epochs": epochs, "steps": len(train), "verbose": verbose,
                               "batch_size": batch_size})
        self.history = loop.history
        return loop.fit(train, epochs, initial_epoch, validation)

    def train_on_batch(self, x: Any, y: Any, sample_weight: Any = None, class_weight: dict | None = None) -> float:
        """One optimizer step on one batch; returns its loss (weighted as in ``fit``)."""
        self._require_compiled("training")
        backend = self._check_backend()
        if class_weight is not None and sample_weight is not None:
            raise ValueError("train_on_batch takes class_weight or sample_weight, not both; received both.")
        x, y = self._prepare(x, y, backend)
        if int(x.shape[0]) == 0:
            raise ValueError("train_on_batch needs at least one sample; received 0.")
        w = self._prepare_weights(x, y, sample_weight, class_weight, backend)
        self._ensure_built(x)
        if _data.is_host(x):
            x, y = backend.from_host(x), backend.from_host(y)
            w = None if w is None else backend.from_host(w)
        loss, _ = _training.Loop(self, backend, None, 0, {}).train_step(x, y, w)
        return float(loss)

    # -- inference -------------------------------------------------------------------------
    def evaluate(self, x: Any, y: Any, batch_size: int | None = None, verbose: int | str = 0,
                 sample_weight: Any = None, return_dict: bool = False,
                 callbacks: Any = None) -> float | list[float] | dict[str, float]:
        """The loss (with weight penalties) and metrics over (x, y), in inference mode.

        Returns a float when there are no metrics, else ``[loss, *metrics]`` in the order of
        ``metrics_names``, or a dict with ``return_dict=True``. ``sample_weight`` (n,) weighs the
        loss as in ``fit``; the metrics stay unweighted.

        >>> loss, acc = model.evaluate(x_test, y_test)
        """
        self._require_compiled("evaluation")
        backend = self._check_backend()
        batch_size = 32 if batch_size is None else as_int(batch_size, "batch_size")
        verbose = _progbar.resolve_verbose(verbose)
        _training._as_list(callbacks)
        x, y = self._prepare(x, y, backend)
        if int(x.shape[0]) == 0:
            raise ValueError("evaluate needs at least one sample; received x with 0 samples.")
        w = self._prepare_weights(x, y, sample_weight, None, backend)
        self._ensure_built(x)
        loop = _training.Loop(self, backend, callbacks, verbose, {})
        logs = loop.evaluate(_training.Batches([x, y] + ([] if w is None else [w]), batch_size, backend))
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    def test_on_batch(self, x: Any, y: Any, sample_weight: Any = None,
                      return_dict: bool = False) -> float | list[float] | dict[str, float]:
        """``evaluate`` on one batch."""
        x = _data.to_array(x, self._check_backend(), "x")
        return self.evaluate(x, y, batch_size=max(1, int(x.shape[0]) if x.ndim else 1), sample_weight=sample_weight,
                             return_dict=return_dict)

    def predict(self, x: Any, batch_size: int | None = None, verbose: int | str = 0, callbacks: Any = None) -> Any:
        """Outputs for ``x``, computed batch by batch in inference mode, as an array of the
        current backend.

        >>> probabilities = model.predict(x_test)
        """
        backend = self._check_backend()
        batch_size = 32 if batch_size is None else as_int(batch_size, "batch_size")
        verbose = _progbar.resolve_verbose(verbose)
        _training._as_list(callbacks)
        x = self._prepare_x(x, backend)
        loop = _training.Loop(self, backend, callbacks, verbose, {})
        outputs = loop.predict(_training.Batches([x], batch_size, backend))
        if not outputs:
            return backend.xp.zeros((0, *self.output_shape), dtype=backend.dtype(self.dtype), device=backend.device)
        return outputs[0] if len(outputs) == 1 else backend.xp.concat(outputs, axis=0)

    def predict_on_batch(self, x: Any) -> Any:
        """The outputs for one batch ``x``."""
        backend = self._check_backend()
        x = self._prepare_x(x, backend)
        if _data.is_host(x):
            x = backend.from_host(x)
        return self.forward(x, training=False)[0]

    def __call__(self, x: Any, training: bool = False) -> Any:
        backend = self._check_backend()
        x = self._prepare_x(x, backend)
        if _data.is_host(x):
            x = backend.from_host(x)
        return self.forward(x, training=training)[0]

    # -- weights ---------------------------------------------------------------------------
    def get_weights(self) -> list[Any]:
        """Every weight as a host numpy array, layer by layer in Keras order."""
        return [w for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, weights: list[Any]) -> None:
        """Replace every weight; counts, shapes and values are checked before anything changes."""
        if isinstance(weights, (str, bytes, dict)) or not hasattr(weights, "__iter__"):
            raise TypeError(f"set_weights expects a list of {len(self.weights)} weight arrays; "
                            f"received {type(weights).__name__}.")
        weights = list(weights)
        expected = sum(len(layer.weights) for layer in self.layers)
        if len(weights) != expected:
            raise ValueError(f"Expected a list of {expected} weight arrays, received {len(weights)}.")
        checked, i = [], 0
        for layer in self.layers:
            k = len(layer.weights)
            checked.append(layer.check_weights(weights[i:i + k]))
            i += k
        for layer, hosts in zip(self.layers, checked):
            layer.set_weights(hosts)

    def check_weights(self, weights: list[Any]) -> list[Any]:
        weights = list(weights)
        out, i = [], 0
        if len(weights) != len(self.weights):
            raise ValueError(f"Expected a list of {len(self.weights)} weight arrays, received {len(weights)}.")
        for layer in self.layers:
            k = len(layer.weights)
            out += layer.check_weights(weights[i:i + k])
            i += k
        return out

    def count_params(self) -> int:
        return sum(layer.count_params() for layer in self.layers)

    def to_backend(self, name: str | _backend.Backend | None = None, device: Any = None) -> "Sequential":
        """Move the weights and optimizer state onto backend ``name`` (None: the current one)."""
        if isinstance(name, _backend.Backend):
            target = name
        else:
            target = _backend.get_backend() if name is None else _backend._create(name, device)
        if self.optimizer is not None:
            self.optimizer.to_backend(target, _backend.to_numpy)
        for layer in self.layers:
            if layer.built:
                layer.to_backend(target)
        if self.built:
            self.backend = target
        return self

    # -- config ----------------------------------------------------------------------------
    def get_config(self) -> dict:
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "layers": [_layers.serialize(layer) for layer in self.layers],
        }
        dtype = getattr(getattr(self, "_input_layer", None), "input_dtype", None)
        if dtype is not None:
            config["input_dtype"] = dtype
        return config

    @classmethod
    def from_config(cls, config: dict) -> "Sequential":
        """Same architecture with fresh weights (built on the current backend when the input shape is known)."""
        if not isinstance(config, dict):
            raise ValueError(f"A Sequential config must be a dict; received {type(config).__name__}.")
        layers = config.get("layers", [])
        if not isinstance(layers, list):
            raise ValueError(f"A Sequential config's layers must be a list; received {type(layers).__name__}.")
        model = cls(name=config.get("name"))
        if config.get("input_dtype") is not None and config.get("input_shape") is not None:
            from .layers.base import shape_tuple

            model.add(_layers.Input(shape_tuple(config["input_shape"], "input_shape"), dtype=config["input_dtype"]))
        for layer_config in layers:
            model.add(_layers.deserialize(layer_config))
        if config.get("input_shape") is not None and not model.built:
            from .layers.base import shape_tuple

            model.build(shape_tuple(config["input_shape"], "input_shape"))
        if config.get("trainable") is False:
            model.trainable = False
        return model

    def to_json(self) -> str:
        """The architecture as a JSON string (``nnx.models.model_from_json`` reads it)."""
        import json

        return json.dumps({"class_name": "Sequential", "config": self.get_config()})

    def summary(self, print_fn: Any = None, line_length: int = 72) -> None:
        """Print a Keras-style table: Layer (type), Output Shape, Param #, and the totals
        (trainable and non-trainable apart)."""
        from .summary import render

        (print_fn or print)(render(self, line_length))

    def save(self, filepath: str) -> None:
        """Save architecture, weights, compile config and optimizer state to one ``.nnx`` file."""
        from .saving import save_model

        save_model(self, filepath)

    def save_weights(self, filepath: str) -> None:
        from .saving import save_weights

        save_weights(self, filepath)

    def load_weights(self, filepath: str) -> None:
        from .saving import load_weights

        load_weights(self, filepath)

    # -- copying ---------------------------------------------------------------------------
    def __reduce__(self):
        """Pickle and ``copy.deepcopy`` carry nnx's own file format (never pickled objects)."""
        return (_from_file_bytes, (_to_file_bytes(self),))

    def __deepcopy__(self, memo):
        return _from_file_bytes(_to_file_bytes(self))

    def __repr__(self) -> str:
        return f"<Sequential name={self.name!r} layers={len(self.layers)} built={self.built}>"


def _to_file_bytes(model: Sequential) -> bytes:
    import os
    import tempfile

    if not model.built:
        import json

        return b"CONFIG" + json.dumps(model.get_config()).encode("utf-8")
    folder = tempfile.mkdtemp(prefix="nnx-copy-")
    path = os.path.join(folder, "model.nnx")
    try:
        model.save(path)
        with open(path, "rb") as f:
            return f.read()
    finally:
        if os.path.exists(path):
            os.remove(path)
        os.rmdir(folder)


def _from_file_bytes(blob: bytes) -> Sequential:
    import os
    import tempfile

    if blob.startswith(b"CONFIG"):
        import json

        return Sequential.from_config(json.loads(blob[6:].decode("utf-8")))
    from .saving import load_model

    folder = tempfile.mkdtemp(prefix="nnx-copy-")
    path = os.path.join(folder, "model.nnx")
    try:
        with open(path, "wb") as f:
            f.write(blob)
        return load_model(path)
    finally:
        if os.path.exists(path):
            os.remove(path)
        os.rmdir(folder)


def model_from_json(text: str) -> Sequential:
    """A ``Sequential`` (fresh weights) from ``model.to_json()``."""
    import json

    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"Not a model JSON string: {e}") from None
    if isinstance(config, dict) and "class_name" in config:
        if config.get("class_name") != "Sequential":
            raise ValueError(f"Expected a Sequential model JSON; received class {config.get('class_name')!r}.")
        config = config.get("config")
    return Sequential.from_config(config)


def load_model(filepath: str) -> Sequential:
    """Load a model saved with ``model.save`` (same as ``nnx.load_model``)."""
    from .saving import load_model as _load

    return _load(filepath)


_layers.registry.add(Sequential, "Sequential")
