"""Training speed of the Keras "simple MNIST convnet" (without its Dropout) against PyTorch eager:

    Conv2D 32 3x3 relu -> MaxPooling2D -> Conv2D 64 3x3 relu -> MaxPooling2D -> Flatten -> Dense 10 softmax

float32, sparse softmax cross-entropy, plain SGD, the same initial weights, on synthetic
MNIST-shaped images (28x28x1), in alternating rounds on one backend:

  (a) nnx       ``model.fit``
  (b) floor     the step's matrix products alone, on ready-made patch matrices
  (c) torch     the same model in PyTorch eager (NCHW, as PyTorch's default) on the matching
                device (CPU for numpy, CUDA for cupy), when importable

Prints the median time per variant, samples per second, the last epoch's mean loss (a check
that nnx and torch do the same work), and the ratios nnx/floor and nnx/torch. ``--profile`` also
prints where nnx's step time goes, layer by layer.

    python benchmarks/cnn.py --batch-size 128 --rounds 7
    python benchmarks/cnn.py --profile
    python benchmarks/cnn.py --backend cupy      # on a CUDA machine: against torch on CUDA
    python benchmarks/cnn.py --quick             # a few-second smoke run (CI), no claims
"""
from __future__ import annotations

import argparse
import collections
import functools
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import nnx  # noqa: E402
from mlp import print_ratios, round_order  # noqa: E402  (beside this file)

LR = 0.01


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic MNIST-shaped data: 10 noisy class prototypes in [0, 1]^(28x28x1)."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((10, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, size=n)
    x = np.clip(prototypes[y] + 0.3 * rng.standard_normal((n, 28, 28, 1), dtype=np.float32), 0, 1)
    return x.astype(np.float32), y


def build_nnx() -> nnx.Sequential:
    return nnx.Sequential([
        nnx.Input((28, 28, 1)),
        nnx.Conv2D(32, (3, 3), activation="relu"),
        nnx.MaxPooling2D((2, 2)),
        nnx.Conv2D(64, (3, 3), activation="relu"),
        nnx.MaxPooling2D((2, 2)),
        nnx.Flatten(),
        nnx.Dense(10, activation="softmax"),
    ])


def initial_weights(seed: int = 0) -> list[np.ndarray]:
    """Glorot-uniform kernels and zero biases, in nnx's (Keras's) layouts."""
    rng = np.random.default_rng(seed)
    out = []
    for shape in ((3, 3, 1, 32), (3, 3, 32, 64), (1600, 10)):
        fan_in, fan_out = int(np.prod(shape[:-1])), int(np.prod(shape[:-2]) * shape[-1])
        limit = np.sqrt(6 / (fan_in + fan_out))
        out += [rng.uniform(-limit, limit, shape).astype(np.float32), np.zeros(shape[-1], np.float32)]
    return out


# -- (a) nnx ---------------------------------------------------------------------------------
def run_nnx(x, y, batch_size, epochs, backend, jit_compile=False):
    model = build_nnx()
    model.compile(optimizer=nnx.optimizers.SGD(LR), loss="sparse_categorical_crossentropy", jit_compile=jit_compile)
    model.set_weights(initial_weights())
    xd, yd = nnx.asarray(x), nnx.asarray(y)
    backend.synchronize()
    start = time.perf_counter()
    history = model.fit(xd, yd, epochs=epochs, batch_size=batch_size, verbose=0)
    backend.synchronize()
    return time.perf_counter() - start, history.history["loss"][-1]


# -- (b) the matrix products alone ------------------------------------------------------------
def run_floor(x, y, batch_size, epochs, backend):
    """The step's matrix products on ready-made patch matrices: each convolution's forward and
    kernel gradient, the second one's input gradient, the dense layer's three. No im2col or
    col2im, bias, activation, pooling, loss or update."""
    xp, dev = backend.xp, backend.device
    n = x.shape[0]
    shapes = [((26 * 26, 9), (9, 32)), ((11 * 11, 288), (288, 64)), ((1, 1600), (1600, 10))]
    mats = []
    for (rows, k), (_, f) in shapes:
        mats.append((xp.ones((batch_size * rows, k), dtype=xp.float32, device=dev),
                     xp.ones((k, f), dtype=xp.float32, device=dev),
                     xp.ones((batch_size * rows, f), dtype=xp.float32, device=dev)))
    backend.synchronize()
    start = time.perf_counter()
    for _ in range(epochs):
        for i in range(0, n, batch_size):
            m = min(batch_size, n - i)
            for layer, (a, w, d) in enumerate(mats):
                rows = a.shape[0] // batch_size * m
                a, d = a[:rows, ...], d[:rows, ...]
                a @ w
                a.T @ d
                if layer > 0:
                    d @ w.T
    backend.synchronize()
    return time.perf_counter() - start, float("nan")


# -- (c) PyTorch -------------------------------------------------------------------------------
def torch_runner(backend):
    try:
        import torch
    except ImportError:
        return None
    device = "cuda" if backend.name == "cupy" else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        return None
    nn = torch.nn

    def run(x, y, batch_size, epochs, backend):
        model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                              nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1600, 10)).to(device)
        k1, b1, k2, b2, k3, b3 = initial_weights()
        # Keras's flatten order is (h, w, c), PyTorch's (c, h, w): permute the dense kernel's rows
        k3 = k3.reshape(5, 5, 64, 10).transpose(2, 0, 1, 3).reshape(1600, 10)
        with torch.no_grad():
            for layer, k, b in ((model[0], k1.transpose(3, 2, 0, 1), b1), (model[3], k2.transpose(3, 2, 0, 1), b2),
                                (model[7], k3.T, b3)):
                layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(k)))
                layer.bias.copy_(torch.from_numpy(b))
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        loss_fn = nn.CrossEntropyLoss()
        xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)
        yt = torch.from_numpy(y).to(device)
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


# -- where nnx's time goes ---------------------------------------------------------------------
def profile(x, y, batch_size, epochs, backend) -> None:
    """Time each layer's forward and backward, the loss and the update inside ``fit`` by wrapping
    their methods (synchronizing the device around each), in microseconds per step."""
    model = build_nnx()
    model.compile(optimizer=nnx.optimizers.SGD(LR), loss="sparse_categorical_crossentropy")
    model.set_weights(initial_weights())
    totals: dict[str, float] = collections.defaultdict(float)
    depth = [0]  # a layer's backward calls its backward_from_logits: count the outer call only

    def timed(label, fn):
        def wrapper(*args, **kwargs):
            if depth[0]:
                return fn(*args, **kwargs)
            backend.synchronize()
            start = time.perf_counter()
            depth[0] += 1
            try:
                out = fn(*args, **kwargs)
            finally:
                depth[0] -= 1
            backend.synchronize()
            totals[label] += time.perf_counter() - start
            return out
        return wrapper

    for i, layer in enumerate(model.layers):
        label = f"{layer.name} ({type(layer).__name__})"
        if i in model._pooled:  # runs with the max pooling after it (``forward_pooled``)
            label = f"{layer.name} + {model.layers[i + 1].name}"
        layer.forward = timed(f"forward  {label}", layer.forward)
        layer.backward = timed(f"backward {label}", layer.backward)
        for name, kind in (("backward_from_logits", "backward"), ("forward_pooled", "forward "),
                           ("backward_pooled", "backward")):
            if hasattr(layer, name):
                setattr(layer, name, timed(f"{kind} {label}", getattr(layer, name)))
    # inside the layers: the backend operations, each call timed whoever calls it
    inner: dict[str, float] = collections.defaultdict(float)
    ops = backend.ops
    for name in ("im2col", "conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward", "conv2d_max_pool",
                 "conv2d_max_pool_backward", "bias_activation",
                 "activation_backward", "sum_rows"):
        original = getattr(ops, name)

        def op_wrapper(*args, _original=original, _name=name, **kwargs):
            backend.synchronize()
            start = time.perf_counter()
            out = _original(*args, **kwargs)
            backend.synchronize()
            inner[_name] += time.perf_counter() - start
            return out
        setattr(ops, name, op_wrapper)
    model.loss.logits_value_and_gradient = timed("loss and its gradient", model.loss.logits_value_and_gradient)
    model.optimizer.apply = timed("update (SGD)", model.optimizer.apply)
    xd, yd = nnx.asarray(x), nnx.asarray(y)
    backend.synchronize()
    start = time.perf_counter()
    try:
        model.fit(xd, yd, epochs=epochs, batch_size=batch_size, verbose=0)
    finally:
        for name in inner:
            vars(ops).pop(name, None)
    backend.synchronize()
    total = time.perf_counter() - start
    steps = epochs * -(-x.shape[0] // batch_size)
    totals["rest (batching, fit's loop, metrics)"] = total - sum(totals.values())
    print(f"\nnnx step profile, {steps} steps of batch {batch_size}: microseconds per step")
    for label, seconds in totals.items():
        print(f"  {label:<44}{1e6 * seconds / steps:>9.0f}  {100 * seconds / total:5.1f}%")
    print(f"  {'total':<44}{1e6 * total / steps:>9.0f}")
    print("inside them, the backend operations (conv2d includes its im2col):")
    for name, seconds in sorted(inner.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<44}{1e6 * seconds / steps:>9.0f}  {100 * seconds / total:5.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description="nnx CNN training speed vs PyTorch eager")
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy", "array_api_strict"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--profile", action="store_true", help="also print where nnx's step time goes")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds, no timing claims")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.epochs, args.rounds = 256, 1, 1

    backend = nnx.set_backend(args.backend)
    nnx.seed(0)
    x, y = make_data(args.samples)
    variants = {"nnx": run_nnx, "floor": run_floor}
    if backend.captures_steps:  # fit with its step recorded as a device graph (jit_compile=True)
        variants["graph"] = functools.partial(run_nnx, jit_compile=True)
    torch_run = torch_runner(backend)
    if torch_run is not None:
        variants["torch"] = torch_run
    for name, run in list(variants.items()):  # warm-up: allocator, BLAS threads, kernel compilation
        try:
            run(x[: 2 * args.batch_size], y[: 2 * args.batch_size], args.batch_size, 1, backend)
        except ValueError as e:  # a step the backend cannot record as a graph: say so, time the rest
            if name != "graph":
                raise
            print(f"graph: not timed: {e}")
            del variants[name]

    times: dict[str, list[float]] = {k: [] for k in variants}
    losses: dict[str, float] = {}
    names = list(variants)
    for r in range(args.rounds):
        for name in round_order(names, r):
            seconds, loss = variants[name](x, y, args.batch_size, args.epochs, backend)
            times[name].append(seconds)
            losses[name] = loss

    samples = args.samples * args.epochs
    print("nnx CNN benchmark: conv32-pool-conv64-pool-dense10 on 28x28x1, relu, softmax CE, SGD, float32")
    print(f"backend {backend.describe()}; batch {args.batch_size}; {args.samples} samples x {args.epochs} epochs; "
          f"{args.rounds} rounds; {platform.processor() or platform.machine()}, {os.cpu_count()} cpus")
    if torch_run is not None:
        print(f"reference: {torch_run.label}")
    print(f"{'variant':<8}{'median s':>10}{'samples/s':>12}{'epoch loss':>11}")
    medians = {k: statistics.median(v) for k, v in times.items()}
    for name, t in medians.items():
        print(f"{name:<8}{t:>10.4f}{samples / t:>12,.0f}{losses[name]:>11.4f}")
    print_ratios(times, medians)
    if args.profile or args.quick:
        profile(x, y, args.batch_size, args.epochs, backend)


if __name__ == "__main__":
    main()
