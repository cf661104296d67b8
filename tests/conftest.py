"""Shared fixtures. Tests run on the CPU; float64 only where a test asks for it."""
import gc
import os

# Most of the suite's time is XLA compiling tiny programs: LLVM's optimisations do not pay
# for themselves there (a float64 loop-gradient test: 124 s -> 95 s), nor do XLA:CPU's MLIR
# fusion emitters (the legacy emitters compile a float64 loop gradient in 18 s, not 23 s).
# Buffer assignment, which the memory tests check, is decided before code generation.
_TEST_FLAGS = {"xla_backend_optimization_level": "0", "xla_cpu_use_fusion_emitters": "false"}
for _name, _value in _TEST_FLAGS.items():
  if _name not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --{_name}={_value}").strip()

import jax  # noqa: E402  (after XLA_FLAGS)
import pytest


@pytest.fixture
def x64():
  """Enable float64 for one test (gradient checks), then restore the default."""
  prev = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  try:
    yield
  finally:
    jax.config.update("jax_enable_x64", prev)


@pytest.fixture(autouse=True, scope="module")
def _fresh_compile_caches():
  """Drops each module's compiled executables once it is done: one long-lived process that
  keeps hundreds of them has crashed in XLA's CPU compiler here."""
  yield
  jax.clear_caches()
  gc.collect()
