"""nnx.wrappers: scikit-learn's own estimator checks, and the estimators inside scikit-learn's tools."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", reason="scikit-learn (the test extra) is not installed")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import make_blobs, make_classification, make_regression  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import nnx  # noqa: E402
from nnx.wrappers import SKLearnClassifier, SKLearnRegressor  # noqa: E402


# -- builders (module level, so that worker processes can unpickle them) ---------------------
def build_classifier(X, y, hidden=16, learning_rate=0.02):
    model = nnx.Sequential([nnx.Input((X.shape[1],)), nnx.Dense(hidden, activation="relu"),
                            nnx.Dense(int(np.max(y)) + 1, activation="softmax")])
    model.compile(optimizer=nnx.optimizers.Adam(learning_rate=learning_rate), loss="sparse_categorical_crossentropy")
    return model


def build_regressor(X, y, hidden=16, learning_rate=0.02):
    n_outputs = 1 if y.ndim == 1 else y.shape[1]
    model = nnx.Sequential([nnx.Input((X.shape[1],)), nnx.Dense(hidden, activation="relu"), nnx.Dense(n_outputs)])
    model.compile(optimizer=nnx.optimizers.Adam(learning_rate=learning_rate), loss="mse")
    return model


CHECK_FIT = {"epochs": 40, "batch_size": 32}


@pytest.fixture
def numpy_backend():
    with nnx.use_backend("numpy") as b:
        nnx.seed(0)
        yield b


# -- scikit-learn's own checks, no expected failures --------------------------------------------
@parametrize_with_checks([
    SKLearnClassifier(model=build_classifier, fit_kwargs=CHECK_FIT),
    SKLearnRegressor(model=build_regressor, fit_kwargs=CHECK_FIT),
])
def test_sklearn_estimator_checks(estimator, check, numpy_backend):
    check(estimator)
