"""appendonly.program_scan on a toy step program, in float64: its reverse pass equals plain
autodiff of the same scan, for every input (the initial cache included) and every output."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slnjax import appendonly
from slnjax.appendonly import Loop, Plain

S, D, UNITS, STEPS = 12, 3, 2, 3  # a 2-position prefix, the head's 2 positions, 3 x 2 units


def _attend(cache_SD, pos, h_D):
  """Reads the positions before pos only (what the append-only contract allows)."""
  s_S = jnp.where(jnp.arange(S) < pos, cache_SD @ h_D, -1e30)
  return jax.nn.softmax(s_S) @ cache_SD


def _head(p, cache, state, x, window):
  h_D = state["carry"]["h"]
  new_2D = jnp.tanh(jnp.stack([h_D + _attend(cache["k"], 2, h_D), 2.0 * h_D]) @ p["w"])
  cache = {"k": jax.lax.dynamic_update_slice_in_dim(cache["k"], new_2D, 2, 0)}
  return cache, {"carry": {"h": new_2D[1], "pos": state["carry"]["pos"] + 2}, "y": {}}


def _start(p, cache, state, x, window):
  return cache, {"carry": {"n": state["carry"]["pos"]}, "u": state["carry"],
                 "xs": x["units"]}


def _unit(p, cache, uc, ux, window):
  h_D = jnp.tanh(p["u"] @ (uc["h"] + _attend(cache["k"], uc["pos"], uc["h"])) + ux)
  cache = {"k": jax.lax.dynamic_update_slice_in_dim(cache["k"], h_D[None], uc["pos"], 0)}
  return cache, {"h": h_D, "pos": uc["pos"] + 1}, {"s": jnp.sum(h_D ** 2), "i": uc["pos"]}


def _finish(p, cache, state, x, window):
  return cache, {"carry": state["u"], "y": {"s": state["ys"]["s"] * p["b"], "n": state["carry"]["n"]}}


PROGRAM = [Plain(_start), Loop(_unit, "u", "xs", "ys"), Plain(_finish)]


def _plain(params, cache, carry, xs):
  cache, carry, _ = appendonly.run_program([Plain(_head)], params, cache, carry, {})

  def body(cc, x):
    c, k, y = appendonly.run_program(PROGRAM, params, *cc, x)
    return (c, k), y
  (cache, carry), ys = jax.lax.scan(body, (cache, carry), xs)
  return cache, carry, ys


def _appendonly(params, cache, carry, xs):
  return appendonly.program_scan(PROGRAM, params, cache, carry, xs, head=[Plain(_head)])


def _inputs():
  r = np.random.default_rng(0)
  params = {"w": r.normal(size=(D, D)), "u": r.normal(size=(D, D)), "b": np.float64(0.7)}
  cache = {"k": np.concatenate([r.normal(size=(2, D)), np.zeros((S - 2, D))])}
  carry = {"h": r.normal(size=(D,)), "pos": np.int32(2)}
  xs = {"units": r.normal(size=(STEPS, UNITS, D))}
  return params, cache, carry, xs


def _loss(run, uses_final_cache):
  def loss(params, cache, carry, xs):
    cache_n, carry_n, ys = run(params, cache, carry, xs)
    out = jnp.sum(jnp.sin(ys["s"])) + jnp.sum(carry_n["h"] ** 3)
    return out + (jnp.sum(jnp.cos(cache_n["k"])) if uses_final_cache else 0.0)
  return loss


@pytest.mark.parametrize("uses_final_cache", [False, True])
def test_reverse_pass_equals_plain_autodiff_for_every_input(x64, uses_final_cache):
  args = jax.tree.map(jnp.asarray, _inputs())
  argnums = (0, 1, 2, 3)
  want = jax.grad(_loss(_plain, uses_final_cache), argnums, allow_int=True)(*args)
  got = jax.jit(jax.grad(_loss(_appendonly, uses_final_cache), argnums, allow_int=True))(*args)
  for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    if w.dtype == jax.dtypes.float0:
      continue
    np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
  assert float(jnp.abs(got[1]["k"][:2]).sum()) > 0  # the prefix is read, so it has a gradient


def test_a_constant_cache_gives_the_same_parameter_gradient(x64):
  # The initial cache is not differentiated here, so the head's reverse skips its cotangent.
  params, cache, carry, xs = jax.tree.map(jnp.asarray, _inputs())
  want = jax.grad(_loss(_plain, True))(params, cache, carry, xs)
  got = jax.jit(jax.grad(lambda p: _loss(_appendonly, True)(p, cache, carry, xs)))(params)
  for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
