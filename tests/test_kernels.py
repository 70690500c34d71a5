"""A backend's kernels (its ``Ops`` subclass) give the results of the portable ``nnx.ops.Ops`` code
they replace, and the fast paths a backend declares are the ones that actually run."""
from __future__ import annotations

import numpy as np
import pytest

import nnx
from conftest import assert_close

KERNEL_SCALE = 1000.0  # a kernel may round differently (fused multiply-adds, GPU tanh): 1000 eps


@pytest.fixture
def fused(backend):
    if type(backend.ops) is nnx.ops.Ops:
        pytest.skip(f"{backend.describe()} runs the portable operations only")
    return backend


def _portable(backend):
    return nnx.ops.Ops(backend.xp, backend.device)


def _arrays(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


class _Spy:
    """Wraps an instance method of an activation and counts its calls (the class is unchanged, so
    the backend still dispatches on it)."""

    def __init__(self, act, method):
        self.calls = 0
        original = getattr(act, method)

        def wrapper(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        setattr(act, method, wrapper)


ACTIVATIONS = list(nnx.activations.ALL)


def test_fused_backend_declares_fast_paths(fused):
    assert fused.ops.fast_activations, "a backend with its own Ops should declare its activation kernels"
    assert fused.ops.fast_activations <= set(nnx.activations.ALL)
    assert nnx.ops.Ops.fast_activations == frozenset()


@pytest.mark.parametrize("cls", ACTIVATIONS, ids=lambda c: c.name)
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no_bias"])
def test_bias_activation(fused, cls, use_bias):
    z, b = _arrays((16, 8), 0), _arrays((8,), 1)
    act = cls()
    bd = nnx.asarray(b) if use_bias else None
    y_ref, saved_ref = _portable(fused).bias_activation(nnx.asarray(z), bd, act)
    spy = _Spy(act, "forward")
    y, saved = fused.ops.bias_activation(nnx.asarray(z), bd, act)
    if cls in fused.ops.fast_activations:
        assert spy.calls == 0, f"{cls.__name__} is declared fast but its portable forward ran"
    else:
        assert spy.calls == 1
    assert_close(y, y_ref, scale=KERNEL_SCALE)
    assert (saved is None) == (saved_ref is None) == (act.saves is None)
    if saved is not None:
        assert_close(saved, saved_ref, scale=KERNEL_SCALE)
    if use_bias:
        np.testing.assert_array_equal(nnx.to_numpy(bd), b)  # b is read-only


@pytest.mark.parametrize("cls", ACTIVATIONS, ids=lambda c: c.name)
def test_activation_and_backward(fused, cls):
    act = cls()
    x = nnx.asarray(_arrays((16, 8), 2))
    dy_host = _arrays((16, 8), 3)
    y_ref, saved_ref = _portable(fused).activation(act, x)
    y, saved = fused.ops.activation(act, x)
    assert_close(y, y_ref, scale=KERNEL_SCALE)
    np.testing.assert_array_equal(nnx.to_numpy(x), _arrays((16, 8), 2))  # x is read-only
    dy = nnx.asarray(dy_host)
    expected = _portable(fused).activation_backward(act, dy, saved_ref)
    result = fused.ops.activation_backward(act, dy, saved)
    assert_close(result, expected, scale=KERNEL_SCALE)
    np.testing.assert_array_equal(nnx.to_numpy(dy), dy_host)  # dy is read-only


@pytest.mark.parametrize("base", ACTIVATIONS, ids=lambda c: c.name)
def test_subclass_of_a_fast_class_runs_its_own_code(backend, base):
    """Fast paths go by exact class: a user's subclass (here: doubling the output) of any activation,
    those with kernels included, runs its own forward and backward on every backend."""

    class Doubled(base):
        def forward(self, xp, x):
            return 2.0 * base.forward(self, xp, x)

        def backward(self, xp, dy, saved):
            return 2.0 * base.backward(self, xp, dy, saved / 2.0 if self.saves == "y" else saved)

    act, ref = Doubled(), base()
    assert not backend.ops.has_fast_path(act)
    x = _arrays((4, 3), 4)
    y, saved = backend.ops.bias_activation(nnx.asarray(x), None, act)
    assert_close(y, 2.0 * nnx.to_numpy(ref.forward(backend.xp, nnx.asarray(x))))
    dy = nnx.asarray(np.ones((4, 3), dtype="float32"))
    _, saved_ref = _portable(backend).activation(ref, nnx.asarray(x))
    assert_close(backend.ops.activation_backward(act, dy, saved),
                 2.0 * nnx.to_numpy(ref.backward(backend.xp, dy, saved_ref)))


def test_relu_backward_blocks_inf_and_nan_where_y_is_not_positive(backend):
    """dx = dy where y > 0, else exactly 0: a multiplication by a 0/1 mask would give NaN for inf or
    NaN upstream gradients."""
    act = nnx.activations.ReLU()
    y = nnx.asarray(np.array([[0.0, 0.0, 2.0, 0.0, 1.0]], dtype="float32"))
    dy = nnx.asarray(np.array([[np.inf, np.nan, 3.0, -np.inf, 1.0]], dtype="float32"))
    for ops in (backend.ops, _portable(backend)):
        dx = nnx.to_numpy(ops.activation_backward(act, dy, y))
        np.testing.assert_array_equal(dx, [[0.0, 0.0, 3.0, 0.0, 1.0]])


OPTIMIZERS = [
    lambda: nnx.optimizers.SGD(0.1), lambda: nnx.optimizers.SGD(0.1, momentum=0.9),
    lambda: nnx.optimizers.SGD(0.1, momentum=0.9, nesterov=True), lambda: nnx.optimizers.Adam(0.01),
    lambda: nnx.optimizers.RMSprop(0.01)]
OPTIMIZER_IDS = ["sgd", "momentum", "nesterov", "adam", "rmsprop"]


@pytest.mark.parametrize("make", OPTIMIZERS, ids=OPTIMIZER_IDS)
def test_optimizer_updates(fused, monkeypatch, make):
    grads = [_arrays((5, 3), s) for s in range(3)]
    name = {"SGD": "sgd_update", "Adam": "adam_update", "RMSprop": "rmsprop_update"}[type(make()).__name__]
    assert getattr(type(fused.ops), name) is not getattr(nnx.ops.Ops, name), f"{name} has no kernel here"

    def run():
        weight = nnx.Weight("w", nnx.asarray(_arrays((5, 3), 9)))
        array = weight.value
        opt = make()
        for g in grads:
            opt.apply({weight: nnx.asarray(g.copy())}, fused)
        assert weight.value is array  # in place
        return nnx.to_numpy(weight.value), [nnx.to_numpy(s) for s in opt._slots.get(weight, [])]

    w_kernel, slots_kernel = run()
    monkeypatch.setattr(fused, "ops", _portable(fused))
    w_portable, slots_portable = run()
    assert_close(w_kernel, w_portable, scale=KERNEL_SCALE)
    for a, b in zip(slots_kernel, slots_portable):
        assert_close(a, b, scale=KERNEL_SCALE)
    assert not np.allclose(w_kernel, _arrays((5, 3), 9))


def test_training_with_and_without_kernels(fused, monkeypatch):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 6)).astype("float32"), rng.integers(0, 4, size=64)

    def train():
        nnx.seed(1)
        model = nnx.Sequential([nnx.Input(6), nnx.Dense(16, activation="relu"), nnx.Dense(8, activation="tanh"),
                                nnx.Dense(4, activation="softmax")])
        model.compile(nnx.optimizers.SGD(0.1, momentum=0.9), "sparse_categorical_crossentropy", metrics=["accuracy"])
        history = model.fit(x, y, epochs=3, batch_size=16, verbose=0)
        return model.get_weights(), history.history["loss"]

    w_fused, loss_fused = train()
    monkeypatch.setattr(fused, "ops", _portable(fused))
    w_portable, loss_portable = train()
    np.testing.assert_allclose(loss_fused, loss_portable, rtol=1e-5)
    for a, b in zip(w_fused, w_portable):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _probabilities():
    p = np.random.default_rng(4).dirichlet(np.ones(5), size=12).astype("float32")
    labels = np.random.default_rng(5).integers(0, 5, size=12)
    p[0] = 0.0
    p[0, 1] = 1.0
    labels[0] = 3  # a picked zero: the lower clip
    p[1] = 0.0
    p[1, 2] = 1.0
    labels[1] = 2  # a picked one: the upper clip
    return p, labels


def _views(p):
    """p as a transposed view and as a strided view (neither C-contiguous), on the device."""
    transposed = nnx.asarray(np.ascontiguousarray(p.T)).T
    wide = np.zeros((p.shape[0], 2 * p.shape[1]), dtype=p.dtype)
    wide[:, ::2] = p
    strided = nnx.asarray(wide)[:, ::2]
    return {"transposed": transposed, "strided": strided, "contiguous": nnx.asarray(p)}


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "strided"])
@pytest.mark.parametrize("label_shape", ["flat", "column"])
def test_sparse_crossentropy(fused, layout, label_shape):
    """The one-pass loss-and-gradient kernel against the portable one, on non-contiguous
    predictions, with picked probabilities at both clip limits (0 and 1)."""
    p, labels = _probabilities()
    pd = _views(p)[layout]
    np.testing.assert_array_equal(nnx.to_numpy(pd), p)
    eps = max(1e-7, float(np.finfo(np.float32).eps))
    ld = nnx.asarray(labels)
    loss_k, dz_k = fused.ops.sparse_crossentropy(pd, ld, eps)
    loss_p, dz_p = _portable(fused).sparse_crossentropy(pd, ld, eps)
    assert_close(loss_k, loss_p, scale=KERNEL_SCALE)
    assert_close(dz_k, dz_p, scale=KERNEL_SCALE)
    np.testing.assert_array_equal(nnx.to_numpy(pd), p)  # the predictions are left as they were
    # by hand: -mean(log(clip(p[label]))) and (p - onehot) / n
    picked = np.clip(p[np.arange(12), labels].astype(np.float64), eps, 1 - eps)
    assert float(loss_k) == pytest.approx(-np.log(picked).mean(), rel=1e-5)
    assert_close(dz_k, (p - np.eye(5, dtype="float32")[labels]) / 12)
    # through the loss object, with flat or column labels
    y = labels if label_shape == "flat" else labels[:, None]
    loss_obj, dz_obj = nnx.losses.SparseCategoricalCrossentropy().logits_value_and_gradient(fused.ops, nnx.asarray(y), pd)
    assert_close(loss_obj, loss_p, scale=KERNEL_SCALE)
    assert_close(dz_obj, dz_p, scale=KERNEL_SCALE)


def test_sparse_crossentropy_upper_clip(backend):
    """Every picked probability is 1: the loss is -log(1 - eps) (the clip), not 0."""
    p = np.eye(4, dtype="float32")[[0, 1, 2, 3, 1]]
    labels = np.array([0, 1, 2, 3, 1])
    eps = max(1e-7, float(np.finfo(np.float32).eps))
    for ops in (backend.ops, _portable(backend)):
        loss, _ = ops.sparse_crossentropy(_views(p)["transposed"], nnx.asarray(labels), eps)
        assert float(loss) == pytest.approx(-np.log(np.float32(1 - eps)), rel=1e-3)
        assert float(loss) > 0.0


@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_sum_rows(fused, layout):
    a = _arrays((64, 7), 6)
    ad = nnx.asarray(a) if layout == "contiguous" else nnx.asarray(np.ascontiguousarray(a.T)).T
    expected = _portable(fused).sum_rows(ad)
    assert_close(fused.ops.sum_rows(ad), expected, scale=KERNEL_SCALE)
    np.testing.assert_allclose(nnx.to_numpy(expected), a.astype(np.float64).sum(axis=0), rtol=1e-5, atol=1e-5)


def _numpy_blas(fused):
    """The NumPy backend's BLAS, or a skip saying why there is none to test."""
    if fused.name != "numpy":
        pytest.skip(f"{fused.describe()}: BLAS axpy is the NumPy backend's SGD kernel")
    blas = fused.ops.blas
    if blas is None:
        config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        # NumPy's own wheels bundle scipy-openblas: there it must be found
        assert config.get("name") != "scipy-openblas", "NumPy's bundled OpenBLAS was not found"
        pytest.skip(f"no CBLAS found in this process (NumPy's BLAS: {config.get('name')})")
    return blas


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_blas_axpy_and_axpby(fused, dtype):
    blas = _numpy_blas(fused)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(300, 7)).astype(dtype), rng.normal(size=(300, 7)).astype(dtype)
    assert blas.usable(x, y)
    out = y.copy()
    blas.axpy(-0.3, x, out)
    tol = 4 * float(np.finfo(dtype).eps)  # a fused multiply-add rounds once
    np.testing.assert_allclose(out, y.astype(np.float64) - 0.3 * x, rtol=tol, atol=tol)
    out = y.copy()
    blas.axpby(0.7, x, -1.5, out)
    np.testing.assert_allclose(out, 0.7 * x.astype(np.float64) - 1.5 * y, rtol=tol, atol=tol)
    # what BLAS must not be handed: other dtypes, views that are not C-contiguous, read-only targets
    assert not blas.usable(x.astype("float16"), y.astype("float16"))
    assert not blas.usable(x.T, y.T) and not blas.usable(x[:, ::2], y[:, ::2])
    assert not blas.usable(x, y[:-1]) and not blas.usable(x, y.astype("float32" if dtype == "float64" else "float64"))
    assert not blas.usable(x, np.broadcast_to(y[0], y.shape))


@pytest.mark.parametrize("make", OPTIMIZERS[:3], ids=OPTIMIZER_IDS[:3])
def test_numpy_sgd_update_takes_blas(fused, monkeypatch, make):
    """SGD's update on NumPy goes through BLAS when it was found (each variant), with the
    portable update's result; a gradient BLAS cannot take (a transposed view) gives the same."""
    blas = _numpy_blas(fused)
    calls = []
    for name in ("axpy", "axpby"):
        original = getattr(blas, name)
        monkeypatch.setattr(blas, name, lambda *a, _f=original, _n=name: (calls.append(_n), _f(*a))[1])
    w0, g = _arrays((256, 130), 1), _arrays((256, 130), 2)
    assert w0.size >= fused.ops.blas_min_size  # smaller weights keep NumPy's two passes
    results = {}
    for layout in ("contiguous", "transposed", "portable"):
        weight = nnx.Weight("w", nnx.asarray(w0.copy()))
        opt = make()
        ops = _portable(fused) if layout == "portable" else fused.ops
        for _ in range(3):  # momentum: the velocity carries over
            gd = nnx.asarray(g.copy()) if layout != "transposed" else nnx.asarray(np.ascontiguousarray(g.T)).T
            opt.apply({weight: gd}, type("B", (), {"ops": ops, "xp": fused.xp, "device": fused.device})())
        results[layout] = nnx.to_numpy(weight.value)
        if layout == "contiguous":
            assert calls, "the NumPy SGD update did not call BLAS"
            calls.clear()
        else:
            assert not calls, f"{layout}: BLAS called with an array it cannot take"
    assert_close(results["contiguous"], results["portable"], scale=KERNEL_SCALE)
    assert_close(results["transposed"], results["portable"], scale=KERNEL_SCALE)
    assert not np.allclose(results["portable"], w0)


def _count_blas(monkeypatch, blas, names=("axpy", "axpby", "gemm_tn")):
    """Record the name of every call to ``blas``'s methods ``names`` in the list returned."""
    calls = []
    for name in names:
        original = getattr(blas, name)
        monkeypatch.setattr(blas, name, lambda *a, _f=original, _n=name: (calls.append(_n), _f(*a))[1])
    return calls


@pytest.mark.parametrize("make", OPTIMIZERS[:3], ids=OPTIMIZER_IDS[:3])
def test_numpy_blas_sgd_trains_a_whole_model_as_the_portable_update(fused, monkeypatch, make):
    """A model whose first and middle kernels are large enough for BLAS (over 32k entries) trains
    through fit to the weights the portable update gives, and BLAS did run: after the first step,
    each kernel's ``x.T @ dz`` goes into its weight (plain SGD) or momentum by one ``gemm``, with
    no gradient array; Nesterov's step needs the gradient twice and keeps the arrays."""
    blas = _numpy_blas(fused)
    calls = _count_blas(monkeypatch, blas)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(48, 300)).astype("float32"), rng.integers(0, 4, size=48)
    smallest = fused.ops.blas_min_size

    def train():
        nnx.seed(2)
        model = nnx.Sequential([nnx.Input(300), nnx.Dense(128, activation="relu"), nnx.Dense(300, activation="tanh"),
                                nnx.Dense(4, activation="softmax")])
        assert model.layers[0].kernel.value.size >= smallest and model.layers[1].kernel.value.size >= smallest
        model.compile(make(), "sparse_categorical_crossentropy")
        history = model.fit(x, y, epochs=3, batch_size=16, verbose=0)
        return model.get_weights(), history.history["loss"]

    w_fused, loss_fused = train()
    assert calls, "fit's SGD update did not go through BLAS"
    steps = 3 * 3  # 48 samples in batches of 16, 3 epochs
    nesterov = make().nesterov
    assert calls.count("gemm_tn") == (0 if nesterov else 3 * (steps - 1))
    if not nesterov:  # the first step's gradients are arrays (checked before any weight changes)
        assert calls[:2] == (["axpby", "axpy"] if make().momentum else ["axpy", "axpy"])
    monkeypatch.setattr(fused, "ops", _portable(fused))
    w_portable, loss_portable = train()
    np.testing.assert_allclose(loss_fused, loss_portable, rtol=1e-5)
    for a, b in zip(w_fused, w_portable):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert loss_fused[-1] < loss_fused[0]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_blas_gemm_tn(fused, dtype):
    """``c = alpha a.T @ b + beta c`` in place, against float64 NumPy; what it must not be handed."""
    blas = _numpy_blas(fused)
    rng = np.random.default_rng(4)
    a, b, c = (rng.normal(size=s).astype(dtype) for s in ((9, 5), (9, 7), (5, 7)))
    assert blas.gemm_usable(a, b, c)
    for alpha, beta in ((-0.3, 1.0), (0.5, 0.9), (1.0, 0.0)):
        out = c.copy()
        blas.gemm_tn(alpha, a, b, beta, out)
        tol = 50 * float(np.finfo(dtype).eps)
        np.testing.assert_allclose(out, alpha * (a.astype(np.float64).T @ b) + beta * c, rtol=tol, atol=tol)
    other = "float32" if dtype == "float64" else "float64"
    refused = {"float16": (a.astype("float16"), b.astype("float16"), c.astype("float16")),
               "mixed dtypes": (a, b.astype(other), c), "target dtype": (a, b, c.astype(other)),
               "strided factor": (np.repeat(a, 2, axis=1)[:, ::2], b, c), "Fortran factor": (np.asfortranarray(a), b, c),
               "rows differ": (a[:8], b, c), "target shape": (a, b, c.T.copy()),
               "Fortran target": (a, b, np.asfortranarray(c)), "read-only target": (a, b, np.broadcast_to(c[0], c.shape)),
               "1-D factor": (a[0], b, c)}
    for why, args in refused.items():
        assert not blas.gemm_usable(*args), why
    # a target that overlaps a factor: gemm would read what it writes
    square = rng.normal(size=(10, 5)).astype(dtype)
    assert not blas.gemm_usable(square[:5], square[5:], square[:5])
    assert not blas.gemm_usable(square[5:], square[:5], square[:5])
    assert blas.gemm_usable(square[:5], square[:5], square[5:].copy())
    buffer = rng.normal(size=(45,)).astype(dtype)  # neighbours in one buffer; one element shared
    a2, b2 = buffer[:10].reshape(2, 5), buffer[10:20].reshape(2, 5)
    assert blas.gemm_usable(a2, b2, buffer[20:45].reshape(5, 5))
    assert not blas.gemm_usable(a2, b2, buffer[19:44].reshape(5, 5))


def _deferring_model(layers, make=lambda: nnx.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy"):
    nnx.seed(5)
    model = nnx.Sequential(layers)
    model.compile(make(), loss)
    return model


def _train_both(fused, monkeypatch, build, epochs=2):
    """(weights, losses) from fit with the backend's ops, then with the portable ops, and the BLAS
    calls of the first."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 6)).astype("float32"), rng.integers(0, 3, size=40)
    calls = _count_blas(monkeypatch, _numpy_blas(fused))
    out = []
    kernels = fused.ops
    for ops in (kernels, _portable(fused)):
        monkeypatch.setattr(fused, "ops", ops)
        model = build()
        history = model.fit(x, y, epochs=epochs, batch_size=10, verbose=0)
        out.append((model.get_weights(), history.history["loss"]))
    monkeypatch.setattr(fused, "ops", kernels)
    (w_k, loss_k), (w_p, loss_p) = out
    np.testing.assert_allclose(loss_k, loss_p, rtol=1e-5)
    for a, b in zip(w_k, w_p):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    return calls


class _Scribbler(nnx.layers.Layer):
    """A user's layer whose backward writes into the output its forward returned (its own array):
    a deferred product of the next layer's kernel would read it after that."""

    def forward(self, x, training=False):
        y = x * 2.0
        return y, y

    def backward(self, saved, dy, need_dx=True):
        saved *= 0.0
        return dy * 2.0, {}


def test_deferred_products_only_after_nnx_layers(fused, monkeypatch):
    """Only a Dense with nnx's own layers (and activations) before it leaves its kernel gradient
    as a product; one after a user's layer or activation (which may write into its outputs in
    backward) gives the array, and the training matches the portable update either way."""
    def build():
        return _deferring_model([nnx.Input(6), nnx.Dense(5, activation="tanh"), _Scribbler(),
                                 nnx.Dense(4, activation="relu"), nnx.Dense(3, activation="softmax")])
    model = build()
    assert model._deferrable() == (model.layers[0],)  # the last two Dense come after the user's layer
    calls = _train_both(fused, monkeypatch, build)
    assert calls.count("gemm_tn") == 2 * 4 - 1  # the first kernel, each step after the first (4 an epoch)

    def build_after():  # the user's layer last: every Dense before it defers
        return _deferring_model([nnx.Input(6), nnx.Dense(5, activation="tanh"), nnx.Dropout(0.0), nnx.Flatten(),
                                 nnx.Dense(3, activation="softmax"), _Scribbler()])
    calls = _train_both(fused, monkeypatch, build_after)
    assert calls.count("gemm_tn") == 2 * (2 * 4 - 1)  # both kernels

    def build_activation():  # nnx layers, but a user's activation that writes into its saved output
        return _deferring_model([nnx.Input(6), nnx.Dense(5, activation=_ScribblingSigmoid()),
                                 nnx.Dense(4, activation="relu"), nnx.Dense(3, activation="softmax")])
    calls = _train_both(fused, monkeypatch, build_activation)
    assert calls.count("gemm_tn") == 2 * 4 - 1  # only the Dense with that activation, not the two after it


class _ScribblingSigmoid(nnx.activations.ActivationFunction):
    """A user's sigmoid whose backward reuses its saved output as scratch space."""

    name = "scribbling_sigmoid"
    saves = "y"

    def forward(self, xp, x):
        return 1.0 / (1.0 + xp.exp(-x))

    def backward(self, xp, dy, y):
        y *= 1.0 - y
        y *= dy
        return y


class _HalveGrads:
    """A mixin that works on the gradients a layer's backward returns."""

    def backward_from_logits(self, saved, dz, need_dx=True):
        dx, grads = super().backward_from_logits(saved, dz, need_dx)
        return dx, {w: g * 0.5 for w, g in grads.items()}


class _Halved(nnx.Dense):
    def backward_from_logits(self, saved, dz, need_dx=True):
        dx, grads = super().backward_from_logits(saved, dz, need_dx)
        return dx, {w: g * 0.5 for w, g in grads.items()}


class _MixedHalved(_HalveGrads, nnx.Dense):
    pass


def test_dense_subclass_that_overrides_backward_gets_arrays():
    """A subclass whose backward is not Dense's own (its body, a mixin) works on the gradients it
    returns: it gets arrays. A subclass that only adds something keeps the fused update."""
    class Named(nnx.Dense):
        def forward(self, x, training=False):
            return super().forward(x, training)

    class Declared(_HalveGrads, nnx.Dense):
        defers_gradients = True  # says so itself

    assert nnx.Dense.defers_gradients and Named.defers_gradients and Declared.defers_gradients
    assert not _Halved.defers_gradients and not _MixedHalved.defers_gradients
    assert not nnx.layers.Layer.defers_gradients and not nnx.Activation.defers_gradients
    # the flag set on an instance of a class that does not defer: that class's backward is not trusted
    model = nnx.Sequential([nnx.Input(3), _Scribbler(), nnx.Dense(2)])
    model.layers[0].defers_gradients = True
    assert model._deferrable() == ()


@pytest.mark.parametrize("case", ["subclass", "mixin", "instance_backward", "regularizer", "clipnorm", "clipvalue",
                                  "sgd_subclass"])
def test_deferred_products_meet_what_needs_arrays(fused, monkeypatch, case):
    """What works on a kernel's gradient array (a subclass's or mixin's backward, one set on the
    instance, a regularizer's gradient added to it, clipping, an SGD subclass) gets the array,
    and trains as the portable update."""
    class LoggingSGD(nnx.optimizers.SGD):
        def apply(self, grads, backend):
            self.norms = [float(np.linalg.norm(nnx.to_numpy(g))) for g in grads.values()]
            super().apply(grads, backend)

    make = {"clipnorm": lambda: nnx.optimizers.SGD(0.1, clipnorm=0.05),
            "clipvalue": lambda: nnx.optimizers.SGD(0.1, clipvalue=0.01),
            "sgd_subclass": lambda: LoggingSGD(0.1)}.get(case, lambda: nnx.optimizers.SGD(0.1))

    def build():
        first = nnx.Dense(5, activation="tanh", kernel_regularizer=nnx.regularizers.l2(0.1) if case == "regularizer" else None)
        last = {"subclass": _Halved, "mixin": _MixedHalved}.get(case, nnx.Dense)(3, activation="softmax")
        if case == "instance_backward":
            plain = last.backward_from_logits

            def halved(saved, dz, need_dx=True):
                dx, grads = plain(saved, dz, need_dx)
                return dx, {w: g * 0.5 for w, g in grads.items()}
            last.backward_from_logits = halved
        return _deferring_model([nnx.Input(6), first, last], make)
    calls = _train_both(fused, monkeypatch, build)
    # kernels left as products: not the overriding layer's own, nor the regularized one; clipping
    # and an SGD subclass get them all as arrays
    deferred = {"subclass": 1, "mixin": 1, "instance_backward": 1, "regularizer": 1}.get(case, 0)
    assert calls.count("gemm_tn") == deferred * (2 * 4 - 1)


def test_deferred_products_stay_inside_fit(fused, monkeypatch):
    """``compute_gradients`` and ``backward`` hand out arrays, also when called during ``fit``."""
    _numpy_blas(fused)
    seen = []

    class Probe(nnx.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            step = self.model.compute_gradients(nnx.asarray(x[:4]), nnx.asarray(y[:4]))
            seen.extend(type(g) for g in step.grads.values())
            _, saved = self.model.forward(nnx.asarray(x[:4]), training=True)
            seen.extend(type(g) for g in self.model.backward(saved, nnx.asarray(np.ones((4, 3), "float32")))[1].values())

    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(20, 6)).astype("float32"), rng.integers(0, 3, size=20)
    model = _deferring_model([nnx.Input(6), nnx.Dense(5, activation="tanh"), nnx.Dense(3, activation="softmax")])
    model.fit(x, y, epochs=1, batch_size=5, verbose=0, callbacks=[Probe()])
    assert seen and set(seen) == {np.ndarray}
    assert not nnx.ops.DEFERRING.get()


@pytest.mark.parametrize("override", ["compute_gradients", "backward", "apply_gradients"])
def test_a_model_subclass_step_gets_arrays(fused, monkeypatch, override):
    """A ``Sequential`` subclass with its own ``compute_gradients``, ``backward`` or
    ``apply_gradients`` is called by ``fit`` at every step and sees arrays only."""
    seen = []

    class Watched(nnx.Sequential):
        pass

    def compute_gradients(self, x, y, backend=None, sample_weight=None):
        step = nnx.Sequential.compute_gradients(self, x, y, backend, sample_weight)
        seen.extend(type(g) for g in step.grads.values())
        return step

    def backward(self, saved, dy, need_dx=True, dz=None, stop=None):
        dx, grads = nnx.Sequential.backward(self, saved, dy, need_dx, dz, stop)
        seen.extend(type(g) for g in grads.values())
        return dx, grads

    def apply_gradients(self, grads, saved=None):
        seen.extend(type(g) for g in grads.values())
        nnx.Sequential.apply_gradients(self, grads, saved)

    setattr(Watched, override, {"compute_gradients": compute_gradients, "backward": backward,
                                "apply_gradients": apply_gradients}[override])

    def build():
        nnx.seed(5)
        model = Watched([nnx.Input(6), nnx.Dense(5, activation="tanh"), nnx.Dense(3, activation="softmax")])
        model.compile(nnx.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
        return model
    calls = _train_both(fused, monkeypatch, build)
    assert calls.count("gemm_tn") == 0
    assert len(seen) == 2 * 4 * 4 * 2 and set(seen) == {np.ndarray}  # 4 arrays, 8 steps, both runs


def test_an_optimizer_swapped_during_fit_gets_arrays(fused):
    """A callback that recompiles with Adam mid-fit: Adam's steps get arrays."""
    _numpy_blas(fused)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(40, 6)).astype("float32"), rng.integers(0, 3, size=40)

    class Swap(nnx.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                self.model.compile(nnx.optimizers.Adam(0.01), "sparse_categorical_crossentropy")

    model = _deferring_model([nnx.Input(6), nnx.Dense(5, activation="tanh"), nnx.Dense(3, activation="softmax")])
    history = model.fit(x, y, epochs=2, batch_size=10, verbose=0, callbacks=[Swap()])
    assert all(np.isfinite(history.history["loss"])) and model.optimizer.iterations > 0


def test_threads_training_other_models_get_arrays(fused):
    """Whether a layer may defer is the training thread's own: a model trained with Adam in
    another thread, while an SGD fit defers, computes on arrays."""
    import threading
    _numpy_blas(fused)
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(400, 6)).astype("float32"), rng.integers(0, 3, size=400)
    errors, seen = [], []

    def sgd():
        try:
            model = _deferring_model([nnx.Input(6), nnx.Dense(5, activation="tanh"), nnx.Dense(3, activation="softmax")])
            model.fit(x, y, epochs=5, batch_size=4, verbose=0)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    adam_model = _deferring_model([nnx.Input(6), nnx.Dense(5, activation="tanh"), nnx.Dense(3, activation="softmax")],
                                  lambda: nnx.optimizers.Adam(0.01))
    thread = threading.Thread(target=sgd)
    thread.start()
    while thread.is_alive():
        step = adam_model.compute_gradients(nnx.asarray(x[:8]), nnx.asarray(y[:8]))
        seen.extend(type(g) for g in step.grads.values())
        adam_model.apply_gradients(step.grads)
    thread.join()
    assert not errors and seen and set(seen) == {np.ndarray}


def test_a_nested_model_changed_between_fits(fused, monkeypatch):
    """Which layers defer is worked out at each step: a user's layer added to a nested model
    stops the Dense after it from deferring, and training matches the portable update."""
    inner = nnx.Sequential([nnx.Dense(5, activation="tanh")])

    def build():
        return _deferring_model([nnx.Input(6), inner, nnx.Dense(3, activation="softmax")])
    model = build()
    model.predict(np.zeros((1, 6), "float32"), verbose=0)
    assert model._deferrable() == (model.layers[1],)
    inner.add(_Scribbler())
    assert model._deferrable() == ()
    calls = _train_both(fused, monkeypatch, lambda: _deferring_model(
        [nnx.Input(6), nnx.Sequential([nnx.Dense(5, activation="tanh"), _Scribbler()]), nnx.Dense(3, activation="softmax")]))
    assert calls.count("gemm_tn") == 0


def test_data_parallel_and_other_optimizers_do_not_defer(fused):
    """Gradients stay arrays where something between computing and applying them needs them: a
    loop that combines gradients across processes, an optimizer whose update reads them twice."""
    model = _deferring_model([nnx.Input(6), nnx.Dense(3)], loss="mse")
    model.predict(np.zeros((1, 6), "float32"), verbose=0)
    params = {"fit": True}

    class Reducing(nnx.training.Loop):
        def reduce(self, grads):
            return grads

    expected = tuple(model.layers) if fused.ops.defers_matmuls else ()
    assert nnx.training.Loop(model, fused, [], 0, params)._deferrable() == expected
    assert Reducing(model, fused, [], 0, params)._deferrable() == ()
    for opt in (nnx.optimizers.SGD(0.1, momentum=0.9, nesterov=True), nnx.optimizers.Adam(), nnx.optimizers.RMSprop()):
        model.compile(opt, "mse")
        assert not opt.takes_deferred and nnx.training.Loop(model, fused, [], 0, params)._deferrable() == ()


def test_a_numpy_ops_subclass_with_its_own_sgd_update_is_called(fused, monkeypatch):
    """A NumPy ops subclass that overrides ``sgd_update`` gets every weight's update, as arrays."""
    _numpy_blas(fused)
    seen = []

    class Counting(type(fused.ops)):
        def sgd_update(self, w, g, velocity, lr, momentum, nesterov):
            seen.append(type(g))
            super().sgd_update(w, g, velocity, lr, momentum, nesterov)

    monkeypatch.setattr(fused, "ops", Counting(fused.xp, fused.device))
    assert not fused.ops.defers_matmuls
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(20, 6)).astype("float32"), rng.integers(0, 3, size=20)
    model = _deferring_model([nnx.Input(6), nnx.Dense(5, activation="tanh"), nnx.Dense(3, activation="softmax")])
    model.fit(x, y, epochs=1, batch_size=5, verbose=0)
    assert len(seen) == 4 * 4 and set(seen) == {np.ndarray}


def test_numpy_blas_reads_data_pointers_from_the_arrays(fused):
    """The pointer BLAS is handed is the array's first element, for views at an offset too."""
    _numpy_blas(fused)
    from nnx.backends import numpy_blas
    base = np.arange(60, dtype=np.float32).reshape(6, 10)
    for a in (base, base[2:], base[1:, 3:], base[::2], base.T, base.reshape(-1)[7:]):
        assert numpy_blas._address(a) == a.__array_interface__["data"][0]
    assert numpy_blas._layout_ok()


def _changed_during_fit(fused, monkeypatch, change, layers=None):
    """``_train_both`` with ``change(model)`` applied by a callback at the start of the second
    epoch; the BLAS calls of the run with the backend's kernels."""
    class Change(nnx.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                change(self.model)

    def build():
        model = _deferring_model(layers() if layers else [nnx.Input(6), nnx.Dense(5, activation="tanh"),
                                                          nnx.Dense(4, activation="relu"), nnx.Dense(3, activation="softmax")])
        fit = model.fit
        model.fit = lambda *a, **k: fit(*a, callbacks=[Change()], **k)
        return model
    return _train_both(fused, monkeypatch, build)


@pytest.mark.parametrize("change", ["user_activation", "nnx_activation_backward", "instance_backward",
                                    "user_layer_inserted"])
def test_a_change_during_fit_takes_effect_at_the_next_step(fused, monkeypatch, change):
    """A callback that gives a layer a user's activation, replaces an activation's or a layer's
    backward, or inserts a user's layer, mid-fit: from the next step, the Dense layers it could
    affect give arrays, and training matches the portable update."""
    def user_activation(model):
        model.layers[0].activation = _ScribblingSigmoid()

    def nnx_activation_backward(model):
        act = model.layers[0].activation

        def backward(xp, dy, y):  # an nnx activation whose backward, set on it, scribbles on y
            y *= y
            y -= 1.0
            y *= -dy
            return y
        act.backward = backward

    def instance_backward(model):
        dense = model.layers[2]
        plain = dense.backward_from_logits

        def halved(saved, dz, need_dx=True):
            dx, grads = plain(saved, dz, need_dx)
            return dx, {w: g * 0.5 for w, g in grads.items()}
        dense.backward_from_logits = halved

    def user_layer_inserted(model):
        last = model.pop()
        model.add(_Scribbler())
        model.add(last)

    calls = _changed_during_fit(fused, monkeypatch, locals()[change])
    # 4 steps an epoch: the first epoch's last three defer all three kernels; the second epoch's
    # four defer the first kernel only (the hook and the inserted layer: the first two)
    per_step = {"instance_backward": 2, "user_layer_inserted": 2}.get(change, 1)
    assert calls.count("gemm_tn") == 3 * 3 + 4 * per_step


def test_patches_on_the_model_or_the_dense_class_get_arrays(fused, monkeypatch):
    """``apply_gradients`` or ``compute_gradients`` set on the model, and a backward set on the
    Dense class itself, are called with arrays at every step."""
    seen = []
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(20, 6)).astype("float32"), rng.integers(0, 3, size=20)
    calls = _count_blas(monkeypatch, _numpy_blas(fused))

    model = _deferring_model([nnx.Input(6), nnx.Dense(5, activation="tanh"), nnx.Dense(3, activation="softmax")])
    plain_apply = model.apply_gradients
    model.apply_gradients = lambda grads, saved=None: (seen.extend(map(type, grads.values())), plain_apply(grads, saved))
    model.fit(x, y, epochs=1, batch_size=5, verbose=0)
    assert len(seen) == 4 * 4 and set(seen) == {np.ndarray}

    seen.clear()
    model = _deferring_model([nnx.Input(6), nnx.Dense(5, activation="tanh"), nnx.Dense(3, activation="softmax")])
    plain_compute = model.compute_gradients

    def compute_gradients(*a, **k):
        step = plain_compute(*a, **k)
        seen.extend(map(type, step.grads.values()))
        return step
    model.compute_gradients = compute_gradients
    model.fit(x, y, epochs=1, batch_size=5, verbose=0)
    assert len(seen) == 4 * 4 and set(seen) == {np.ndarray}

    seen.clear()
    plain_backward = nnx.Dense.backward_from_logits

    def backward_from_logits(self, saved, dz, need_dx=True):
        dx, grads = plain_backward(self, saved, dz, need_dx)
        seen.extend(map(type, grads.values()))
        return dx, grads
    monkeypatch.setattr(nnx.Dense, "backward_from_logits", backward_from_logits)
    model = _deferring_model([nnx.Input(6), nnx.Dense(5, activation="tanh"), nnx.Dense(3, activation="softmax")])
    model.fit(x, y, epochs=1, batch_size=5, verbose=0)
    assert len(seen) == 4 * 4 and set(seen) == {np.ndarray}
    assert calls.count("gemm_tn") == 0


class _Echo(nnx.layers.Layer):
    """A user's layer whose weight gradient is the very array it hands back as ``dx``."""

    def build(self, input_shape):
        super().build(input_shape)
        self.o = self.add_weight("o", (10, 3), "zeros")  # one row per sample of a batch of 10

    def forward(self, x, training=False):
        return x + self.o.value, None

    def backward(self, saved, dy, need_dx=True):
        return dy, {self.o: dy}


def test_a_product_reads_its_factors_before_other_updates(fused, monkeypatch):
    """The update runs the deferred products before it scales gradient arrays in place: a linear
    Dense before a layer whose weight gradient is its ``dx`` trains as the portable update."""
    def build():
        return _deferring_model([nnx.Input(6), nnx.Dense(3), _Echo()], loss="mse")

    rng = np.random.default_rng(7)
    xs, y = rng.normal(size=(40, 6)).astype("float32"), rng.normal(size=(40, 3)).astype("float32")
    calls = _count_blas(monkeypatch, _numpy_blas(fused))
    out, kernels = [], fused.ops
    for ops in (kernels, _portable(fused)):
        monkeypatch.setattr(fused, "ops", ops)
        model = build()
        model.fit(xs, y, epochs=2, batch_size=10, verbose=0)
        out.append(model.get_weights())
    monkeypatch.setattr(fused, "ops", kernels)
    assert calls.count("gemm_tn") == 2 * 4 - 1
    for a, b in zip(*out):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_the_deferring_switch_is_off_after_a_failed_backward(fused):
    """A layer's backward that raises during ``fit`` leaves the switch off in this thread."""
    _numpy_blas(fused)

    class Failing(nnx.layers.Layer):
        calls = 0

        def forward(self, x, training=False):
            return x, None

        def backward(self, saved, dy, need_dx=True):
            type(self).calls += 1
            if type(self).calls == 3:
                raise KeyboardInterrupt
            return dy, {}

    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(20, 6)).astype("float32"), rng.integers(0, 3, size=20)
    model = _deferring_model([nnx.Input(6), nnx.Dense(5, activation="tanh"), nnx.Dense(3), Failing(),
                              nnx.Activation("softmax")])
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=1, batch_size=5, verbose=0)
    assert not nnx.ops.DEFERRING.get()


def test_epoch_loss_of_a_loss_that_reuses_its_array(backend):
    """A user's loss that returns the same 0-d array each batch, refilled: the epoch loss is the
    mean of the batches' values, not the last one's."""
    xp = backend.xp

    class Reusing(nnx.losses.Loss):
        name = "reusing_mse"

        def __init__(self):
            super().__init__()
            self.out = None

        def forward(self, xp_, y, p):
            value = xp.mean((p - y) ** 2)
            if self.out is None:
                self.out = xp.zeros((), dtype=value.dtype, device=backend.device)
            self.out[...] = value
            return self.out

        def backward(self, xp_, y, p):
            return 2.0 * (p - y) / (p.shape[0] * p.shape[1])

    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(12, 3)).astype("float32"), rng.normal(size=(12, 2)).astype("float32")
    model = nnx.Sequential([nnx.Input(3), nnx.Dense(2)])
    model.compile(nnx.optimizers.SGD(0.0), Reusing())
    history = model.fit(x, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    p = nnx.to_numpy(model.predict(x, verbose=0))
    expected = np.mean([np.mean((p[i:i + 4] - y[i:i + 4]) ** 2) for i in range(0, 12, 4)])
    assert history.history["loss"][0] == pytest.approx(expected, rel=1e-5)
