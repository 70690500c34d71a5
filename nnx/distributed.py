"""Data-parallel training: one process per rank, MPI (mpi4py) between them, NCCL between GPUs.

Launch one process per rank with ``python -m mpi4py``, so that an exception on one rank aborts
every rank instead of leaving the others waiting in a collective::

    mpiexec -n 4 python -m mpi4py train.py

and in ``train.py``::

    import nnx
    nnx.distributed.init()              # MPI.COMM_WORLD; on cupy each rank takes GPU local_rank % count
    nnx.seed(0)
    model = ...; model.compile(...)
    model.fit(x, y, epochs=10, batch_size=256)   # same x, y on every rank; 256 is the global batch

What changes once ``init()`` has run with more than one rank:

- ``fit`` broadcasts rank 0's weights, optimizer state (slots, iterations, learning rate) and
  shuffle generator state, then cuts every global batch into ``size()`` contiguous shards (an
  empty shard on some ranks when the batch is smaller than that). Each rank computes its shard's
  gradient scaled by ``n_local / n_global`` (the losses are batch means, so the scaled gradients
  sum to the gradient of the global batch), and one allreduce per step sums every gradient,
  flattened into one buffer, together with the batch's loss and metric sums. Every rank applies
  the same update and sees the same logs, so callbacks decide alike (``EarlyStopping`` stops every
  rank at the same epoch).
- The validation data and ``evaluate``'s data are split into ``size()`` contiguous parts whose
  sums are added across ranks at the end: ``evaluate`` is collective and returns the same value
  on every rank. ``predict``, ``predict_on_batch`` and ``train_on_batch`` stay local.
- Dropout draws from a stream of each rank's own (``nnx.seed(n)`` offsets it by the rank).
- Only rank 0 prints (progress bars, callback messages) and writes files: ``model.save``,
  ``model.save_weights``, ``ModelCheckpoint`` and ``CSVLogger`` write nothing on other ranks.
  Call ``barrier()`` before other ranks read a file rank 0 has written.
- Non-trainable state that layers update during training (moving statistics) is computed per
  rank from its shards, and rank 0's is broadcast at the end of every epoch, before validation.

Without ``init()``, or with one rank, none of this happens: ``fit`` runs exactly as before, bit
for bit. mpi4py is imported by ``init()`` only; ``import nnx`` never needs it.

Gradients travel through a host buffer and ``MPI.Allreduce`` on the numpy backend (in place: the
gradients handed to the optimizer are views of that buffer) and on array_api_strict (one copy to
the host and back); on the cupy backend through a device buffer and an NCCL communicator
(``cupy.cuda.nccl``, created once per GPU with a unique id broadcast over MPI); where CuPy has no
NCCL, through host memory and MPI, with a warning.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Any

import numpy as np  # host side: buffers for MPI

from . import backend as _backend
from . import callbacks as _callbacks
from . import progbar as _progbar
from . import random as _random
from . import training as _training


class _State:
    comm: Any = None  # the mpi4py communicator, None before init()
    rank = 0
    size = 1
    local_rank = 0
    reducers: dict = {}  # backend key -> gradient reducer


_state = _State()


# -- the process group -------------------------------------------------------------------------
def init(comm: Any = None) -> None:
    """Join the ranks of ``comm`` (default ``MPI.COMM_WORLD``) for data-parallel training.

    Call it once per process, before building models. On the cupy backend each rank moves to GPU
    ``local_rank % device_count`` (its rank among the processes on its machine), so set the cupy
    backend (or ``NNX_BACKEND=cupy``) before calling it. Re-seeds this rank's dropout stream when
    ``nnx.seed`` was called already, and silences progress output on ranks other than 0.

    Raises:
        ImportError: mpi4py is missing (``pip install "nnx-arrayapi[distributed]"``).

    >>> nnx.distributed.init()
    >>> nnx.distributed.rank(), nnx.distributed.size()
    (0, 4)
    """
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError("nnx.distributed.init needs mpi4py: pip install 'nnx-arrayapi[distributed]' "
                          f"(mpi4py and an MPI library such as mpich); {e}") from e
    comm = MPI.COMM_WORLD if comm is None else comm
    local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    local_rank = local.Get_rank()
    local.Free()
    _state.comm, _state.rank, _state.size, _state.local_rank = comm, comm.Get_rank(), comm.Get_size(), local_rank
    _state.reducers = {}
    _random.set_rank(_state.rank)
    _progbar.muted = _state.rank != 0
    current = _backend.get_backend()
    local = current.for_local_rank(local_rank)  # on CuPy: GPU local_rank % device count
    if local is not current:
        _backend.set_backend(local.name, device=local.device)
    if _state.size > 1:
        _abort_on_uncaught(comm)


def _abort_on_uncaught(comm: Any) -> None:
    """An exception that ends this rank's script aborts every rank (``MPI_Abort``) instead of
    leaving the others waiting forever in a collective; ``python -m mpi4py script.py`` does the
    same, this covers a plain ``python script.py`` launch. Installed once per process."""
    if getattr(sys.excepthook, "_nnx_abort", False):
        return
    previous = sys.excepthook

    def hook(kind, value, traceback):
        # the cause first, in one line: MPI_Abort may cut the end of a long traceback's output
        sys.stderr.write(f"nnx.distributed: rank {comm.Get_rank()} raised {kind.__name__}: {value}; "
                         f"aborting every rank\n")
        sys.stderr.flush()
        previous(kind, value, traceback)
        sys.stderr.flush()
        # MPI_Abort kills every rank at once: a moment first for the launcher to pass on what
        # this rank wrote (a launch was once seen to end with nothing of it on stderr)
        time.sleep(0.2)
        comm.Abort(1)

    hook._nnx_abort = True
    sys.excepthook = hook


def rank() -> int:
    """This process's rank (0 without ``init()``)."""
    return int(_state.rank)


def size() -> int:
    """The number of ranks (1 without ``init()``)."""
    return int(_state.size)


def is_chief() -> bool:
    """True on rank 0 (and without ``init()``): the rank that prints and writes files."""
    return _state.rank == 0


def barrier() -> None:
    """Wait until every rank gets here (does nothing without ``init()``)."""
    if _state.comm is not None:
        _state.comm.Barrier()


def loop_type() -> type:
    """The training loop ``fit`` and ``evaluate`` use: ``DistributedLoop`` with several ranks,
    else the plain ``nnx.training.Loop``."""
    return DistributedLoop if _state.size > 1 else _training.Loop


# -- gradient reducers ---------------------------------------------------------------------------
class _HostReducer:
    """Sums through one host buffer and ``MPI.Allreduce``, in place."""

    def __init__(self, comm: Any):
        self.comm = comm
        self._buffers: dict = {}

    def allreduce(self, backend: Any, grads: list | None, weights: list, scale: float, extras: list,
                  dtype: np.dtype) -> tuple[list, list]:
        from mpi4py import MPI

        sizes = [math.prod(w.shape) for w in weights]
        n = sum(sizes)
        key = (n + len(extras), dtype)
        buf = self._buffers.get(key)
        if buf is None:
            buf = self._buffers[key] = np.empty(n + len(extras), dtype=dtype)
        offset = 0
        for i, k in enumerate(sizes):
            part = buf[offset:offset + k]
            if grads is None:
                part[...] = 0
            else:
                np.multiply(np.reshape(backend.to_numpy(grads[i]), (-1,)), scale, out=part, casting="same_kind")
            offset += k
        for i, e in enumerate(extras):
            buf[n + i] = float(e)
        self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        out, offset = [], 0
        for w, k in zip(weights, sizes):
            part = np.reshape(buf[offset:offset + k], w.shape)
            host_dtype = np.dtype(w.numpy_dtype)
            out.append(backend.from_host(part if part.dtype == host_dtype else part.astype(host_dtype)))
            offset += k
        return out, [float(v) for v in buf[n:]]


def _reducer(backend: Any) -> Any:
    """The backend's own device-side reducer (NCCL on CuPy) where it has one, else MPI on the host."""
    reducer = _state.reducers.get(backend.key)
    if reducer is None:
        reducer = backend.gradient_reducer(_state.comm) or _HostReducer(_state.comm)
        _state.reducers[backend.key] = reducer
    return reducer


class _WeightView:
    """What a reducer needs of a weight: its shape and dtype (host and device)."""

    __slots__ = ("shape", "dtype", "numpy_dtype")

    def __init__(self, weight: Any, numpy_dtype: str):
        self.shape, self.dtype, self.numpy_dtype = weight.shape, weight.dtype, numpy_dtype


# -- the loop ----------------------------------------------------------------------------------
class _TrainSums(_training.Sums):
    """A training epoch's sums, made of the global batch totals that rode in each step's allreduce."""

    def __init__(self, loop: "DistributedLoop"):
        super().__init__(loop.model, loop.backend.xp, loop.backend.has_float64)
        self.loop = loop

    def add(self, loss: Any, y: Any, p: Any, n: int) -> None:
        totals, count = self.loop._pending
        self.loop._pending = None
        for key, v in zip(list(self.values), totals):
            self.values[key] = self.values[key] + v
        self.count += count
        if p is not None:  # stateful metrics count this rank's shard; the counts are summed in means()
            for metric in self.states.values():
                metric.update(self.xp, y, p)

    def means(self) -> dict[str, float]:
        _sum_states(self.loop.comm, self.loop.backend, self.states, self.model.dtype)
        return super().means()


class _EvalSums(_training.Sums):
    """An evaluation pass's sums over this rank's part of the data, added across ranks in ``means``."""

    def __init__(self, loop: "DistributedLoop"):
        super().__init__(loop.model, loop.backend.xp, loop.backend.has_float64)
        self.comm, self.backend = loop.comm, loop.backend

    def means(self) -> dict[str, float]:
        from mpi4py import MPI

        _sum_states(self.comm, self.backend, self.states, self.model.dtype)
        self.fold()
        local = np.array([float(v) for v in self.values.values()] + [float(self.count)], dtype=np.float64)
        self.comm.Allreduce(MPI.IN_PLACE, local, op=MPI.SUM)
        count = max(float(local[-1]), 1.0)  # a Python float: the logs are floats, as in one process
        logs = {k: float(local[i]) / count for i, k in enumerate(self.values)}
        logs.update({name: float(metric.result()) for name, metric in self.states.items()})
        return {k: logs[k] for k in self.names}


def _sum_states(comm: Any, backend: Any, states: dict, dtype: str) -> None:
    """Add the stateful metrics' counts (Precision, Recall, AUC) across ranks, once per epoch or
    evaluation: through the host, with ranks that counted nothing contributing nothing."""
    for metric in states.values():
        local = None
        if metric.state is not None:
            local = [np.array(backend.to_numpy(a)) if hasattr(a, "shape") else a for a in metric.state]
        parts = [s for s in comm.allgather(local) if s is not None]
        if not parts:
            continue
        total = [sum(values[1:], values[0]) for values in zip(*parts)]
        metric.state = [backend.from_host(t) if isinstance(t, np.ndarray) else t for t in total]
        if getattr(metric, "_xp", None) is None:  # this rank counted nothing: results as the others compute them
            metric._xp = backend.xp
            metric._dtype = backend.dtype("float32" if dtype == "float16" else dtype)


class _EpochEnd(_callbacks.Callback):
    """First of the callbacks: broadcasts rank 0's non-trainable weights at the end of an epoch,
    unless the validation pass did already."""

    def __init__(self, loop: "DistributedLoop"):
        super().__init__()
        self.loop = loop

    def on_epoch_begin(self, epoch, logs=None):
        self.loop._state_synced = False

    def on_epoch_end(self, epoch, logs=None):
        self.loop._sync_non_trainable()


class DistributedLoop(_training.Loop):
    """``nnx.training.Loop`` across ranks: sharded batches, one fused allreduce per step, rank 0's
    state broadcast at the start of ``fit``, evaluation summed across ranks."""

    def __init__(self, model: Any, backend: Any, callbacks: Any, verbose: int, params: dict):
        self.comm, self.rank, self.size = _state.comm, _state.rank, _state.size
        if params.get("fit"):
            callbacks = [_EpochEnd(self), *_training._as_list(callbacks)]
        super().__init__(model, backend, callbacks, verbose, params)
        self._pending = None
        self._train: _training.Batches | None = None
        self._state_synced = True

    # -- fit ----------------------------------------------------------------------------------
    def fit(self, train: _training.Batches, epochs: int, initial_epoch: int,
            validation: _training.Batches | None) -> Any:
        self._broadcast_state()
        train.shard = (self.rank, self.size)
        self._train = train
        try:
            return super().fit(train, epochs, initial_epoch, validation)
        finally:
            self._train = None

    def _broadcast_state(self) -> None:
        """Rank 0's weights, optimizer state and shuffle generator state, on every rank."""
        model, opt = self.model, self.model.optimizer
        trainable = model.trainable_weights
        payload = None
        if self.rank == 0:
            have = [i for i, w in enumerate(trainable) if w in opt._slots]
            payload = {
                "weights": model.get_weights(),
                "slots_of": have,
                "optimizer": opt.get_state(_backend.to_numpy, [trainable[i] for i in have]),
                "learning_rate": opt.learning_rate,
                "shuffle": None if model._shuffle_rng is None else model._shuffle_rng.bit_generator.state,
            }
        payload = self.comm.bcast(payload, root=0)
        if self.rank == 0:
            return
        model.set_weights(payload["weights"])
        opt.set_state(payload["optimizer"], self.backend, [trainable[i] for i in payload["slots_of"]])
        opt.learning_rate = payload["learning_rate"]
        if payload["shuffle"] is not None:
            if model._shuffle_rng is None:
                model._shuffle_rng = _random.generator_from_state(payload["shuffle"])
            else:
                model._shuffle_rng.bit_generator.state = payload["shuffle"]

    def _sync_non_trainable(self) -> None:
        if self._state_synced:
            return
        self._state_synced = True
        weights = [w for w in self.model.weights if not w.trainable]  # state layers update (not frozen weights)
        if not weights:
            return
        hosts = self.comm.bcast([w.numpy() for w in weights] if self.rank == 0 else None, root=0)
        if self.rank:
            for w, a in zip(weights, hosts):
                w.value = self.backend.from_host(a)

    def new_sums(self, training: bool) -> _training.Sums:
        return _TrainSums(self) if training else _EvalSums(self)

    def train_step(self, x: Any, y: Any, sample_weight: Any = None) -> tuple[Any, Any]:
        """This rank's shard: gradients scaled by n_local / n_global, summed across ranks with the
        batch's loss and metric sums in one allreduce, then the same update on every rank. (It
        replaces ``reduce`` as a whole, since the sums must ride in the gradients' allreduce.)"""
        model, backend = self.model, self.backend
        self._state_synced = False
        n_local = int(x.shape[0])
        n_global = self._train.global_size if self._train is not None else self.comm.allreduce(n_local)
        trainable = model.trainable_weights
        scratch = _training.Sums(model, backend.xp, backend.has_float64)
        step = None
        if n_local:
            step = model.compute_gradients(x, y, backend, sample_weight=sample_weight)
            scratch.add(step.loss, y, step.predictions, n_local)
            scratch.fold()
            extras = list(scratch.values.values())
            grads = [step.grads[w] for w in trainable]
        else:
            extras = [0.0] * len(scratch.values)
            grads = None
        dtype = np.result_type(np.dtype(model.dtype), np.float32)
        views = [_WeightView(w, model.dtype) for w in trainable]
        reduced, totals = _reducer(backend).allreduce(backend, grads, views, n_local / n_global, extras, dtype)
        self._pending = (totals, n_global)
        model.apply_gradients(dict(zip(trainable, reduced)), None if step is None else step.saved)
        if step is None:
            return None, None
        return step.loss, step.predictions

    # -- evaluate -----------------------------------------------------------------------------
    def evaluate(self, batches: _training.Batches, in_fit: bool = False) -> dict[str, float]:
        """This rank's contiguous part of the data, in batches of ``ceil(batch_size / size)``;
        the sums are added across ranks at the end (collective)."""
        if in_fit:
            self._sync_non_trainable()
        lo, hi = _training.shard_bounds(0, batches.n, self.rank, self.size)
        local = _training.Batches([a[lo:hi, ...] for a in batches.arrays],
                                  max(1, -(-batches.batch_size // self.size)), batches.backend)
        return super().evaluate(local, in_fit)
