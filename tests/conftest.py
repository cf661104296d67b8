"""Shared fixtures. Tests run on the CPU; float64 only where a test asks for it."""
import jax
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
