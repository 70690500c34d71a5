"""What the live progress bar (verbose=1) costs, two ways: (1) the time spent inside the bar's own
``update`` calls (device reads and formatting included), as a share of the fit; (2) fit with
verbose=0 and verbose=1 in alternating rounds, as the median of the paired ratios. Bar output goes
to a throwaway stream.

    python benchmarks/progbar_overhead.py [--backend numpy] [--batch-size 32]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nnx  # noqa: E402
from mlp import SIZES, initial_weights, make_data  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    backend = nnx.set_backend(args.backend)
    x, y = make_data(5000)
    model = nnx.Sequential([nnx.Input((SIZES[0],)), nnx.Dense(SIZES[1], activation="relu"),
                            nnx.Dense(SIZES[2], activation="relu"), nnx.Dense(SIZES[3], activation="softmax")])
    model.compile(optimizer=nnx.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    xd, yd = nnx.asarray(x), nnx.asarray(y)
    times: dict[int, list[float]] = {0: [], 1: []}
    inside = [0.0]
    real_update = nnx.progbar.Progbar.update

    def timed_update(self, *a, **k):
        t = time.perf_counter()
        real_update(self, *a, **k)
        inside[0] += time.perf_counter() - t

    nnx.progbar.Progbar.update = timed_update
    shares: list[float] = []
    for _ in range(args.rounds + 1):
        for verbose in (0, 1):
            model.set_weights(initial_weights())
            sink = io.StringIO()
            backend.synchronize()
            start = time.perf_counter()
            with contextlib.redirect_stdout(sink):
                model.fit(xd, yd, epochs=args.epochs, batch_size=args.batch_size, verbose=verbose)
            backend.synchronize()
            times[verbose].append(time.perf_counter() - start)
            if verbose == 0:
                inside[0] = 0.0
            else:
                shares.append(inside[0] / times[1][-1])
    paired = [b / q for q, b in zip(times[0][1:], times[1][1:])]  # first round: warm-up
    steps = args.epochs * -(-len(x) // args.batch_size)
    print(f"backend {backend.describe()}; batch {args.batch_size}; {steps} steps; {args.rounds} rounds (median)")
    print(f"time inside the bar's updates: {100 * statistics.median(shares[1:]):.2f}% of fit")
    print(f"verbose=0 {statistics.median(times[0][1:]):.4f}s, verbose=1 {statistics.median(times[1][1:]):.4f}s; "
          f"paired ratio {statistics.median(paired):.4f} (run-to-run noise included)")


if __name__ == "__main__":
    main()
