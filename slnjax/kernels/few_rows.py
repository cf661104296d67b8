"""A CPU matrix product for a few rows (decoding), built from few_rows.cc on first use.

    w_TK8 = few_rows.pack(w_KN)              # once, outside the decoding loop
    y_RN = few_rows.dense(x_RK, w_KN, w_TK8)  # 1-8 rows, float32, N % 8 == 0

XLA:CPU's kernels read the weights of an 8-row product 3-4x slower than the machine streams
them (benchmarks/ANALYSIS.md); a decoded token at batch 8 is such products only. The lobes
use it for 2-8 rows (MIN_ROWS): at one row XLA's matrix-vector kernel was the faster.
The kernel reads the weights packed as [N/8, K, 8] (``pack``), and the packing must be
done outside the decoding loop: XLA:CPU does not hoist it out of a while loop by itself
(packing inside made the 8-row LM head 2x slower than XLA's own product). A lobe with
``decode_kernel="cpu_few_rows"`` gets its packed weights from ``lobes.packed_weights``,
computed by lobes.prepare_decoding in the loop's prefill, before the dialogue loop (the
library's `pack` routine: ~100 ms for Pythia-70M's 178 MB of weights, where XLA's transpose
took ~210 ms and a plain copy 56-85).
The gradient is the plain product's. The arrays must live on one CPU device: XLA does not
partition a custom call, so this is for single-device CPU decoding.

The library is compiled with the system's C++ compiler (``$CXX``, default ``g++``) against
jaxlib's FFI headers into ``$SLNJAX_KERNEL_CACHE`` (default ``~/.cache/slnjax``), once per
source and jaxlib version. ``available()`` says whether it can be used here (an x86-64 CPU
with AVX2 and FMA, a compiler) and ``why_unavailable()`` why not.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import platform
import subprocess
import tempfile

import jax
import jax.numpy as jnp
import jaxlib

TARGET = "slnjax_few_rows_matmul"
PACK_TARGET = "slnjax_few_rows_pack"
MIN_ROWS = 2  # one row stays an XLA dot: its matrix-vector kernel streams at full speed
MAX_ROWS = 8
TILE = 8
_SRC = pathlib.Path(__file__).with_name("few_rows.cc")


def _cpu_flags() -> set[str]:
  try:
    text = pathlib.Path("/proc/cpuinfo").read_text()
  except OSError:
    return set()
  for line in text.splitlines():
    if line.startswith("flags"):
      return set(line.split(":", 1)[1].split())
  return set()


def _cache_dir() -> pathlib.Path:
  default = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))
  return pathlib.Path(os.environ.get("SLNJAX_KERNEL_CACHE", default / "slnjax"))


def _compile() -> pathlib.Path:
  cxx = os.environ.get("CXX", "g++")
  flags = ["-O3", "-mavx2", "-mfma", "-std=c++17", "-shared", "-fPIC", "-w"]
  src = _SRC.read_bytes()
  key = hashlib.sha256(src + jaxlib.__version__.encode() + " ".join([cxx] + flags).encode())
  lib = _cache_dir() / f"few_rows_{key.hexdigest()[:16]}.so"
  if lib.exists():
    return lib
  lib.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=lib.parent) as tmp:
    out = pathlib.Path(tmp) / lib.name
    cmd = [cxx, *flags, "-I", jax.ffi.include_dir(), str(_SRC), "-o", str(out)]
    try:
      proc = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError as e:
      raise RuntimeError(f"No C++ compiler {cxx!r} to build {_SRC.name}; install g++ or set "
                         "CXX.") from e
    if proc.returncode:
      raise RuntimeError(f"Building {_SRC.name} failed ({' '.join(cmd)}):\n{proc.stderr}")
    os.replace(out, lib)  # atomic: concurrent builders (test workers) each write their own
  return lib


@functools.cache
def _why_unavailable() -> str | None:
  if platform.machine().lower() not in ("x86_64", "amd64"):
    return f"the kernel is x86-64 AVX2 code; this machine is {platform.machine()}"
  missing = {"avx2", "fma"} - _cpu_flags()
  if missing:
    return f"this CPU lacks {sorted(missing)}"
  try:
    lib = ctypes.cdll.LoadLibrary(str(_compile()))
  except (RuntimeError, OSError) as e:
    return str(e)
  jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.SlnjaxFewRowsMatmul),
                              platform="cpu")
  jax.ffi.register_ffi_target(PACK_TARGET, jax.ffi.pycapsule(lib.SlnjaxFewRowsPack),
                              platform="cpu")
  return None


def why_unavailable() -> str | None:
  """None when the kernel can run here, else the reason (builds it on the first call)."""
  return _why_unavailable()


def available() -> bool:
  return why_unavailable() is None


def supports(x_RK, w_KN) -> bool:
  """Whether matmul(x_RK, w_KN) has a shape and dtype the kernel computes."""
  return (x_RK.ndim == 2 and w_KN.ndim == 2 and 1 <= x_RK.shape[0] <= MAX_ROWS
          and x_RK.shape[1] == w_KN.shape[0] and w_KN.shape[1] % TILE == 0
          and x_RK.dtype == jnp.float32 and w_KN.dtype == jnp.float32)


def pack_reference(w_KN):
  """[K, N] -> [N/8, K, 8]: each 8-column tile contiguous (as an XLA transpose)."""
  K, N = w_KN.shape
  return w_KN.reshape(K, N // TILE, TILE).transpose(1, 0, 2)


def pack(w_KN):
  """pack_reference(w_KN), by the library's packing routine when the kernel runs here and
  w is float32 (XLA's transpose took ~210 ms for Pythia-70M's weights)."""
  K, N = w_KN.shape
  if why_unavailable() is not None or w_KN.dtype != jnp.float32 or N % TILE:
    return pack_reference(w_KN)
  out = jax.ShapeDtypeStruct((N // TILE, K, TILE), jnp.float32)
  return jax.ffi.ffi_call(PACK_TARGET, out, vmap_method="sequential")(w_KN)


def packed_matmul(x_RK, w_TK8):
  """x [R,K] @ the matrix packed as w_TK8 (see pack), on the CPU kernel."""
  reason = why_unavailable()
  if reason is not None:
    raise RuntimeError(f"The few-rows CPU kernel cannot run here: {reason}.")
  R = x_RK.shape[0]
  out = jax.ShapeDtypeStruct((R, w_TK8.shape[0] * TILE), jnp.float32)
  return jax.ffi.ffi_call(TARGET, out, vmap_method="sequential")(x_RK, w_TK8)


@jax.custom_vjp
def dense(x_RK, w_KN, w_TK8):
  """x_RK @ w_KN computed by the kernel from w_TK8 = pack(w_KN) (packed by the caller, once,
  outside the decoding loop). The gradient is the plain product's: w_KN gets x^T g and w_TK8
  none (pack it from stop_gradient(w_KN))."""
  if not supports(x_RK, w_KN) or w_TK8.shape != (w_KN.shape[1] // TILE, w_KN.shape[0], TILE):
    raise ValueError(f"few_rows.dense: x {x_RK.shape} {x_RK.dtype} @ w {w_KN.shape} "
                     f"{w_KN.dtype} (packed {w_TK8.shape}); expected float32, 1-{MAX_ROWS} "
                     f"rows, N % {TILE} == 0 and w_TK8 = pack(w).")
  return packed_matmul(x_RK, w_TK8)


def _fwd(x_RK, w_KN, w_TK8):
  return dense(x_RK, w_KN, w_TK8), (x_RK, w_KN, w_TK8)


def _bwd(res, g_RN):
  x_RK, w_KN, w_TK8 = res
  return g_RN @ w_KN.T, x_RK.T @ g_RN, jnp.zeros_like(w_TK8)


dense.defvjp(_fwd, _bwd)
