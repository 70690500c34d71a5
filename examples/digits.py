"""Classify scikit-learn's bundled 8x8 digits with an MLP; report accuracy on a held-out 20%.

    pip install -e ".[examples]"
    python examples/digits.py [--backend numpy|cupy|array_api_strict]

Uses EarlyStopping (restoring the best weights), a ModelCheckpoint of the best model, and writes
the training curves to <out>/digits_history.png.
"""
from __future__ import annotations

import os
import time

import numpy as np
from sklearn.datasets import load_digits

import nnx
from _common import parse, split


def main() -> None:
    args = parse(__doc__.splitlines()[0], epochs=100)
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    x_train, x_test, y_train, y_test = split(x, digits.target, 0.2, seed=args.seed)

    model = nnx.Sequential([
        nnx.Input((64,)),
        nnx.Dense(128, activation="relu", kernel_initializer="he_normal"),
        nnx.Dropout(0.1),
        nnx.Dense(64, activation="relu", kernel_initializer="he_normal"),
        nnx.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=nnx.optimizers.Adam(learning_rate=2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.summary()
    checkpoint = os.path.join(args.out, "digits_best.nnx")
    callbacks = [
        nnx.callbacks.EarlyStopping(monitor="val_loss", patience=10, restore_best_weights=True),
        nnx.callbacks.ModelCheckpoint(checkpoint, monitor="val_loss", save_best_only=True),
    ]
    start = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, validation_split=0.15,
                        callbacks=callbacks, verbose=2)
    seconds = time.perf_counter() - start

    loss, accuracy = model.evaluate(x_test, y_test)
    best = nnx.load_model(checkpoint)
    best_loss, best_accuracy = best.evaluate(x_test, y_test)
    plot = nnx.plot_history(history, path=os.path.join(args.out, "digits_history.png"), title="digits, nnx MLP")
    del plot
    print(f"backend: {nnx.get_backend().describe()}; {len(history.epoch)} epochs in {seconds:.1f}s")
    print(f"test accuracy: {accuracy:.4f} (loss {loss:.4f}) on {len(y_test)} held-out digits")
    print(f"checkpoint {checkpoint}: test accuracy {best_accuracy:.4f}")
    print(f"plot: {os.path.join(args.out, 'digits_history.png')}")


if __name__ == "__main__":
    main()
