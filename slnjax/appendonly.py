"""Reverse-mode differentiation of a scan over an append-only cache, in bounded memory.

A decode writes each step's keys/values at positions no earlier step reads, and never
overwrites a position a later step reads. So the cache *before* step t equals the *final*
cache with positions >= t's write positions masked, and the step can be recomputed from
the final cache alone. ``appendonly_scan`` therefore keeps only:

  the final cache, the (small) carry entering each step, and the per-step inputs,

and its backward pass runs a reverse ``lax.scan`` that recomputes each step with ``jax.vjp``
against the final cache. The cache's cotangent lives in one buffer of the cache's size: the
step that wrote position p is processed after every step that read p, so the cotangent of
position p is complete when it is consumed (and the vjp of the cache update zeroes it).
Compared with plain autodiff of a scan, which saves the whole cache at every step (memory ∝
steps x cache length), memory is a few copies of the cache, whatever the number of steps.

Contract for ``step_fn(params, cache, carry, x, window) -> (cache, carry, y)``:
- every read of ``cache`` at positions the step does not write is of positions that earlier
  steps (or the initial cache) wrote, and no later step rewrites them;
- ``params`` holds every array the step closes over (nothing traced may be captured);
- ``window`` is None in the forward pass; in the backward pass it is ``window_fn(final
  carry)``, which the step may use to cut gradients (truncated BPTT) with stop_gradient. It
  must not change forward values.
Integer/bool leaves anywhere are treated as non-differentiable.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


def _is_float(x) -> bool:
  return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _split(tree):
  leaves, treedef = jax.tree.flatten(tree)
  floats = [x if _is_float(x) else None for x in leaves]
  others = [None if _is_float(x) else x for x in leaves]
  return floats, others, treedef


def _merge(floats, others, treedef):
  return jax.tree.unflatten(treedef, [f if o is None else o for f, o in zip(floats, others)])


def _float_vjp(fn, *args):
  """vjp of fn restricted to float leaves of args and outputs.

  Returns (outputs, vjp) where vjp takes the float output leaves' cotangents (a list, in
  flatten order; None entries for non-float outputs) and returns a tuple of per-arg
  cotangent trees (float0 zeros for non-float leaves).
  """
  splits = [_split(a) for a in args]

  def g(*float_lists):
    full = [_merge(fl, o, td) for fl, (_, o, td) in zip(float_lists, splits)]
    out = fn(*full)
    leaves, out_td = jax.tree.flatten(out)
    return [x for x in leaves if _is_float(x)], (out, [_is_float(x) for x in leaves])

  float_in = [[x for x in fl] for fl, _, _ in splits]
  diff_in = [[x for x in fl if x is not None] for fl in float_in]

  def g_dense(*dense_lists):
    rebuilt = []
    for dense, fl in zip(dense_lists, float_in):
      it = iter(dense)
      rebuilt.append([next(it) if x is not None else None for x in fl])
    return g(*rebuilt)

  outs, vjp_fn, (out, mask) = jax.vjp(g_dense, *diff_in, has_aux=True)

  def vjp(ct_out_leaves):
    cts = [c for c, m in zip(ct_out_leaves, mask) if m]
    dense_cts = vjp_fn(cts)
    result = []
    for dense, (fl, others, td) in zip(dense_cts, splits):
      it = iter(dense)
      leaves = [next(it) if x is not None else np.zeros(np.shape(o), jax.dtypes.float0)
                for x, o in zip(fl, others)]
      result.append(jax.tree.unflatten(td, leaves))
    return tuple(result)

  return out, vjp


def _placeholder(x):
  """A scan-friendly zero cotangent: float zeros, or a bool stand-in for float0."""
  if _is_float(x):
    return jnp.zeros(jnp.shape(x), jnp.result_type(x))
  return jnp.zeros(jnp.shape(x), jnp.bool_)


def _to_scan(ct, primal):
  """Replace float0 cotangents (not allowed in scan) by bool placeholders."""
  return jax.tree.map(lambda c, p: c if _is_float(p) else jnp.zeros(jnp.shape(p), jnp.bool_),
                      ct, primal)


def _from_scan(ct, primal):
  return jax.tree.map(lambda c, p: c if _is_float(p) else
                      np.zeros(np.shape(p), jax.dtypes.float0), ct, primal)


def appendonly_scan(step_fn: Callable, params: Any, cache: Any, carry: Any, xs: Any,
                    window_fn: Callable | None = None):
  """``lax.scan`` of ``step_fn`` over ``xs`` with the bounded-memory reverse pass.

  Returns (final cache, final carry, stacked per-step outputs ys).
  """
  window_fn = window_fn or (lambda final_carry: None)

  def forward(params, cache, carry, xs, keep_carries):
    def body(state, x):
      c, k = state
      c2, k2, y = step_fn(params, c, k, x, None)
      return (c2, k2), ((k, y) if keep_carries else y)
    return jax.lax.scan(body, (cache, carry), xs)

  @jax.custom_vjp
  def run(params, cache, carry, xs):
    (cache, carry), ys = forward(params, cache, carry, xs, False)
    return cache, carry, ys

  def fwd(params, cache, carry, xs):
    (cache_n, carry_n), (carries, ys) = forward(params, cache, carry, xs, True)
    return (cache_n, carry_n, ys), (params, cache_n, carry_n, carries, xs, ys)

  def bwd(res, cts):
    params, cache_n, carry_n, carries, xs, ys = res
    ct_cache_n, ct_carry_n, ct_ys = cts
    window = window_fn(carry_n)

    def rev(state, inp):
      ct_params, ct_buf, ct_carry = state
      carry_t, x_t, ct_y_t = inp
      step = lambda p, c, k, x: step_fn(p, c, k, x, window)
      _, vjp = _float_vjp(step, params, cache_n, carry_t, x_t)
      ct_out = (jax.tree.leaves(ct_buf) + jax.tree.leaves(ct_carry)
                + jax.tree.leaves(ct_y_t))
      d_params, d_cache, d_carry, d_x = vjp(ct_out)
      ct_params = jax.tree.map(lambda a, d, p: a + d if _is_float(p) else a,
                               ct_params, d_params, params)
      return ((ct_params, _to_scan(d_cache, cache_n), _to_scan(d_carry, carry_t)),
              _to_scan(d_x, x_t))

    init = (jax.tree.map(_placeholder, params), _to_scan(ct_cache_n, cache_n),
            _to_scan(ct_carry_n, carry_n))
    (ct_params, ct_cache, ct_carry), ct_xs = jax.lax.scan(
        rev, init, (carries, xs, _to_scan(ct_ys, ys)), reverse=True)
    return (_from_scan(ct_params, params), _from_scan(ct_cache, cache_n),
            _from_scan(ct_carry, carry_n), _from_scan(ct_xs, xs))

  run.defvjp(fwd, bwd)
  return run(params, cache, carry, xs)
