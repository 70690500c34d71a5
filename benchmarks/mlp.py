"""Training speed of a 784-256-128-10 MLP (relu, softmax cross-entropy, plain SGD, float32) on 5,000
MNIST-sized samples, in alternating rounds on one backend:

  (a) nnx       ``model.fit``
  (b) floor     the same forward and backward matrix products alone
  (c) hand      a minimal hand-written training loop in the same array namespace
  (d) torch     PyTorch eager on the matching device, when importable

Prints the median time per variant, samples per second, and the ratios nnx/floor, nnx/hand and
nnx/torch.

    python benchmarks/mlp.py --backend numpy --batch-size 128
    python benchmarks/mlp.py --quick            # a few-second smoke run (CI)
"""
from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import nnx  # noqa: E402

SIZES = (784, 256, 128, 10)
LR = 0.01


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic MNIST-shaped data: 10 noisy class prototypes in [0, 1]^784."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((10, SIZES[0]), dtype=np.float32)
    y = rng.integers(0, 10, size=n)
    x = np.clip(prototypes[y] + 0.3 * rng.standard_normal((n, SIZES[0]), dtype=np.float32), 0, 1)
    return x.astype(np.float32), y


def initial_weights(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for n_in, n_out in zip(SIZES[:-1], SIZES[1:]):
        limit = np.sqrt(6 / (n_in + n_out))
        out += [rng.uniform(-limit, limit, (n_in, n_out)).astype(np.float32), np.zeros(n_out, np.float32)]
    return out


# -- (a) nnx ---------------------------------------------------------------------------------
def run_nnx(x, y, batch_size, epochs, backend, jit_compile=False):
    model = nnx.Sequential([nnx.Input((SIZES[0],)), nnx.Dense(SIZES[1], activation="relu"),
                            nnx.Dense(SIZES[2], activation="relu"), nnx.Dense(SIZES[3], activation="softmax")])
    model.compile(optimizer=nnx.optimizers.SGD(LR), loss="sparse_categorical_crossentropy", jit_compile=jit_compile)
    model.set_weights(initial_weights())
    xd, yd = nnx.asarray(x), nnx.asarray(y)
    backend.synchronize()
    start = time.perf_counter()
    history = model.fit(xd, yd, epochs=epochs, batch_size=batch_size, verbose=0)
    backend.synchronize()
    return time.perf_counter() - start, history.history["loss"][-1]


# -- (b) the matrix products alone -------------------------------------------------------------
def run_floor(x, y, batch_size, epochs, backend, write_kernel=False):
    """``write_kernel``: also subtract the first kernel's gradient product from it in place, the
    one pass over the weights that training cannot skip (``profile_step.py`` reports it)."""
    xp, dev = backend.xp, backend.device
    w = [nnx.asarray(a) for a in initial_weights()[::2]]
    xd = nnx.asarray(x)
    n = x.shape[0]
    d3 = xp.ones((batch_size, SIZES[3]), dtype=xp.float32, device=dev)
    d2 = xp.ones((batch_size, SIZES[2]), dtype=xp.float32, device=dev)
    d1 = xp.ones((batch_size, SIZES[1]), dtype=xp.float32, device=dev)
    backend.synchronize()
    start = time.perf_counter()
    for _ in range(epochs):
        for i in range(0, n, batch_size):
            xb = xd[i:i + batch_size, ...]
            m = xb.shape[0]
            h1 = xb @ w[0]
            h2 = h1 @ w[1]
            h2 @ w[2]
            g3 = d3[:m, ...]
            h2.T @ g3
            g2 = g3 @ w[2].T
            h1.T @ d2[:m, ...]
            g1 = d2[:m, ...] @ w[1].T
            g0 = xb.T @ d1[:m, ...]
            if write_kernel:
                w[0] -= g0
            del g0, g1, g2
    backend.synchronize()
    return time.perf_counter() - start, float("nan")


# -- (c) a minimal hand-written loop -----------------------------------------------------------
def run_hand(x, y, batch_size, epochs, backend):
    xp, dev = backend.xp, backend.device
    params = [nnx.asarray(a) for a in initial_weights()]
    xd, yd = nnx.asarray(x), nnx.asarray(y)
    classes = xp.arange(10, device=dev)
    n = x.shape[0]
    rng = np.random.default_rng(0)
    backend.synchronize()
    start = time.perf_counter()
    for _ in range(epochs):
        loss_sum = 0.0
        order = nnx.asarray(rng.permutation(n))
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            xb, yb = xp.take(xd, idx, axis=0), xp.take(yd, idx, axis=0)
            w1, b1, w2, b2, w3, b3 = params
            h1 = xp.maximum(xb @ w1 + b1, 0.0)
            h2 = xp.maximum(h1 @ w2 + b2, 0.0)
            z = h2 @ w3 + b3
            e = xp.exp(z - xp.max(z, axis=1, keepdims=True))
            p = e / xp.sum(e, axis=1, keepdims=True)
            t = xp.astype(yb[:, None] == classes, xp.float32)
            loss_sum = loss_sum - xp.sum(t * xp.log(xp.clip(p, 1e-7, 1.0)))
            d3 = (p - t) / xb.shape[0]
            d2 = xp.where(h2 > 0, d3 @ w3.T, 0.0)
            d1 = xp.where(h1 > 0, d2 @ w2.T, 0.0)
            grads = [xb.T @ d1, xp.sum(d1, axis=0), h1.T @ d2, xp.sum(d2, axis=0), h2.T @ d3, xp.sum(d3, axis=0)]
            for w, g in zip(params, grads):
                w -= LR * g
    backend.synchronize()
    return time.perf_counter() - start, float(loss_sum) / n


# -- (e) a tuned in-place NumPy loop ----------------------------------------------------------
def _no_mark(phase: str) -> None:
    pass


def run_tuned(x, y, batch_size, epochs, backend, mark=_no_mark):
    """What careful NumPy code does without a framework: in-place ufuncs, the learning rate folded
    into the loss gradient, one pass per update. NumPy only; ``mark(phase)`` closes each phase
    (``profile_step.py`` times them)."""
    w1, b1, w2, b2, w3, b3 = params = initial_weights()
    f32, n = np.float32, x.shape[0]
    rows = np.arange(batch_size)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    mark("start")
    for _ in range(epochs):
        order = rng.permutation(n)
        loss_sum = np.zeros((), f32)
        mark("rest")
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            xb, yb = x[idx], y[idx]
            m, r = xb.shape[0], rows[:xb.shape[0]]
            mark("take")
            h1 = xb @ w1
            h1 += b1
            np.maximum(h1, 0, out=h1)
            h2 = h1 @ w2
            h2 += b2
            np.maximum(h2, 0, out=h2)
            z = h2 @ w3
            z += b3
            z -= z.max(axis=1, keepdims=True)
            np.exp(z, out=z)
            z /= z.sum(axis=1, keepdims=True)
            mark("forward")
            loss_sum -= np.log(np.maximum(z[r, yb], f32(1e-7))).sum()
            c = f32(LR / m)
            d3 = z * c
            d3[r, yb] -= c
            mark("loss")
            grads = [None, None, None, None, h2.T @ d3, d3.sum(axis=0)]
            d2 = d3 @ w3.T
            d2 *= h2 > 0
            grads[2:4] = h1.T @ d2, d2.sum(axis=0)
            d1 = d2 @ w2.T
            d1 *= h1 > 0
            grads[0:2] = xb.T @ d1, d1.sum(axis=0)
            mark("backward")
            for w, g in zip(params, grads):
                w -= g
            mark("update")
    return time.perf_counter() - start, float(loss_sum) / n


# -- (d) PyTorch -------------------------------------------------------------------------------
def torch_runner(backend):
    try:
        import torch
    except ImportError:
        return None
    device = "cuda" if backend.name == "cupy" else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        return None

    def run(x, y, batch_size, epochs, backend):
        model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128),
                                    torch.nn.ReLU(), torch.nn.Linear(128, 10)).to(device)
        with torch.no_grad():
            for layer, (k, b) in zip([model[0], model[2], model[4]], zip(*[iter(initial_weights())] * 2)):
                layer.weight.copy_(torch.from_numpy(k.T.copy()))
                layer.bias.copy_(torch.from_numpy(b))
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        loss_fn = torch.nn.CrossEntropyLoss()
        xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        n = x.shape[0]
        gen = torch.Generator().manual_seed(0)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        for _ in range(epochs):
            loss_sum = torch.zeros((), device=device)
            order = torch.randperm(n, generator=gen).to(device)
            for i in range(0, n, batch_size):
                idx = order[i:i + batch_size]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
                loss_sum += loss.detach() * len(idx)
        sync()
        return time.perf_counter() - start, float(loss_sum) / n

    run.label = f"torch {torch.__version__} ({device}, {torch.get_num_threads()} threads)"
    return run


def parse_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The run-size options both benchmark scripts share; ``--quick`` shrinks the run to a smoke test."""
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds, no timing claims")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.epochs, args.rounds = 512, 1, 1
    return args


def round_order(names: list[str], r: int) -> list[str]:
    """The order of round ``r``: rotated by ``r``, and reversed in odd rounds. Rotation alone keeps
    each variant right after the same one in every round (the last in the list, PyTorch, would
    always leave its thread pools spinning for the first, nnx); reversing alternates which
    variant precedes each one."""
    order = names[r % len(names):] + names[:r % len(names)]
    return order[::-1] if r % 2 else order


def print_ratios(times: dict[str, list[float]], medians: dict[str, float]) -> None:
    """nnx's (and the recorded-step variant's) ratios to every other variant: of the medians, and
    the median and quartiles of the per-round ratios (robust to the machine drifting)."""
    heads = [h for h in ("nnx", "graph") if h in medians]
    pairs = [(h, k) for h in heads for k in medians if k not in heads]
    print("ratios of medians: " + ", ".join(f"{h}/{k} {medians[h] / medians[k]:.3f}" for h, k in pairs))
    if len(times["nnx"]) >= 3:
        paired = []
        for h, k in pairs:
            q1, q2, q3 = statistics.quantiles(sorted(a / b for a, b in zip(times[h], times[k])), n=4)
            paired.append(f"{h}/{k} {q2:.3f} [{q1:.3f}, {q3:.3f}]")
        print("paired per-round ratios, median [quartiles]: " + ", ".join(paired))


def main() -> None:
    parser = argparse.ArgumentParser(description="nnx MLP training speed vs the matmul floor and PyTorch")
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy", "array_api_strict"])
    args = parse_args(parser)

    backend = nnx.set_backend(args.backend)
    nnx.seed(0)
    x, y = make_data(args.samples)
    variants = {"nnx": run_nnx, "floor": run_floor, "hand": run_hand}
    if backend.captures_steps:  # fit with its step recorded as a device graph (jit_compile=True)
        variants["graph"] = functools.partial(run_nnx, jit_compile=True)
    if backend.name == "numpy":
        variants["tuned"] = run_tuned
    torch_run = torch_runner(backend)
    if torch_run is not None:
        variants["torch"] = torch_run
    for run in variants.values():  # warm-up: allocator, BLAS threads, kernel compilation
        run(x[: 4 * args.batch_size], y[: 4 * args.batch_size], args.batch_size, 1, backend)

    times: dict[str, list[float]] = {k: [] for k in variants}
    losses: dict[str, float] = {}
    names = list(variants)
    for r in range(args.rounds):
        for name in round_order(names, r):
            seconds, loss = variants[name](x, y, args.batch_size, args.epochs, backend)
            times[name].append(seconds)
            losses[name] = loss

    samples = args.samples * args.epochs
    print(f"nnx MLP benchmark: {' -> '.join(map(str, SIZES))}, relu, softmax CE, SGD, float32")
    print(f"backend {backend.describe()}; batch {args.batch_size}; {args.samples} samples x {args.epochs} epochs; "
          f"{args.rounds} rounds; {platform.processor() or platform.machine()}, {os.cpu_count()} cpus")
    if torch_run is not None:
        print(f"reference: {torch_run.label}")
    print(f"{'variant':<8}{'median s':>10}{'samples/s':>12}{'epoch loss':>11}")
    medians = {k: statistics.median(v) for k, v in times.items()}
    for name, t in medians.items():
        print(f"{name:<8}{t:>10.4f}{samples / t:>12,.0f}{losses[name]:>11.4f}")
    print_ratios(times, medians)


if __name__ == "__main__":
    main()
