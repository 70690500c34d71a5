"""Shared command-line options for the examples."""
from __future__ import annotations

import argparse
import os
from typing import Callable

import nnx


def parse(description: str, epochs: int, extra: Callable[[argparse.ArgumentParser], None] | None = None
          ) -> argparse.Namespace:
    """The common options; ``extra(parser)`` adds a script's own."""
    parser = argparse.ArgumentParser(description=description)
    if extra is not None:
        extra(parser)
    parser.add_argument("--backend", default="numpy", help="numpy, cupy, array_api_strict or auto")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "output"),
                        help="folder for the plot and checkpoints")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    nnx.set_backend(args.backend)
    nnx.seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    return args


def split(x, y, test_fraction: float = 0.2, seed: int = 0):
    """A seeded, stratification-free hold-out split (host numpy)."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return x[train], x[test], y[train], y[test]
