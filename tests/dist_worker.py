"""The ranks of tests/test_distributed.py: ``mpiexec -n 2 python -m mpi4py tests/dist_worker.py OUT MODE``.

MODE ``all`` runs every scenario below and writes, per scenario and rank, the final weights, the
History and ``evaluate``'s result under OUT; ``raise`` makes rank 1 raise mid-training. The
scenario functions also run in one process (the test's reference): ``train(...)`` is the same fit.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

import nnx


def data(n: int = 50, seed: int = 123) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)), rng.integers(0, 3, size=n)


class RunningMean(nnx.layers.Layer):
    """Identity, keeping a moving mean of its inputs: non-trainable state updated in training."""

    def build(self, input_shape):
        super().build(input_shape)
        self.mean = self.add_weight("mean", (input_shape[-1],), "zeros", trainable=False)

    def forward(self, x, training=False):
        return x, x

    def backward(self, x, dy, need_dx=True):
        return dy, {}

    def update_state(self, x):
        xp = self.xp
        self.mean.value = 0.9 * self.mean.value + 0.1 * xp.mean(x, axis=0)


def build(dtype: str, seed: int, dropout: bool = False, state: bool = False, binary: bool = False) -> nnx.Sequential:
    nnx.set_floatx(dtype)
    nnx.seed(seed)
    layers = [nnx.Input((5,)), *([RunningMean()] if state else []),
              nnx.Dense(8, activation="tanh", kernel_regularizer=nnx.regularizers.l2(0.01))]
    if dropout:
        layers.append(nnx.Dropout(0.3))
    if binary:  # stateful metrics: their counts are summed across ranks
        layers.append(nnx.Dense(1, activation="sigmoid"))
        model = nnx.Sequential(layers)
        model.compile(optimizer=nnx.optimizers.Adam(0.01), loss="binary_crossentropy",
                      metrics=["accuracy", "precision", "recall", "auc"])
        return model
    layers.append(nnx.Dense(3, activation="softmax"))
    model = nnx.Sequential(layers)
    model.compile(optimizer=nnx.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def train(backend: str, device, dtype: str, seed: int, epochs: int = 3, batch_size: int = 7, callbacks=(),
          verbose: int = 0, dropout: bool = False, state: bool = False, binary: bool = False,
          save_as: str | None = None):
    """Fit with shuffling, an uneven last batch, validation_split and an L2 penalty; returns
    (weights, history, evaluate's [loss, accuracy] and the loss of the first sample alone)."""
    previous = nnx.floatx()
    try:
        with nnx.use_backend(backend, device):
            model = build(dtype, seed, dropout, state, binary)
            x, y = data()
            if binary:
                y = (y > 0).astype("int64")
            history = model.fit(x, y, epochs=epochs, batch_size=batch_size, validation_split=0.2, verbose=verbose,
                                callbacks=list(callbacks))
            result = model.evaluate(x, y, batch_size=16)
            result.append(model.evaluate(x[:1], y[:1])[0])  # fewer samples than ranks: an empty part
            if save_as:
                model.save(save_as + ".nnx")
                model.save_weights(save_as + ".npz")
            return model.get_weights(), history.history, result
    finally:
        nnx.set_floatx(previous)


SCENARIOS = {  # name: keyword arguments of train (seed: rank 0's; every rank seeds differently)
    "np64": dict(backend="numpy", device=None, dtype="float64"),
    "strict64": dict(backend="array_api_strict", device="device1", dtype="float64"),
    "np32": dict(backend="numpy", device=None, dtype="float32", epochs=2),
    "strict32": dict(backend="array_api_strict", device="device1", dtype="float32", epochs=2),
    "empty_shards": dict(backend="numpy", device=None, dtype="float64", epochs=1, batch_size=1),
    "early": dict(backend="numpy", device=None, dtype="float64", epochs=10),
    "dropout": dict(backend="numpy", device=None, dtype="float64", epochs=2, dropout=True),
    "state": dict(backend="array_api_strict", device="device1", dtype="float64", epochs=2, state=True),
    "stateful_metrics": dict(backend="numpy", device=None, dtype="float64", epochs=2, binary=True),
}
SEED = 1


def _write(out: str, name: str, rank: int, weights, history, result) -> None:
    np.savez(os.path.join(out, f"{name}_{rank}.npz"), *weights)
    with open(os.path.join(out, f"{name}_{rank}.json"), "w") as f:
        json.dump({"history": history, "evaluate": result,
                   "types": sorted({type(v).__name__ for v in result})}, f)  # JSON would hide numpy floats


def main(out: str, mode: str) -> None:
    from mpi4py import MPI

    nnx.distributed.init()
    rank = nnx.distributed.rank()
    assert nnx.distributed.size() == 2 and nnx.distributed.is_chief() == (rank == 0)
    if mode == "raise":
        def boom(epoch, logs):
            if rank == 1 and epoch == 1:
                raise RuntimeError("rank 1 fails")

        train("numpy", None, "float64", SEED, epochs=50, callbacks=[nnx.callbacks.LambdaCallback(on_epoch_end=boom)])
        return
    for name, kwargs in SCENARIOS.items():
        callbacks = []
        extra = {}
        if name == "np64":  # files: each rank names its own, so a write by rank 1 would show
            callbacks = [nnx.callbacks.ModelCheckpoint(os.path.join(out, f"ckpt_{rank}.nnx")),
                         nnx.callbacks.CSVLogger(os.path.join(out, f"log_{rank}.csv"))]
            extra = dict(verbose=2, save_as=os.path.join(out, f"model_{rank}"))
        if name == "early":
            callbacks = [nnx.callbacks.EarlyStopping(monitor="val_loss", patience=1, min_delta=1e9, verbose=1)]
        _write(out, name, rank, *train(seed=SEED + rank, callbacks=callbacks, **kwargs, **extra))
    # each rank's dropout stream is its own
    nnx.seed(7)
    draws = nnx.random.device_rng().random(4).tolist()
    with open(os.path.join(out, f"draws_{rank}.json"), "w") as f:
        json.dump(draws, f)
    # one rank in its own communicator: the plain loop, bit for bit
    nnx.distributed.init(MPI.COMM_SELF)
    assert nnx.distributed.size() == 1 and nnx.distributed.loop_type() is nnx.training.Loop
    _write(out, "self", rank, *train(seed=SEED, **SCENARIOS["np64"]))
    nnx.distributed.init()
    nnx.distributed.barrier()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "all")
