"""Keras-style progress output. Values are read from the device only when a line is drawn, and a
line is drawn at most every ``interval`` seconds (plus once at the end)."""
from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, Callable, TextIO


def message(text: str, stream: TextIO | None = None) -> None:
    """Print ``text`` on a line of its own."""
    stream = stream or sys.stdout
    stream.write(text + "\n")
    stream.flush()


def resolve_verbose(verbose: int | str, stream: TextIO | None = None) -> int:
    if verbose == "auto":
        stream = stream or sys.stdout
        return 1 if getattr(stream, "isatty", lambda: False)() else 2
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1, 2 or 'auto'; received {verbose!r}.")
    return int(verbose)


def _format_time(seconds: float) -> str:
    if seconds >= 3600:
        return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"
    if seconds >= 60:
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
    return f"{seconds:.0f}s"


def _format_per_step(seconds: float, unit: str) -> str:
    if seconds >= 1:
        return f"{seconds:.0f}s/{unit}"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.0f}ms/{unit}"
    return f"{seconds * 1e6:.0f}us/{unit}"


def format_logs(logs: Mapping[str, Any]) -> str:
    parts = []
    for k in logs:
        v = float(logs[k])
        parts.append(f"{k}: {v:.4e}" if v != 0 and abs(v) < 1e-3 else f"{k}: {v:.4f}")
    return " - ".join(parts)


class Progbar:
    """One line per epoch (verbose 2) or a live bar (verbose 1).

    >>> bar = Progbar(target=100); bar.update(50, lambda: {"loss": 0.3})
    """

    def __init__(self, target: int, verbose: int = 1, width: int = 30, interval: float = 0.1,
                 stream: TextIO | None = None, unit: str = "step"):
        self.target, self.verbose, self.width, self.interval = target, verbose, width, interval
        self.stream = stream or sys.stdout
        self.unit = unit
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._last_len = 0
        self.draws = 0

    def update(self, current: int, logs: Callable[[], Mapping[str, Any]] | None = None, final: bool = False,
               extra: Mapping[str, Any] | None = None) -> None:
        """Redraw if due; ``logs`` is called (reading the device) only when a line is drawn."""
        if self.verbose == 0:
            return
        now = time.perf_counter()
        if not final and (self.verbose == 2 or now - self._last_draw < self.interval):
            return
        self._last_draw = now
        self.draws += 1
        values = dict(logs() if logs is not None else {})
        if extra:
            values.update(extra)
        elapsed = now - self.start
        per_step = elapsed / max(current, 1)
        if self.verbose == 2:
            line = f"{current}/{self.target} - {_format_time(elapsed)} - {_format_per_step(per_step, self.unit)}"
            self.stream.write(line + (f" - {format_logs(values)}" if values else "") + "\n")
            self.stream.flush()
            return
        done = int(self.width * current / max(self.target, 1))
        bar = "=" * done + (">" if done < self.width else "") + "." * (self.width - done - 1)
        digits = len(str(self.target))
        line = f"{current:{digits}d}/{self.target} [{bar[:self.width]}]"
        if final:
            line += f" - {_format_time(elapsed)} {_format_per_step(per_step, self.unit)}"
        else:
            line += f" - ETA: {_format_time(per_step * (self.target - current))} - {_format_per_step(per_step, self.unit)}"
        if values:
            line += f" - {format_logs(values)}"
        pad = max(self._last_len - len(line), 0)
        self._last_len = len(line)
        self.stream.write("\r" + line + " " * pad + ("\n" if final else ""))
        self.stream.flush()
