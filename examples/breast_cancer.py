"""Binary classification on scikit-learn's bundled breast-cancer data; reports test accuracy.

    pip install -e ".[examples]"
    python examples/breast_cancer.py [--backend numpy|cupy|array_api_strict]

Writes the training curves to <out>/breast_cancer_history.png.
"""
from __future__ import annotations

import os

import numpy as np
from sklearn.datasets import load_breast_cancer

import nnx
from _common import parse, split


def main() -> None:
    args = parse(__doc__.splitlines()[0], epochs=100)
    data = load_breast_cancer()
    x_train, x_test, y_train, y_test = split(data.data, data.target, 0.2, seed=args.seed)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std

    model = nnx.Sequential([
        nnx.Input((30,)),
        nnx.Dense(16, activation="relu"),
        nnx.Dropout(0.2),
        nnx.Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer=nnx.optimizers.RMSprop(1e-3), loss="binary_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=16, validation_split=0.15, verbose=0,
                        callbacks=[nnx.callbacks.EarlyStopping(patience=10, restore_best_weights=True),
                                   nnx.callbacks.ReduceLROnPlateau(factor=0.5, patience=4)])
    loss, accuracy = model.evaluate(x_test, y_test)
    majority = max(np.mean(y_test), 1 - np.mean(y_test))
    nnx.plot_history(history, path=os.path.join(args.out, "breast_cancer_history.png"), title="breast cancer")
    print(f"backend: {nnx.get_backend().describe()}; {len(history.epoch)} epochs")
    print(f"test accuracy: {accuracy:.4f} (loss {loss:.4f}; majority class {majority:.4f}) on {len(y_test)} held-out cases")


if __name__ == "__main__":
    main()
