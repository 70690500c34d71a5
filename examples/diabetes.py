"""Regression on scikit-learn's bundled diabetes data: test MAE of an MLP next to a linear baseline.

    pip install -e ".[examples]"
    python examples/diabetes.py [--backend numpy|cupy|array_api_strict]

Writes the training curves to <out>/diabetes_history.png.
"""
from __future__ import annotations

import os

import numpy as np
from sklearn.datasets import load_diabetes

import nnx
from _common import parse, split


def main() -> None:
    args = parse(__doc__.splitlines()[0], epochs=300)
    data = load_diabetes()
    x_train, x_test, y_train, y_test = split(data.data, data.target, 0.2, seed=args.seed)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    y_mean, y_std = y_train.mean(), y_train.std()

    # linear baseline: least squares on the same standardised features (host numpy)
    design = np.c_[x_train, np.ones(len(x_train))]
    coef, *_ = np.linalg.lstsq(design, y_train, rcond=None)
    baseline_mae = np.abs(np.c_[x_test, np.ones(len(x_test))] @ coef - y_test).mean()

    model = nnx.Sequential([
        nnx.Input((10,)),
        nnx.Dense(32, activation="relu", kernel_regularizer=nnx.regularizers.L2(1e-2)),
        nnx.Dense(1),
    ])
    model.compile(optimizer=nnx.optimizers.Adam(3e-3), loss="mse", metrics=["mae"])
    history = model.fit(x_train, (y_train - y_mean) / y_std, epochs=args.epochs, batch_size=32, validation_split=0.15,
                        callbacks=[nnx.callbacks.EarlyStopping(monitor="val_mae", patience=30, restore_best_weights=True)],
                        verbose=0)
    prediction = nnx.to_numpy(model.predict(x_test))[:, 0] * y_std + y_mean
    mae = np.abs(prediction - y_test).mean()
    nnx.plot_history(history, path=os.path.join(args.out, "diabetes_history.png"), title="diabetes regression")
    print(f"backend: {nnx.get_backend().describe()}; {len(history.epoch)} epochs")
    print(f"test MAE: {mae:.2f} (linear baseline {baseline_mae:.2f}) on {len(y_test)} held-out patients")


if __name__ == "__main__":
    main()
