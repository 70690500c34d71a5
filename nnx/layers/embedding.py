"""Embedding: integer ids -> rows of a learned table; its gradient is a scatter-add of ``dy``."""
from __future__ import annotations

from typing import Any

from .. import initializers as _initializers
from .. import regularizers as _regularizers
from .base import Layer, as_int


class Embedding(Layer):
    """Maps each integer id in ``[0, input_dim)`` to a learned vector of ``output_dim`` floats:
    ids of shape (batch, seq) give (batch, seq, output_dim) (any number of id axes works).

    The ids have no gradient, so an Embedding is a first layer: the model keeps its inputs
    integer (in the ``Input``'s integer dtype when one is given, else int64) and refuses ids out
    of range, or not whole numbers, with a ``ValueError`` before any weight changes. The table's
    gradient is the sum of ``dy`` over the positions of each id (repeated ids add up).

    Args:
        input_dim: the vocabulary size (ids run from 0 to ``input_dim - 1``).
        output_dim: the size of each vector.
        embeddings_initializer: initializer name or instance (Keras's default ``"uniform"``:
            uniform on [-0.05, 0.05)).
        embeddings_regularizer: a penalty on the table (e.g. ``nnx.regularizers.l2(1e-4)``), or None.
        input_length: Keras 2's spelling of ``input_shape=(input_length,)``.
        name, trainable, input_shape: as every layer.

    Weights: ``embeddings`` of shape (input_dim, output_dim).

    >>> model = nnx.Sequential([nnx.Input((20,), dtype="int32"), nnx.layers.Embedding(1000, 16),
    ...                         nnx.Flatten(), nnx.Dense(1, activation="sigmoid")])
    """

    #: the model keeps this layer's inputs integer and checks them with ``check_ids``
    integer_input = True

    def __init__(self, input_dim: int, output_dim: int, embeddings_initializer: Any = "uniform",
                 embeddings_regularizer: Any = None, input_length: int | None = None, **kwargs: Any):
        if input_length is not None and kwargs.get("input_shape") is None:
            kwargs["input_shape"] = (as_int(input_length, "Embedding input_length"),)
        super().__init__(**kwargs)
        self.input_dim = as_int(input_dim, "Embedding input_dim")
        self.output_dim = as_int(output_dim, "Embedding output_dim")
        self.embeddings_initializer = _initializers.get(embeddings_initializer)
        self.embeddings_regularizer = _regularizers.get(embeddings_regularizer)
        self.embeddings = None

    def build(self, input_shape):
        super().build(input_shape)
        self.embeddings = self.add_weight("embeddings", (self.input_dim, self.output_dim),
                                          self.embeddings_initializer, self.embeddings_regularizer)

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape), self.output_dim)

    def prepare_ids(self, x: Any, dtype: str, backend: Any, what: str = "x") -> Any:
        """``x`` as ids of the integer ``dtype``; ValueError unless every id is a whole number in
        [0, input_dim). The model calls it where data enters, before any weight changes.

        Args:
            x: the ids (host data or a backend array).
            dtype: the integer dtype name.
            backend: the backend they go to.
            what: how error messages name ``x``.

        >>> layer.prepare_ids([[1, 2]], "int64", nnx.get_backend())
        """
        from ..data import as_ids

        return as_ids(x, dtype, self.input_dim, backend, f"{what} (the ids of Embedding {self.name!r})")

    def forward(self, x, training=False):
        xp = self.xp
        if not xp.isdtype(x.dtype, "integral"):
            x = xp.astype(x, xp.int64)
        ids = xp.reshape(x, (-1,))
        y = xp.take(self.embeddings.value, ids, axis=0)
        return xp.reshape(y, (*x.shape, self.output_dim)), ids

    def backward(self, ids, dy, need_dx=True):
        """The embeddings' gradient, summed per id; no input gradient (ids have none).

        Args:
            ids: the flat ids ``forward`` saved.
            dy: the output gradient.
            need_dx: ignored: ``dx`` is always None.

        >>> dx, grads = layer.backward(ids, dy)
        """
        grads = {}
        if self.trainable:
            rows = self.xp.reshape(dy, (-1, self.output_dim))
            grads[self.embeddings] = self.ops.unsorted_segment_sum(rows, ids, self.input_dim)
        return None, grads

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "embeddings_initializer": self.embeddings_initializer.get_config(),
            "embeddings_regularizer": _regularizers.serialize(self.embeddings_regularizer),
        }
