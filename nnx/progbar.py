"""Keras-style progress output. Values are read from the device only when a line is drawn, and a
line is drawn at most every ``interval`` seconds (plus once at the end).

Every write goes through :func:`write`, which records whether it left a line open (text not ending
in a newline, such as a live bar). :func:`message` prints a line of its own, ending an open line
first, so a callback's message never lands in the middle of a bar::

    progbar.message(f"Epoch {epoch + 1}/{epochs}")        # verbose 1: header on its own line
    bar = Progbar(steps, verbose=1)                         # ...the bar redraws in place (line open)
    progbar.message("Epoch 1: saving model to x.nnx")    # a callback: newline first, then the text
    bar.update(steps, logs, final=True)                     # the final bar ends with a newline

    bar = Progbar(steps, verbose=2, prefix=f"Epoch {epoch + 1}/{epochs}")
    bar.update(steps, logs, final=True)   # verbose 2: "Epoch 1/3 - 5/5 - 0s - 2ms/step - loss: ..."
"""
from __future__ import annotations

import numbers
import sys
import time
from collections.abc import Mapping
from typing import Any, Callable, TextIO

# The stream on which a line is open (written without its newline yet, e.g. a live bar), or None.
_open_stream: TextIO | None = None


def write(text: str, stream: TextIO | None = None) -> None:
    r"""Write ``text`` to ``stream`` (default: the current ``sys.stdout``) and flush it.

    Records whether the text leaves a line open: text that does not end in ``"\n"`` (a live bar
    drawn with ``"\r"``, or a header to be continued) leaves it open; text ending in ``"\n"``
    closes it.

    >>> progbar.write("Epoch 1/3 - ")          # the line stays open
    """
    global _open_stream
    if not text:
        return
    stream = stream or sys.stdout
    stream.write(text)
    stream.flush()
    _open_stream = None if text.endswith("\n") else stream


def line_open() -> bool:
    """Whether the last write left a line open (no newline yet)."""
    return _open_stream is not None


def end_line() -> None:
    """End an open line with a newline; does nothing when no line is open.

    A training loop calls it when it stops mid-epoch (an exception, a stop after a batch), so the
    next output starts on a fresh line.
    """
    global _open_stream
    if _open_stream is not None:
        stream, _open_stream = _open_stream, None
        try:
            stream.write("\n")
            stream.flush()
        except (ValueError, OSError):  # that stream has been closed since (a captured stdout)
            pass


def message(text: str, stream: TextIO | None = None) -> None:
    """Print ``text`` on a line of its own: ends an open progress line first, then writes
    ``text`` and a newline to ``stream`` (default: the current ``sys.stdout``). Every message a
    callback prints goes through here.

    >>> progbar.message("Epoch 3: early stopping")
    """
    end_line()
    write(f"{text}\n", stream)


def resolve_verbose(verbose: int | str, stream: TextIO | None = None) -> int:
    """The verbosity as 0, 1 or 2: ``"auto"`` is 1 when ``stream`` (default ``sys.stdout``) is a
    terminal, else 2.

    Args:
        verbose: 0, 1, 2 (an int of any integer type; ``True`` / ``False`` count as 1 / 0, as in
            Python) or ``"auto"``.
        stream: the stream ``"auto"`` looks at. Defaults to the current ``sys.stdout``.

    Returns:
        0, 1 or 2.

    Raises:
        ValueError: anything else (another string, a float, an array, None).

    >>> progbar.resolve_verbose("auto")   # 2 when stdout is not a terminal
    """
    if isinstance(verbose, str):
        if verbose == "auto":
            stream = stream or sys.stdout
            return 1 if getattr(stream, "isatty", lambda: False)() else 2
    elif isinstance(verbose, numbers.Integral) and int(verbose) in (0, 1, 2):
        return int(verbose)
    shown = f"an array of shape {tuple(verbose.shape)}" if getattr(verbose, "ndim", 0) else repr(verbose)
    raise ValueError(f"verbose must be 0, 1, 2 or 'auto'; received {shown}.")


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

    Args:
        target: the number of steps in the epoch.
        verbose: ``1`` redraws a bar in place (the line stays open until the final update);
            ``2`` writes one line at the final update only; ``0`` writes nothing. Defaults to 1.
        width: characters in the bar. Defaults to 30.
        interval: least seconds between two redraws of the bar. Defaults to 0.1.
        stream: where to write. Defaults to ``sys.stdout`` at construction.
        unit: the word after the time per step, ``"3ms/step"``. Defaults to ``"step"``.
        prefix: text at the start of the verbose-2 line, e.g. ``"Epoch 3/10"`` gives
            ``"Epoch 3/10 - 5/5 - 0s - 2ms/step - loss: ..."``. Not drawn at verbose 1, where the
            loop prints the header on its own line with :func:`message`. Defaults to ``""``.

    >>> bar = Progbar(target=100); bar.update(50, lambda: {"loss": 0.3})
    """

    def __init__(self, target: int, verbose: int = 1, width: int = 30, interval: float = 0.1,
                 stream: TextIO | None = None, unit: str = "step", prefix: str = ""):
        self.target, self.verbose, self.width, self.interval = target, verbose, width, interval
        self.stream = stream or sys.stdout
        self.unit = unit
        self.prefix = prefix
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
            if self.prefix:
                line = f"{self.prefix} - {line}"
            write(line + (f" - {format_logs(values)}" if values else "") + "\n", self.stream)
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
        # pad over the previous drawing only when it is still the open line (a message may have
        # ended it, and the bar then continues on a fresh line)
        pad = max(self._last_len - len(line), 0) if _open_stream is self.stream else 0
        self._last_len = len(line)
        write("\r" + line + " " * pad + ("\n" if final else ""), self.stream)
