"""Data-parallel training (nnx.distributed): two MPI ranks against one process.

One ``mpiexec -n 2 python -m mpi4py tests/dist_worker.py`` run trains every scenario of the worker
on both ranks (numpy and array_api_strict, float64 and float32, shuffling, an uneven last batch,
empty shards, validation_split, an L2 penalty, ranks seeded differently before building); the
tests compare its files with each other and with the same fit in this process. Skipped where
mpi4py or mpiexec is missing (pip install -e ".[distributed]").
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import nnx
from nnx import training

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 120


def _mpiexec() -> str | None:
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")  # pip's mpich, venv not activated
    return beside if os.path.exists(beside) else shutil.which("mpiexec")


def _launch(out, mode: str, timeout: float = TIMEOUT, script: list[str] | None = None,
            runner: tuple[str, ...] = ("-m", "mpi4py")) -> subprocess.CompletedProcess:
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install -e '.[distributed]')")
    pytest.importorskip("array_api_strict", reason="array_api_strict is not installed")
    mpiexec = _mpiexec()
    if mpiexec is None:
        pytest.skip("mpiexec is not installed (pip install -e '.[distributed]' brings mpich's)")
    env = {k: v for k, v in os.environ.items() if k != "NNX_BACKEND"}
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    # Open MPI's mpiexec refuses to run as root unless told (CI and containers run as root);
    # MPICH ignores these
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    args = script or [os.path.join(HERE, "dist_worker.py"), str(out), mode]
    cmd = [mpiexec, "-n", "2", sys.executable, *runner, *args]
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    done = _launch(out, "all")
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done.stdout


@pytest.fixture(scope="module")
def worker():
    sys.path.insert(0, HERE)
    try:
        import dist_worker
    finally:
        sys.path.remove(HERE)
    return dist_worker


def _load(out, name: str, rank: int):
    with np.load(os.path.join(out, f"{name}_{rank}.npz")) as z:
        weights = [z[f"arr_{i}"] for i in range(len(z.files))]
    with open(os.path.join(out, f"{name}_{rank}.json")) as f:
        logs = json.load(f)
    assert logs["types"] == ["float"]  # evaluate gives Python floats under init() too, as in one process
    return weights, logs["history"], logs["evaluate"]


def _early_stopping():
    return [nnx.callbacks.EarlyStopping(monitor="val_loss", patience=1, min_delta=1e9)]


@pytest.mark.parametrize("name", ["np64", "strict64", "np32", "strict32", "empty_shards", "early", "stateful_metrics"])
def test_two_ranks_match_one_process(run, worker, name):
    out, _ = run
    kwargs = worker.SCENARIOS[name]
    w0, h0, e0 = _load(out, name, 0)
    w1, h1, e1 = _load(out, name, 1)
    # every rank ends with the same weights, the same History and the same evaluate()
    for a, b in zip(w0, w1, strict=True):
        np.testing.assert_array_equal(a, b)
    assert h0 == h1 and e0 == e1
    # ... and with the weights of one process fitting the same global batches (rank 0's seed)
    weights, history, result = worker.train(seed=worker.SEED, callbacks=_early_stopping() if name == "early" else (),
                                            **kwargs)
    tol = 1e-10 if kwargs["dtype"] == "float64" else 2e-5
    for a, b in zip(w0, weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    assert sorted(h0) == sorted(history) and len(h0["loss"]) == len(history["loss"])
    for key in history:
        np.testing.assert_allclose(h0[key], history[key], rtol=tol, atol=tol)
    np.testing.assert_allclose(e0, result, rtol=tol, atol=tol)


def test_early_stopping_stops_every_rank_at_the_same_epoch(run):
    out, stdout = run
    assert len(_load(out, "early", 0)[1]["loss"]) == len(_load(out, "early", 1)[1]["loss"]) == 2
    assert stdout.count("early stopping") == 1


def test_non_trainable_state_agrees_after_each_epoch(run):
    """A layer's moving statistics come from each rank's shards; rank 0's are broadcast."""
    out, _ = run
    w0, h0, e0 = _load(out, "state", 0)
    w1, h1, e1 = _load(out, "state", 1)
    for a, b in zip(w0, w1, strict=True):
        np.testing.assert_array_equal(a, b)
    assert h0 == h1 and e0 == e1 and np.any(w0[0] != 0)


def test_dropout_streams_differ_and_weights_agree(run):
    out, _ = run
    w0, h0, _ = _load(out, "dropout", 0)
    w1, h1, _ = _load(out, "dropout", 1)
    for a, b in zip(w0, w1, strict=True):
        np.testing.assert_array_equal(a, b)
    assert h0 == h1
    with open(os.path.join(out, "draws_0.json")) as f0, open(os.path.join(out, "draws_1.json")) as f1:
        assert json.load(f0) != json.load(f1)


def test_files_and_progress_on_rank_0_only(run):
    out, stdout = run
    names = set(os.listdir(out))
    assert {"ckpt_0.nnx", "log_0.csv", "model_0.nnx", "model_0.npz"} <= names
    assert not {"ckpt_1.nnx", "log_1.csv", "model_1.nnx", "model_1.npz"} & names
    weights = _load(out, "np64", 0)[0]
    for a, b in zip(nnx.load_model(os.path.join(out, "ckpt_0.nnx")).get_weights(), weights, strict=True):
        np.testing.assert_array_equal(a, b)
    with open(os.path.join(out, "log_0.csv")) as f:
        assert len(f.read().splitlines()) == 4  # header and 3 epochs
    assert stdout.count("Epoch 1/3") == 1 and stdout.count("Epoch 3/3") == 1


def test_one_rank_communicator_is_bit_identical(run, worker):
    out, _ = run
    weights, history, result = worker.train(seed=worker.SEED, **worker.SCENARIOS["np64"])
    for rank in (0, 1):
        w, h, e = _load(out, "self", rank)
        for a, b in zip(w, weights, strict=True):
            np.testing.assert_array_equal(a, b)
        assert h == history and e == result


@pytest.mark.parametrize("runner", [("-m", "mpi4py"), ()], ids=["mpi4py_runner", "plain_python"])
def test_a_raising_rank_aborts_the_job(tmp_path, runner):
    """Launched through mpi4py's runner or as a plain script (init() installs the abort), a rank
    that raises ends every rank, with its traceback, instead of leaving the others waiting."""
    start = time.monotonic()
    try:
        done = _launch(tmp_path, "raise", timeout=60, runner=runner)
    except subprocess.TimeoutExpired:
        pytest.fail("the other rank kept waiting after rank 1 raised (no MPI_Abort)")
    assert done.returncode != 0
    if runner:  # mpi4py's runner prints the traceback alone, and the abort may cut its end
        assert "Traceback" in done.stderr
    else:
        assert "nnx.distributed: rank 1 raised RuntimeError: rank 1 fails; aborting every rank" in done.stderr
    assert time.monotonic() - start < 60


# -- one process, no MPI needed ---------------------------------------------------------------
def test_without_init():
    assert nnx.distributed.rank() == 0 and nnx.distributed.size() == 1
    assert nnx.distributed.is_chief() is True
    nnx.distributed.barrier()
    assert nnx.distributed.loop_type() is training.Loop
    code = "import sys, nnx; assert 'mpi4py' not in sys.modules, 'import nnx imported mpi4py'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, stdin=subprocess.DEVNULL)


def test_without_init_fit_is_the_plain_step_sequence():
    """fit without init() is compute_gradients -> apply_gradients over the batches, bit for bit."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(30, 2))
    with nnx.use_backend("numpy"):
        def model():
            nnx.seed(3)
            m = nnx.Sequential([nnx.Input((4,)), nnx.Dense(5, activation="relu", kernel_regularizer="l2"), nnx.Dense(2)])
            m.compile(optimizer="adam", loss="mse")
            return m

        fitted = model()
        fitted.fit(x.astype("float32"), y.astype("float32"), batch_size=7, epochs=2, shuffle=False, verbose=0)
        manual = model()
        xs, ys = x.astype("float32"), y.astype("float32")
        for _ in range(2):
            for start in range(0, 30, 7):
                step = manual.compute_gradients(xs[start:start + 7], ys[start:start + 7])
                manual.apply_gradients(step.grads, step.saved)
    for a, b in zip(fitted.get_weights(), manual.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("n", [0, 1, 2, 5, 7, 8])
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_shard_bounds_cover_the_batch_contiguously(n, size):
    parts = [training.shard_bounds(10, 10 + n, r, size) for r in range(size)]
    assert parts[0][0] == 10 and parts[-1][1] == 10 + n
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    lengths = [hi - lo for lo, hi in parts]
    assert max(lengths) - min(lengths) <= 1 and lengths == sorted(lengths, reverse=True)


def test_distributed_example(tmp_path):
    pytest.importorskip("sklearn", reason="scikit-learn (the examples extra) is not installed")
    example = os.path.join(os.path.dirname(HERE), "examples", "distributed_mnist.py")
    if not os.path.isfile(example):
        pytest.skip("examples/ is not beside tests/ (the suite runs from a copy)")
    done = _launch(tmp_path, "", script=[example, "--epochs", "20", "--out", str(tmp_path)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("Epoch 1/20") == 1 and "2 rank(s)" in done.stdout
    assert float(done.stdout.split("test accuracy: ")[1].split()[0]) >= 0.95
    assert (tmp_path / "distributed_best.nnx").exists()


_REDUCERS = r"""
import numpy as np
from mpi4py import MPI
import nnx
from nnx import distributed

import sys

distributed.init(MPI.COMM_SELF)  # one rank: the reducers' arithmetic
if sys.argv[1] == "host":
    cases = [("numpy", None), ("array_api_strict", "device1"), ("array_api_strict", "no_float64")]
else:
    cases = [("cupy", 0)]  # a one-rank NCCL communicator
checked = []
for name, device in cases:
    with nnx.use_backend(name, device) as b:
        reducer = distributed._HostReducer(MPI.COMM_SELF) if name != "cupy" else b.gradient_reducer(MPI.COMM_SELF)
        if name == "cupy":
            assert type(reducer).__name__ == "NcclReducer", reducer
        dtypes = (("float16",) if name != "array_api_strict" else ()) + ("float32",)
        for dtype in dtypes + (("float64",) if device != "no_float64" else ()):
            rng = np.random.default_rng(0)
            hosts = [rng.normal(size=s).astype(dtype) for s in [(3, 4), (4,), (1,)]]
            weights = [distributed._WeightView(nnx.layers.Weight("w", b.from_host(h)), dtype) for h in hosts]
            wide = np.result_type(np.dtype(dtype), np.float32)
            for grads in ([b.from_host(h) for h in hosts], None):
                out, totals = reducer.allreduce(b, grads, weights, 0.25, [1.5, 2.0], wide)
                for o, h in zip(out, hosts):
                    got = b.to_numpy(o)
                    assert got.dtype == h.dtype and got.shape == h.shape, (got.dtype, got.shape)
                    want = h * np.asarray(0.25, dtype) if grads is not None else np.zeros_like(h)
                    np.testing.assert_array_equal(got, want)
                assert [float(t) for t in totals] == [1.5, 2.0]
        checked.append(name)
print("checked", *checked)
"""


def _reducers(which: str) -> subprocess.CompletedProcess:
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install -e '.[distributed]')")
    env = {k: v for k, v in os.environ.items() if k != "NNX_BACKEND"}
    done = subprocess.run([sys.executable, "-c", _REDUCERS, which], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=TIMEOUT, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_reducers_on_one_rank():
    """The packing and unpacking around the host allreduce, on one rank (MPI.COMM_SELF), on numpy
    and array_api_strict."""
    assert "checked numpy array_api_strict array_api_strict" in _reducers("host").stdout


def test_nccl_reducer_on_one_rank():
    """The same through a one-rank NCCL communicator, where CuPy has a GPU and NCCL."""
    if "cupy" not in nnx.available_backends():
        pytest.skip("no usable CUDA device for cupy")
    from cupy.cuda import nccl

    if not nccl.available:
        pytest.skip("NCCL is not available to CuPy (the CUDA extras install nvidia-nccl)")
    assert "checked cupy" in _reducers("nccl").stdout
