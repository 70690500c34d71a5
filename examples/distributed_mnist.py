"""Data-parallel training on several processes: scikit-learn's 8x8 digits (a small MNIST) with an MLP.

    pip install -e ".[examples,distributed]"
    OPENBLAS_NUM_THREADS=1 mpiexec -n 2 python -m mpi4py examples/distributed_mnist.py [--backend numpy|cupy]

Every rank loads the same data and calls the same ``fit``; ``--batch-size`` is the global batch,
each rank computes its contiguous share of it, and the gradients are summed across ranks once per
step. Rank 0 prints the progress and writes the checkpoint. ``python -m mpi4py`` makes an
exception on one rank abort every rank. Without mpiexec (one process) the script trains as usual.
"""
from __future__ import annotations

import os
import time

from sklearn.datasets import load_digits

import nnx
from _common import parse, split


def main() -> None:
    import argparse
    import sys

    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--batch-size", type=int, default=64, help="the global batch, summed over the ranks")
    known, sys.argv[1:] = extra.parse_known_args()
    args = parse(__doc__.splitlines()[0], epochs=40)  # sets the backend and nnx.seed first
    nnx.distributed.init()  # after the backend: on cupy each rank takes GPU (local rank % count)
    chief = nnx.distributed.is_chief()

    digits = load_digits()  # every rank holds the whole data set
    x = (digits.data / 16.0).astype("float32")
    x_train, x_test, y_train, y_test = split(x, digits.target, 0.2, seed=args.seed)

    model = nnx.Sequential([
        nnx.Input((64,)),
        nnx.Dense(128, activation="relu", kernel_initializer="he_normal"),
        nnx.Dropout(0.1),  # each rank draws its own masks
        nnx.Dense(64, activation="relu", kernel_initializer="he_normal"),
        nnx.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=nnx.optimizers.Adam(learning_rate=2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    checkpoint = os.path.join(args.out, "distributed_best.nnx")
    callbacks = [  # the logs are the same on every rank, so every rank stops at the same epoch
        nnx.callbacks.EarlyStopping(monitor="val_loss", patience=10, restore_best_weights=True),
        nnx.callbacks.ModelCheckpoint(checkpoint, monitor="val_loss", save_best_only=True),  # rank 0 writes
    ]
    start = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=known.batch_size, validation_split=0.15,
                        callbacks=callbacks, verbose=2)
    seconds = time.perf_counter() - start
    loss, accuracy = model.evaluate(x_test, y_test)  # collective: the same value on every rank

    nnx.distributed.barrier()  # rank 0 has written the checkpoint before anyone reads it
    best_loss, best_accuracy = nnx.load_model(checkpoint).evaluate(x_test, y_test)
    if chief:
        print(f"{nnx.distributed.size()} rank(s), backend {nnx.get_backend().describe()}, global batch "
              f"{known.batch_size}: {len(history.epoch)} epochs in {seconds:.1f}s")
        print(f"test accuracy: {accuracy:.4f} (loss {loss:.4f}) on {len(y_test)} held-out digits")
        print(f"checkpoint {checkpoint}: test accuracy {best_accuracy:.4f} (loss {best_loss:.4f})")


if __name__ == "__main__":
    main()
