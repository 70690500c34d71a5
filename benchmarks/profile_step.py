"""Where a training step's time goes: nnx's ``fit`` against the tuned NumPy loop of ``mlp.py``,
phase by phase (gather the batch, forward, loss, backward, update, the rest), the matrix
products alone (the floor), and the floor plus the one weight write training cannot skip, in
alternating rounds in one process.

    python benchmarks/profile_step.py --batch-size 128 --rounds 5

nnx's phases are timed by wrapping its methods (a few microseconds per step of wrapping cost is
counted in them); the tuned loop marks its own phases.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mlp  # noqa: E402

import nnx  # noqa: E402
from nnx import models, optimizers, training  # noqa: E402

PHASES = ("take", "forward", "loss", "backward", "update", "rest")


def timed(owner, name: str, into: dict, phase: str):
    """Wrap ``owner.name`` so its wall time adds to ``into[phase]``; returns an undo function."""
    original = getattr(owner, name)
    depth = [0]  # only the outermost call counts (a method may call itself, e.g. the model's forward)

    def wrapper(*args, **kwargs):
        depth[0] += 1
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            depth[0] -= 1
            if depth[0] == 0:
                into[phase] += time.perf_counter() - start

    setattr(owner, name, wrapper)
    return lambda: setattr(owner, name, original)


def timed_iter(owner, into, phase):
    """Time spent producing each item of ``owner``'s iterator (the batches: gather and staging)."""
    original = owner.__iter__

    def wrapper(self):
        it = original(self)
        while True:
            start = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                into[phase] += time.perf_counter() - start
                return
            into[phase] += time.perf_counter() - start
            yield item

    owner.__iter__ = wrapper
    return lambda: setattr(owner, "__iter__", original)


def profile_nnx(x, y, batch_size, epochs, backend, into):
    """nnx's fit with its phases timed; backward is the gradients less forward and loss."""
    t = collections.defaultdict(float)
    loss_class = type(nnx.losses.get("sparse_categorical_crossentropy"))
    undo = [timed_iter(training.Batches, t, "take"),
            timed(models.Sequential, "forward", t, "forward"),
            timed(loss_class, "logits_value_and_gradient", t, "loss"),
            timed(models.Sequential, "_gradients", t, "gradients"),  # what fit's step calls
            timed(optimizers.Optimizer, "apply", t, "update")]
    try:
        seconds, _ = mlp.run_nnx(x, y, batch_size, epochs, backend)
    finally:
        for u in undo:
            u()
    t["backward"] = t.pop("gradients") - t["forward"] - t["loss"]
    for phase, value in t.items():
        into[phase] += value
    return seconds


def profile_tuned(x, y, batch_size, epochs, backend, into):
    last = [0.0]

    def mark(phase):
        now = time.perf_counter()
        if phase != "start":
            into[phase] += now - last[0]
        last[0] = now

    return mlp.run_tuned(x, y, batch_size, epochs, backend, mark=mark)[0]


def main() -> None:
    args = mlp.parse_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    backend = nnx.set_backend("numpy")
    nnx.seed(0)
    x, y = mlp.make_data(args.samples)
    steps = args.rounds * args.epochs * -(-x.shape[0] // args.batch_size)
    phases = {"nnx": collections.defaultdict(float), "tuned": collections.defaultdict(float)}
    totals = collections.defaultdict(float)
    warm = slice(0, 4 * args.batch_size)
    profile_nnx(x[warm], y[warm], args.batch_size, 1, backend, collections.defaultdict(float))
    profile_tuned(x[warm], y[warm], args.batch_size, 1, backend, collections.defaultdict(float))
    for _ in range(args.rounds):
        totals["floor"] += mlp.run_floor(x, y, args.batch_size, args.epochs, backend)[0]
        totals["floor_write"] += mlp.run_floor(x, y, args.batch_size, args.epochs, backend, write_kernel=True)[0]
        totals["nnx"] += profile_nnx(x, y, args.batch_size, args.epochs, backend, phases["nnx"])
        totals["tuned"] += profile_tuned(x, y, args.batch_size, args.epochs, backend, phases["tuned"])
    phases["nnx"]["rest"] = totals["nnx"] - sum(phases["nnx"][p] for p in PHASES[:-1])

    us = 1e6 / steps
    print(f"batch {args.batch_size}: microseconds per step (mean over {steps} steps); floor {totals['floor'] * us:.0f}")
    print(f"{'phase':<10}{'nnx':>9}{'tuned':>9}")
    for p in PHASES:
        print(f"{p:<10}{phases['nnx'][p] * us:>9.0f}{phases['tuned'][p] * us:>9.0f}")
    print(f"{'total':<10}{totals['nnx'] * us:>9.0f}{totals['tuned'] * us:>9.0f}")
    print(f"{'/ floor':<10}{totals['nnx'] / totals['floor']:>9.2f}{totals['tuned'] / totals['floor']:>9.2f}")
    print(f"the floor plus one in-place pass over the first kernel (w -= g): "
          f"{totals['floor_write'] * us:.0f} us, {totals['floor_write'] / totals['floor']:.2f}x the floor")


if __name__ == "__main__":
    main()
