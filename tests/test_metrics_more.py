"""Precision, Recall, AUC (stateful: confusion counts kept on the device across batches) and the
top-k accuracies, against scikit-learn on random data split into several batches, so the
accumulation across batches is what is tested; History keys as Keras's.
"""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import precision_score, recall_score, roc_auc_score, top_k_accuracy_score

import nnx

M = nnx.metrics


def _identity_model(width, loss="binary_crossentropy", metrics=()):
    """A model whose output is its input: evaluate(x, y) scores the predictions x against y."""
    model = nnx.Sequential([nnx.Input(width), nnx.Activation("linear")])
    model.compile("sgd", loss, metrics=list(metrics))
    return model


def _binary(n=203, width=1, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=(n, width)).astype("float32")
    y = (rng.uniform(size=(n, width)) < 0.3 + 0.5 * p).astype("float32")  # informative, not perfect
    return p, y


# -- names and protocol ------------------------------------------------------------------------------
@pytest.mark.parametrize("name, cls", [("precision", M.Precision), ("recall", M.Recall), ("auc", M.AUC),
                                       ("AUC", M.AUC), ("Precision", M.Precision),
                                       ("top_k_categorical_accuracy", M.TopKCategoricalAccuracy),
                                       ("sparse_top_k_categorical_accuracy", M.SparseTopKCategoricalAccuracy)])
def test_names(name, cls):
    """As Keras: a string names the metric as written (its History key); an instance has the
    class's snake_case name."""
    metric = M.get(name, nnx.losses.get("mse"), 3)
    assert type(metric) is cls and metric.name == name
    assert cls().name == name.lower()


def test_arguments_are_checked():
    for bad in ([0.3, 0.6], 1.5, -0.1, "0.5", True):
        with pytest.raises(ValueError, match="thresholds"):
            M.Precision(thresholds=bad)
    assert M.Recall(thresholds=[0.25]).thresholds == 0.25
    for bad in (1, 0, 2.5, True):
        with pytest.raises(ValueError, match="num_thresholds"):
            M.AUC(num_thresholds=bad)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="k must"):
            M.TopKCategoricalAccuracy(k=bad)


def test_stateful_protocol_accumulates_across_updates(backend):
    p, y = _binary(60)
    for metric, reference in [(M.Precision(), precision_score), (M.Recall(), recall_score)]:
        metric.reset()
        assert metric.result() == 0.0
        for i in range(0, 60, 25):
            metric.update(backend.xp, nnx.asarray(y[i:i + 25]), nnx.asarray(p[i:i + 25]))
        assert float(metric.result()) == pytest.approx(reference(y.ravel(), p.ravel() > 0.5), rel=1e-6)
        metric.reset_state()  # Keras's spellings
        metric.update_state(nnx.asarray(y[:10]), nnx.asarray(p[:10]))
        assert float(metric.result()) == pytest.approx(reference(y[:10].ravel(), p[:10].ravel() > 0.5), rel=1e-6)
        # calling the metric is the value over that one batch, and leaves its state alone
        assert metric(nnx.asarray(y), nnx.asarray(p)) == pytest.approx(reference(y.ravel(), p.ravel() > 0.5), rel=1e-6)
        assert float(metric.result()) == pytest.approx(reference(y[:10].ravel(), p[:10].ravel() > 0.5), rel=1e-6)
    # the mean metrics speak the same protocol
    mae = M.MeanAbsoluteError()
    mae.reset()
    mae.update(backend.xp, nnx.asarray(y[:7]), nnx.asarray(p[:7]))
    mae.update(backend.xp, nnx.asarray(y[7:]), nnx.asarray(p[7:]))
    assert float(mae.result()) == pytest.approx(np.abs(y - p).mean(), rel=1e-5)


def test_precision_and_recall_are_zero_without_positives(backend):
    y = nnx.asarray(np.zeros((4, 1), dtype="float32"))
    p = nnx.asarray(np.full((4, 1), 0.2, dtype="float32"))
    assert M.Precision()(y, p) == 0.0 and M.Recall()(y, p) == 0.0


# -- against scikit-learn, several batches -----------------------------------------------------------
@pytest.mark.parametrize("threshold", [None, 0.7])
@pytest.mark.parametrize("width", [1, 3])
def test_precision_recall_match_sklearn(backend, width, threshold):
    """Entries of a multi-unit output all count (Keras's micro-average); batches of 16 over 203
    samples, so the counts are summed over 13 batches."""
    p, y = _binary(203, width)
    model = _identity_model(width, metrics=[M.Precision(thresholds=threshold), M.Recall(thresholds=threshold)])
    logs = model.evaluate(p, y, batch_size=16, return_dict=True)
    decided = p.ravel() > (0.5 if threshold is None else threshold)
    assert logs["precision"] == pytest.approx(precision_score(y.ravel(), decided), rel=1e-6)
    assert logs["recall"] == pytest.approx(recall_score(y.ravel(), decided), rel=1e-6)
    # a single batch of everything gives the same
    whole = model.evaluate(p, y, batch_size=203, return_dict=True)
    assert whole["precision"] == pytest.approx(logs["precision"], rel=1e-6)


def test_precision_with_integer_labels_reads_them_as_one_hot(backend):
    rng = np.random.default_rng(4)
    p = rng.dirichlet(np.ones(4), size=90).astype("float32")
    labels = rng.integers(0, 4, size=90)
    p[np.arange(90), labels] += 0.4 * rng.uniform(size=90).astype("float32")
    model = _identity_model(4, "sparse_categorical_crossentropy", ["precision", "recall"])
    logs = model.evaluate(p, labels, batch_size=32, return_dict=True)
    onehot = np.eye(4)[labels].ravel()
    assert logs["precision"] == pytest.approx(precision_score(onehot, p.ravel() > 0.5), rel=1e-6)
    assert logs["recall"] == pytest.approx(recall_score(onehot, p.ravel() > 0.5), rel=1e-6)


def _keras_auc(y, p, num_thresholds=200):
    """Keras's ROC AUC written out: counts at the thresholds, trapezoids between them."""
    th = np.array([-1e-7] + [(i + 1) / (num_thresholds - 1) for i in range(num_thresholds - 2)] + [1 + 1e-7],
                  dtype="float32")
    y, p = y.ravel() > 0, p.ravel()
    above = p[:, None] > th[None, :]
    tp, fp = (above & y[:, None]).sum(0), (above & ~y[:, None]).sum(0)
    tpr, fpr = tp / max(y.sum(), 1), fp / max((~y).sum(), 1)
    return float(np.sum((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2))


@pytest.mark.parametrize("width", [1, 2])
def test_auc_matches_sklearn_on_the_threshold_grid(backend, width):
    """Scores at the midpoints between thresholds: the thresholds separate every distinct score,
    so the interpolated trapezoid is the exact ROC AUC (ties included), which sklearn computes."""
    rng = np.random.default_rng(7)
    n, num = 157, 11
    p = ((rng.integers(0, num - 1, size=(n, width)) + 0.5) / (num - 1)).astype("float32")
    y = (rng.uniform(size=(n, width)) < 0.2 + 0.6 * p).astype("float32")
    model = _identity_model(width, metrics=[M.AUC(num_thresholds=num)])
    auc = model.evaluate(p, y, batch_size=20, return_dict=True)["auc"]
    assert auc == pytest.approx(roc_auc_score(y.ravel(), p.ravel()), rel=1e-5)


def test_auc_scores_on_a_threshold_are_not_above_it(backend):
    """Keras counts a score as positive at a threshold when it is strictly above it: scores
    exactly on the thresholds 0, 1/4, …, 1 (exact in float32) are counted at the threshold below."""
    rng = np.random.default_rng(8)
    p = (rng.integers(0, 5, size=(80, 1)) / 4).astype("float32")
    y = (rng.uniform(size=(80, 1)) < 0.2 + 0.6 * p).astype("float32")
    model = _identity_model(1, metrics=[M.AUC(num_thresholds=5)])
    auc = model.evaluate(p, y, batch_size=16, return_dict=True)["auc"]
    assert auc == pytest.approx(_keras_auc(y, p, 5), rel=1e-6)
    above_or_on = _keras_auc(y, p + 1e-3, 5)  # what ">=" would give
    assert abs(auc - above_or_on) > 1e-3


def test_auc_on_continuous_scores_is_keras_s_and_close_to_sklearn(backend):
    p, y = _binary(411)
    model = _identity_model(1, metrics=["auc"])
    auc = model.evaluate(p, y, batch_size=50, return_dict=True)["auc"]
    assert auc == pytest.approx(_keras_auc(y, p), rel=1e-5)
    assert auc == pytest.approx(roc_auc_score(y.ravel(), p.ravel()), abs=5e-3)
    assert 0.6 < auc < 0.95  # informative scores: the test is not trivially 0.5 or 1


def test_auc_extremes_and_logits(backend):
    y = np.array([[0.0], [0.0], [1.0], [1.0]], dtype="float32")
    ranked = np.array([[0.1], [0.4], [0.6], [0.9]], dtype="float32")
    assert M.AUC()(nnx.asarray(y), nnx.asarray(ranked)) == pytest.approx(1.0)
    assert M.AUC()(nnx.asarray(y), nnx.asarray(1.0 - ranked)) == pytest.approx(0.0, abs=1e-6)
    logits = np.log(ranked / (1.0 - ranked)) * 0.5
    assert M.AUC(from_logits=True)(nnx.asarray(y), nnx.asarray(logits)) == pytest.approx(1.0)
    assert M.AUC()(nnx.asarray(np.zeros((3, 1), dtype="float32")), nnx.asarray(ranked[:3])) == 0.0


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_top_k_matches_sklearn(backend, k):
    rng = np.random.default_rng(k)
    p = rng.normal(size=(130, 6)).astype("float32")  # continuous: no ties
    labels = rng.integers(0, 6, size=130)
    expected = top_k_accuracy_score(labels, p, k=k, labels=np.arange(6))
    dense = _identity_model(6, "categorical_crossentropy", [M.TopKCategoricalAccuracy(k=k)])
    logs = dense.evaluate(p, np.eye(6, dtype="float32")[labels], batch_size=16, return_dict=True)
    assert logs["top_k_categorical_accuracy"] == pytest.approx(expected, rel=1e-6)
    sparse = _identity_model(6, nnx.losses.SparseCategoricalCrossentropy(from_logits=True),
                             [M.SparseTopKCategoricalAccuracy(k=k)])
    logs = sparse.evaluate(p, labels, batch_size=16, return_dict=True)
    assert logs["sparse_top_k_categorical_accuracy"] == pytest.approx(expected, rel=1e-6)


def test_top_k_ties_count_as_hits_as_keras(backend):
    """TensorFlow's in_top_k: a label is in the top k when fewer than k scores are strictly
    greater than its own, so a tie at the k-th place is a hit."""
    p = np.array([[0.4, 0.4, 0.2], [0.1, 0.3, 0.3], [0.5, 0.3, 0.2], [0.2, 0.2, 0.2]], dtype="float32")
    labels = np.array([1, 2, 2, 0])
    y = nnx.asarray(np.eye(3, dtype="float32")[labels])
    hits = M.TopKCategoricalAccuracy(k=1)(y, nnx.asarray(p))
    assert hits == pytest.approx(3 / 4)  # rows 0, 1 and 3 tie at the top; row 2's label is third
    assert M.SparseTopKCategoricalAccuracy(k=2)(nnx.asarray(labels), nnx.asarray(p)) == pytest.approx(3 / 4)
    assert M.SparseTopKCategoricalAccuracy(k=3)(nnx.asarray(labels), nnx.asarray(p)) == pytest.approx(1.0)
    assert M.SparseTopKCategoricalAccuracy()(nnx.asarray(labels), nnx.asarray(p)) == pytest.approx(1.0)  # k=5 > 3


# -- in fit: History keys, accumulation over the epoch, no per-batch reads ---------------------------
class CountingAUC(M.AUC):
    results = 0

    def result(self):
        type(self).results += 1
        return super().result()


def test_fit_logs_keras_keys_and_epoch_values(backend):
    """SGD with a learning rate of 0 keeps the weights, so every epoch's metrics are those of
    predict over the training rows, and val_ those over the held-out rows; result() is read
    once per epoch and per validation, not per batch."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(120, 4)).astype("float32")
    y = (x[:, :1] + 0.8 * rng.normal(size=(120, 1)) > 0).astype("float32")
    model = nnx.Sequential([nnx.Input(4), nnx.Dense(1, activation="sigmoid")])
    CountingAUC.results = 0
    model.compile(nnx.optimizers.SGD(0.0), "binary_crossentropy",
                  metrics=["precision", "recall", CountingAUC(num_thresholds=50), "accuracy"])
    history = model.fit(x, y, epochs=2, batch_size=16, validation_split=0.25, verbose=0)
    assert set(history.history) == {"loss", "precision", "recall", "auc", "accuracy",
                                     "val_loss", "val_precision", "val_recall", "val_auc", "val_accuracy"}
    assert CountingAUC.results == 4  # 2 epochs x (training + validation), not once per batch
    p = nnx.to_numpy(model.predict(x))
    for rows, prefix in ((slice(0, 90), ""), (slice(90, 120), "val_")):
        yt, pt = y[rows].ravel(), p[rows].ravel()
        assert history.history[prefix + "precision"] == pytest.approx([precision_score(yt, pt > 0.5)] * 2, rel=1e-5)
        assert history.history[prefix + "recall"] == pytest.approx([recall_score(yt, pt > 0.5)] * 2, rel=1e-5)
        assert history.history[prefix + "auc"] == pytest.approx([_keras_auc(yt, pt, 50)] * 2, rel=1e-5)
    assert model.metrics_names == ["loss", "precision", "recall", "auc", "accuracy"]
    values = model.evaluate(x, y, batch_size=7)
    assert values[1] == pytest.approx(precision_score(y.ravel(), p.ravel() > 0.5), rel=1e-5)


def test_evaluate_inside_a_callback_leaves_the_epoch_counts_alone(backend):
    """Each epoch's counts live in that epoch's own copies of the metrics, so an evaluate run by a
    callback in the middle of an epoch neither resets nor adds to them."""
    p, y = _binary(64)
    model = _identity_model(1, metrics=["precision"])
    model.layers[0].trainable = False
    other = np.ones((5, 1), dtype="float32"), np.zeros((5, 1), dtype="float32")

    class Meddler(nnx.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.model.evaluate(*other)

    history = model.fit(p, y, epochs=1, batch_size=10, verbose=0, callbacks=[Meddler()], shuffle=False)
    assert history.history["precision"] == pytest.approx([precision_score(y.ravel(), p.ravel() > 0.5)], rel=1e-6)


def test_running_logs_show_the_stateful_metrics(backend):
    p, y = _binary(40)
    model = _identity_model(1, metrics=["recall"])
    seen = []

    class Watch(nnx.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(dict(logs))

    model.fit(p, y, epochs=1, batch_size=20, verbose=0, callbacks=[Watch()], shuffle=False)
    assert list(seen[0]) == ["loss", "recall"]
    assert seen[0]["recall"] == pytest.approx(recall_score(y[:20].ravel(), p[:20].ravel() > 0.5), rel=1e-6)
    assert seen[1]["recall"] == pytest.approx(recall_score(y.ravel(), p.ravel() > 0.5), rel=1e-6)


def test_metric_arguments_survive_save_and_load(backend, tmp_path):
    model = nnx.Sequential([nnx.Input(4), nnx.Dense(4, activation="softmax")])
    model.compile("adam", "categorical_crossentropy",
                  metrics=[M.AUC(num_thresholds=50), M.TopKCategoricalAccuracy(k=2), M.Precision(thresholds=0.3),
                           M.Precision(), "accuracy"])
    model.save(tmp_path / "m.nnx")
    loaded = nnx.load_model(tmp_path / "m.nnx")
    assert loaded.metrics_names == model.metrics_names == ["loss", "auc", "top_k_categorical_accuracy",
                                                           "precision", "precision_1", "accuracy"]
    assert [m.get_config() for m in loaded.metrics] == [m.get_config() for m in model.metrics]
    assert loaded.metrics[0].num_thresholds == 50 and loaded.metrics[1].k == 2
    assert loaded.metrics[2].thresholds == 0.3


def test_metric_name_keyword_and_a_loss_as_a_metric(backend, tmp_path):
    """As Keras: ``name=`` names a metric's History key; a loss's name in ``metrics`` is the
    unweighted mean of that loss; both survive save and load."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 3)).astype("float32")
    y = (rng.random(12) < 0.5).astype("float32")
    model = nnx.Sequential([nnx.Input((3,)), nnx.Dense(1, activation="sigmoid")])
    model.compile("sgd", "mse", metrics=["binary_crossentropy", M.Precision(name="p"), M.AUC(name="area")])
    history = model.fit(x, y, epochs=1, verbose=0, sample_weight=np.linspace(0.5, 2.0, 12).astype("float32"))
    assert list(history.history) == ["loss", "binary_crossentropy", "p", "area"]
    p = nnx.to_numpy(model.predict(x, verbose=0))[:, 0].astype("float64")
    q = np.clip(p, 1e-7, 1 - 1e-7)
    bce = -(y * np.log(q) + (1 - y) * np.log(1 - q)).mean()
    results = model.evaluate(x, y, verbose=0)
    np.testing.assert_allclose(results[1], bce, rtol=1e-5)
    path = tmp_path / "m.nnx"
    model.save(path)
    loaded = nnx.load_model(path)
    assert loaded.metrics_names == ["loss", "binary_crossentropy", "p", "area"]
    np.testing.assert_allclose(loaded.evaluate(x, y, verbose=0), results, rtol=1e-6)
    with pytest.raises(ValueError, match="non-empty str"):
        M.Recall(name="")


def test_binary_accuracy_compares_the_thresholded_prediction_with_the_target_as_keras(backend):
    y = nnx.asarray(np.array([[1.0], [0.0], [1.0], [0.7]], dtype="float32"))
    p = nnx.asarray(np.array([[0.9], [0.2], [0.4], [0.9]], dtype="float32"))
    assert M.BinaryAccuracy()(y, p) == pytest.approx(0.5)  # hits, hit, miss, and 0.7 never matches
    assert M.BinaryAccuracy(threshold=0.3)(y, p) == pytest.approx(0.75)  # 0.4 -> 1 now: a hit
