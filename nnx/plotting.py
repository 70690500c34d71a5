"""Training curves from a ``History``; matplotlib is imported only here (extra ``nnx[plot]``)."""
from __future__ import annotations

from typing import Any


def plot_history(history: Any, path: str | None = None, title: str | None = None) -> Any:
    """Plot loss and each metric per epoch, training and validation, one panel each.

    Args:
        history: a ``History`` (what ``fit`` returns) or its ``.history`` dict.
        path: where to save the figure (PNG, …). Defaults to None: not saved.
        title: a title over the panels. Defaults to None.

    Returns:
        The matplotlib ``Figure``.

    Raises:
        ImportError: matplotlib is not installed (``pip install 'nnx[plot]'``).
        ValueError: a history with no logs.

    >>> nnx.plot_history(model.fit(x, y, validation_split=0.2, epochs=20), path="history.png")
    """
    try:
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plot_history needs matplotlib: pip install 'nnx[plot]' (or pip install matplotlib).") from None
    logs = getattr(history, "history", history)
    if not isinstance(logs, dict) or not logs:
        raise ValueError("plot_history expects a History (or its .history dict) with at least one epoch of logs.")
    names = [k for k in logs if not k.startswith("val_") and k != "learning_rate"]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        epochs = range(1, len(logs[name]) + 1)
        ax.plot(epochs, logs[name], label=f"training {name}", marker="o", markersize=3)
        if f"val_{name}" in logs:
            ax.plot(range(1, len(logs[f"val_{name}"]) + 1), logs[f"val_{name}"], label=f"validation {name}",
                    marker="o", markersize=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return fig
