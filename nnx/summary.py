"""``model.summary()``: a Keras-style table of layers, output shapes and parameter counts."""
from __future__ import annotations

import math
from typing import Any


def _size(n_bytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n_bytes < 1024 or unit == "GB":
            return f"{n_bytes:.2f} {unit}" if unit != "B" else f"{n_bytes} B"
        n_bytes /= 1024
    return ""


def _itemsize(layer: Any) -> int:
    return {"float16": 2, "float32": 4, "float64": 8}.get(layer.dtype, 4)


def render(model: Any, line_length: int = 72) -> str:
    widths = (int(line_length * 0.45), int(line_length * 0.33))
    header = f"{'Layer (type)':<{widths[0]}}{'Output Shape':<{widths[1]}}Param #"
    lines = [f'Model: "{model.name}"', "_" * line_length, header, "=" * line_length]
    trainable = non_trainable = 0
    trainable_bytes = non_trainable_bytes = 0
    for i, layer in enumerate(model.layers):
        shape = "?" if layer.output_shape is None else str((None, *layer.output_shape))
        count = layer.count_params() if layer.built else 0
        label = f"{layer.name} ({type(layer).__name__})"
        if len(label) >= widths[0]:  # as Keras: the class name continues on the next line
            label, more = layer.name, f"({type(layer).__name__})"
        else:
            more = None
        params = f"{count:,}" if layer.built else "0 (unbuilt)"  # as Keras
        lines.append(f"{label:<{widths[0]}}{shape:<{widths[1]}}{params}")
        if more is not None:
            lines.append(more)
        if i < len(model.layers) - 1:
            lines.append("")
        n_train = sum(math.prod(w.shape) for w in layer.trainable_weights)
        trainable += n_train
        trainable_bytes += n_train * _itemsize(layer)
        non_trainable += count - n_train
        non_trainable_bytes += (count - n_train) * _itemsize(layer)
    lines += [
        "=" * line_length,
        f"Total params: {trainable + non_trainable:,} ({_size(trainable_bytes + non_trainable_bytes)})",
        f"Trainable params: {trainable:,} ({_size(trainable_bytes)})",
        f"Non-trainable params: {non_trainable:,} ({_size(non_trainable_bytes)})",
        "_" * line_length,
    ]
    return "\n".join(lines)
