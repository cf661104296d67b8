"""The accelerator benchmark (python -m benchmarks.accelerator --out DIR): see __main__.py."""
