"""Progress output, summary() and plot_history()."""
from __future__ import annotations

import io
import sys

import numpy as np
import pytest

import nnx
from nnx.progbar import Progbar, resolve_verbose


def _model():
    model = nnx.Sequential([nnx.Input((64,)), nnx.Dense(128, activation="relu"), nnx.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _data(n=200):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 64)).astype("float32"), rng.integers(0, 10, size=n)


def test_verbose_one_draws_a_bar_on_one_line(backend, capsys):
    _model().fit(*_data(), epochs=2, batch_size=32, validation_split=0.2, verbose=1)
    out = capsys.readouterr().out
    epochs = out.split("Epoch ")[1:]
    assert len(epochs) == 2
    final = epochs[0].split("\r")[-1]
    assert final.startswith("5/5 [==============================]")
    for part in ("s/step", "loss:", "accuracy:", "val_loss:", "val_accuracy:"):
        assert part in final
    assert final.count("\n") == 1  # the bar stays on one line until the epoch ends


def test_auto_verbose_is_one_line_per_epoch_off_a_terminal(backend, capsys):
    assert resolve_verbose("auto", io.StringIO()) == 2

    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert resolve_verbose("auto", Tty()) == 1
    _model().fit(*_data(), epochs=3, verbose="auto")
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert "\r" not in out
    assert len(lines) == 3  # one line per epoch: "Epoch i/N - steps - time - loss: ..."
    for i, line in enumerate(lines):
        assert line.startswith(f"Epoch {i + 1}/3 - 7/7 - ") and "loss:" in line and "accuracy:" in line


def test_bar_redraws_at_most_every_interval_and_reads_values_only_then(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr("nnx.progbar.time.perf_counter", lambda: clock[0])
    reads = []
    bar = Progbar(target=1000, verbose=1, interval=0.1, stream=io.StringIO())
    for step in range(1, 1001):
        clock[0] += 0.001  # 1 ms per step: 1 s in all
        bar.update(step, lambda: reads.append(step) or {"loss": 1.0})
    bar.update(1000, lambda: reads.append("final") or {"loss": 1.0}, final=True)
    assert 9 <= bar.draws <= 12  # ~10 redraws a second, plus the final one
    assert len(reads) == bar.draws  # the device values are read only for a redraw


def test_evaluate_and_predict_accept_verbose(backend, capsys):
    model = _model()
    x, y = _data(64)
    model.evaluate(x, y, verbose=1)
    model.predict(x, verbose=1, batch_size=16)
    out = capsys.readouterr().out
    assert "2/2 [" in out and "4/4 [" in out and "loss:" in out


def test_summary_table(backend):
    lines = []
    model = _model()
    model.add(nnx.Dropout(0.5))
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert 'Model: "' in text and "Layer (type)" in text and "Output Shape" in text and "Param #" in text
    assert "(Dense)" in text and "(None, 128)" in text and "8,320" in text and "1,290" in text
    assert "(Dropout)" in text and "(None, 10)" in text
    assert "Total params: 9,610 (37.54 KB)" in text
    assert "Trainable params: 9,610 (37.54 KB)" in text
    assert "Non-trainable params: 0 (0 B)" in text
    model.layers[0].trainable = False
    lines.clear()
    model.summary(print_fn=lines.append)
    assert "Non-trainable params: 8,320 (32.50 KB)" in "\n".join(lines)


def test_plot_history_writes_png(backend, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib (the plot extra) is not installed")
    history = _model().fit(*_data(), epochs=2, validation_split=0.2, verbose=0)
    path = tmp_path / "h.png"
    nnx.plot_history(history, path=str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_history_without_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"nnx\[plot\]"):
        nnx.plot_history({"loss": [1.0]})
