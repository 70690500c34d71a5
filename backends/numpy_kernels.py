"""Fused NumPy kernels: in-place updates that avoid temporaries (filled in by the adapter)."""
KERNELS: dict = {}
