"""Tune an nnx classifier inside a scikit-learn Pipeline with GridSearchCV; compare with MLPClassifier.

    pip install -e ".[examples]"
    python examples/sklearn_pipeline.py [--backend numpy|cupy|array_api_strict] [--epochs 30]

StandardScaler -> nnx.wrappers.SKLearnClassifier on scikit-learn's bundled 8x8 digits: a 3-fold
grid search over the hidden width (``model_kwargs``) and the batch size (``fit_kwargs``) on 80% of
the data, then the held-out score of the refitted best pipeline, next to scikit-learn's own
MLPClassifier tuned over the same widths on the same split.
"""
from __future__ import annotations

import time

from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import nnx
from _common import parse


def build(X, y, hidden=64, learning_rate=0.003):
    """The model the wrapper fits: X and y (class indices 0..k-1) give the input and output widths."""
    model = nnx.Sequential([
        nnx.Input((X.shape[1],)),
        nnx.Dense(hidden, activation="relu"),
        nnx.Dense(int(y.max()) + 1, activation="softmax"),
    ])
    model.compile(optimizer=nnx.optimizers.Adam(learning_rate=learning_rate), loss="sparse_categorical_crossentropy")
    return model


def main() -> None:
    args = parse(__doc__.splitlines()[0], epochs=30)
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, stratify=y, random_state=args.seed)
    widths = [16, 64]

    start = time.perf_counter()
    pipe = Pipeline([
        ("scale", StandardScaler()),
        ("net", nnx.wrappers.SKLearnClassifier(model=build, fit_kwargs={"epochs": args.epochs},
                                               random_state=args.seed)),
    ])
    search = GridSearchCV(pipe, {
        "net__model_kwargs": [{"hidden": h} for h in widths],
        "net__fit_kwargs": [{"epochs": args.epochs, "batch_size": b} for b in (16, 64)],
    }, cv=3).fit(X_train, y_train)
    nnx_seconds = time.perf_counter() - start
    nnx_score = search.score(X_test, y_test)

    start = time.perf_counter()
    mlp = GridSearchCV(Pipeline([
        ("scale", StandardScaler()),
        ("net", MLPClassifier(max_iter=500, random_state=args.seed)),
    ]), {"net__hidden_layer_sizes": [(h,) for h in widths]}, cv=3).fit(X_train, y_train)
    mlp_seconds = time.perf_counter() - start
    mlp_score = mlp.score(X_test, y_test)

    print(f"backend: {nnx.get_backend().describe()}; {len(X_train)} training digits, {len(X_test)} held out")
    print(f"nnx best parameters: {search.best_params_} (cv accuracy {search.best_score_:.4f})")
    print(f"MLPClassifier best parameters: {mlp.best_params_} (cv accuracy {mlp.best_score_:.4f})")
    print(f"held-out accuracy: nnx {nnx_score:.4f} ({nnx_seconds:.1f} s), "
          f"MLPClassifier {mlp_score:.4f} ({mlp_seconds:.1f} s)")


if __name__ == "__main__":
    main()
