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
from . import distributed as _distributed
from . import layers as _layers
from . import losses as _losses
from . import metrics as _metrics
from . import ops as _ops
from . import optimizers as _optimizers
from . import progbar as _progbar
from . import random as _random
from . import registry as _registry
from . import training as _training
from .layers.base import Layer, as_int


def _broken_contract(layer: Any, method: str, expected: str, received: Any) -> TypeError:
    """The error for a layer whose ``forward`` or ``backward`` does not return the pair the layer
    contract asks for (README, "Writing a layer")."""
    what = type(received).__name__
    if isinstance(received, tuple):
        what = f"a tuple of {len(received)}"
    elif hasattr(received, "shape"):
        what = f"an array of shape {tuple(received.shape)}"
    return TypeError(f"Layer {layer.name!r} ({type(layer).__name__}): {method} must return the pair {expected}; "
                     f"received {what}.")


# methods set on an instance that replace what nnx's own code would run
_LAYER_HOOKS = ("backward", "backward_from_logits", "backward_pooled")
_MODEL_HOOKS = ("compute_gradients", "_gradients", "backward", "_backward", "apply_gradients")


def _hooked(obj: Any, names: tuple[str, ...]) -> bool:
    """Whether a method of ``names`` was set on ``obj`` itself (a hook replacing the class's)."""
    own = getattr(obj, "__dict__", None)
    return bool(own) and any(name in own for name in names)


def _keeps_outputs(layer: Layer) -> bool:
    """Whether ``layer``'s backward leaves the arrays its forward returned as they were: nnx's own
    layers with nnx's own activations do, with no backward set on the instance (a model of such
    layers too); a user's layer or activation is not assumed to."""
    if type(layer) is Sequential:
        return not _hooked(layer, _MODEL_HOOKS) and all(_keeps_outputs(inner) for inner in layer._layers)
    if not _registry.builtin(type(layer)) or _hooked(layer, _LAYER_HOOKS):
        return False
    act = getattr(layer, "activation", None)
    return act is None or (_registry.builtin(type(act)) and not _hooked(act, ("forward", "backward")))


class Step(NamedTuple):
    """What ``compute_gradients`` returns: the batch loss (regularization included), the
    predictions, the gradients keyed by weight record, and each layer's saved context (for a
    convolution and the max pooling after it, run as one, the pair's context at the
    convolution's index and None at the pooling's).

    >>> loss, predictions, grads, saved = model.compute_gradients(x, y)
    """

    loss: Any
    predictions: Any
    grads: dict
    saved: list


class Sequential(Layer):
    """A linear stack of layers with Keras's ``compile`` / ``fit`` / ``evaluate`` / ``predict``.

    Args:
        layers: the layers, first to last. Defaults to None (an empty model; ``add`` layers
            later). An ``nnx.Input`` first (or ``input_shape=`` on the first layer) builds the
            model at once; otherwise it builds on the first data it sees.
        name: the model's name. Defaults to a unique ``"sequential"``, ``"sequential_1"``, …
        trainable: False freezes every layer. Defaults to True.

    Raises:
        TypeError: an entry of ``layers`` that is not a ``Layer``.
        ValueError: an ``Input`` that is not first, or a layer given twice.

    A ``Sequential`` is itself a layer, so it can be a layer of another ``Sequential``.

    >>> model = nnx.Sequential([nnx.Input((64,)), nnx.Dense(128, activation="relu"),
    ...                         nnx.Dense(10, activation="softmax")])
    >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    >>> history = model.fit(x, y, epochs=10)
    """

    def __init__(self, layers: list[Layer] | None = None, name: str | None = None, trainable: bool = True):
        self._layers: list[Layer] = []
        super().__init__(name=name, trainable=trainable)
        self.optimizer: _optimizers.Optimizer | None = None
        self.loss: _losses.Loss | None = None
        self.metrics: list[_metrics.Metric] = []
        self._metric_specs: list[Any] = []
        self.jit_compile = False
        self.stop_training = False
        self._stop_now = False
        self._shuffle_rng = None
        self._dropout_rng: _random.Stream | None = None  # drawn at build; model files keep its state
        self._fused = False
        self._stateful: list[int] = []
        self._pooled: set[int] = set()
        self._planned: list = []
        self.history = None
        if isinstance(layers, Layer):
            raise TypeError(f"Sequential expects a list of layers; received a single {type(layers).__name__} "
                            f"(write Sequential([layer])).")
        for layer in layers or []:
            self.add(layer)

    @property
    def layers(self) -> list[Layer]:
        """The layers, in order: a new list at each access, as Keras's (changing it changes
        nothing: change the model with ``add`` and ``pop``)."""
        return list(self._layers)

    # -- construction ----------------------------------------------------------------------
    def add(self, layer: Layer) -> None:
        """Append a layer on top of the stack. An ``Input`` (or a first layer given
        ``input_shape=``) builds the model; a layer added to a built model is built at once.

        Args:
            layer: the ``nnx.layers.Layer`` to append (a ``Sequential`` too).

        Raises:
            TypeError: ``layer`` is not a Layer.
            ValueError: an ``Input`` after other layers, a layer already in the model or one with
                the name of a layer in it, or a layer built for another input shape; the model is
                unchanged.

        >>> model = nnx.Sequential(); model.add(nnx.Input(4)); model.add(nnx.Dense(2))
        """
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add expects a Layer; received {type(layer).__name__}.")
        if isinstance(layer, _layers.Input):
            if self._layers or self.input_shape is not None:
                raise ValueError("Input must be the first entry of a Sequential model.")
            self._input_layer = layer
            self.build(layer.shape)
            return
        if layer is self or any(layer is other for other in self._layers):
            raise ValueError(f"Layer {layer.name!r} is already in this model.")
        if any(other.name == layer.name for other in self._layers):
            raise ValueError(f"All layers of a Sequential model must have unique names, as in Keras: {layer.name!r} "
                             f"is already the name of a layer in this model; received another layer of that name. "
                             f"Give it another name (name=...).")
        if not self._layers and not self.built and layer._declared_input_shape is not None:
            self._layers.append(layer)
            self.build(layer._declared_input_shape)
            return
        self._layers.append(layer)
        if self.built:
            try:
                self._build_layer(layer, self._layers[-2].output_shape if len(self._layers) > 1 else self.input_shape)
            except Exception:
                self._layers.pop()
                raise
        self._after_change()

    def pop(self) -> Layer:
        """Remove and return the last layer.

        Returns:
            The layer removed.

        Raises:
            ValueError: the model has no layers.

        >>> model.pop()
        """
        if not self._layers:
            raise ValueError("There are no layers to pop.")
        layer = self._layers.pop()
        self._after_change()
        return layer

    def get_layer(self, name: str | None = None, index: int | None = None) -> Layer:
        """A layer by ``name`` or by ``index`` (its position in ``layers``, negative from the end).

        Args:
            name: the layer's name. Defaults to None.
            index: its position in ``model.layers``. Defaults to None. Give exactly one.

        Returns:
            The layer.

        Raises:
            ValueError: both or neither given, no layer of that name, an index out of range.

        >>> model.get_layer("dense_1"); model.get_layer(index=-1)
        """
        if (name is None) == (index is None):
            raise ValueError("get_layer needs exactly one of name= or index=.")
        if index is not None:
            i = as_int(index, "index", minimum=-len(self._layers)) if self._layers else None
            if i is None or i >= len(self._layers):
                raise ValueError(f"index {index!r} is out of range for a model of {len(self._layers)} layers.")
            return self._layers[i]
        for layer in self._layers:
            if layer.name == name:
                return layer
        raise ValueError(f"No layer named {name!r}; the layers are: {', '.join(l.name for l in self._layers)}.")

    def build(self, input_shape: tuple[int, ...]) -> None:
        """Create every layer's weights on the current backend in the current floatx, for samples
        of ``input_shape``, and draw the model's dropout stream from the seed. ``fit``,
        ``evaluate`` and ``predict`` build an unbuilt model from their data; call ``build`` to
        build it before (for ``summary`` or ``save``).

        Args:
            input_shape: the shape of one sample, without the batch axis.

        Raises:
            ValueError: a layer that cannot take inputs of that shape.

        >>> model = nnx.Sequential([nnx.Dense(8), nnx.Dense(1)]); model.build((4,))
        """
        input_shape = tuple(input_shape)
        backend = _backend.get_backend()
        shape = input_shape
        for layer in self._layers:
            self._build_layer(layer, shape, backend)
            shape = layer.output_shape
        self.input_shape = input_shape
        self.backend = backend
        self.dtype = self._layers[0].dtype if self._layers else _backend.floatx()
        if self._dropout_rng is None:
            self._dropout_rng = _random.Stream()
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
        last = self._layers[-1] if self._layers else None
        act = last.output_activation if last is not None else None
        self._fused = bool(self.loss is not None and act is not None and self.loss.fuses_with(act))
        # the layers with non-trainable state to update after a step (the others' update_state does nothing)
        self._stateful = [i for i, layer in enumerate(self._layers) if type(layer).update_state is not Layer.update_state]
        # a layer and the max pooling after it that run as one: the activation and the bias on the
        # pooled array (``forward_pooled``); the pooling is never a pair's first layer
        pooled: set[int] = set()
        for i in range(len(self._layers) - 1):
            if i - 1 not in pooled and hasattr(self._layers[i], "pools_with") and self._layers[i].pools_with(self._layers[i + 1]):
                pooled.add(i)
        self._pooled = pooled
        self._planned = list(self._layers)

    def _deferrable(self) -> tuple:
        """The layers whose kernel gradients may stay ``nnx.ops.DeferredMatmul`` products until
        the update (``fit`` asks again after its callbacks have run, so that a change they make
        takes effect at the next step): those whose class says they can
        (``Layer.defers_gradients``) with their class's own backward (not one set on the class
        or the instance since), with only nnx's own layers and activations before them, which
        leave what their forward returned untouched (a product reads its layer's input after
        they have run their backward). None (an empty tuple) for a subclass, or an instance,
        with its own ``compute_gradients``, ``backward`` or ``apply_gradients``: that code may
        work on the gradients."""
        cls = type(self)
        if (cls is not Sequential and any(getattr(cls, name) is not getattr(Sequential, name) for name in _MODEL_HOOKS)) \
                or _hooked(self, _MODEL_HOOKS):
            return ()
        out = []
        for layer in self._layers:
            if layer.defers_gradients and layer._backward_unchanged():
                out.append(layer)
            if not _keeps_outputs(layer):
                break
        return tuple(out)

    def _plan(self) -> set[int]:
        """The pooled pairs, recomputed (with the stateful layers) when ``layers`` was changed in
        place, or a pair's layer (its activation) no longer allows it, since they were."""
        layers, pooled = self._layers, self._pooled
        if self._planned != layers or (pooled and any(not layers[i].pools_with(layers[i + 1]) for i in pooled)):
            self._after_change()
        return self._pooled

    def _random_state(self) -> tuple:
        """What ``_set_random_state`` needs to undo a refused ``fit``: the shuffle generator and
        the dropout stream."""
        rng, dropout = self._shuffle_rng, self._dropout_rng
        return (rng, None if rng is None else rng.bit_generator.state,
                None if dropout is None else dropout.state())

    def _set_random_state(self, saved: tuple) -> None:
        rng, state, dropout = saved
        if rng is not None:
            rng.bit_generator.state = state
        self._shuffle_rng = rng
        if dropout is not None and self._dropout_rng is not None:
            self._dropout_rng.set_state(dropout)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for layer in self._layers:
            shape = layer.compute_output_shape(shape)
        return shape

    @property
    def output_shape(self) -> tuple[int, ...] | None:
        if not self.built:
            return None
        return self._layers[-1].output_shape if self._layers else self.input_shape

    @property
    def trainable(self) -> bool:
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        self._trainable = bool(value)
        for layer in getattr(self, "_layers", []):
            layer.trainable = value
        if hasattr(self, "_fused"):
            self._after_change()

    @property
    def weights(self) -> list[Any]:
        return [w for layer in self._layers for w in layer.weights]

    @property
    def trainable_weights(self) -> list[Any]:
        return [w for layer in self._layers for w in layer.trainable_weights] if self.trainable else []

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
        return bool(self._layers) and bool(getattr(self._layers[0], "integer_input", False))

    def prepare_ids(self, x: Any, dtype: str, backend: _backend.Backend, what: str = "x") -> Any:
        """Integer ids for a model whose first layer takes them (an ``Embedding``).

        Args:
            x: the ids.
            dtype: the integer dtype name.
            backend: the backend they go to.
            what: how error messages name ``x``.

        >>> ids = model.prepare_ids([[1, 2]], "int64", model.backend)
        """
        return self._layers[0].prepare_ids(x, dtype, backend, what)

    @property
    def _first_backward(self) -> int:
        """The first layer with trainable weights (read at each step: ``trainable`` may change)."""
        return self._trainable_plan()[1]

    def _trainable_plan(self) -> tuple[list, int]:
        """The trainable weight records and the index of the first layer holding one, in one pass."""
        weights: list = []
        first = len(self._layers)
        if self._trainable:
            for i, layer in enumerate(self._layers):
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
        """The model's output for a batch, through every layer.

        Args:
            x: a batch of inputs, an array of the model's backend.
            training: run the layers in training mode (Dropout drops, with masks from the
                model's own stream) and keep what backward needs. Defaults to False.

        Returns:
            ``(y, saved)``: the output, and each layer's saved context (None in inference, where
            nothing is kept).

        >>> y, saved = model.forward(x, training=True)
        """
        layers, pooled = self._layers, self._plan()
        if not training:
            i = 0
            while i < len(layers):
                if i in pooled:  # a layer and the max pooling after it, as one (``pools_with``)
                    x = layers[i].forward_pooled(x, layers[i + 1], False)[0]
                    i += 2
                else:
                    out = layers[i].forward(x, training=False)
                    if not isinstance(out, (tuple, list)) or len(out) != 2:
                        raise _broken_contract(layers[i], "forward", "(y, saved)", out)
                    x = out[0]
                    i += 1
            return x, None
        token = None
        # layers (Dropout) draw from this model's stream: ``nnx.random.activate``, through its
        # context variable directly (the step's forward pass runs it once per batch)
        if self._dropout_rng is not None and _random._active.get() is None:
            token = _random._active.set(self._dropout_rng)
        try:
            saved = []
            i = 0
            while i < len(layers):
                if i in pooled:
                    x, s = layers[i].forward_pooled(x, layers[i + 1], True)
                    saved += [s, None]  # the pair's context is kept at the first of the two
                    i += 2
                else:
                    out = layers[i].forward(x, training=True)
                    if not isinstance(out, (tuple, list)) or len(out) != 2:
                        raise _broken_contract(layers[i], "forward", "(y, saved)", out)
                    x, s = out
                    saved.append(s)
                    i += 1
        finally:
            if token is not None:
                _random._active.reset(token)
        return x, saved

    def backward(self, saved: list, dy: Any, need_dx: bool = True, dz: Any = None,
                 stop: int | None = None) -> tuple[Any, dict]:
        """Back through the layers, stopping at the first one whose input gradient nobody needs.

        Args:
            saved: what ``forward(x, training=True)`` returned as its second value.
            dy: the gradient of the loss with respect to the output (None when ``dz`` is given).
            need_dx: whether the input gradient is wanted (a model nested in another: yes).
                Defaults to True.
            dz: the gradient of the last layer's pre-activation, when the loss fused with the
                output activation. Defaults to None.
            stop: the first layer with trainable weights, when the caller knows it already.

        Returns:
            ``(dx, grads)``: the input gradient (None when ``need_dx`` is false) and a dict from
            each trainable weight record to its gradient.

        >>> dx, grads = model.backward(saved, dy)
        """
        return self._backward(saved, dy, need_dx, dz, stop, ())

    def _backward(self, saved: list, dy: Any, need_dx: bool, dz: Any, stop: int | None,
                  deferring: tuple) -> tuple[Any, dict]:
        """``backward``; the layers in ``deferring`` (``_deferrable``) may give their kernels'
        gradients as ``nnx.ops.DeferredMatmul`` products (``nnx.ops.DEFERRING`` set around each)."""
        grads: dict = {}
        if need_dx:
            stop = 0
        elif stop is None:
            stop = self._first_backward
        layers, pooled = self._layers, self._pooled  # as the forward pass that saved ``saved`` planned
        last = len(layers) - 1
        # the switch starts off, and its token is taken before the loop: an interrupt between the
        # two leaves it off, as it was (``DEFERRING`` is only ever set here)
        token = _ops.DEFERRING.set(False) if deferring else None
        now = False
        try:
            for i in range(last, stop - 1, -1):
                layer, want_dx = layers[i], need_dx or i > stop
                if i - 1 in pooled:  # the pooling of a pair: its backward runs in the layer before it
                    continue
                if deferring and (layer in deferring) is not now:  # set when it changes (once, usually)
                    now = not now
                    _ops.DEFERRING.set(now)
                if i in pooled:
                    dy, g = layer.backward_pooled(saved[i], dy, layers[i + 1], want_dx)
                elif i == last and dz is not None:
                    dy, g = layer.backward_from_logits(saved[i], dz, want_dx)
                else:
                    out = layer.backward(saved[i], dy, want_dx)
                    if not isinstance(out, (tuple, list)) or len(out) != 2 or not isinstance(out[1], dict):
                        raise _broken_contract(layer, "backward", "(dx, grads) with grads a dict", out)
                    dy, g = out
                grads.update(g)
        finally:
            if token is not None:
                _ops.DEFERRING.reset(token)
        return dy, grads

    def update_state(self, saved: list) -> None:
        """Update every layer's non-trainable state after the optimizer step.

        Args:
            saved: what ``forward(x, training=True)`` returned as its second value.

        >>> model.update_state(step.saved)
        """
        for i in self._stateful:  # as planned by the forward pass that saved ``saved``
            self._layers[i].update_state(saved[i])

    def regularization_loss(self) -> Any:
        """The sum of every layer's weight penalties (the float 0.0 when there are none).

        Returns:
            A 0-d array of the model's backend, or 0.0.

        >>> float(model.regularization_loss())
        """
        total = 0.0
        for layer in self._layers:
            penalty = layer.regularization_loss()
            if not (isinstance(penalty, float) and penalty == 0.0):
                total = total + penalty
        return total

    def compute_gradients(self, x: Any, y: Any, backend: _backend.Backend | None = None,
                          sample_weight: Any = None) -> Step:
        """Forward and backward on one batch of device arrays, without an update.

        Args:
            x: a batch of inputs, an array of the model's backend in the model's dtype.
            y: the batch's targets, in the layout the loss expects (as ``fit`` prepares them).
            backend: the backend to compute on. Defaults to None: the model's.
            sample_weight: None, or one weight per sample (n,) of the model's dtype on the same
                device: the loss is ``sum(sample_weight * loss) / n``, as Keras.

        Returns:
            A ``Step``: the loss (weight penalties included), the predictions, the gradient of
            every trainable weight (penalty gradients included), and the saved contexts
            ``apply_gradients`` hands to ``update_state``.

        >>> step = model.compute_gradients(nnx.asarray(x), nnx.asarray(y)); model.apply_gradients(step.grads)
        """
        return self._gradients(x, y, backend or self.backend, sample_weight, ())

    def _gradients(self, x: Any, y: Any, backend: _backend.Backend, sample_weight: Any,
                   deferring: tuple) -> Step:
        """``compute_gradients``; the layers in ``deferring`` (``_deferrable``, for ``fit``'s step)
        may give ``nnx.ops.DeferredMatmul`` products, for an optimizer that consumes them
        (``takes_deferred``)."""
        if self.loss is None:
            self._require_compiled("computing gradients")
        xp = backend.xp
        p, saved = self.forward(x, training=True)
        weighted = {} if sample_weight is None else {"sample_weight": sample_weight}  # a user's loss may not take it
        if self._fused:
            loss, dz = self.loss.logits_value_and_gradient(backend.ops, y, p, **weighted)
            dy = None
        else:
            loss, dy, dz = self.loss.forward(xp, y, p, **weighted), self.loss.backward(xp, y, p, **weighted), None
        penalty = self.regularization_loss()
        if not (isinstance(penalty, float) and penalty == 0.0):
            loss = loss + penalty
        trainable, first = self._trainable_plan()
        if not trainable:
            grads = {}
        elif deferring:
            grads = self._backward(saved, dy, False, dz, first, deferring)[1]
        else:  # through ``backward``, which a subclass may override
            grads = self.backward(saved, dy, need_dx=False, dz=dz, stop=first)[1]
        if len(grads) == len(trainable):  # every gradient is of a trainable weight (the usual case)
            for w in trainable:
                if w.regularizer is not None or w not in grads:
                    break
            else:
                return Step(loss, p, grads, saved)
        out = {}
        for w in trainable:
            g = grads.get(w)
            if g is None:
                raise ValueError(f"A layer's backward returned no gradient for its trainable weight {w.path!r}: "
                                 f"grads must map every weight in the layer's trainable_weights to its gradient.")
            if w.regularizer is not None:
                g = backend.ops.materialize(g) + w.regularizer.gradient(xp, w.value)
            out[w] = g
        return Step(loss, p, out, saved)

    def apply_gradients(self, grads: dict, saved: list | None = None) -> None:
        """One optimizer step from ``grads``, then the layers' non-trainable state.

        Args:
            grads: a dict from weight record to gradient, as ``compute_gradients`` returns it;
                consumed (the update may overwrite the arrays).
            saved: the saved contexts of that step, for ``update_state``. Defaults to None (no
                state update).

        >>> model.apply_gradients(step.grads, step.saved)
        """
        if self.optimizer is None:
            self._require_compiled("applying gradients")
        self.optimizer.apply(grads, self.backend)
        if saved is not None:
            self.update_state(saved)

    # -- compile ---------------------------------------------------------------------------
    def compile(self, optimizer: str | _optimizers.Optimizer = "rmsprop", loss: str | _losses.Loss | None = None,
                metrics: list[str | _metrics.Metric] | None = None, jit_compile: bool = False) -> None:
        """Choose the optimizer, the loss and the metrics.

        Args:
            optimizer: a name (``"adam"``, ``"Adam"``, ``"sgd"``, ``"rmsprop"``) or an instance.
            loss: a name (``"mse"``, ``"sparse_categorical_crossentropy"``, or Keras's class name)
                or an ``nnx.losses.Loss``.
            metrics: a list of names (``"accuracy"``, ``"mae"``, …) or ``Metric`` instances.
            jit_compile: on the cupy backend, ``fit`` records its training step once as a CUDA
                graph and replays it for each batch: one launch per step instead of dozens,
                for models whose step is short (see ``nnx.training.CapturedSteps``). Steps
                that draw random numbers (Dropout) cannot be recorded: ``fit`` raises
                ``ValueError`` before training. Other backends run step by step, with a
                warning. Defaults to False.

        Raises:
            ValueError: an unknown name, a missing loss, or ``metrics`` not a list; nothing changes
                then (the previous optimizer and its state stay).

        >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        """
        if loss is None:
            raise ValueError("compile() needs a loss, e.g. loss='mse' or loss='sparse_categorical_crossentropy'.")
        if metrics is not None and not isinstance(metrics, (list, tuple)):
            raise ValueError(f"metrics must be a list, e.g. metrics=['accuracy']; received {metrics!r}.")
        if not isinstance(jit_compile, bool):
            raise ValueError(f"jit_compile must be True or False; received {jit_compile!r}.")
        new_optimizer = _optimizers.get(optimizer)
        new_loss = _losses.get(loss)
        specs = list(metrics or [])
        new_metrics = self._resolve_metrics(specs, new_loss)
        self.optimizer, self.loss, self._metric_specs, self.metrics = new_optimizer, new_loss, specs, new_metrics
        self.jit_compile = jit_compile
        self._after_change()

    def _resolve_metrics(self, specs: list, loss: _losses.Loss) -> list[_metrics.Metric]:
        units = self.output_shape[-1] if self.built and self.output_shape else None
        if units is None and self._layers and hasattr(self._layers[-1], "units"):
            units = self._layers[-1].units
        resolved = [_metrics.get(m, loss, units) for m in specs]
        return _metrics.unique_names(resolved)

    @property
    def compiled(self) -> bool:
        """Whether ``compile`` has given the model an optimizer and a loss."""
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
            if not self._layers:
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
        if not self._layers:
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
        x, given = self._cast_x(x, dtype, backend, what), x
        _data.check_x(x, input_shape, backend, what, before=given)
        y = _data.check_y(y, int(x.shape[0]), self.loss, output_shape, backend, what)
        y, given = _data.cast(y, "int64" if self.loss.sparse_labels else dtype, backend), y
        if _data.is_host(y) and not self.loss.sparse_labels:
            _data.check_finite(y, backend, f"{what}y", before=given)
        if _data.is_host(x) and backend.ops.fits_in_memory(x.nbytes + y.nbytes):
            x, y = backend.from_host(x), backend.from_host(y)
        return x, y

    def _cast_x(self, x: Any, dtype: str, backend: _backend.Backend, what: str = "") -> Any:
        """x in the dtype the first layer computes on: the float ``dtype``, or, for a first layer
        that takes integer ids (``Embedding``), the ``Input``'s integer dtype (default int64), the
        ids checked by that layer."""
        first = self._layers[0] if self._layers else None
        if not getattr(first, "integer_input", False):
            return _data.cast(x, dtype, backend)
        declared = getattr(getattr(self, "_input_layer", None), "input_dtype", None)
        ids = declared if declared is not None and np.dtype(declared).kind in "iu" else "int64"
        return first.prepare_ids(x, ids, backend, f"{what}x")

    def _prepare_x(self, x: Any, backend: _backend.Backend) -> Any:
        x = _data.to_array(x, backend, "x")
        input_shape, _, dtype = self._expected_shapes(x)
        x, given = self._cast_x(x, dtype, backend), x
        _data.check_x(x, input_shape, backend, before=given)
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
                target). Keys must be labels of the model; a label without one weighs 1, as in
                Keras.
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
        before = self._random_state(), self.optimizer.iterations
        if self._shuffle_rng is None:
            self._shuffle_rng = _random.new_generator()
        train = _training.Batches([xt, yt] + ([] if wt is None else [wt]), batch_size, backend,
                                  rng=self._shuffle_rng if shuffle else None)
        loop = _distributed.loop_type()(self, backend, callbacks, verbose,
                              {"fit": True, "epochs": epochs, "steps": len(train), "verbose": verbose,
                               "batch_size": batch_size})
        self.history = loop.history
        try:
            return loop.fit(train, epochs, initial_epoch, validation)
        except (ValueError, TypeError):  # overflow, a metric or a layer of one's own refused by the first step
            if self.optimizer.iterations == before[1]:  # refused before the first step: as if never called
                self._set_random_state(before[0])
            raise

    def train_on_batch(self, x: Any, y: Any, sample_weight: Any = None, class_weight: dict | None = None,
                       return_dict: bool = False) -> float | list[float] | dict[str, float]:
        """One optimizer step on one batch.

        Args:
            x: the batch's inputs (numpy array, nested lists or an array of the current backend).
            y: its targets, as for ``fit``.
            sample_weight: one non-negative weight per sample, as for ``fit``. Defaults to None.
            class_weight: ``{label: weight}``, as for ``fit``; not with ``sample_weight``.
                Defaults to None.
            return_dict: return ``{name: value}`` instead of a list. Defaults to False.

        Returns:
            As Keras: the batch's loss before the step (weighted, penalties included) as a float
            when no metrics were compiled, else ``[loss, *metrics]`` in ``metrics_names`` order
            (the metrics of the predictions the step's gradients came from), or a dict.

        Raises:
            RuntimeError: the model is not compiled, or lives on another backend.
            ValueError: bad data or weights (as ``fit``), before any weight changes.

        >>> loss = model.train_on_batch(x[:32], y[:32])
        """
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
        loop = _training.Loop(self, backend, None, 0, {})
        loss, p = loop.train_step(x, y, w)
        if not (self.metrics or return_dict):
            return float(loss)
        sums = loop.new_sums(True)
        sums.add(loss, y, p, int(x.shape[0]))
        logs = sums.means()
        return logs if return_dict else [logs[k] for k in self.metrics_names]

    # -- inference -------------------------------------------------------------------------
    def evaluate(self, x: Any, y: Any, batch_size: int | None = None, verbose: int | str = 0,
                 sample_weight: Any = None, return_dict: bool = False,
                 callbacks: Any = None) -> float | list[float] | dict[str, float]:
        """The loss (with weight penalties) and metrics over (x, y), in inference mode.

        Args:
            x: inputs (numpy array, nested lists or an array of the current backend).
            y: targets, as for ``fit``.
            batch_size: samples per batch. Defaults to None, which means 32.
            verbose: 0 silent, 1 a progress bar, 2 one line, ``"auto"`` (1 on a terminal, else
                2). Defaults to 0.
            sample_weight: one non-negative weight per sample, shape (n,): the loss is
                ``sum(w * loss) / n`` as in ``fit``; the metrics stay unweighted. Defaults to
                None.
            return_dict: return ``{name: value}`` instead of a list. Defaults to False.
            callbacks: a ``Callback`` or a list of them (their ``on_test_*`` hooks run).
                Defaults to None.

        Returns:
            A float when there are no metrics, else ``[loss, *metrics]`` in the order of
            ``metrics_names``, or a dict with ``return_dict=True``.

        Raises:
            RuntimeError: the model is not compiled, or lives on another backend.
            TypeError: ``return_dict`` is not a bool.
            ValueError: bad arguments, data or weights; or a loss or metric that is NaN or inf
                although the data and the weights are finite (the data overflows the model's
                float type).

        >>> loss, acc = model.evaluate(x_test, y_test)
        """
        self._require_compiled("evaluation")
        backend = self._check_backend()
        if not isinstance(return_dict, (bool, np.bool_)):
            raise TypeError(f"return_dict must be True or False; received {return_dict!r}.")
        batch_size = 32 if batch_size is None else as_int(batch_size, "batch_size")
        verbose = _progbar.resolve_verbose(verbose)
        _training._as_list(callbacks)
        x, y = self._prepare(x, y, backend)
        if int(x.shape[0]) == 0:
            raise ValueError("evaluate needs at least one sample; received x with 0 samples.")
        w = self._prepare_weights(x, y, sample_weight, None, backend)
        self._ensure_built(x)
        loop = _distributed.loop_type()(self, backend, callbacks, verbose, {})
        logs = loop.evaluate(_training.Batches([x, y] + ([] if w is None else [w]), batch_size, backend))
        if not all(math.isfinite(v) for v in logs.values()):
            error = _data.overflow_error(self, backend, "The loss or a metric", {"x": x, "y": y})
            if error is not None:
                raise error
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    def test_on_batch(self, x: Any, y: Any, sample_weight: Any = None,
                      return_dict: bool = False) -> float | list[float] | dict[str, float]:
        """``evaluate`` on one batch, in inference mode.

        Args:
            x: the batch's inputs.
            y: its targets, as for ``fit``.
            sample_weight: one non-negative weight per sample, as for ``evaluate``. Defaults to
                None.
            return_dict: return ``{name: value}`` instead of a list. Defaults to False.

        Returns:
            As ``evaluate``: a float, ``[loss, *metrics]``, or a dict.

        Raises:
            As ``evaluate``.

        >>> loss, acc = model.test_on_batch(x[:32], y[:32])
        """
        x = _data.to_array(x, self._check_backend(), "x")
        return self.evaluate(x, y, batch_size=max(1, int(x.shape[0]) if x.ndim else 1), sample_weight=sample_weight,
                             return_dict=return_dict)

    def predict(self, x: Any, batch_size: int | None = None, verbose: int | str = 0, callbacks: Any = None) -> Any:
        """Outputs for ``x``, computed batch by batch in inference mode.

        Args:
            x: inputs (numpy array, nested lists or an array of the current backend).
            batch_size: samples per batch. Defaults to None, which means 32.
            verbose: 0 silent, 1 a progress bar, 2 one line, ``"auto"``. Defaults to 0.
            callbacks: a ``Callback`` or a list of them (their ``on_predict_*`` hooks run).
                Defaults to None.

        Returns:
            An array of the current backend, shape ``(n, *output_shape)``.

        Raises:
            RuntimeError: the model lives on another backend.
            ValueError: bad arguments or data; or a prediction that is NaN or inf although the
                data and the weights are finite (the data overflows the model's float type).

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
        out = outputs[0] if len(outputs) == 1 else backend.xp.concat(outputs, axis=0)
        if not _data.all_finite([out], backend):
            error = _data.overflow_error(self, backend, "A prediction", {"x": x})
            if error is not None:
                raise error
        return out

    def predict_on_batch(self, x: Any) -> Any:
        """The outputs for one batch, in inference mode (no batching, no callbacks).

        Args:
            x: the batch's inputs.

        Returns:
            An array of the current backend.

        Raises:
            RuntimeError: the model lives on another backend.
            ValueError: bad data.

        >>> p = model.predict_on_batch(x[:32])
        """
        backend = self._check_backend()
        x = self._prepare_x(x, backend)
        if _data.is_host(x):
            x = backend.from_host(x)
        return self.forward(x, training=False)[0]

    def __call__(self, x: Any, training: bool = False) -> Any:
        """The outputs for one batch, as ``predict_on_batch``.

        Args:
            x: the batch's inputs.
            training: run the layers in training mode (Dropout drops). Defaults to False.

        Returns:
            An array of the current backend.

        >>> y = model(x[:8])
        """
        backend = self._check_backend()
        x = self._prepare_x(x, backend)
        if _data.is_host(x):
            x = backend.from_host(x)
        return self.forward(x, training=training)[0]

    # -- weights ---------------------------------------------------------------------------
    def get_weights(self) -> list[Any]:
        """Every weight as a host numpy array (a copy), layer by layer in Keras order.

        Returns:
            A list of ``numpy.ndarray``, e.g. ``[kernel, bias, kernel_1, bias_1]``.

        >>> weights = model.get_weights()
        """
        return [w for layer in self._layers for w in layer.get_weights()]

    def set_weights(self, weights: list[Any]) -> None:
        """Replace every weight; counts, shapes and values are checked before anything changes.

        Args:
            weights: one array per weight, in the order of ``get_weights`` (numpy arrays, nested
                lists or arrays of any backend); cast to the model's dtype.

        Raises:
            TypeError: ``weights`` is not a list (or other iterable) of arrays.
            ValueError: a wrong count, shape or dtype, or a value that is NaN or inf after the
                cast; no weight changes then.

        >>> model.set_weights(other.get_weights())
        """
        if isinstance(weights, (str, bytes, dict)) or not hasattr(weights, "__iter__"):
            raise TypeError(f"set_weights expects a list of {len(self.weights)} weight arrays; "
                            f"received {type(weights).__name__}.")
        weights = list(weights)
        expected = sum(len(layer.weights) for layer in self._layers)
        if len(weights) != expected:
            raise ValueError(f"Expected a list of {expected} weight arrays, received {len(weights)}.")
        checked, i = [], 0
        for layer in self._layers:
            k = len(layer.weights)
            checked.append(layer.check_weights(weights[i:i + k]))
            i += k
        for layer, hosts in zip(self._layers, checked):
            layer.set_weights(hosts)

    def check_weights(self, weights: list[Any]) -> list[Any]:
        """Host copies of ``weights`` in the layers' dtypes, checked as ``set_weights`` does,
        without changing anything.

        Args:
            weights: one array per weight, in the order of ``get_weights``.

        Returns:
            A list of ``numpy.ndarray``.

        Raises:
            ValueError: a wrong count, shape or dtype, or a non-finite value.

        >>> model.check_weights(model.get_weights())
        """
        weights = list(weights)
        out, i = [], 0
        if len(weights) != len(self.weights):
            raise ValueError(f"Expected a list of {len(self.weights)} weight arrays, received {len(weights)}.")
        for layer in self._layers:
            k = len(layer.weights)
            out += layer.check_weights(weights[i:i + k])
            i += k
        return out

    def count_params(self) -> int:
        """The number of scalars in all the weights, trainable or not.

        Returns:
            An int (``summary`` prints it as ``Total params``).

        Raises:
            ValueError: the model is not built yet (no Input, no input_shape, not fitted), as in Keras.

        >>> nnx.Sequential([nnx.Input(4), nnx.Dense(3)]).count_params()   # 15
        """
        if not self.built:
            raise ValueError(f"count_params on model {self.name!r}, which is not built: its weights do not exist "
                             f"until it knows its input shape (start it with nnx.Input(shape), or fit or call it "
                             f"once).")
        return sum(layer.count_params() for layer in self._layers)

    def to_backend(self, name: str | _backend.Backend | None = None, device: Any = None) -> "Sequential":
        """Move the weights and optimizer state onto another backend (through the host).

        Args:
            name: a backend name (``"numpy"``, ``"cupy"``, ``"array_api_strict"``), an
                ``nnx.Backend``, or None (the default): the current backend.
            device: the device for a backend given by name. Defaults to None: the backend's
                default device.

        Returns:
            The model itself.

        Raises:
            ValueError: an unknown backend name.
            RuntimeError: a backend that cannot run here.

        >>> with nnx.use_backend("cupy"): model.to_backend()
        """
        if isinstance(name, _backend.Backend):
            target = name
        else:
            target = _backend.get_backend() if name is None else _backend._create(name, device)
        if self.optimizer is not None:
            self.optimizer.to_backend(target, _backend.to_numpy)
        for layer in self._layers:
            if layer.built:
                layer.to_backend(target)
        if self.built:
            self.backend = target
        return self

    # -- config ----------------------------------------------------------------------------
    def get_config(self) -> dict:
        """The architecture as JSON-able values: name, trainable, input shape and every layer's
        config (no weights, no compile settings).

        Returns:
            A dict that ``Sequential.from_config`` reads.

        >>> clone = nnx.Sequential.from_config(model.get_config())
        """
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "layers": [_layers.serialize(layer) for layer in self._layers],
        }
        dtype = getattr(getattr(self, "_input_layer", None), "input_dtype", None)
        if dtype is not None:
            config["input_dtype"] = dtype
        return config

    @classmethod
    def from_config(cls, config: dict) -> "Sequential":
        """A model of the same architecture with fresh weights, built on the current backend in
        the current floatx when the config holds the input shape; not compiled.

        Args:
            config: what ``get_config`` returned.

        Returns:
            The new ``Sequential``.

        Raises:
            ValueError: a config that is not a model config (an unknown layer class, bad values).

        >>> clone = nnx.Sequential.from_config(model.get_config())
        """
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
        """The architecture as a JSON string, as Keras's ``to_json``.

        Returns:
            A str that ``nnx.models.model_from_json`` reads (fresh weights).

        >>> clone = nnx.models.model_from_json(model.to_json())
        """
        import json

        return json.dumps({"class_name": "Sequential", "config": self.get_config()})

    def summary(self, print_fn: Any = None, line_length: int = 72) -> None:
        """Print a Keras-style table: Layer (type), Output Shape, Param #, and the totals
        (``Total params``, trainable and non-trainable apart).

        Args:
            print_fn: called with the whole table as one string. Defaults to None: ``print``.
            line_length: the table's width in characters. Defaults to 72.

        >>> model.summary()
        """
        from .summary import render

        (print_fn or print)(render(self, line_length))

    def save(self, filepath: str) -> None:
        """Save the architecture, weights, compile config, optimizer state and the states of the
        shuffle generator and dropout stream to one ``.nnx`` file, atomically (a temporary file
        in the same folder, then a rename). ``nnx.load_model`` resumes training exactly. In
        data-parallel training only rank 0 writes; other ranks write nothing.

        Args:
            filepath: the file to write (str or ``os.PathLike``); an existing file is replaced.

        Raises:
            TypeError: ``filepath`` is not a path.
            ValueError: the model is not built; a path that cannot be a file (empty, a NUL
                byte, a folder, a folder that does not exist). Nothing is written then.
            OSError: the file system refuses the write (permissions, a full disk).

        >>> model.save("model.nnx"); model = nnx.load_model("model.nnx")
        """
        from .saving import save_model

        if _distributed.is_chief():
            save_model(self, filepath)

    def save_weights(self, filepath: str) -> None:
        """Save the weights alone (no architecture, no optimizer state) to a file, atomically
        (in data-parallel training, on rank 0 only).

        Args:
            filepath: the file to write (str or ``os.PathLike``).

        Raises:
            TypeError, ValueError, OSError: as ``save``.

        >>> model.save_weights("weights.nnx"); other.load_weights("weights.nnx")
        """
        from .saving import save_weights

        if _distributed.is_chief():
            save_weights(self, filepath)

    def load_weights(self, filepath: str) -> None:
        """Load weights saved by ``save_weights`` into this model (same architecture).

        Args:
            filepath: the file to read.

        Raises:
            ValueError: no such file (the error is also a ``FileNotFoundError``), a file that is
                not an nnx weights file, or weights whose count or shapes do not match the
                model's; no weight changes then.

        >>> model.load_weights("weights.nnx")
        """
        from .saving import load_weights

        load_weights(self, filepath)

    # -- copying ---------------------------------------------------------------------------
    def __reduce__(self):
        """Pickle and ``copy.deepcopy`` carry nnx's own file format (never pickled objects)."""
        return (_from_file_bytes, (_to_file_bytes(self),))

    def __deepcopy__(self, memo):
        return _from_file_bytes(_to_file_bytes(self))

    def __repr__(self) -> str:
        return f"<Sequential name={self.name!r} layers={len(self._layers)} built={self.built}>"


def _to_file_bytes(model: Sequential) -> bytes:
    import os
    import tempfile

    if not model.built:  # no weights yet: the architecture and the compile settings
        import json

        from .saving import compile_config

        recipe = {"config": model.get_config(), "compile": compile_config(model) if model.compiled else None}
        return b"CONFIG" + json.dumps(recipe).encode("utf-8")
    folder = tempfile.mkdtemp(prefix="nnx-copy-")
    path = os.path.join(folder, "model.nnx")
    try:
        from .saving import save_model

        save_model(model, path)  # on every rank (model.save writes on rank 0 only)
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

        from .saving import compile_from_config

        recipe = json.loads(blob[6:].decode("utf-8"))
        model = Sequential.from_config(recipe["config"])
        if recipe["compile"] is not None:
            compile_from_config(model, recipe["compile"])
        return model
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
    """A ``Sequential`` (fresh weights, not compiled) from ``model.to_json()``.

    Args:
        text: the JSON string.

    Returns:
        The model, built on the current backend when the JSON holds its input shape.

    Raises:
        ValueError: text that is not JSON or not a Sequential's.

    >>> clone = nnx.models.model_from_json(model.to_json())
    """
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


_layers.registry.add(Sequential, "Sequential")
