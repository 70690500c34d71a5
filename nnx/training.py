"""The training loop: one batch iterator for fit, evaluate and predict, and one loop object that
owns the running sums, the callbacks and the progress bar.

A training step is spelled out as three calls: the model computes gradients, the loop reduces them
(the identity in one process; a sum across ranks in data-parallel training), the model applies them.
"""
from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Mapping
from typing import Any, Iterator

from array_api_compat import device as _device

from . import callbacks as _callbacks
from . import data as _data
from . import progbar as _progbar
from . import registry as _registry


class Batches:
    """Mini-batches of aligned arrays (x, y and, when given, the sample weights): in order, or
    shuffled with ``rng`` each epoch (every array by the same permutation).

    Arrays already on the device are gathered there (one index transfer per epoch); host arrays
    are sliced on the host and each batch is moved (data too large for the device).

    With ``shard=(rank, size)`` (data-parallel training) each batch is cut into ``size``
    contiguous parts and only part ``rank`` is yielded, with its own ``start, stop`` (an empty
    part on some rank when the batch is smaller than ``size``); ``global_size`` is then the number
    of samples in the whole batch last yielded. The shuffle order is drawn as without it.

    >>> for start, stop, (xb, yb) in Batches([x, y], 32, backend, rng=rng): ...
    """

    def __init__(self, arrays: list[Any], batch_size: int, backend: Any, rng: Any = None,
                 shard: tuple[int, int] | None = None):
        self.arrays = arrays
        self.batch_size = batch_size
        self.backend = backend
        self.rng = rng  # None: natural order
        self.shard = shard
        self.global_size = 0
        self.n = int(arrays[0].shape[0])
        self.on_device = not _data.is_host(arrays[0])
        # host batches the backend must copy over (not NumPy's, whose arrays these already are)
        self.staged = not self.on_device and not backend.owns(arrays[0])

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[int, int, list[Any]]]:
        n, size, backend = self.n, self.batch_size, self.backend
        order = order_dev = None
        if self.rng is not None:
            order = self.rng.permutation(n)
            if self.on_device:
                order_dev = backend.from_host(order)
        for start in range(0, n, size):
            stop = min(n, start + size)
            if self.shard is not None:
                self.global_size = stop - start
                start, stop = shard_bounds(start, stop, *self.shard)
            if order is None:
                batch = [a[start:stop, ...] for a in self.arrays]
            elif self.on_device:
                idx = order_dev[start:stop]
                batch = self.gather(idx)
            else:
                idx = order[start:stop]
                batch = [a[idx] for a in self.arrays]
            if self.staged:
                batch = [backend.from_host(a) for a in batch]
            yield start, stop, batch

    def indices(self) -> Iterator[tuple[int, int, Any]]:
        """``(start, stop, idx)`` for data on the device: each batch's row indices (a device
        array) instead of the gathered rows, drawn as ``__iter__`` draws them."""
        n, size, backend = self.n, self.batch_size, self.backend
        if self.rng is not None:
            order = backend.from_host(self.rng.permutation(n))
        else:
            order = backend.xp.arange(n, dtype=backend.xp.int64, device=backend.device)
        for start in range(0, n, size):
            stop = min(n, start + size)
            yield start, stop, order[start:stop]

    def gather(self, idx: Any) -> list[Any]:
        """The rows ``idx`` of every array (on the device)."""
        return [self.backend.xp.take(a, idx, axis=0) for a in self.arrays]


def shard_bounds(start: int, stop: int, rank: int, size: int) -> tuple[int, int]:
    """Part ``rank`` of ``size`` contiguous parts of ``range(start, stop)``; the first
    ``(stop - start) % size`` parts hold one sample more."""
    base, extra = divmod(stop - start, size)
    lo = start + rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


class RunningLogs(Mapping):
    """Running means over the samples seen so far (and stateful metrics' results), read from the
    device only when a key is looked up."""

    def __init__(self, sums: dict[str, Any], count: int, states: dict[str, Any] | None = None,
                 names: list[str] | None = None):
        self._sums, self._count, self._states = sums, count, states or {}
        self._names = names if names is not None else [*sums, *self._states]

    def __getitem__(self, key: str) -> float:
        if key in self._states:
            return float(self._states[key].result())
        return float(self._sums[key]) / max(self._count, 1)

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class Sums:
    """Per-sample sums of the loss and the mean metrics over an epoch, kept on the device in
    float64 where the device has it (a loss near the float32 range times the batch size, summed
    over an epoch, stays finite), else in float32 (float16 values are widened: their sums overflow
    at 65504). Stateful metrics (``metric.stateful``: Precision, Recall, AUC) accumulate in
    ``states``, a fresh copy of each metric per ``Sums``, whose ``state`` lists are additive counts
    on the device."""

    def __init__(self, model: Any, xp: Any, wide: bool = True):
        self.model, self.xp = model, xp
        self.names = ["loss", *(m.name for m in model.metrics)]
        self.mean_metrics = [m for m in model.metrics if not m.stateful]
        self.states = {m.name: m.fresh() for m in model.metrics if m.stateful}
        self.values: dict[str, Any] = {"loss": 0.0, **{m.name: 0.0 for m in self.mean_metrics}}
        self.count = 0
        self._to = xp.float64 if wide and hasattr(xp, "float64") else xp.float32
        # the batch losses not yet added into values["loss"], and their sample counts: added all
        # at once when the sums are read (``fold``), not with three array operations per step.
        # Only an nnx loss's: it gives a fresh array each batch (a user's might reuse one)
        self._keep = _registry.builtin(type(getattr(model, "loss", None)))
        self._losses: list[Any] = []
        self._counts: list[int] = []

    def _wide(self, v: Any) -> Any:
        return v if getattr(v, "dtype", self._to) == self._to else self.xp.astype(v, self._to)

    def add(self, loss: Any, y: Any, p: Any, n: int) -> None:
        self.add_means(loss, y, p, n)
        if self.states:
            self.add_states(y, p)
        self.count += n

    def add_means(self, loss: Any, y: Any, p: Any, n: int) -> None:
        """Add a batch's loss (times ``n``) and mean metrics' totals."""
        if self._keep:
            self._losses.append(loss)
            self._counts.append(n)
        else:
            self.values["loss"] = self.values["loss"] + self._wide(loss) * n
        for metric in self.mean_metrics:
            self.values[metric.name] = self.values[metric.name] + self._wide(metric.batch_total(self.xp, y, p))

    def fold(self) -> None:
        """Add the pending batch losses into ``values["loss"]``: one sum on the device for all of
        them, weighed by their sample counts (a loss that is not an array is added on its own)."""
        losses, counts = self._losses, self._counts
        if not losses:
            return
        self._losses, self._counts = [], []
        xp, total = self.xp, self.values["loss"]
        if all(hasattr(v, "shape") and v.shape == () for v in losses):
            stacked = self._wide(xp.stack(losses))
            if counts.count(counts[0]) == len(counts):  # batches of one size (any read inside an epoch)
                total = total + xp.sum(stacked) * counts[0]  # no array of counts copied to the device
            else:
                total = total + xp.sum(stacked * xp.asarray(counts, dtype=self._to, device=_device(stacked)))
        else:
            for v, n in zip(losses, counts):
                total = total + self._wide(v) * n
        self.values["loss"] = total

    def add_states(self, y: Any, p: Any) -> None:
        """Add a batch to the stateful metrics."""
        for metric in self.states.values():
            metric.update(self.xp, y, p)

    def running(self) -> RunningLogs:
        self.fold()
        return RunningLogs(self.values, self.count, self.states, self.names)

    def means(self) -> dict[str, float]:
        logs = self.running()
        return {k: logs[k] for k in self.names}


class DeviceSums(Sums):
    """``Sums`` whose totals are 0-d device arrays added to in place, so that a step recorded as
    a device graph adds to the same arrays at every replay; ``reset`` starts the next epoch.

    >>> sums = DeviceSums(model, backend); sums.add(loss, y, p, n); sums.reset()
    """

    def __init__(self, model: Any, backend: Any):
        super().__init__(model, backend.xp, backend.has_float64)
        self.values = {k: backend.xp.zeros((), dtype=self._to, device=backend.device) for k in self.values}

    def add_means(self, loss: Any, y: Any, p: Any, n: int) -> None:
        v = self.values
        v["loss"] += self._wide(loss) * n
        for metric in self.mean_metrics:
            v[metric.name] += self._wide(metric.batch_total(self.xp, y, p))

    def reset(self) -> None:
        for a in self.values.values():
            a[...] = 0.0
        self.states = {m.name: m.fresh() for m in self.model.metrics if m.stateful}
        self.count = 0


def _trainable_flags(layer: Any) -> tuple:
    """Every layer's ``trainable`` flag, nested models included, in order."""
    return tuple((sub.trainable, _trainable_flags(sub)) for sub in getattr(layer, "_layers", ()))


class _Recording:
    """One recorded step for one batch size: its static inputs and the recorded graph."""

    def __init__(self, size: int, idx: Any, inputs: list[Any] | None):
        self.size, self.idx, self.inputs = size, idx, inputs
        self.recorded: Any = None
        self.bound: tuple = ()


class CapturedSteps:
    """``fit``'s training step recorded as a device graph and replayed per batch
    (``compile(jit_compile=True)`` on a backend that ``captures_steps``: CuPy): one recording for
    the batch size, and one more for a smaller last batch.

    The graph holds the whole step: gathering the batch (data on the device: from a static index
    array the loop fills before each replay; host data: copied into static arrays), forward, loss,
    backward, the optimizer update and the epoch sums. What a replay cannot know is fed through
    0-d device arrays: the learning rate (written when it changes, so schedules and callbacks
    still drive it) and the step count (Adam's bias correction). Stateful metrics are updated
    after each replay from the step's predictions. Fit's first step runs as it comes, with its
    checks.

    The step is recorded before the first step, so a step that cannot be recorded (random draws
    such as Dropout's, reading values back to the host, a layer replacing its weight arrays
    instead of updating them, float16 products) raises ``ValueError`` with nothing trained. It
    is recorded again when a weight's array is replaced between steps (``set_weights`` in a
    callback), when a layer is frozen or unfrozen, or when one of the optimizer's numbers other
    than the rate changes (``momentum``, ``beta_1``, …). Other settings read in Python while the
    step was recorded (a layer's own attributes, such as BatchNormalization's ``momentum``) hold
    until the next ``fit``.

    >>> steps = CapturedSteps(loop, batches, sums); loss, y, p = steps.run(idx, 32)
    """

    def __init__(self, loop: "Loop", train: Batches, sums: DeviceSums):
        backend = loop.backend
        xp, dev = backend.xp, backend.device
        self.loop, self.model, self.backend, self.sums, self.train = loop, loop.model, backend, sums, train
        wide = xp.float64 if backend.has_float64 else xp.float32
        self.lr = xp.zeros((), dtype=wide, device=dev)
        self.t = xp.zeros((), dtype=wide, device=dev)
        self._lr_host = self._t_host = None
        self._recordings: dict[int, _Recording] = {}

    def _recording(self, size: int) -> _Recording:
        rec = self._recordings.get(size)
        if rec is None:
            backend, xp, dev = self.backend, self.backend.xp, self.backend.device
            if self.train.on_device:
                rec = _Recording(size, xp.zeros((size,), dtype=xp.int64, device=dev), None)
            else:
                rec = _Recording(size, None, [xp.zeros((size, *a.shape[1:]), dtype=backend.dtype(str(a.dtype)),
                                                       device=dev) for a in self.train.arrays])
            self._recordings[size] = rec
        return rec

    def _body(self, rec: _Recording) -> tuple[Any, Any, Any]:
        x, y, *w = self.train.gather(rec.idx) if rec.inputs is None else rec.inputs
        self.t += 1.0
        with self.model.optimizer.device_scalars(self.lr, self.t):
            loss, p = self.loop.step(x, y, *w)
        self.sums.add_means(loss, y, p, rec.size)
        return loss, y, p

    def _bindings(self) -> tuple[tuple, tuple]:
        """``(arrays, key)``: the weight and slot arrays a recording reads and writes, and a key
        that changes when any of them is replaced or a setting read in Python while recording
        changes (which weights train, so a frozen BatchNormalization's inference mode, and the
        optimizer's numbers other than its rate and count). Arrays enter the key by ``id``; the
        recording keeps them alive, so an ``id`` cannot be reused while it is compared."""
        model, opt = self.model, self.model.optimizer
        arrays = tuple([w.value for w in model.weights] + [a for s in opt._slots.values() for a in s])
        numbers = tuple((k, v) for k, v in vars(opt).items() if k not in ("iterations", "_learning_rate")
                        and (v is None or isinstance(v, (bool, int, float))))
        trainable = (tuple(map(id, model.trainable_weights)), _trainable_flags(model))
        return arrays, (tuple(map(id, arrays)), tuple(map(id, opt._slots)), trainable, numbers)

    def record(self, size: int) -> None:
        """Record the step for batches of ``size`` (again, if it was recorded before).

        Raises:
            ValueError: the step cannot be recorded; every weight and slot is as it was.
        """
        model, opt = self.model, self.model.optimizer
        rec = self._recording(size)
        slots = dict(opt._slots)
        for w in model.trainable_weights:  # the slots exist before the graph reads them
            opt._slots_for(w, self.backend)
        before = self._bindings()
        values = [(w, w.value) for w in model.weights]
        iterations = opt.iterations
        rec.recorded = cause = None
        try:
            recorded = self.backend.capture(functools.partial(self._body, rec))
            problem = None if before[1] == self._bindings()[1] else (
                "a layer or the optimizer replaced an array instead of updating it in place")
        except Exception as e:
            problem, cause = f"{type(e).__name__}: {e}", e
        finally:
            opt.iterations = iterations
        if problem is not None:
            for w, value in values:
                w.value = value
            opt._slots = slots
            raise ValueError(f"compile(jit_compile=True): this model's training step cannot be recorded as a "
                             f"device graph ({problem}). Steps that draw random numbers (Dropout), read values "
                             f"back to the host, replace weight arrays or multiply float16 arrays cannot be; "
                             f"compile with jit_compile=False to train step by step.") from cause
        rec.recorded, rec.bound = recorded, before

    def run(self, item: Any, size: int) -> tuple[Any, Any, Any]:
        """Replay the step on one batch of ``size`` samples: ``item`` is its device indices (data
        on the device) or its arrays. Returns the step's ``(loss, y, predictions)`` arrays."""
        rec = self._recording(size)
        if rec.recorded is None or rec.bound[1] != self._bindings()[1]:
            self.record(size)
        opt = self.model.optimizer
        lr = opt.learning_rate
        if lr != self._lr_host:
            self.lr[...] = lr
            self._lr_host = lr
        if opt.iterations != self._t_host:
            self.t[...] = float(opt.iterations)
        if rec.inputs is None:
            rec.idx[...] = item
        else:
            for a, b in zip(rec.inputs, item):
                a[...] = b
        rec.recorded.launch()
        opt.iterations += 1
        self._t_host = opt.iterations
        loss, y, p = rec.recorded.result
        self.sums.add_states(y, p)
        self.sums.count += size
        return loss, y, p


class Loop:
    """Runs ``fit``, ``evaluate`` and ``predict`` for one model: batches, steps, sums, callbacks
    and progress output."""

    def __init__(self, model: Any, backend: Any, callbacks: Any, verbose: int, params: dict):
        self.model = model
        self.backend = backend
        history = None
        if params.get("fit"):
            history = _callbacks.History()
            callbacks = [*_as_list(callbacks), history]
        self.history = history
        self.callbacks = _callbacks.CallbackList(callbacks, model, {k: v for k, v in params.items() if k != "fit"})
        self.verbose = verbose
        self._check_next_step = bool(params.get("fit"))  # fit's first step is checked before it is applied
        # whether this loop's steps may leave kernel gradients as products (``Sequential.fit``'s,
        # after its first step; not ``train_on_batch``'s), and for which layers: worked out again
        # after callbacks have run (None), since a callback may change the model or its optimizer
        self._defers = False
        self._deferring: tuple | None = None

    # -- one step ---------------------------------------------------------------------------
    def train_step(self, x: Any, y: Any, sample_weight: Any = None) -> tuple[Any, Any]:
        """compute gradients -> reduce -> apply; returns (loss, predictions) of the batch."""
        model = self.model
        deferring = ()
        if self._defers:
            deferring = self._deferring
            if deferring is None:
                deferring = self._deferring = self._deferrable()
        if deferring:
            step = model._gradients(x, y, self.backend, sample_weight, deferring)
        else:
            step = model.compute_gradients(x, y, self.backend, sample_weight=sample_weight)
        grads = self.reduce(step.grads)
        if self._check_next_step:  # finite data that overflows the model: a ValueError, no weight changed
            self._check_next_step = False
            _data.check_first_step(model, self.backend, step.loss, grads, x, y)
            _data.check_metrics(model, self.backend.xp, y, step.predictions)
            self._defers = True
        model.apply_gradients(grads, step.saved)
        return step.loss, step.predictions

    def _deferrable(self) -> tuple:
        """The layers whose kernel gradients this step may leave as products
        (``nnx.ops.DeferredMatmul``) for the update to add into the weights
        (``Sequential._deferrable``), or none; asked again after callbacks have run (each epoch,
        and each batch when a callback listens to batches), so that a change a callback makes to
        the model, its optimizer or the backend's operations takes effect at the next step. Only
        where nothing between computing and applying needs the arrays: one process (``reduce``
        combines nothing), a backend whose update consumes products (``ops.defers_matmuls``:
        NumPy with its BLAS, no update set on the instance), and an optimizer that does
        (``takes_deferred``: SGD, as it is)."""
        model, ops = self.model, self.backend.ops
        if not (ops.defers_matmuls and type(self).reduce is Loop.reduce and hasattr(model, "_deferrable")
                and getattr(model.optimizer, "takes_deferred", False)) or "sgd_updates" in vars(ops) \
                or "sgd_update" in vars(ops):
            return ()
        return model._deferrable()

    def step(self, x: Any, y: Any, sample_weight: Any = None) -> tuple[Any, Any]:
        """``train_step`` without the first step's checks (what a recorded step holds)."""
        step = self.model.compute_gradients(x, y, self.backend, sample_weight=sample_weight)
        self.model.apply_gradients(self.reduce(step.grads), step.saved)
        return step.loss, step.predictions

    def reduce(self, grads: dict) -> dict:
        """Combine gradients across processes (one process: nothing to combine)."""
        return grads

    def new_sums(self, training: bool) -> Sums:
        """The running sums of one training epoch or one evaluation pass."""
        return Sums(self.model, self.backend.xp, self.backend.has_float64)

    # -- fit --------------------------------------------------------------------------------
    def fit(self, train: Batches, epochs: int, initial_epoch: int, validation: Batches | None) -> Any:
        model, cbs = self.model, self.callbacks
        model.stop_training = model._stop_now = False
        batch_hooks = cbs.wants("on_train_batch_begin") or cbs.wants("on_train_batch_end")
        live = self.verbose == 1
        cbs.call("on_train_begin", {})
        try:
            self._epochs(train, epochs, initial_epoch, validation, batch_hooks, live)
        finally:
            _progbar.end_line()
        cbs.call("on_train_end", {})
        return self.history

    def _epochs(self, train, epochs, initial_epoch, validation, batch_hooks, live) -> None:
        model, cbs = self.model, self.callbacks
        graph = self._captured(train) if epochs > initial_epoch else None
        for epoch in range(initial_epoch, epochs):
            if getattr(model, "_dropout_rng", None) is not None:
                model._dropout_rng.new_epoch()  # a device generator is reseeded from the saved host state
            cbs.call("on_epoch_begin", epoch, {})
            self._deferring = None  # a callback may have changed the model: asked again at the next step
            header = f"Epoch {epoch + 1}/{epochs}"
            if self.verbose == 1:
                _progbar.message(header)
            bar = _progbar.Progbar(len(train), self.verbose, prefix=header if self.verbose == 2 else "")
            if graph is None:
                sums, batches = self.new_sums(True), train
            else:
                sums, batches = graph.sums, (train.indices() if train.on_device else train)
                sums.reset()
            done = 0
            for step, (start, stop, batch) in enumerate(batches):
                if batch_hooks:
                    cbs.call("on_train_batch_begin", step, sums.running())
                    self._deferring = None
                if graph is not None and not self._check_next_step:
                    graph.run(batch, stop - start)
                else:
                    xb, yb, *wb = train.gather(batch) if graph is not None and train.on_device else batch
                    loss, p = self.train_step(xb, yb, *wb)
                    sums.add(loss, yb, p, stop - start)
                done = step + 1
                if batch_hooks:
                    cbs.call("on_train_batch_end", step, sums.running())
                    self._deferring = None
                if live:
                    bar.update(done, sums.running)
                if model._stop_now:
                    break
            logs = sums.means()
            if validation is not None:
                logs.update({f"val_{k}": v for k, v in self.evaluate(validation, in_fit=True).items()})
            cbs.call("on_epoch_end", epoch, logs)
            bar.update(done, final=True, extra=logs)
            if model.stop_training:
                break

    def _captured(self, train: Batches) -> CapturedSteps | None:
        """The recorded step for ``compile(jit_compile=True)``, where the backend records graphs."""
        if not getattr(self.model, "jit_compile", False):
            return None
        if not self.backend.captures_steps or train.shard is not None or type(self).reduce is not Loop.reduce:
            where = "data-parallel training" if train.shard is not None else f"the {self.backend.name} backend"
            warnings.warn(f"compile(jit_compile=True): {where} runs each training step as it comes; only a "
                          f"single process on a backend that records device graphs (cupy) replays a recorded "
                          f"step.", RuntimeWarning, stacklevel=4)
            return None
        graph = CapturedSteps(self, train, DeviceSums(self.model, self.backend))
        graph.record(min(train.batch_size, train.n))
        return graph

    # -- evaluate ---------------------------------------------------------------------------
    def evaluate(self, batches: Batches, in_fit: bool = False) -> dict[str, float]:
        """The mean loss and metrics over ``batches``, with the layers in inference mode."""
        model, cbs = self.model, self.callbacks
        xp = self.backend.xp
        hooks = cbs.wants("on_test_batch_begin") or cbs.wants("on_test_batch_end")
        bar = _progbar.Progbar(len(batches), 0 if in_fit else self.verbose)
        cbs.call("on_test_begin", {})
        sums = self.new_sums(False)
        for step, (start, stop, (xb, yb, *wb)) in enumerate(batches):
            if hooks:
                cbs.call("on_test_batch_begin", step, sums.running())
            p = model.forward(xb, training=False)[0]
            loss = model.loss.forward(xp, yb, p, sample_weight=wb[0]) if wb else model.loss.forward(xp, yb, p)
            sums.add(loss, yb, p, stop - start)
            if hooks:
                cbs.call("on_test_batch_end", step, sums.running())
            if bar.verbose == 1:
                bar.update(step + 1, sums.running)
        logs = sums.means()
        logs["loss"] += float(model.regularization_loss())
        cbs.call("on_test_end", logs)
        bar.update(len(batches), final=True, extra=logs)
        return logs

    # -- predict ----------------------------------------------------------------------------
    def predict(self, batches: Batches) -> list[Any]:
        model, cbs = self.model, self.callbacks
        hooks = cbs.wants("on_predict_batch_begin") or cbs.wants("on_predict_batch_end")
        bar = _progbar.Progbar(len(batches), self.verbose)
        cbs.call("on_predict_begin", {})
        outputs = []
        for step, (_start, _stop, (xb,)) in enumerate(batches):
            if hooks:
                cbs.call("on_predict_batch_begin", step, {})
            outputs.append(model.forward(xb, training=False)[0])
            if hooks:
                cbs.call("on_predict_batch_end", step, {"outputs": outputs[-1]})
            if bar.verbose == 1:
                bar.update(step + 1)
        cbs.call("on_predict_end", {})
        bar.update(len(batches), final=True)
        return outputs


def _as_list(callbacks: Any) -> list:
    if callbacks is None:
        return []
    if isinstance(callbacks, _callbacks.Callback):
        return [callbacks]
    if isinstance(callbacks, (list, tuple)):
        for cb in callbacks:
            if not isinstance(cb, _callbacks.Callback):
                raise TypeError(f"callbacks must be Callback instances; received {type(cb).__name__}.")
        return list(callbacks)
    raise TypeError(f"callbacks must be a Callback or a list of them; received {type(callbacks).__name__}.")
