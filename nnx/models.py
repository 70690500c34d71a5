"""``Sequential``: a chain of layers trained with mini-batch backpropagation."""
from __future__ import annotations

import math
import time
from typing import Any

from . import backend as _backend
from . import callbacks as _callbacks
from . import data as _data
from . import layers as _layers
from . import losses as _losses
from . import metrics as _metrics
from . import optimizers as _optimizers
from . import progbar as _progbar
from . import random as _random


class Sequential:
    """A linear stack of layers with Keras's ``compile`` / ``fit`` / ``evaluate`` / ``predict``.

    >>> model = nnx.Sequential([nnx.Input((64,)), nnx.Dense(128, activation="relu"),
    ...                         nnx.Dense(10, activation="softmax")])
    >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    >>> history = model.fit(x, y, epochs=10)
    """

    def __init__(self, layers: list[_layers.Layer] | None = None, name: str | None = None):
        self.name = name or _layers.base.unique_name("sequential")
        self.layers: list[_layers.Layer] = []
        self.input_shape: tuple[int, ...] | None = None
        self.built = False
        self.optimizer: _optimizers.Optimizer | None = None
        self.loss: _losses.Loss | None = None
        self.metrics: list[_metrics.Metric] = []
        self._metric_names: list[str] = []
        self.stop_training = False
        self._stop_now = False
        self._backend: _backend.Backend | None = None
        self._shuffle_rng = None
        self._fused = False
        for layer in layers or []:
            self.add(layer)

    # -- construction ----------------------------------------------------------------------
    def add(self, layer: _layers.Layer) -> None:
        """Append a layer; an ``Input`` fixes the input shape and builds the model."""
        if not isinstance(layer, _layers.Layer):
            raise TypeError(f"Sequential.add expects a Layer; received {type(layer).__name__}.")
        if isinstance(layer, _layers.Input):
            if self.layers or self.input_shape is not None:
                raise ValueError("Input must be the first entry of a Sequential model.")
            self.input_shape = layer.shape
            self._input_name = layer.name
            self.build(self.input_shape)
            return
        if any(layer is other for other in self.layers):
            raise ValueError(f"Layer {layer.name!r} is already in this model.")
        self.layers.append(layer)
        if self.built:
            self._build_layer(layer, self.layers[-2].output_shape if len(self.layers) > 1 else self.input_shape)
            self._after_build()

    def pop(self) -> _layers.Layer:
        """Remove and return the last layer."""
        if not self.layers:
            raise ValueError("There are no layers to pop.")
        layer = self.layers.pop()
        self._after_build()
        return layer

    def get_layer(self, name: str) -> _layers.Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"No layer named {name!r}; the layers are: {', '.join(l.name for l in self.layers)}.")

    def build(self, input_shape: tuple[int, ...]) -> None:
        """Create every layer's weights on the current backend, for samples of ``input_shape``."""
        self.input_shape = tuple(input_shape)
        self._backend = _backend.get_backend()
        shape = self.input_shape
        for layer in self.layers:
            self._build_layer(layer, shape)
            shape = layer.output_shape
        self.built = True
        self._after_build()

    def _build_layer(self, layer: _layers.Layer, shape: tuple[int, ...]) -> None:
        if layer.built and layer.backend != self._backend:
            layer.to_backend(self._backend)
        if not layer.built:
            layer.build(shape)
        elif tuple(layer.input_shape) != tuple(shape):
            raise ValueError(f"Layer {layer.name!r} was built for inputs {layer.input_shape}, received {shape}.")

    def _after_build(self) -> None:
        # nobody reads the input gradient of the layers up to the first one with weights
        needed = False
        for layer in self.layers:
            layer.needs_input_grad = needed
            needed = needed or bool(layer.weights)
        self._fused = self._can_fuse()

    def _can_fuse(self) -> bool:
        if self.loss is None or not self.layers or self.loss.fuses_with is None:
            return False
        last = self.layers[-1]
        return getattr(getattr(last, "activation", None), "name", None) == self.loss.fuses_with

    @property
    def output_shape(self) -> tuple[int, ...] | None:
        if not self.built:
            return None
        return self.layers[-1].output_shape if self.layers else self.input_shape

    @property
    def weights(self) -> list[Any]:
        return [w for layer in self.layers for w in layer.weights]

    @property
    def trainable_weights(self) -> list[Any]:
        return [w for layer in self.layers for w in layer.trainable_weights]

    # -- compile ---------------------------------------------------------------------------
    def compile(self, optimizer: str | _optimizers.Optimizer = "rmsprop", loss: str | _losses.Loss | None = None,
                metrics: list[str | _metrics.Metric] | None = None) -> None:
        """Choose the optimizer, loss and metrics (names or instances)."""
        if loss is None:
            raise ValueError("compile() needs a loss, e.g. loss='mse' or loss='sparse_categorical_crossentropy'.")
        self.optimizer = _optimizers.get(optimizer)
        self.loss = _losses.get(loss)
        self._metric_specs = list(metrics or [])
        self._resolve_metrics()
        self._fused = self._can_fuse()

    def _resolve_metrics(self) -> None:
        units = self.output_shape[-1] if self.built and self.output_shape else None
        if units is None and self.layers and hasattr(self.layers[-1], "units"):
            units = self.layers[-1].units
        self.metrics = [_metrics.get(m, self.loss, units) for m in self._metric_specs]
        self._metric_names = [m.name for m in self.metrics]

    @property
    def compiled(self) -> bool:
        return self.optimizer is not None and self.loss is not None

    # -- checks shared by fit / evaluate / predict ----------------------------------------
    def _require_compiled(self, what: str) -> None:
        if not self.compiled:
            raise RuntimeError(f"The model must be compiled before {what}: call compile() first, "
                               f"e.g. model.compile(optimizer='adam', loss='mse').")

    def _check_backend(self) -> _backend.Backend:
        current = _backend.get_backend()
        if self._backend is not None and self._backend != current:
            raise RuntimeError(
                f"This model lives on {self._backend.describe()}, but the current backend is "
                f"{current.describe()}. Call model.to_backend() to move it to the current backend, "
                f"or switch back with nnx.set_backend({self._backend.name!r})."
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
                self._resolve_metrics()

    def _prepare(self, x: Any, y: Any, backend: _backend.Backend, what: str = "") -> tuple[Any, Any]:
        """Validate and convert (x, y) once; device-resident results, or host when too large."""
        x = _data.to_array(x, backend, f"{what}x")
        y = _data.to_array(y, backend, f"{what}y")
        self._ensure_built(x)
        _data.check_x(x, self.input_shape, backend)
        y = _data.check_y(y, int(x.shape[0]), self.loss, self.output_shape, backend)
        x = _data.cast(x, self._dtype, backend)
        y = _data.cast(y, "int64" if self.loss.sparse_labels else self._dtype, backend)
        if _data.is_host(x) and _data.fits_on_device(x.nbytes + y.nbytes, backend):
            x, y = backend.from_host(x), backend.from_host(y)
        return x, y

    @property
    def _dtype(self) -> str:
        return self.layers[0].dtype if self.layers else _backend.floatx()

    # -- training --------------------------------------------------------------------------
    def fit(self, x: Any, y: Any, epochs: int = 1, batch_size: int = 32, shuffle: bool = True,
            validation_split: float = 0.0, validation_data: tuple[Any, Any] | None = None,
            verbose: int | str = "auto", callbacks: list[_callbacks.Callback] | None = None,
            initial_epoch: int = 0) -> _callbacks.History:
        """Train for ``epochs`` passes over (x, y) in shuffled mini-batches; returns a ``History``."""
        self._require_compiled("training")
        backend = self._check_backend()
        _check_positive_int(epochs, "epochs")
        _check_positive_int(batch_size, "batch_size")
        if not 0.0 <= validation_split < 1.0:
            raise ValueError(f"validation_split must be in [0, 1); received {validation_split!r}.")
        verbose = _progbar.resolve_verbose(verbose)
        x_all = _data.to_array(x, backend, "x")
        y_all = _data.to_array(y, backend, "y")
        if validation_split and validation_data is None:
            n_all = int(x_all.shape[0])
            if int(y_all.shape[0]) != n_all:
                raise ValueError(f"x and y must have the same number of samples: {n_all} in x, received {int(y_all.shape[0])} in y.")
            split = int(math.ceil(n_all * (1.0 - validation_split)))
            if split == 0 or split == n_all:
                raise ValueError(f"validation_split={validation_split} leaves no samples for "
                                 f"{'training' if split == 0 else 'validation'} out of {n_all}.")
            validation_data = (x_all[split:, ...], y_all[split:, ...])
            x_all, y_all = x_all[:split, ...], y_all[:split, ...]
        x, y = self._prepare(x_all, y_all, backend)
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a tuple (x_val, y_val).")
            val = self._prepare(validation_data[0], validation_data[1], backend, what="validation ")

        n = int(x.shape[0])
        steps = math.ceil(n / batch_size)
        history = _callbacks.History()
        cbs = _callbacks.CallbackList([*(callbacks or []), history], self,
                                      {"epochs": epochs, "steps": steps, "verbose": verbose, "batch_size": batch_size})
        if self._shuffle_rng is None:
            self._shuffle_rng = _random.new_generator()
        self.stop_training = self._stop_now = False
        self.history = history
        cbs.call("on_train_begin", {})
        for epoch in range(initial_epoch, epochs):
            cbs.call("on_epoch_begin", epoch, {})
            if verbose:
                print(f"Epoch {epoch + 1}/{epochs}", end="\n" if verbose == 1 else " - ", flush=True)
            bar = _progbar.Progbar(steps, verbose)
            logs, steps_done = self._run_epoch(x, y, batch_size, shuffle, backend, cbs, bar)
            if val is not None and not self._stop_now:
                val_logs = self._evaluate_arrays(*val, batch_size, backend)
                logs.update({f"val_{k}": v for k, v in val_logs.items()})
            cbs.call("on_epoch_end", epoch, logs)
            bar.update(steps_done, final=True, extra=logs)
            if self.stop_training:
                break
        cbs.call("on_train_end", {})
        return history

    def _run_epoch(self, x, y, batch_size, shuffle, backend, cbs, bar) -> tuple[dict[str, float], int]:
        """One pass over the data; returns the epoch's mean loss and metrics, and the steps run."""
        xp = backend.xp
        n = int(x.shape[0])
        steps = bar.target
        on_device = not _data.is_host(x)
        order = order_dev = None
        if shuffle:
            order = self._shuffle_rng.permutation(n)
            if on_device:
                order_dev = backend.from_host(order)  # one transfer per epoch; batches gather on the device
        sums: dict[str, Any] = {"loss": 0.0, **{name: 0.0 for name in self._metric_names}}
        metrics = [(m.name, m) for m in self.metrics]
        live_bar = bar.verbose == 1
        seen = done = 0
        for step in range(steps):
            start, stop = step * batch_size, min(n, (step + 1) * batch_size)
            if order is None:
                xb, yb = x[start:stop, ...], y[start:stop, ...]
            else:
                xb = _data.take_rows(x, order[start:stop], None if order_dev is None else order_dev[start:stop], backend)
                yb = _data.take_rows(y, order[start:stop], None if order_dev is None else order_dev[start:stop], backend)
            if not on_device:
                xb, yb = backend.from_host(xb), backend.from_host(yb)
            loss, p = self._train_step(xb, yb, backend)
            sums["loss"] = sums["loss"] + loss * (stop - start)
            for name, metric in metrics:
                sums[name] = sums[name] + metric.batch_total(xp, yb, p)
            seen, done = stop, step + 1
            if cbs.wants_batches:
                cbs.call("on_batch_end", step, _callbacks.BatchLogs(sums, seen))
                if self._stop_now:
                    break
            if live_bar:
                bar.update(done, lambda: _callbacks.BatchLogs(sums, seen))
        return {k: float(v) / max(seen, 1) for k, v in sums.items()}, done

    def _forward(self, x: Any, training: bool) -> Any:
        for layer in self.layers:
            x = layer.forward(x, training=training)
        return x

    def _train_step(self, x: Any, y: Any, backend: _backend.Backend) -> tuple[Any, Any]:
        scale = self.optimizer.gradient_scale()  # SGD: lr, folded into the loss gradient
        loss, p, params, grads = self.compute_gradients(x, y, backend, grad_scale=scale)
        self.optimizer.apply(params, grads, backend, grad_scale=scale)
        return loss, p

    def compute_gradients(self, x: Any, y: Any, backend: _backend.Backend | None = None,
                          grad_scale: float = 1.0) -> tuple[Any, Any, list, list]:
        """Forward and backward on one batch of device arrays, without an update.

        Returns (loss, predictions, trainable weights, their gradients); the gradients are
        multiplied by ``grad_scale``."""
        backend = backend or self._backend
        xp = backend.xp
        p = self._forward(x, training=True)
        if self._fused:
            loss, dz = self.loss.fused_value_and_gradient(backend, y, p, grad_scale)
        else:
            loss = self.loss.forward(xp, y, p)
        for layer in self.layers:
            penalty = layer.regularization_loss()
            if not (isinstance(penalty, float) and penalty == 0.0):
                loss = loss + penalty
        if self._fused:
            dy = self.layers[-1].backward_from_logits(dz)
            rest = self.layers[:-1]
        else:
            dy = self.loss.backward(xp, y, p)
            if grad_scale != 1.0:
                dy = dy * grad_scale
            rest = self.layers
        for layer in reversed(rest):
            dy = layer.backward(dy)
        params, grads = [], []
        for layer in self.layers:
            weights = layer.weights if layer.trainable else None
            if weights:
                params.extend(weights)
                penalty = layer.regularization_gradients()
                if penalty is None:
                    grads.extend(layer.grads)
                else:
                    grads.extend(g if r is None else g + grad_scale * r for g, r in zip(layer.grads, penalty))
        return loss, p, params, grads

    def train_on_batch(self, x: Any, y: Any) -> float:
        """One optimizer step on one batch; returns its loss."""
        self._require_compiled("training")
        backend = self._check_backend()
        x, y = self._prepare(x, y, backend)
        if _data.is_host(x):
            x, y = backend.from_host(x), backend.from_host(y)
        loss, _ = self._train_step(x, y, backend)
        return float(loss)

    # -- inference -------------------------------------------------------------------------
    def evaluate(self, x: Any, y: Any, batch_size: int = 32, verbose: int | str = 0,
                 return_dict: bool = False) -> float | list[float] | dict[str, float]:
        """The loss (and metrics) over (x, y): a float, ``[loss, *metrics]``, or a dict."""
        self._require_compiled("evaluation")
        backend = self._check_backend()
        _check_positive_int(batch_size, "batch_size")
        x, y = self._prepare(x, y, backend)
        logs = self._evaluate_arrays(x, y, batch_size, backend, verbose=_progbar.resolve_verbose(verbose))
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    def _evaluate_arrays(self, x, y, batch_size, backend, verbose: int = 0) -> dict[str, float]:
        xp = backend.xp
        n = int(x.shape[0])
        steps = math.ceil(n / batch_size)
        bar = _progbar.Progbar(steps, verbose)
        sums: dict[str, Any] = {"loss": 0.0, **{name: 0.0 for name in self._metric_names}}
        for step in range(steps):
            start, stop = step * batch_size, min(n, (step + 1) * batch_size)
            xb, yb = _data.slice_rows(x, start, stop), _data.slice_rows(y, start, stop)
            if _data.is_host(xb):
                xb, yb = backend.from_host(xb), backend.from_host(yb)
            p = self._forward(xb, training=False)
            sums["loss"] = sums["loss"] + self.loss.forward(xp, yb, p) * (stop - start)
            for metric in self.metrics:
                sums[metric.name] = sums[metric.name] + metric.batch_total(xp, yb, p)
            if verbose == 1:
                bar.update(step + 1, lambda: _callbacks.BatchLogs(sums, stop))
        reg = sum(float(layer.regularization_loss()) for layer in self.layers)
        logs = {k: float(v) / max(n, 1) for k, v in sums.items()}
        logs["loss"] += reg
        bar.update(steps, lambda: {}, final=True, extra=logs)
        return logs

    def predict(self, x: Any, batch_size: int | None = None, verbose: int | str = 0) -> Any:
        """Outputs for ``x``, computed batch by batch, as an array of the current backend."""
        backend = self._check_backend()
        batch_size = 32 if batch_size is None else batch_size
        _check_positive_int(batch_size, "batch_size")
        x = _data.to_array(x, backend, "x")
        self._ensure_built(x)
        _data.check_x(x, self.input_shape, backend)
        verbose = _progbar.resolve_verbose(verbose)
        n = int(x.shape[0])
        steps = math.ceil(n / batch_size)
        bar = _progbar.Progbar(steps, verbose)
        outputs = []
        for step in range(steps):
            xb = _data.slice_rows(x, step * batch_size, min(n, (step + 1) * batch_size))
            xb = backend.from_host(_data.cast(xb, self._dtype, backend)) if _data.is_host(xb) else _data.cast(xb, self._dtype, backend)
            outputs.append(self._forward(xb, training=False))
            if verbose == 1:
                bar.update(step + 1)
        bar.update(steps, final=True)
        if not outputs:
            return backend.xp.zeros((0, *self.output_shape), dtype=backend.dtype(self._dtype), device=backend.device)
        return outputs[0] if len(outputs) == 1 else backend.xp.concat(outputs, axis=0)

    def __call__(self, x: Any, training: bool = False) -> Any:
        backend = self._check_backend()
        x = _data.to_array(x, backend, "x")
        self._ensure_built(x)
        if _data.is_host(x):
            x = backend.from_host(_data.cast(x, self._dtype, backend))
        return self._forward(x, training=training)

    # -- weights ---------------------------------------------------------------------------
    def get_weights(self) -> list[Any]:
        """Every weight as a host numpy array, layer by layer in Keras order."""
        return [w for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, weights: list[Any]) -> None:
        """Replace every weight; counts and shapes are checked before anything changes."""
        expected = sum(len(layer.weights) for layer in self.layers)
        if len(weights) != expected:
            raise ValueError(f"Expected a list of {expected} weight arrays, received {len(weights)}.")
        shapes = [tuple(w.shape) for w in self.weights]
        for i, (w, shape) in enumerate(zip(weights, shapes)):
            if tuple(_backend.to_numpy(w).shape) != shape:
                raise ValueError(f"Weight {i} expects shape {shape}, received {tuple(_backend.to_numpy(w).shape)}.")
        i = 0
        for layer in self.layers:
            k = len(layer.weights)
            layer.set_weights(weights[i:i + k])
            i += k

    def count_params(self) -> int:
        return sum(layer.count_params() for layer in self.layers)

    def to_backend(self, name: str | None = None, device: Any = None) -> "Sequential":
        """Move the weights and optimizer state onto backend ``name`` (None: the current one)."""
        target = _backend.get_backend() if name is None else _backend._create(name, device)
        if self.optimizer is not None:
            self.optimizer.to_backend(target, _backend.to_numpy)
        for layer in self.layers:
            if layer.built:
                layer.to_backend(target)
        if self.built:
            self._backend = target
        return self

    @property
    def backend(self) -> _backend.Backend | None:
        """The backend this model's weights live on."""
        return self._backend

    # -- config ----------------------------------------------------------------------------
    def get_config(self) -> dict:
        return {
            "name": self.name,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "layers": [_layers.serialize(layer) for layer in self.layers],
        }

    @classmethod
    def from_config(cls, config: dict) -> "Sequential":
        """Same architecture with fresh weights (built on the current backend when the input shape is known)."""
        model = cls(name=config.get("name"))
        for layer_config in config.get("layers", []):
            model.add(_layers.deserialize(layer_config))
        if config.get("input_shape") is not None:
            model.build(tuple(config["input_shape"]))
        return model

    def summary(self, print_fn: Any = None, line_length: int = 72) -> None:
        """Print a Keras-style table: Layer (type), Output Shape, Param #, and the totals."""
        from .summary import render

        text = render(self, line_length)
        (print_fn or print)(text)

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

    def __repr__(self) -> str:
        return f"<Sequential name={self.name!r} layers={len(self.layers)} built={self.built}>"


def _check_positive_int(value: Any, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{what} must be a positive int; received {value!r}.")
