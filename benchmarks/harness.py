"""Measuring: thread settings, wall time, peak RSS, compiled memory, machine facts.

`configure()` must run before jax is imported (it sets XLA_FLAGS).
"""
from __future__ import annotations

import gc
import importlib.metadata
import os
import platform
import statistics
import time

THREADS = 2
# The setting. XLA stops reading XLA_FLAGS at the first word that is not a flag, so
# the non-flag word goes last (flags appended later by a user would otherwise be ignored).
XLA_FLAGS = "--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads=2"


def configure():
  """Two CPU threads on each side. Call before importing jax or torch."""
  if "jax" in os.sys.modules:
    raise RuntimeError("benchmarks.harness.configure() must run before jax is imported.")
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS_EXTRA", "") + " " + XLA_FLAGS).strip()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = str(THREADS)


def configure_torch():
  import torch
  torch.set_num_threads(THREADS)
  try:
    torch.set_num_interop_threads(1)
  except RuntimeError:  # already set in this process
    pass
  return torch


def rss_bytes() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm_bytes() -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) * 1024
  raise RuntimeError("/proc/self/status has no VmHWM line (not Linux?).")


def reset_peak():
  """Resets the kernel's peak-RSS mark (VmHWM) to the current RSS; returns the RSS."""
  gc.collect()
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
  return rss_bytes()


def peak_increase(fn):
  """Runs fn(); returns (its result, peak RSS during it minus RSS before it, in bytes)."""
  base = reset_peak()
  out = fn()
  return out, _hwm_bytes() - base


def timed(fn, reps: int, warmup: int = 1):
  """Wall times of `reps` calls of fn() after `warmup` calls. fn must block until done."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return times


def summary(times):
  return {"min_s": min(times), "median_s": statistics.median(times), "times_s": times}


def compiled_memory(compiled) -> dict:
  """Bytes of a compiled XLA executable (CPU: the temp figure is meaningful, peak is not)."""
  ma = compiled.memory_analysis()
  d = {"argument_bytes": ma.argument_size_in_bytes, "output_bytes": ma.output_size_in_bytes,
       "temp_bytes": ma.temp_size_in_bytes, "alias_bytes": ma.alias_size_in_bytes}
  d["total_bytes"] = d["argument_bytes"] + d["output_bytes"] + d["temp_bytes"] - d["alias_bytes"]
  return d


def load() -> list[float]:
  return [round(x, 2) for x in os.getloadavg()]


def version(name):
  """An installed package's version, or None."""
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return None


def cpu_model() -> str:
  """The CPU's model name (/proc/cpuinfo), else platform.processor()."""
  cpu = platform.processor()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
  except OSError:
    pass
  return cpu


def machine() -> dict:
  cpu = cpu_model()
  mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  return {"cpu": cpu, "cores": os.cpu_count(), "ram_gb": round(mem / 2**30, 1),
          "python": platform.python_version(), "platform": platform.platform(),
          "versions": {n: version(n) for n in ("jax", "jaxlib", "flax", "numpy", "torch",
                                                  "transformers")},
          "threads_per_side": THREADS, "xla_flags": XLA_FLAGS}
