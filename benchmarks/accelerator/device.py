"""The device: what it is, what it can do (a matmul and a copy probe), peak memory.

jax's peak is the allocator's high-water mark (`memory_stats()["peak_bytes_in_use"]`),
which cannot be reset: each measurement that needs its own peak runs in its own process
(see __main__.py). torch's is `torch.cuda.max_memory_allocated`, reset per case. On a CPU
neither exists: the rows carry peak RSS increases instead (harness.peak_increase).
"""
from __future__ import annotations

import datetime
import os
import platform
import shutil
import subprocess
import time

from benchmarks import harness

VERSIONS = ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "flax", "optax",
            "numpy", "torch", "transformers")


def jax_peak_bytes() -> int | None:
  import jax
  stats = jax.devices()[0].memory_stats()
  return None if not stats else int(stats.get("peak_bytes_in_use", 0)) or None


def jax_platform() -> str:
  import jax
  return jax.devices()[0].platform


def torch_device():
  import torch
  return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def torch_reset_peak():
  import torch
  if torch.cuda.is_available():
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()


def torch_peak_bytes() -> int | None:
  import torch
  if not torch.cuda.is_available():
    return None
  torch.cuda.synchronize()
  return int(torch.cuda.max_memory_allocated())


def torch_sync():
  import torch
  if torch.cuda.is_available():
    torch.cuda.synchronize()


def _nvidia_smi() -> list[dict]:
  exe = shutil.which("nvidia-smi")
  if exe is None:
    return []
  try:
    out = subprocess.run([exe, "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                          "--format=csv,noheader"], capture_output=True, text=True,
                         timeout=20).stdout
  except (OSError, subprocess.SubprocessError):
    return []
  keys = ("name", "driver", "memory_total", "max_sm_clock")
  return [dict(zip(keys, (f.strip() for f in line.split(",")))) for line in
          out.strip().splitlines() if line.strip()]


def machine() -> dict:
  """Host, GPUs (nvidia-smi), versions and date; no jax or torch import (the parent process
  of the benchmark stays off the device)."""
  cpu = harness.cpu_model()
  return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "host_cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
          "platform": platform.platform(), "gpus": _nvidia_smi(),
          "versions": {n: v for n in VERSIONS if (v := harness.version(n)) is not None},
          "env": {k: os.environ[k] for k in sorted(os.environ)
                  if k.startswith(("XLA_", "JAX_", "CUDA_VISIBLE", "TF_CPP"))}}


def _best_s(fn, reps):
  fn()  # warm-up (and compile)
  best = float("inf")
  for _ in range(reps):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return best


def probe(matmul_n: int, copy_mib: int, reps: int = 10) -> dict:
  """jax's device, its dense bf16 matmul rate (n x n x n, best of reps) and the rate at which
  it reads and writes memory (y = x + 1 over copy_mib MiB of float32: 2 x bytes moved)."""
  import jax
  import jax.numpy as jnp
  d = jax.devices()[0]
  k1, k2 = jax.random.split(jax.random.key(0))
  a = jax.random.normal(k1, (matmul_n, matmul_n), jnp.bfloat16)
  b = jax.random.normal(k2, (matmul_n, matmul_n), jnp.bfloat16)
  mm = jax.jit(lambda a, b: a @ b)
  t_mm = _best_s(lambda: jax.block_until_ready(mm(a, b)), reps)
  x = jnp.zeros((copy_mib * 2**20 // 4,), jnp.float32)
  add = jax.jit(lambda x: x + 1)
  t_cp = _best_s(lambda: jax.block_until_ready(add(x)), reps)
  return {"platform": d.platform, "device_kind": d.device_kind, "device_count": jax.device_count(),
          "matmul_n": matmul_n, "matmul_s": t_mm, "matmul_flops_per_s": 2 * matmul_n**3 / t_mm,
          "copy_bytes": 2 * x.nbytes, "copy_s": t_cp, "copy_bytes_per_s": 2 * x.nbytes / t_cp,
          "memory_stats": dict(d.memory_stats() or {}), "peak_bytes": jax_peak_bytes()}


def compile_all(lowered: list) -> tuple[list, float]:
  """Compiles jax Lowered stages in parallel threads (XLA's compiler releases the GIL; the
  device idles meanwhile): (executables, wall seconds for all of them)."""
  from concurrent import futures
  t0 = time.perf_counter()
  with futures.ThreadPoolExecutor(max(len(lowered), 1)) as pool:
    out = list(pool.map(lambda low: low.compile(), lowered))
  return out, time.perf_counter() - t0
