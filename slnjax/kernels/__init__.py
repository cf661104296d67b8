"""Hand-written kernels that XLA calls through its FFI (see few_rows.py)."""
