"""Training curves (filled in below)."""


def plot_history(history, path=None):
    raise NotImplementedError
