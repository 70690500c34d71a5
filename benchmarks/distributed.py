"""Data-parallel training on this machine: step time and allreduce share at 1 and 2 ranks, and
the scaling to expect across machines from the measured allreduce and gradient size.

The model is the 784-256-128-10 MLP of ``mlp.py`` (235,146 float32 parameters: a 940 KB
gradient), plain SGD, synthetic MNIST-shaped data, one BLAS thread per rank. The script launches
itself under ``mpiexec -n 1`` and ``mpiexec -n 2`` (and once without MPI with two BLAS threads) and
prints:

1. the median time per training step (``fit``) at each global batch, at 1 and 2 ranks, and the
   share of the 2-rank step spent in the gradient reduction (packing, ``MPI.Allreduce``, unpacking);
2. ``MPI.Allreduce`` alone on buffers from 8 bytes to 16 MB at 2 ranks, and the fit of the ring
   model ``T(N) = 2 (N-1)/N * S / B + 2 (N-1) a`` (S bytes, bandwidth B, latency a per message) to
   it, checked against the measured time for the gradient's size;
3. the step time and speedup the model predicts at N ranks on a network of given bandwidth and
   latency: one rank's measured compute at batch ``global / N`` plus ``T(N)`` plus the measured
   packing overhead (no overlap: the reduction starts after the backward pass).

    pip install -e ".[distributed]"
    python benchmarks/distributed.py                 # about a minute on 2 cores
    python benchmarks/distributed.py --quick         # smoke run (CI), no claims
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

NETWORKS = [  # assumed link parameters for the prediction: (name, bytes/s, latency s)
    ("10 GbE (TCP)", 1.1e9, 30e-6),
    ("100 Gb/s InfiniBand", 11e9, 3e-6),
]


# -- worker (one rank) -------------------------------------------------------------------------------
def worker(args) -> None:
    import nnx
    from mlp import SIZES, initial_weights, make_data

    if args.mpi:
        nnx.distributed.init()
    rank, size = nnx.distributed.rank(), nnx.distributed.size()
    spent = {"reduce": 0.0, "wait": 0.0, "allreduce": 0.0}
    calls: list[float] = []  # each allreduce in fit, for its median
    if size > 1:  # time the reduction (pack, allreduce, unpack), and inside it the wait and the transfer
        original = nnx.distributed._HostReducer.allreduce

        class TimedComm:
            """The communicator, with a barrier before each Allreduce so that waiting for the slower
            rank is counted apart from the transfer."""

            def __init__(self, comm):
                self.comm = comm

            def Allreduce(self, *a, **k):
                t0 = time.perf_counter()
                self.comm.Barrier()
                t1 = time.perf_counter()
                self.comm.Allreduce(*a, **k)
                t2 = time.perf_counter()
                spent["wait"] += t1 - t0
                spent["allreduce"] += t2 - t1
                calls.append(t2 - t1)

        def timed(self, *a, **k):
            if not isinstance(self.comm, TimedComm):
                self.comm = TimedComm(self.comm)
            t = time.perf_counter()
            try:
                return original(self, *a, **k)
            finally:
                spent["reduce"] += time.perf_counter() - t

        nnx.distributed._HostReducer.allreduce = timed
    x, y = make_data(args.samples)
    results = {"ranks": size, "steps": {}, "parts": {}, "allreduce": {}, "allreduce_mean": {}}
    for batch in args.batch_sizes:
        model = nnx.Sequential([nnx.Input((SIZES[0],)), nnx.Dense(SIZES[1], activation="relu"),
                                nnx.Dense(SIZES[2], activation="relu"), nnx.Dense(SIZES[3], activation="softmax")])
        model.compile(optimizer=nnx.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
        model.set_weights(initial_weights())
        steps = -(-args.samples // batch)
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0)  # warm-up
        times, parts = [], []
        calls.clear()
        for _ in range(args.rounds):
            for k in spent:
                spent[k] = 0.0
            if size > 1:
                nnx.distributed.barrier()
            start = time.perf_counter()
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
            seconds = time.perf_counter() - start
            times.append(seconds / steps)
            parts.append({"pack": (spent["reduce"] - spent["wait"] - spent["allreduce"]) / steps,
                          "wait": spent["wait"] / steps, "allreduce": spent["allreduce"] / steps})
        results["steps"][batch] = statistics.median(times)
        results["parts"][batch] = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
        results["parts"][batch]["allreduce_median"] = statistics.median(calls) if calls else 0.0
    if size > 1:  # MPI.Allreduce alone, in place on a float32 buffer
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        grad = sum(a * b + b for a, b in zip(SIZES[:-1], SIZES[1:]))
        for count in sorted({*[4 ** k for k in range(1, 12 if args.rounds > 1 else 9)], grad}):
            buf = np.ones(count, np.float32)
            reps = max(5, min(200, int(2e7 // (count * 4))))
            for _ in range(3):
                comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            samples = []
            for _ in range(reps):
                comm.Barrier()
                t = time.perf_counter()
                comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
                samples.append(time.perf_counter() - t)
            results["allreduce"][count * 4] = statistics.median(samples)
            results["allreduce_mean"][count * 4] = statistics.fmean(samples)
        results["gradient_bytes"] = grad * 4
    if rank == 0:
        print("RESULT " + json.dumps(results), flush=True)


# -- launcher ----------------------------------------------------------------------------------------
def _run(cmd: list[str], threads: int, timeout: float) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NNX_BACKEND"}
    env.update(OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    line = next(l for l in done.stdout.splitlines() if l.startswith("RESULT "))
    out = json.loads(line[7:])
    for key in ("steps", "parts", "allreduce", "allreduce_mean"):
        out[key] = {int(k): v for k, v in out[key].items()}
    return out


def ring(size: int, nbytes: float, bandwidth: float, latency: float) -> float:
    """Ring allreduce: 2(N-1) messages of S/N bytes each way around the ring."""
    if size == 1:
        return 0.0
    return 2 * (size - 1) / size * nbytes / bandwidth + 2 * (size - 1) * latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mpi", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 1024], help="global batches")
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds, no timing claims")
    args = parser.parse_args()
    if args.quick:
        args.batch_sizes, args.samples, args.rounds = [64], 512, 1
    if args.worker:
        worker(args)
        return
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        print("mpi4py is not installed (pip install -e '.[distributed]'): nothing to measure.")
        return
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    mpiexec = beside if os.path.exists(beside) else shutil.which("mpiexec")
    if mpiexec is None:
        print("mpiexec is not installed (pip install -e '.[distributed]'): nothing to measure.")
        return
    me = os.path.abspath(__file__)
    common = ["--worker", "--samples", str(args.samples), "--rounds", str(args.rounds)]
    top = max(args.batch_sizes)
    per_rank = sorted({b // n for b in args.batch_sizes for n in (1, 2, 4, 8, 16) if b // n >= 1})
    one = _run([mpiexec, "-n", "1", sys.executable, "-m", "mpi4py", me, *common, "--mpi", "--batch-sizes",
                *map(str, per_rank)], 1, 1200)
    two = _run([mpiexec, "-n", "2", sys.executable, "-m", "mpi4py", me, *common, "--mpi", "--batch-sizes",
                *map(str, args.batch_sizes)], 1, 1200)
    threads2 = _run([sys.executable, me, *common, "--batch-sizes", *map(str, args.batch_sizes)], 2, 1200)

    import numpy  # noqa: F401  (version line)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, numpy {np.__version__}; {args.samples} samples, median of {args.rounds}")
    print("\n## Step time (ms per step), and where the 2-rank step goes\n")
    print("| global batch | 1 rank, 1 thread | 1 process, 2 threads | 2 ranks, 1 thread each | speedup (vs 1 rank) "
          "| 2 ranks: pack + unpack | waiting for the other rank | allreduce |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for b in args.batch_sizes:
        t1, t2, tt = one["steps"][b], two["steps"][b], threads2["steps"][b]
        p = two["parts"][b]
        print(f"| {b} | {t1 * 1e3:.2f} | {tt * 1e3:.2f} | {t2 * 1e3:.2f} | {t1 / t2:.2f} | {p['pack'] * 1e3:.2f} "
              f"| {p['wait'] * 1e3:.2f} | {p['allreduce'] * 1e3:.2f} |")

    measured = two["allreduce"]
    grad = two["gradient_bytes"]
    sizes = np.array(sorted(measured), dtype=float)
    times = np.array([measured[int(s)] for s in sizes])
    # least squares for T(2) = S / B + 2 a, weighted by 1/T (relative error)
    design = np.stack([sizes, np.ones_like(sizes)], axis=1) / times[:, None]
    slope, intercept = np.linalg.lstsq(design, np.ones_like(times), rcond=None)[0]
    bandwidth, latency = 1.0 / slope, max(intercept, 0.0) / 2
    print("\n## MPI.Allreduce alone at 2 ranks (in place, float32)\n")
    print("| bytes | median us | mean us | ring model us |")
    print("| ---: | ---: | ---: | ---: |")
    for s, t in zip(sizes, times):
        mark = " (the gradient)" if int(s) == grad else ""
        print(f"| {int(s)}{mark} | {t * 1e6:.1f} | {two['allreduce_mean'][int(s)] * 1e6:.1f} "
              f"| {ring(2, s, bandwidth, latency) * 1e6:.1f} |")
    print(f"\nfit (to the medians): bandwidth {bandwidth / 1e9:.2f} GB/s, latency {latency * 1e6:.1f} us per message; gradient "
          f"{grad} bytes: measured {measured[grad] * 1e6:.0f} us, model {ring(2, grad, bandwidth, latency) * 1e6:.0f} us")
    for b in args.batch_sizes:
        print(f"in fit at global batch {b}: the allreduce takes {two['parts'][b]['allreduce'] * 1e6:.0f} us per step "
              f"on average, median {two['parts'][b]['allreduce_median'] * 1e6:.0f} us "
              f"(alone: median {measured[grad] * 1e6:.0f} us, mean "
              f"{two['allreduce_mean'][grad] * 1e6:.0f} us)")

    pack = statistics.median(two["parts"][b]["pack"] for b in args.batch_sizes)
    print(f"\n## Predicted across machines (global batch {top}; compute: one rank's measured step at "
          f"{top}/N; plus {pack * 1e6:.0f} us packing)\n")
    header = "| N | compute ms |" + "".join(f" {n} allreduce ms | {n} step ms | {n} speedup |" for n, _, _ in NETWORKS)
    print(header)
    print("| ---: | ---: |" + " ---: | ---: | ---: |" * len(NETWORKS))
    base = one["steps"][top]
    for n in (1, 2, 4, 8, 16):
        if top // n not in one["steps"]:
            continue
        compute = one["steps"][top // n]
        row = f"| {n} | {compute * 1e3:.2f} |"
        for _, bw, lat in NETWORKS:
            comm = ring(n, grad, bw, lat) + (pack if n > 1 else 0.0)
            row += f" {comm * 1e3:.2f} | {(compute + comm) * 1e3:.2f} | {base / (compute + comm):.2f} |"
        print(row)
    print("\n" + "; ".join(f"{name}: {bw / 1e9:.1f} GB/s, {lat * 1e6:.0f} us" for name, bw, lat in NETWORKS)
          + " (assumed link parameters)")


if __name__ == "__main__":
    main()
