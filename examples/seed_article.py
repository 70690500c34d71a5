"""The article's own example: learn y from four points and predict two new ones.

    python examples/seed_article.py [--backend numpy|cupy|array_api_strict]

Trained on x = [[3,2],[2,2],[3,3],[4,4]], y = [5,4,6,8]; predicts [[3,4],[4,4]] (the article got 7.14 and 8.0).
"""
from __future__ import annotations

import argparse

import numpy as np

import nnx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", help="numpy, cupy, array_api_strict or auto")
    parser.add_argument("--epochs", type=int, default=1000)
    args = parser.parse_args()
    nnx.set_backend(args.backend)
    nnx.seed(0)

    x = np.array([[3, 2], [2, 2], [3, 3], [4, 4]], dtype="float32")
    y = np.array([5, 4, 6, 8], dtype="float32")
    model = nnx.Sequential([nnx.Input((2,)), nnx.Dense(4, activation="linear"), nnx.Dense(1)])
    model.compile(optimizer=nnx.optimizers.Adam(learning_rate=0.02), loss="mse")
    history = model.fit(x, y, epochs=args.epochs, batch_size=4, verbose=0)

    prediction = nnx.to_numpy(model.predict(np.array([[3, 4], [4, 4]], dtype="float32")))[:, 0]
    print(f"backend: {nnx.get_backend().describe()}")
    print(f"final training loss: {history.history['loss'][-1]:.6f}")
    print(f"predict [[3, 4], [4, 4]] -> [{prediction[0]:.3f}, {prediction[1]:.3f}]  (expected about [7, 8])")


if __name__ == "__main__":
    main()
