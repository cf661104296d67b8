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

A step may itself contain scans (a dialogue turn: a lobe writes its tokens one forward pass
at a time). Nesting two such custom-vjp scans would give each level its own parameter-sized
cotangent accumulator; instead ``program_scan`` takes the step as a *program* of ``Plain``
segments and ``Loop`` segments (an inner scan of "units"), recomputes a step segment by
segment and unit by unit, and threads one accumulator through the whole reverse pass. A
``head`` program (the prompt's prefill) runs once before the scan inside the same region; its
reverse runs inside the reverse loop, so the accumulator leaves the loop as the gradient.

Contract for ``step_fn(params, cache, carry, x, window) -> (cache, carry, y)`` (and the same
for every segment and unit of a program):
- every read of ``cache`` at positions the step does not write is of positions that earlier
  steps (or the initial cache) wrote, and no later step rewrites them;
- ``params`` holds every array the step closes over (nothing traced may be captured);
- ``window`` is None in the forward pass; in the backward pass it is ``window_fn(final
  carry)``, which the step may use to cut gradients (truncated BPTT) with stop_gradient. It
  must not change forward values.
Integer/bool leaves anywhere are treated as non-differentiable.

Recomputation reads ``cache_n`` as it is: a Loop segment's units are not threaded through
a cache carry (equal values by the contract; a carried or updated copy of a loop-invariant
cache costs a cache-sized buffer). The cotangent of the *initial* cache is computed only
when that cache is differentiated (``fwd`` sees it with ``symbolic_zeros=True``): otherwise
the head's reverse reads the cotangent buffer but does not return it, since a conditional's
output gets a buffer of its own.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, NamedTuple

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
    if len(ct_out_leaves) != len(mask):
      raise ValueError(f"{len(ct_out_leaves)} cotangents for {len(mask)} outputs: a segment "
                       "must return a cache with the structure of the cache it was given.")
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


def _is_primal(x) -> bool:
  return isinstance(x, jax.custom_derivatives.CustomVJPPrimal)


def _values(tree):
  return jax.tree.map(lambda p: p.value, tree, is_leaf=_is_primal)


def _is_zero(x) -> bool:
  return isinstance(x, jax.custom_derivatives.SymbolicZero)


def _materialize(ct):
  """A symbolic zero cotangent (an output nothing downstream uses) as an array of zeros."""
  if not _is_zero(ct):
    return ct
  return (jnp.zeros(ct.aval.shape, ct.aval.dtype) if _is_float(ct.aval.dtype)
          else np.zeros(ct.aval.shape, jax.dtypes.float0))


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


class Plain(NamedTuple):
  """A segment of a step program: ``fn(params, cache, state, x, window) -> (cache, state)``."""
  fn: Callable


class Loop(NamedTuple):
  """A segment that scans ``unit(params, cache, ucarry, ux, window) -> (cache, ucarry, uy)``
  over ``state[xs_key]`` (stacked; consumed) from ``state[carry_key]`` (replaced by the final
  unit carry); the stacked outputs go to ``state[ys_key]``."""
  unit: Callable
  carry_key: str
  xs_key: str
  ys_key: str


def _loop_forward(seg: Loop, params, cache, state, window, recompute=False):
  """The Loop segment's scan. ``recompute``: ``cache`` is the final cache, which every unit
  reads as it is (by the contract it holds, at every position a unit reads, what the unit
  would read in the forward pass); the cache is then not carried, so the recomputation
  never copies it, and the unit carries are kept. Returns (cache, state, carries or None)."""
  def body(cc, ux):
    c, k = cc
    c2, k2, uy = seg.unit(params, cache if recompute else c, k, ux, window)
    return ((c if recompute else c2), k2), ((k, uy) if recompute else uy)
  init = (() if recompute else cache, state[seg.carry_key])
  (c_out, uc), out = jax.lax.scan(body, init, state[seg.xs_key])
  new = {key: v for key, v in state.items() if key != seg.xs_key}
  new[seg.carry_key] = uc
  new[seg.ys_key] = out[1] if recompute else out
  return (cache if recompute else c_out), new, (out[0] if recompute else None)


def run_program(program, params, cache, carry, x, window=None):
  """Runs one step given as segments (see module docstring). The state starts as
  ``{"carry": carry}`` and must end as ``{"carry": ..., "y": ...}``. Returns (cache, carry, y)."""
  state = {"carry": carry}
  for seg in program:
    if isinstance(seg, Plain):
      cache, state = seg.fn(params, cache, state, x, window)
    else:
      cache, state, _ = _loop_forward(seg, params, cache, state, window)
  if set(state) != {"carry", "y"}:
    raise ValueError(f"A step program must end with state keys carry and y; got {sorted(state)}.")
  return cache, state["carry"], state["y"]


def _add(acc, d, like):
  return jax.tree.map(lambda a, g, p: a + g if _is_float(p) else a, acc, d, like)


def _step_reverse(program, params, cache_n, carry_t, x_t, window, acc, ct_buf, ct_carry, ct_y):
  """Cotangents of one step, recomputed against the final cache, segment by segment (and
  unit by unit in Loop segments), with one parameter accumulator threaded through all."""
  saved, state = [], {"carry": carry_t}
  for seg in program:  # recompute each segment's input state (and each unit's carry)
    if isinstance(seg, Plain):
      saved.append((state, None))
      _, state = seg.fn(params, cache_n, state, x_t, window)
    else:
      _, nxt, ucarries = _loop_forward(seg, params, cache_n, state, window, recompute=True)
      saved.append((state, ucarries))
      state = nxt
  ct_state = {"carry": ct_carry, "y": ct_y}
  ct_x = jax.tree.map(_placeholder, x_t)
  for seg, (s_in, ucarries) in reversed(list(zip(program, saved))):
    if isinstance(seg, Plain):
      _, vjp = _float_vjp(lambda p, c, st, xx, f=seg.fn: f(p, c, st, xx, window),
                          params, cache_n, s_in, x_t)
      d_p, d_c, d_s, d_x = vjp(jax.tree.leaves(ct_buf) + jax.tree.leaves(ct_state))
      acc, ct_buf, ct_state = _add(acc, d_p, params), _to_scan(d_c, cache_n), _to_scan(d_s, s_in)
      ct_x = _add(ct_x, _to_scan(d_x, x_t), x_t)
      continue

    def unit_rev(st, inp, u=seg.unit):
      acc_, buf, ct_uc = st
      uc_i, ux_i, ct_uy_i = inp
      _, vjp = _float_vjp(lambda p, c, k, xx: u(p, c, k, xx, window), params, cache_n, uc_i, ux_i)
      d_p, d_c, d_k, d_u = vjp(jax.tree.leaves(buf) + jax.tree.leaves(ct_uc)
                               + jax.tree.leaves(ct_uy_i))
      return (_add(acc_, d_p, params), _to_scan(d_c, cache_n), _to_scan(d_k, uc_i)), \
          _to_scan(d_u, ux_i)

    uxs = s_in[seg.xs_key]
    (acc, ct_buf, ct_uc0), ct_uxs = jax.lax.scan(
        unit_rev, (acc, ct_buf, ct_state[seg.carry_key]), (ucarries, uxs, ct_state[seg.ys_key]),
        reverse=True)
    ct_state = {key: v for key, v in ct_state.items() if key != seg.ys_key}
    ct_state[seg.carry_key], ct_state[seg.xs_key] = ct_uc0, ct_uxs
  return acc, ct_buf, ct_state["carry"], ct_x


def program_scan(program, params: Any, cache: Any, carry: Any, xs: Any,
                 window_fn: Callable | None = None, head=None,
                 reverse_context: Callable | None = None):
  """``lax.scan`` of a step program over ``xs`` with the bounded-memory reverse pass.

  A step is a list of ``Plain`` and ``Loop`` segments (a dialogue turn: the tokens a lobe
  writes one forward pass at a time, then the other lobe's reply). The reverse pass walks
  the segments backwards and the units of every Loop segment in a nested reverse scan, all
  threading the *same* parameter-cotangent accumulator and cache-cotangent buffer, so memory
  holds one of each whatever the nesting. Returns (final cache, final carry, stacked ys).

  ``head`` (optional): a program run once before the scan (x = {}; it must end with
  y = {}), e.g. the prompt's prefill. It runs inside the same custom-vjp region under the
  same contract, so its parameter cotangents go into the same accumulator, which is then
  the gradient itself rather than a buffer added to the head's gradient afterwards.

  ``reverse_context`` (optional): a context manager factory entered while the reverse pass is
  traced, e.g. ``lobes.reading_cache_before_write`` (steps recomputed against the final
  cache then never build an updated copy of it).
  """
  window_fn = window_fn or (lambda final_carry: None)

  def forward(params, cache, carry, xs, keep_carries):
    if head is not None:
      cache, carry, _ = run_program(head, params, cache, carry, {})

    def body(state, x):
      c, k = state
      c2, k2, y = run_program(program, params, c, k, x)
      return (c2, k2), ((k, y) if keep_carries else y)
    return jax.lax.scan(body, (cache, carry), xs)

  @jax.custom_vjp
  def run(params, cache, carry, xs):
    (cache, carry), ys = forward(params, cache, carry, xs, False)
    return cache, carry, ys

  # Whether the cache given to the scan is differentiated (fwd sees this at trace time; with
  # a fresh cache, the usual case, the head's reverse need not produce the cache cotangent).
  traced = {}

  def fwd(params, cache, carry, xs):
    traced["cache_ct"] = any(p.perturbed for p in jax.tree.leaves(cache, is_leaf=_is_primal))
    params, cache, carry, xs = (_values(t) for t in (params, cache, carry, xs))
    (cache_n, carry_n), (carries, ys) = forward(params, cache, carry, xs, True)
    carry_0 = carry if head is not None else None
    return (cache_n, carry_n, ys), (params, cache_n, carry_n, carries, xs, ys, carry_0)

  def bwd(res, cts):
    with (reverse_context or contextlib.nullcontext)():
      return _bwd(res, cts)

  def _bwd(res, cts):
    params, cache_n, carry_n, carries, xs, ys, carry_0 = res
    ct_cache_n, ct_carry_n, ct_ys = jax.tree.map(_materialize, cts, is_leaf=_is_zero)
    cache_ct = traced["cache_ct"]
    window = window_fn(carry_n)

    def turn_reverse(state, carry_t, x_t, ct_y_t):
      acc, ct_buf, ct_carry = state
      acc, ct_buf, ct_carry, ct_x = _step_reverse(program, params, cache_n, carry_t, x_t,
                                                  window, acc, ct_buf, ct_carry, ct_y_t)
      return (acc, ct_buf, _to_scan(ct_carry, carry_t)), ct_x

    def head_reverse(state, x_t):
      acc, ct_buf, ct_carry = state
      acc, ct_buf, ct_carry, _ = _step_reverse(head, params, cache_n, carry_0, {}, window, acc,
                                               ct_buf, ct_carry, {})
      return (acc, ct_buf, _to_scan(ct_carry, carry_0)), jax.tree.map(_placeholder, x_t)

    def rev(state, inp):
      i, carry_t, x_t, ct_y_t = inp
      if head is None:
        return turn_reverse(state, carry_t, x_t, ct_y_t)
      if pad:  # the dummy last row: nothing to do
        state, ct_x = jax.lax.cond(i < n, lambda s: turn_reverse(s, carry_t, x_t, ct_y_t),
                                   lambda s: (s, jax.tree.map(_placeholder, x_t)), state)
      else:
        state, ct_x = turn_reverse(state, carry_t, x_t, ct_y_t)
      # The head's reverse runs inside the loop, after step 0's, so that the accumulator
      # leaves the loop as the gradient itself: XLA gives a buffer that is added to after
      # its while loop a temporary of its own (+1 parameter-sized buffer). A loop of one
      # iteration is inlined by XLA, hence the dummy row (pad) when there is one step.
      if cache_ct:
        state = jax.lax.cond(i == 0, lambda s: head_reverse(s, x_t)[0], lambda s: s, state)
        return state, ct_x
      # The cache cotangent leaves the loop unused: the cond reads the buffer but does not
      # return it (a conditional's output gets a buffer of its own: +1 cache-sized buffer).
      acc, ct_buf, ct_carry = state
      acc, ct_carry = jax.lax.cond(
          i == 0, lambda a, c: (lambda r: (r[0], r[2]))(head_reverse((a, ct_buf, c), x_t)[0]),
          lambda a, c: (a, c), acc, ct_carry)
      return (acc, ct_buf, ct_carry), ct_x

    init = (jax.tree.map(_placeholder, params), _to_scan(ct_cache_n, cache_n),
            _to_scan(ct_carry_n, carry_n))
    rows = (carries, xs, _to_scan(ct_ys, ys))
    n = jax.tree.leaves(xs)[0].shape[0]
    pad = head is not None and n == 1
    if pad:
      rows = jax.tree.map(lambda a: jnp.concatenate([a, a], 0), rows)
    (ct_params, ct_cache, ct_carry), ct_xs = jax.lax.scan(
        rev, init, (jnp.arange(n + pad),) + rows, reverse=True)
    if pad:
      ct_xs = jax.tree.map(lambda a: a[:n], ct_xs)
    return (_from_scan(ct_params, params),
            _from_scan(ct_cache, cache_n) if cache_ct else None,
            _from_scan(ct_carry, carry_n), _from_scan(ct_xs, xs))

  run.defvjp(fwd, bwd, symbolic_zeros=True)
  return run(params, cache, carry, xs)


def appendonly_scan(step_fn: Callable, params: Any, cache: Any, carry: Any, xs: Any,
                    window_fn: Callable | None = None):
  """``lax.scan`` of ``step_fn`` over ``xs`` with the bounded-memory reverse pass (a step
  program of one segment). Returns (final cache, final carry, stacked per-step outputs ys).
  """
  def whole(params, cache, state, x, window):
    cache, carry, y = step_fn(params, cache, state["carry"], x, window)
    return cache, {"carry": carry, "y": y}
  return program_scan([Plain(whole)], params, cache, carry, xs, window_fn)
