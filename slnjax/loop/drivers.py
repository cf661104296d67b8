"""The two drivers of the turn, and the reverse scheme, which the differentiable driver owns.

- ``rollout``: ``lax.while_loop``; stops as soon as every example has halted (inference,
  rollouts for score-function training). Not differentiable.
- ``unroll``: ``max_turns`` turns on a scan with done-masks; differentiable with truncated
  BPTT depth ``bptt_depth`` (k turns before each example halts; 0: none; None: full) and a
  reverse scheme ``bptt_impl``: "appendonly" (memory bounded by the caches, one parameter
  accumulator: appendonly.program_scan), "scan" (plain autodiff) or "scan_remat". Forward
  values equal ``rollout``'s.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from slnjax import lobes
from slnjax.appendonly import program_scan, run_program
from slnjax.loop.config import DialogueSpec
from slnjax.loop.prefill import prefill, prefill_inputs
from slnjax.loop.turn import turn, turn_program


class Dialogue(NamedTuple):
  """A batch of dialogues. Per-turn fields are [N,B,...] (N = max_turns); zeros where the
  example had already halted."""
  left_ids_NBM: jax.Array
  left_valid_NBM: jax.Array  # tokens up to and including the first stop token
  left_logp_NBM: jax.Array  # behaviour log-probs of the written ids
  left_logp_target_NBM: jax.Array  # log p(target token i) at turn position i
  left_emb_NBMR: jax.Array  # the left turns as the right lobe received them
  right_ids_NBM: jax.Array  # tall SLN only (zeros otherwise)
  score_NB: jax.Array
  score_logit_NB: jax.Array
  active_NB: jax.Array  # the example took part in turn n
  turns_B: jax.Array  # turns used
  halt_reason_B: jax.Array  # HALT_* codes
  final_score_B: jax.Array

  def at_halt(self, x_NB):
    """``x_NB`` (a per-turn field [N,B,...]) at each example's halting turn, its last taken
    turn ``turns_B - 1``: [B,...]. A loss on the outcome of the dialogue reads this, not
    ``x_NB[-1]`` (turn ``max_turns``, all zeros for an example that halted earlier)."""
    last_B = jnp.maximum(self.turns_B - 1, 0)
    return x_NB[last_B, jnp.arange(last_B.shape[0])]


def _turn_xs(key, n):
  ts = jnp.arange(n, dtype=jnp.int32)
  return {"t": ts, "key": jax.vmap(lambda t: jax.random.fold_in(key, t))(ts)}


def _dialogue(ys, carry) -> Dialogue:
  return Dialogue(ys["left_ids"], ys["left_valid"], ys["left_logp"], ys["left_logp_target"],
                  ys["left_emb"], ys["right_ids"], ys["score"], ys["score_logit"], ys["active"],
                  carry["turns_B"], carry["halt_B"], jax.nn.sigmoid(carry["score_logit_B"]))


def _check_prompt(prompt_ids_BP, prompt_len_B):
  if prompt_ids_BP.ndim != 2:
    raise ValueError(f"prompt ids have shape {prompt_ids_BP.shape}; expected [B, P].")
  if prompt_len_B.shape != prompt_ids_BP.shape[:1]:
    raise ValueError(f"prompt lengths have shape {prompt_len_B.shape}; expected "
                     f"[{prompt_ids_BP.shape[0]}].")


def rollout(spec: DialogueSpec, params_left, params_right, prompt_ids_BP, prompt_len_B, key,
            tau=1.0, target_BM=None, prompt_embeds_BPD=None,
            memory_prefix=None) -> Dialogue:
  """Inference driver: ``lax.while_loop`` that ends when every example has halted."""
  _check_prompt(prompt_ids_BP, prompt_len_B)
  k_pre, k_loop = jax.random.split(key)
  P, caches, carry = prefill(spec, params_left, params_right, prompt_ids_BP, prompt_len_B,
                             k_pre, tau, target_BM, prompt_embeds_BPD, memory_prefix)
  n = spec.loop.max_turns
  xs = _turn_xs(k_loop, n)
  x0 = jax.tree.map(lambda a: a[0], xs)
  y_shape = jax.eval_shape(lambda c, k: turn(spec, P, c, k, x0)[2], caches, carry)
  bufs = jax.tree.map(lambda s: jnp.zeros((n,) + s.shape, s.dtype), y_shape)

  def cond(state):
    t, _, carry, _ = state
    return (t < n) & carry["active_B"].any()

  def body(state):
    t, caches, carry, bufs = state
    x = jax.tree.map(lambda a: a[t], xs)
    caches, carry, y = turn(spec, P, caches, carry, x)
    bufs = jax.tree.map(lambda b, v: b.at[t].set(v), bufs, y)
    return t + 1, caches, carry, bufs

  _, _, carry, ys = jax.lax.while_loop(cond, body, (jnp.int32(0), caches, carry, bufs))
  return jax.tree.map(jax.lax.stop_gradient, _dialogue(ys, carry))


def unroll(spec: DialogueSpec, params_left, params_right, prompt_ids_BP, prompt_len_B, key,
           tau=1.0, target_BM=None, prompt_embeds_BPD=None,
           memory_prefix=None) -> Dialogue:
  """Differentiable driver: all ``max_turns`` turns with done-masks (same values as rollout)."""
  _check_prompt(prompt_ids_BP, prompt_len_B)
  L = spec.loop
  k = L.bptt_depth
  if k == 0:
    return rollout(spec, params_left, params_right, prompt_ids_BP, prompt_len_B, key, tau,
                   target_BM, prompt_embeds_BPD, memory_prefix)
  k_pre, k_loop = jax.random.split(key)
  P, caches, carry, head = prefill_inputs(spec, params_left, params_right, prompt_ids_BP,
                                          prompt_len_B, k_pre, tau, target_BM, prompt_embeds_BPD,
                                          memory_prefix)
  xs = _turn_xs(k_loop, L.max_turns)
  window_fn = window = None
  if k is not None:
    window_fn = lambda final: {"turns_B": final["turns_B"], "k": k}
    if L.bptt_impl != "appendonly":  # plain autodiff: learn the turns used first
      ahead = rollout(spec, params_left, params_right, prompt_ids_BP, prompt_len_B, key, tau,
                      target_BM, prompt_embeds_BPD, memory_prefix)
      window = {"turns_B": ahead.turns_B, "k": k}
  _, carry, ys = _scan(turn_program(spec), P, caches, carry, xs, L.bptt_impl,
                       window_fn, window, head)
  return _dialogue(ys, carry)


def _scan(program, P, cache, carry, xs, impl, window_fn=None, window=None, head=None):
  """Scan a step program (appendonly.Plain / Loop segments) with the requested reverse scheme,
  after the program `head` (run once; e.g. the prefill) when one is given.

  appendonly: the bounded-memory reverse pass; `window_fn(final carry)` gives the window.
  scan / scan_remat: plain autodiff (with a rematerialised body); `window` is given.
  """
  if impl == "appendonly":
    return program_scan(program, P, cache, carry, xs, window_fn, head,
                        reverse_context=lobes.reading_cache_before_write)
  if impl not in ("scan", "scan_remat"):
    raise ValueError(f"Unknown bptt_impl {impl!r}; expected appendonly, scan or scan_remat.")
  if head is not None:
    cache, carry, _ = run_program(head, P, cache, carry, {})

  def body(state, x):
    c, k = state
    c, k, y = run_program(program, P, c, k, x, window)
    return (c, k), y
  if impl == "scan_remat":
    body = jax.checkpoint(body)
  (cache, carry), ys = jax.lax.scan(body, (cache, carry), xs)
  return cache, carry, ys
