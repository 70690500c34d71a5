"""Embedding: lookups against the table by hand, the scatter-add gradient by finite differences
(repeated ids included) and against a one-hot reference, integer inputs kept integer, ids out of
range refused, Keras's weight, config and saving."""
from __future__ import annotations

import numpy as np
import pytest

import nnx
from nnx.layers import Embedding, LayerNormalization
from nnx.ops import Ops

from helpers import check_weight_gradients


def _fd_check(model, x, y):
    check_weight_gradients(model, x, y, training=True, atol=1e-8)


def test_lookup_values(backend):
    model = nnx.Sequential([nnx.Input((4,), dtype="int32"), Embedding(6, 3)])
    table = np.arange(18, dtype="float32").reshape(6, 3) / 7
    model.set_weights([table])
    ids = np.array([[0, 5, 5, 2], [1, 1, 0, 3]])
    out = nnx.to_numpy(model.predict(ids))
    assert out.shape == (2, 4, 3)
    np.testing.assert_array_equal(out, table[ids])
    assert model.output_shape == (4, 3)
    # ids of more axes, and a host list
    deep = nnx.Sequential([nnx.Input((2, 2)), Embedding(6, 3)])
    deep.set_weights([table])
    np.testing.assert_array_equal(nnx.to_numpy(deep.predict([[[1, 2], [3, 4]]])), table[[[[1, 2], [3, 4]]]])


def test_embedding_gradient_with_repeated_ids(backend64):
    rng = np.random.default_rng(0)
    ids = np.array([[0, 3, 3, 1, 3], [2, 2, 0, 6, 3], [6, 6, 6, 6, 6]])  # 4 and 5 never appear
    y = rng.normal(size=(3, 2))
    model = nnx.Sequential([nnx.Input((5,), dtype="int64"), Embedding(7, 3), nnx.Flatten(), nnx.Dense(2)])
    model.compile("sgd", "mse")
    model.layers[0].set_weights([rng.normal(size=(7, 3))])
    _fd_check(model, ids, y)
    grads = model.compute_gradients(nnx.asarray(ids), nnx.asarray(y)).grads
    g = nnx.to_numpy(grads[model.layers[0].embeddings])
    np.testing.assert_array_equal(g[[4, 5]], np.zeros((2, 3)))  # rows never looked up get nothing
    assert np.abs(g[[0, 1, 2, 3, 6]]).min(axis=1).max() > 0


def test_embedding_then_layernorm_and_regularizer_gradients(backend64):
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 5, size=(4, 3))
    ids[0, :] = 2  # repeats within a sample
    model = nnx.Sequential([nnx.Input((3,), dtype="int32"),
                            Embedding(5, 4, embeddings_regularizer=nnx.regularizers.l2(0.1)),
                            LayerNormalization(), nnx.Dense(2, activation="tanh"), nnx.Flatten(), nnx.Dense(1)])
    model.compile("sgd", "mse")
    _fd_check(model, ids, rng.normal(size=(4, 1)))


@pytest.mark.parametrize("chunk", [1 << 22, 7, 1])
def test_unsorted_segment_sum_against_one_hot(backend, chunk):
    """The backend's scatter-add (NumPy's np.add.at, CuPy's segment kernel, or the portable one-hot
    product, in blocks of rows) against a one-hot product written here."""
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 9, size=40)
    ids[:5] = 4  # repeated
    rows = rng.normal(size=(40, 3)).astype("float32")
    ops = nnx.get_backend().ops
    ops.segment_chunk_elements = chunk  # the portable code builds one-hot blocks this large
    try:
        out = ops.unsorted_segment_sum(nnx.asarray(rows), nnx.asarray(ids), 11)
    finally:
        del ops.segment_chunk_elements
    expected = np.eye(11)[ids].T @ rows.astype("float64")
    assert tuple(out.shape) == (11, 3)
    np.testing.assert_allclose(nnx.to_numpy(out), expected, rtol=1e-5, atol=1e-5)
    empty = ops.unsorted_segment_sum(nnx.asarray(rows[:0]), nnx.asarray(ids[:0]), 4)
    np.testing.assert_array_equal(nnx.to_numpy(empty), np.zeros((4, 3)))


def test_fast_segment_sum_adds_in_index_order(backend):
    """The NumPy and CuPy kernels add each segment's rows one by one in index order, in the rows'
    dtype: bit-equal to a sequential float32 sum, and the same on every call (atomics would add in
    a different order each time, and a resumed training would drift)."""
    ops = nnx.get_backend().ops
    if ops.name not in ("numpy", "cupy"):
        pytest.skip(f"the portable one-hot product ({ops.name}) adds in the matrix product's order")
    rng = np.random.default_rng(7)
    ids = rng.integers(0, 3, size=3000)
    rows = rng.normal(size=(3000, 5)).astype("float32") * np.float32(1e3)
    expected = np.zeros((4, 5), dtype="float32")
    for k in range(3):
        for r in rows[ids == k]:
            expected[k] += r
    first = nnx.to_numpy(ops.unsorted_segment_sum(nnx.asarray(rows), nnx.asarray(ids), 4))
    again = nnx.to_numpy(ops.unsorted_segment_sum(nnx.asarray(rows), nnx.asarray(ids), 4))
    np.testing.assert_array_equal(first, expected)
    np.testing.assert_array_equal(again, first)


def test_fast_scatter_add_is_declared_and_taken(backend, monkeypatch):
    ops = nnx.get_backend().ops
    if ops.name in ("numpy", "cupy"):
        assert type(ops).unsorted_segment_sum is not Ops.unsorted_segment_sum
    calls = []
    real = ops.unsorted_segment_sum

    def spy(rows, ids, n):
        calls.append((tuple(rows.shape), n))
        return real(rows, ids, n)

    monkeypatch.setattr(ops, "unsorted_segment_sum", spy)
    model = nnx.Sequential([nnx.Input((5,), dtype="int32"), Embedding(10, 4), nnx.Flatten(), nnx.Dense(1)])
    model.compile("sgd", "mse")
    model.train_on_batch(np.arange(15).reshape(3, 5) % 10, np.ones(3))
    assert calls == [((15, 4), 10)]


def test_integer_inputs_stay_integer(backend):
    seen = []

    class Spy(Embedding):
        def forward(self, x, training=False):
            seen.append(str(x.dtype))
            return super().forward(x, training)

    ids = np.array([[1, 2], [3, 0]])
    table = np.arange(8, dtype="float32").reshape(4, 2)
    for first, dtype in (([nnx.Input((2,), dtype="int32"), Spy(4, 2)], "int32"),
                         ([nnx.Input((2,), dtype="uint8"), Spy(4, 2)], "uint8"),
                         ([nnx.Input((2,)), Spy(4, 2)], "int64"),  # no integer dtype given: int64
                         ([Spy(4, 2, input_length=2)], "int64")):
        seen.clear()
        model = nnx.Sequential(first)
        model.set_weights([table])
        for x in (ids, ids.astype("float64"), nnx.asarray(ids.astype("float32")), ids.tolist()):
            np.testing.assert_array_equal(nnx.to_numpy(model.predict(x)), table[ids])
        assert seen and all(d.endswith(dtype) for d in seen), (dtype, seen)


def test_lazily_built_embedding_model(backend):
    model = nnx.Sequential([Embedding(10, 3), nnx.Flatten(), nnx.Dense(1)])
    model.compile("adam", "mse")
    ids = np.random.default_rng(3).integers(0, 10, size=(16, 4))
    model.fit(ids, np.ones(16), epochs=1, verbose=0)
    assert model.input_shape == (4,) and model.layers[0].embeddings.shape == (10, 3)


@pytest.mark.parametrize("bad,message", [
    (10, r"must lie in \[0, 9\] \(input_dim=10\); received ids from 0 to 10"),
    (-1, r"must lie in \[0, 9\].*received ids from -1 to"),
    (2.5, "must be integer ids"),
    (np.nan, "must be integer ids"),
    (1e30, r"must lie in \[0, 9\]"),
])
def test_ids_out_of_range_or_not_integers_are_refused(backend, bad, message):
    model = nnx.Sequential([nnx.Input((3,), dtype="int32"), Embedding(10, 2, name="emb"), nnx.Flatten(),
                            nnx.Dense(1)])
    model.compile("sgd", "mse")
    good = np.array([[0, 1, 2], [3, 4, 9]], dtype="float64")
    before = model.get_weights()
    x = good.copy()
    x[1, 1] = bad
    for call in (lambda: model.fit(x, np.ones(2), verbose=0), lambda: model.predict(x),
                 lambda: model.evaluate(x, np.ones(2)), lambda: model.train_on_batch(x, np.ones(2)),
                 lambda: model.fit(good, np.ones(2), validation_data=(x, np.ones(2)), verbose=0)):
        with pytest.raises(ValueError, match=message) as info:
            call()
        assert "Embedding 'emb'" in str(info.value)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    if isinstance(bad, int):  # ids already on the device are checked too
        with pytest.raises(ValueError, match=message):
            model.predict(nnx.asarray(x.astype("int64")))


def test_frozen_embedding_keeps_its_table(backend):
    model = nnx.Sequential([nnx.Input((3,), dtype="int32"), Embedding(5, 2, trainable=False), nnx.Flatten(),
                            nnx.Dense(1)])
    model.compile("sgd", "mse")
    table = model.get_weights()[0]
    dense = model.get_weights()[1]
    model.fit(np.array([[0, 1, 2], [3, 4, 4]]), np.array([1.0, -1.0]), epochs=3, verbose=0)
    np.testing.assert_array_equal(model.get_weights()[0], table)
    assert not np.array_equal(model.get_weights()[1], dense)
    assert [w.name for w in model.trainable_weights] == ["kernel", "bias"]


def test_embedding_learns(backend):
    rng = np.random.default_rng(4)
    ids = rng.integers(0, 8, size=(128, 4))
    y = (ids == 3).any(axis=1).astype("float32")
    model = nnx.Sequential([nnx.Input((4,), dtype="int32"), Embedding(8, 4), nnx.Flatten(),
                            nnx.Dense(1, activation="sigmoid")])
    model.compile(nnx.optimizers.Adam(0.05), "binary_crossentropy", metrics=["accuracy"])
    history = model.fit(ids, y, epochs=20, batch_size=32, verbose=0)
    assert history.history["accuracy"][-1] > 0.9


def test_keras_weight_config_and_default_initializer(backend):
    nnx.seed(0)
    layer = nnx.Sequential([nnx.Input((5,), dtype="int32"), Embedding(1000, 8)]).layers[0]
    assert [(w.name, w.shape, w.trainable) for w in layer.weights] == [("embeddings", (1000, 8), True)]
    table = layer.get_weights()[0]
    assert -0.05 <= table.min() < -0.04 and 0.04 < table.max() < 0.05  # Keras's uniform(-0.05, 0.05)
    assert layer.embeddings_initializer.get_config() == {"class_name": "random_uniform",
                                                         "config": {"minval": -0.05, "maxval": 0.05}}
    model = nnx.Sequential([nnx.Input((5,), dtype="int32"),
                            Embedding(20, 3, embeddings_initializer="normal",
                                      embeddings_regularizer=nnx.regularizers.l2(0.01), name="e"),
                            nnx.Flatten()])
    clone = nnx.models.model_from_json(model.to_json())
    assert clone.get_config() == model.get_config()
    assert clone.get_config()["input_dtype"] == "int32"
    e = clone.layers[0]
    assert (e.input_dim, e.output_dim, e.name) == (20, 3, "e") and e.embeddings.regularizer is not None
    with pytest.raises(ValueError, match="input_dim"):
        Embedding(0, 3)
    with pytest.raises(ValueError, match="Input dtype"):
        nnx.Input((3,), dtype="complex64")


def test_save_load_resume_with_embedding(backend, tmp_path):
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 12, size=(30, 6))
    y = rng.normal(size=(30, 1)).astype("float32")
    model = nnx.Sequential([nnx.Input((6,), dtype="int32"), Embedding(12, 4), LayerNormalization(),
                            nnx.Flatten(), nnx.Dense(1)])
    model.compile("adam", "mse")
    model.fit(ids, y, batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "e.nnx")
    model.save(path)
    loaded = nnx.load_model(path)
    assert loaded._input_layer.input_dtype == "int32"
    np.testing.assert_array_equal(nnx.to_numpy(loaded.predict(ids)), nnx.to_numpy(model.predict(ids)))
    model.fit(ids, y, batch_size=8, epochs=1, verbose=0)
    loaded.fit(ids, y, batch_size=8, epochs=1, verbose=0)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    from nnx import saving

    implied, exact, _ = saving._architecture(model.get_config(), path)
    assert exact and implied == [((12, 4), True), ((4,), True), ((4,), True), ((24, 1), True), ((1,), True)]


def test_nested_model_starting_with_an_embedding(backend):
    inner = nnx.Sequential([Embedding(6, 2, name="inner_emb"), nnx.Flatten()])
    model = nnx.Sequential([nnx.Input((3,), dtype="int32"), inner, nnx.Dense(1)])
    model.compile("sgd", "mse")
    ids = np.array([[0, 1, 5], [2, 2, 3]])
    model.fit(ids, np.ones(2), epochs=1, verbose=0)
    table = inner.layers[0].get_weights()[0]
    kernel, bias = model.layers[1].get_weights()
    np.testing.assert_allclose(nnx.to_numpy(model.predict(ids)), table[ids].reshape(2, 6) @ kernel + bias,
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="Embedding 'inner_emb'"):
        model.predict(ids + 1)
