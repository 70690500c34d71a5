"""nnx.wrappers: scikit-learn's own estimator checks, and the estimators inside scikit-learn's tools."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", minversion="1.6",
                              reason="scikit-learn >= 1.6 (the test extra) is not installed")

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
# With a builder function, and with the built-in default model (model=None).
DEFAULT_SMALL = {"hidden_layer_sizes": (16,), "learning_rate": 0.02}


class Named:
    """A builder with a stable repr, so that the check ids do not carry a function's address."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, X, y, **kwargs):
        return self.fn(X, y, **kwargs)

    def __repr__(self):
        return self.fn.__name__


@parametrize_with_checks([
    SKLearnClassifier(model=Named(build_classifier), fit_kwargs=CHECK_FIT),
    SKLearnRegressor(model=Named(build_regressor), fit_kwargs=CHECK_FIT),
    SKLearnClassifier(model_kwargs=DEFAULT_SMALL, fit_kwargs=CHECK_FIT),
    SKLearnRegressor(model_kwargs=DEFAULT_SMALL, fit_kwargs=CHECK_FIT),
    SKLearnClassifier(),  # every default: the built-in MLP trains as scikit-learn's (up to 200 epochs)
    SKLearnRegressor(),
])
def test_sklearn_estimator_checks(estimator, check, numpy_backend):
    check(estimator)


# -- behaviour ----------------------------------------------------------------------------------
def blobs(n=240, centers=3, seed=0):
    X, y = make_blobs(n_samples=n, centers=centers, n_features=4, cluster_std=1.0, random_state=seed)
    return StandardScaler().fit_transform(X), y


def test_string_labels_classes_and_accuracy(numpy_backend):
    X, y = blobs()
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    clf = SKLearnClassifier(model=build_classifier, fit_kwargs={"epochs": 30}, random_state=0).fit(X, names)
    assert list(clf.classes_) == ["setosa", "versicolor", "virginica"]
    assert clf.n_features_in_ == 4 and clf.n_outputs_ == 1
    pred = clf.predict(X)
    assert pred.dtype == names.dtype and set(pred) <= set(names)
    assert clf.score(X, names) > 0.95
    assert set(clf.history_) == {"loss"} and len(clf.history_["loss"]) == 30
    assert clf.history_["loss"][-1] < clf.history_["loss"][0]


def test_predict_proba_rows_sum_to_one_and_match_predict(numpy_backend):
    X, y = blobs()
    clf = SKLearnClassifier(model=build_classifier, fit_kwargs={"epochs": 20}, random_state=0).fit(X, y + 10)
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 3) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(proba >= 0)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(X))
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba))
    # predict_proba is the model's own softmax output, column j for classes_[j]
    np.testing.assert_allclose(proba, nnx.to_numpy(clf.model_.predict(X)), rtol=1e-6, atol=1e-7)


def build_sigmoid(X, y):
    model = nnx.Sequential([nnx.Input((X.shape[1],)), nnx.Dense(8, activation="relu"),
                            nnx.Dense(1, activation="sigmoid")])
    model.compile(optimizer=nnx.optimizers.Adam(learning_rate=0.02), loss="binary_crossentropy")
    return model


def test_binary_one_sigmoid_unit(numpy_backend):
    X, y = blobs(centers=2)
    labels = np.array(["no", "yes"])[y]
    clf = SKLearnClassifier(model=build_sigmoid, fit_kwargs={"epochs": 30}, random_state=0).fit(X, labels)
    p = nnx.to_numpy(clf.model_.predict(X))[:, 0].astype(np.float64)
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba, np.column_stack([1 - p, p]))
    assert clf.score(X, labels) > 0.95
    np.testing.assert_array_equal(clf.predict(X), np.where(p > 0.5, "yes", "no"))


def build_categorical(X, y, from_logits=False):
    model = nnx.Sequential([nnx.Input((X.shape[1],)), nnx.Dense(16, activation="relu"),
                            nnx.Dense(int(np.max(y)) + 1, activation=None if from_logits else "softmax")])
    loss = nnx.losses.CategoricalCrossentropy(from_logits=True) if from_logits else "categorical_crossentropy"
    model.compile(optimizer=nnx.optimizers.Adam(learning_rate=0.02), loss=loss)
    return model


@pytest.mark.parametrize("from_logits", [False, True])
def test_categorical_loss_gets_one_hot_targets(numpy_backend, from_logits):
    X, y = blobs()
    clf = SKLearnClassifier(model=build_categorical, model_kwargs={"from_logits": from_logits},
                            fit_kwargs={"epochs": 30}, random_state=0).fit(X, y)
    assert clf.score(X, y) > 0.95
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    if from_logits:  # raw outputs are logits; predict_proba applies the softmax
        logits = nnx.to_numpy(clf.model_.predict(X)).astype(np.float64)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        np.testing.assert_allclose(proba, e / e.sum(axis=1, keepdims=True), rtol=1e-6)


def test_validation_data_labels_are_encoded_like_y(numpy_backend):
    X, y = blobs()
    names = np.array(["a", "b", "c"])[y]
    clf = SKLearnClassifier(model=build_categorical, fit_kwargs={"epochs": 5, "validation_data": (X[:40], names[:40])},
                            random_state=0).fit(X, names)
    assert len(clf.history_["val_loss"]) == 5 and np.isfinite(clf.history_["val_loss"]).all()


def test_multi_output_regression(numpy_backend):
    X, Y = make_regression(n_samples=300, n_features=5, n_targets=2, noise=1.0, random_state=0)
    Y = Y / Y.std(axis=0)
    reg = SKLearnRegressor(model=build_regressor, fit_kwargs={"epochs": 60}, random_state=0).fit(X, Y)
    assert reg.n_outputs_ == 2 and reg.predict(X).shape == (300, 2)
    assert reg.score(X, Y) > 0.95
    reg1 = SKLearnRegressor(model=build_regressor, fit_kwargs={"epochs": 60}, random_state=0).fit(X, Y[:, 0])
    assert reg1.n_outputs_ == 1 and reg1.predict(X).shape == (300,)
    assert reg1.score(X, Y[:, 0]) > 0.95


def test_default_model_without_a_builder(numpy_backend):
    X, y = blobs()
    clf = SKLearnClassifier(fit_kwargs={"epochs": 20}, random_state=0).fit(X, y)
    assert [w.shape for w in clf.model_.get_weights()] == [(4, 100), (100,), (100, 3), (3,)]
    assert clf.score(X, y) > 0.95
    reg = SKLearnRegressor(model_kwargs={"hidden_layer_sizes": (8, 8)}, fit_kwargs={"epochs": 5}, random_state=0)
    reg.fit(X, X[:, 0])
    assert [w.shape for w in reg.model_.get_weights()][::2] == [(4, 8), (8, 8), (8, 1)]


def test_random_state_makes_fit_reproducible(numpy_backend):
    X, y = blobs()
    fit = {"epochs": 3}
    a = SKLearnClassifier(model=build_classifier, fit_kwargs=fit, random_state=0).fit(X, y).predict_proba(X)
    b = SKLearnClassifier(model=build_classifier, fit_kwargs=fit, random_state=0).fit(X, y).predict_proba(X)
    c = SKLearnClassifier(model=build_classifier, fit_kwargs=fit, random_state=1).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_warm_start_continues_from_the_fitted_weights(numpy_backend):
    X, y = blobs()
    clf = SKLearnClassifier(model=build_classifier, warm_start=True, fit_kwargs={"epochs": 10}, random_state=0)
    clf.fit(X, y)
    model, first = clf.model_, clf.model_.get_weights()
    first_losses = clf.history_["loss"]
    # with a zero learning rate a warm fit changes nothing: it trained the fitted weights, not fresh ones
    model.optimizer.learning_rate = 0.0
    clf.fit(X, y, epochs=1)
    assert clf.model_ is model
    for a, b in zip(first, clf.model_.get_weights()):
        np.testing.assert_array_equal(a, b)
    # and it keeps learning from where it stood: its first epoch is no worse than the last cold one
    model.optimizer.learning_rate = 0.02
    clf.fit(X, y, epochs=3)
    assert clf.history_["loss"][0] <= first_losses[-1] * 1.05 < first_losses[0]
    assert any(not np.array_equal(a, b) for a, b in zip(first, clf.model_.get_weights()))
    # warm_start=False starts afresh: a new model, back at the first epoch's loss
    clf.set_params(warm_start=False).fit(X, y)
    assert clf.model_ is not model
    assert clf.history_["loss"][0] == pytest.approx(first_losses[0], rel=1e-6)


def test_warm_start_refuses_other_features_or_classes(numpy_backend):
    X, y = blobs()
    clf = SKLearnClassifier(model=build_classifier, warm_start=True, fit_kwargs={"epochs": 1}).fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features, but SKLearnClassifier is expecting 4"):
        clf.fit(X[:, :3], y)
    with pytest.raises(ValueError, match="new labels"):
        clf.fit(X, y + 1)


def test_clone_and_params(numpy_backend):
    X, y = blobs()
    clf = SKLearnClassifier(model=build_classifier, model_kwargs={"hidden": 8}, fit_kwargs={"epochs": 2}).fit(X, y)
    params = clf.get_params()
    assert params == {"model": build_classifier, "warm_start": False, "model_kwargs": {"hidden": 8},
                      "fit_kwargs": {"epochs": 2}, "random_state": None}
    twin = clone(clf)
    assert not hasattr(twin, "model_") and not hasattr(twin, "classes_")
    assert twin.get_params() == params and twin.model_kwargs is not clf.model_kwargs
    with pytest.raises(NotFittedError):
        twin.predict(X)
    twin.set_params(model_kwargs={"hidden": 4}).fit(X, y)
    assert twin.model_.get_weights()[0].shape == (4, 4) and clf.model_.get_weights()[0].shape == (4, 8)


def test_pipeline_with_standard_scaler(numpy_backend):
    X, y = make_classification(n_samples=300, n_features=8, n_informative=5, class_sep=2.0, random_state=0)
    X = X * 100 + 50  # far from unit scale: the scaler earns its place
    Xtr, Xte, ytr, yte = X[:200], X[200:], y[:200], y[200:]
    pipe = make_pipeline(StandardScaler(), SKLearnClassifier(model=build_classifier, fit_kwargs={"epochs": 40},
                                                             random_state=0))
    assert pipe.fit(Xtr, ytr).score(Xte, yte) > 0.9
    assert pipe.predict_proba(Xte).shape == (100, 2)


def test_grid_search_over_model_and_fit_kwargs(numpy_backend):
    X, y = blobs(n=150)
    search = GridSearchCV(
        SKLearnClassifier(model=build_classifier, random_state=0),
        {"model_kwargs": [{"hidden": 2, "learning_rate": 1e-4}, {"hidden": 16}],
         "fit_kwargs": [{"epochs": 1}, {"epochs": 30}]},
        cv=3,
    ).fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    assert search.best_params_ == {"model_kwargs": {"hidden": 16}, "fit_kwargs": {"epochs": 30}}
    assert search.best_score_ > 0.95
    assert search.best_estimator_.model_.get_weights()[0].shape == (4, 16)


def test_cross_val_score_in_two_processes(numpy_backend):
    X, y = blobs(n=150)
    scores = cross_val_score(SKLearnClassifier(model=build_classifier, fit_kwargs={"epochs": 30}, random_state=0),
                             X, y, cv=3, n_jobs=2)
    assert scores.shape == (3,) and scores.min() > 0.9


def test_pickle_round_trip_keeps_predictions(numpy_backend):
    X, y = blobs()
    names = np.array(["a", "b", "c"])[y]
    clf = SKLearnClassifier(model=build_classifier, warm_start=True, fit_kwargs={"epochs": 10}, random_state=0)
    clf.fit(X, names)
    data = pickle.dumps(clf)
    assert b"nnx.models" not in data and b"nnx.layers" not in data  # the model travels as an .nnx file's bytes
    back = pickle.loads(data)
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    np.testing.assert_array_equal(back.predict(X), clf.predict(X))
    assert list(back.classes_) == ["a", "b", "c"] and back.get_params() == clf.get_params()
    # the optimizer state came along: both continue training alike
    clf.fit(X, names, epochs=2)
    back.fit(X, names, epochs=2)
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))

    reg = SKLearnRegressor(model=build_regressor, fit_kwargs={"epochs": 5}, random_state=0).fit(X, X[:, :2])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(reg)).predict(X), reg.predict(X))


def compiled_sequential(input_dim=None):
    layers = [nnx.Input((input_dim,))] if input_dim else []
    model = nnx.Sequential([*layers, nnx.Dense(16, activation="relu"), nnx.Dense(3, activation="softmax")])
    model.compile(optimizer=nnx.optimizers.Adam(learning_rate=0.02), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


@pytest.mark.parametrize("built", [True, False], ids=["with-input", "without-input"])
def test_compiled_sequential_is_cloned_not_trained(numpy_backend, built):
    X, y = blobs()
    original = compiled_sequential(4 if built else None)
    before = original.get_weights()
    clf = SKLearnClassifier(model=original, fit_kwargs={"epochs": 30}, random_state=0).fit(X, y)
    assert clf.model_ is not original and clf.get_params()["model"] is original
    assert clf.score(X, y) > 0.95
    after = original.get_weights()
    assert len(after) == len(before)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert original.optimizer.iterations == 0
    # same architecture and compile settings, a fresh optimizer
    assert clf.model_.get_config()["layers"] == original.get_config()["layers"]
    assert type(clf.model_.optimizer) is type(original.optimizer) and clf.model_.optimizer is not original.optimizer
    assert clf.model_.optimizer.get_config() == original.optimizer.get_config()
    assert clf.model_.loss.name == original.loss.name
    assert clf.model_.optimizer.iterations > 0
    # fresh weights on every fit
    first = clf.model_
    clf.set_params(random_state=1).fit(X, y)
    assert clf.model_ is not first
    assert not np.array_equal(clf.model_.get_weights()[0], first.get_weights()[0])
    # the estimator, with its Sequential parameter, clones and pickles
    twin = clone(clf)
    assert twin.model is original and not hasattr(twin, "model_")
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    assert back.model.get_config()["layers"] == original.get_config()["layers"]
    assert back.fit(X, y).score(X, y) > 0.95


def test_errors(numpy_backend):
    X, y = blobs()
    with pytest.raises(NotFittedError):
        SKLearnClassifier(model=build_classifier).predict_proba(X)
    with pytest.raises(ValueError, match="one class"):
        SKLearnClassifier(model=build_classifier).fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="Unknown label type"):
        SKLearnClassifier(model=build_classifier).fit(X, X[:, 0])
    with pytest.raises(ValueError, match="2 output units; 3 classes"):
        SKLearnClassifier(model=lambda X, y: build_classifier(X, y[y < 2])).fit(X, y)
    uncompiled = nnx.Sequential([nnx.Input((4,)), nnx.Dense(3, activation="softmax")])
    with pytest.raises(ValueError, match="compile"):
        SKLearnClassifier(model=uncompiled).fit(X, y)
    with pytest.raises(ValueError, match="must return a compiled nnx.Sequential"):
        SKLearnClassifier(model=lambda X, y: "not a model").fit(X, y)
    with pytest.raises(ValueError, match="model_kwargs apply to a callable"):
        SKLearnClassifier(model=compiled_sequential(4), model_kwargs={"hidden": 3}).fit(X, y)
    with pytest.raises(ValueError, match="callable"):
        SKLearnRegressor(model=42).fit(X, y)
    clf = SKLearnClassifier(model=build_classifier, fit_kwargs={"epochs": 1}).fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features, but SKLearnClassifier is expecting 4"):
        clf.predict(X[:, :3])
    with pytest.raises(ValueError, match="NaN"):
        clf.predict(np.full((2, 4), np.nan))


def test_callbacks_in_fit_kwargs_keep_the_estimator_clonable(numpy_backend):
    X, y = blobs()
    stop = nnx.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=10.0)
    clf = SKLearnClassifier(model=build_classifier, fit_kwargs={"epochs": 50, "callbacks": [stop]}).fit(X, y)
    assert len(clf.history_["loss"]) < 50  # the callback ran
    assert stop.model is None
    twin = clone(clf)
    assert len(twin.fit(X, y).history_["loss"]) < 50
    pickle.loads(pickle.dumps(clf)).predict(X)


def test_other_backends(backend):
    X, y = blobs()
    clf = SKLearnClassifier(model=build_classifier, fit_kwargs={"epochs": 20}, random_state=0).fit(X, y)
    assert clf.score(X, y) > 0.95 and clf.predict_proba(X).dtype == np.float64
    reg = SKLearnRegressor(model=build_regressor, fit_kwargs={"epochs": 20}, random_state=0).fit(X, X[:, :2])
    assert isinstance(reg.predict(X), np.ndarray) and reg.score(X, X[:, :2]) > 0.8
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_allclose(back.predict_proba(X), clf.predict_proba(X))


def test_import_nnx_without_scikit_learn():
    import subprocess
    import sys

    code = ("import sys; sys.modules['sklearn'] = None\n"
            "import nnx\n"
            "try:\n    nnx.wrappers.SKLearnClassifier()\n"
            "except ImportError as e:\n    print('ImportError:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ImportError: nnx.wrappers needs scikit-learn >= 1.6" in out.stdout


def test_the_built_in_mlp_trains_until_the_loss_stops_improving(numpy_backend):
    """With no ``epochs`` in ``fit_kwargs``, as scikit-learn's MLPs (max_iter=200, tol=1e-4,
    n_iter_no_change=10); given ``epochs`` (or a model of one's own), exactly that many."""
    X, y = blobs(n=120)
    clf = SKLearnClassifier(random_state=0).fit(X, y)
    losses = clf.history_["loss"]
    assert 10 < len(losses) <= 200
    if len(losses) < 200:  # stopped: no improvement of 1e-4 over the best in the last 10 epochs
        assert min(losses[-10:]) > min(losses[:-10]) - 1e-4
    assert clf.score(X, y) > 0.95
    assert len(SKLearnClassifier(fit_kwargs={"epochs": 3}).fit(X, y).history_["loss"]) == 3
    assert len(SKLearnClassifier(model=build_classifier).fit(X, y).history_["loss"]) == 1  # Keras's fit default
