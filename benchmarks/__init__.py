"""Benchmarks of slnjax against PyTorch + transformers on a 2-core CPU.

    python -m benchmarks.run [--quick]

runs every comparison in its own subprocess (both sides in that one process) and writes
benchmarks/RESULTS.md and benchmarks/results.json. See benchmarks/run.py.
"""
