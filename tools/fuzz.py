#!/usr/bin/env python
"""Longer fuzz run of the properties in tests/test_fuzz.py, counting outcomes instead of failing.

    python tools/fuzz.py                          # 3000 examples per property, every property
    python tools/fuzz.py --examples 500 --only fit_clf --only load_model
    python tools/fuzz.py --seed 7 --show 5        # another random stream; 5 examples per category

For every drawn case (a fresh model, trained one step, then one call of fit / evaluate / predict /
set_weights / save / load_model), the outcome is one of:

    valid input accepted        valid input, finite results                     (good)
    clear error                 ValueError/TypeError naming what was expected   (good)
    raw numpy/Python message    ValueError/TypeError whose message lacks "expected"/"received"/"must"
    obscure error type          any other exception type (RuntimeError outside the documented cases)
    silently accepted garbage   invalid input returned normally, or valid input left non-finite
                                weights or results
    state changed after error   the call raised but weights, optimizer state, compile settings or
                                files on disk changed
    valid input refused         valid input raised

Failures that match an entry of KNOWN_BUGS (tests/test_fuzz.py: reported bugs outside the fuzz
test's reach) are counted in their category and marked known. Exit status: 0 when every case in
the last four categories is a known bug, 1 otherwise. Numpy backend.
"""
from __future__ import annotations

import argparse
import collections
import importlib.util
import os
import re
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_properties():
    path = os.path.join(ROOT, "tests", "test_fuzz.py")
    spec = importlib.util.spec_from_file_location("nnx_fuzz_properties", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _template(detail: str) -> str:
    """An error message with its paths, numbers and quoted values blanked, to group alike ones."""
    text = re.sub(r"'[^']*'", "'…'", detail.split("\n")[0])
    text = re.sub(r"-?\d+(\.\d+)?(e[+-]?\d+)?", "N", text)
    return text[:110]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=3000, help="examples per property (default 3000)")
    parser.add_argument("--only", action="append", default=[], help="a property name (repeatable)")
    parser.add_argument("--seed", type=int, default=None, help="a seed for a reproducible run (default: random)")
    parser.add_argument("--show", type=int, default=3, help="examples printed per category and property (default 3)")
    args = parser.parse_args(argv)

    import numpy as np
    from hypothesis import HealthCheck, Phase, given, seed, settings

    import nnx

    fuzz = _load_properties()
    names = args.only or list(fuzz.PROPERTIES)
    unknown = set(names) - set(fuzz.PROPERTIES)
    if unknown:
        parser.error(f"unknown properties {sorted(unknown)}; choose from {', '.join(fuzz.PROPERTIES)}")

    totals: collections.Counter = collections.Counter()
    known_totals: collections.Counter = collections.Counter()
    known_names: collections.Counter = collections.Counter()
    raw_templates: collections.Counter = collections.Counter()
    examples: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    nnx.set_floatx("float32")
    nnx.set_backend("numpy")
    started = time.perf_counter()
    for name in names:
        counts: collections.Counter = collections.Counter()
        known: collections.Counter = collections.Counter()
        t0 = time.perf_counter()

        def body(case):
            outcome = fuzz.run_case(case)
            counts[outcome.category] += 1
            bug = fuzz.known_bug(case, outcome)
            if bug is not None:
                known[outcome.category] += 1
                known_names[bug.name] += 1
            if outcome.category == fuzz.RAW:
                raw_templates[_template(outcome.detail)] += 1
            shown = examples[(name, outcome.category)]
            if outcome.category != fuzz.OK and len(shown) < args.show:
                shown.append(f"{'[known] ' if bug else ''}{outcome.detail[:300]}\n        {case!r}"[:900])

        run = settings(max_examples=args.examples, deadline=None, database=None,
                       phases=[Phase.generate], derandomize=False,
                       suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                              HealthCheck.filter_too_much, HealthCheck.large_base_example])(
            given(fuzz.PROPERTIES[name])(body))
        if args.seed is not None:
            run = seed(args.seed)(run)
        run()
        totals.update(counts)
        known_totals.update(known)
        n = sum(counts.values())
        print(f"\n== {name}: {n} examples in {time.perf_counter() - t0:.1f} s")
        for category in fuzz.CATEGORIES:
            if counts[category]:
                flag = "  <-- failure" if category in fuzz.FAILURES else ""
                if known[category]:
                    flag += f" ({known[category]} known)" if known[category] < counts[category] else " (all known)"
                print(f"   {counts[category]:6d}  {category}{flag}")
            for line in examples.get((name, category), []):
                print(f"         - {line}")
        sys.stdout.flush()
    n = sum(totals.values())
    print(f"\n== total: {n} examples ({len(names)} properties) in {time.perf_counter() - started:.1f} s")
    for category in fuzz.CATEGORIES:
        extra = f"  ({known_totals[category]} of them known bugs)" if known_totals[category] else ""
        print(f"   {totals[category]:6d}  {category}{extra}")
    if known_names:
        print("\n== known bugs (KNOWN_BUGS in tests/test_fuzz.py):")
        for bug in fuzz.KNOWN_BUGS:
            print(f"   {known_names[bug.name]:6d}  {bug.name}  [{bug.where}]")
    if raw_templates:
        print("\n== raw-message templates (the heuristic: no 'expected' / 'received' / 'must'):")
        for text, count in raw_templates.most_common(15):
            print(f"   {count:6d}  {text}")
    del np
    unknown = sum(totals[c] - known_totals[c] for c in fuzz.FAILURES)
    print(f"\n{unknown} failures outside the known bugs.")
    return 1 if unknown else 0


if __name__ == "__main__":
    sys.exit(main())
