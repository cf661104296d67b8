"""One lobe's side of the dialogue: emitting tokens, decoding a turn, ingesting a turn.

An *emission* is a token sampled from a lobe's logits and embedded for every lobe that will
read it: ``e_self`` in the writer's own embedding (its next input), ``e_recv`` in the other
lobe's (the receiving lobe's E, see soft_tokens.py). A turn of m tokens is the pending
emission plus m-1 emissions of m one-token forward passes ("units"); the m-th unit's
emission becomes the new pending token (the next token, should the lobe go on writing).

Everything here is a pure function of explicit arrays so that loop.py can run it under
``lax.scan``, ``lax.while_loop`` or ``appendonly.appendonly_scan``.
"""
from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from slnjax import lobes, soft_tokens
from slnjax.appendonly import appendonly_scan
from slnjax.lobes.transformer import cache_logical_axes


class Emission(NamedTuple):
  ids_B: jax.Array
  e_self_BD: jax.Array
  e_recv_BR: jax.Array  # R: receiving lobe's d_model (zeros [B,0] when nobody receives)
  logp_B: jax.Array  # behaviour log-prob (PPO ratio denominator)
  logp_target_B: jax.Array  # log p(target token) at this position (0 without targets)


def emit(logits_BV, *, mode, key, tau, temperature, emb_self_VD, emb_recv_VD, target_B=None):
  tok = soft_tokens.sample(logits_BV, mode, key, tau=tau, temperature=temperature)
  e_self = soft_tokens.embed(tok, emb_self_VD, mode)
  if emb_recv_VD is None:
    e_recv = jnp.zeros((e_self.shape[0], 0), e_self.dtype)
  else:
    e_recv = soft_tokens.embed(tok, emb_recv_VD, mode)
  if target_B is None:
    logp_target = jnp.zeros_like(tok.logp_B)
  else:
    logprobs_BV = jax.nn.log_softmax(logits_BV.astype(tok.logp_B.dtype), axis=-1)
    logp_target = jnp.take_along_axis(logprobs_BV, target_B[:, None], axis=-1)[:, 0]
  return Emission(tok.ids_B, e_self, e_recv, tok.logp_B, logp_target)


def constrain_cache(cache):
  """Pins a KV cache to the lobes' logical cache axes (a no-op without logical-axis rules)."""
  axes = cache_logical_axes()
  return {k: nn.with_logical_constraint(v, axes[k]) for k, v in cache.items()}


def freeze(active_B, new, old):
  """Per-example select: active examples take `new`, halted ones keep `old`."""
  def sel(n, o):
    m = active_B.reshape(active_B.shape + (1,) * (n.ndim - 1))
    return jnp.where(m, n, o)
  return jax.tree.map(sel, new, old)


def _unit(cfg, opts, P, cache, carry, x, window):
  """One token forward at each example's position, then emit the next token."""
  del window
  out = lobes.apply(cfg, P["lobe"], embeds=carry["e_BD"][:, None], cache=cache,
                    start=carry["pos_B"], write_mask=P["active_B"])
  target = None if P["target_BM"] is None else jnp.take(
      P["target_BM"], jnp.minimum(x["idx"] + 1, P["target_BM"].shape[1] - 1), axis=1)
  em = emit(out["logits_BTV"][:, 0], mode=opts["mode"], key=x["key"], tau=P["tau"],
            temperature=opts["temperature"], emb_self_VD=lobes.embedding_matrix(cfg, P["lobe"]),
            emb_recv_VD=P["emb_recv_VD"], target_B=target)
  pos = carry["pos_B"] + P["active_B"].astype(jnp.int32)
  return out["cache"], {"e_BD": em.e_self_BD, "pos_B": pos}, em


def decode_turn(cfg, opts, lobe_params, cache, pending: Emission, pos_B, active_B, key, *,
                tau, emb_recv_VD, target_BM=None):
  """Writes one turn of m = opts['turn_len'] tokens. Returns (cache, pos_B, turn, pending).

  turn: Emission with [B,m(,D)] fields, token i of the turn at index i.
  opts: mode, temperature, turn_len, impl ('appendonly' | 'scan' | 'scan_remat').
  """
  m = opts["turn_len"]
  P = {"lobe": lobe_params, "emb_recv_VD": emb_recv_VD, "tau": tau, "target_BM": target_BM,
       "active_B": active_B}
  xs = {"key": jax.random.split(key, m), "idx": jnp.arange(m)}
  carry = {"e_BD": pending.e_self_BD, "pos_B": pos_B}
  step = lambda P_, c, k, x, w: _unit(cfg, opts, P_, c, k, x, w)
  cache, carry, ys = run_scan(step, P, cache, carry, xs, opts["impl"])
  # Token 0 is the pending emission; units 0..m-2 emitted tokens 1..m-1.
  turn = jax.tree.map(lambda p, y: jnp.concatenate([p[:, None], jnp.moveaxis(y[:-1], 0, 1)], 1),
                      pending, ys)
  new_pending = jax.tree.map(lambda y: y[-1], ys)
  return constrain_cache(cache), carry["pos_B"], turn, new_pending


def ingest(cfg, lobe_params, cache, e_BTD, pos_B, active_B, *, lengths_B=None):
  """Appends a chunk of input embeddings (the other lobe's turn) to a lobe's cache."""
  out = lobes.apply(cfg, lobe_params, embeds=e_BTD, cache=cache, start=pos_B,
                    lengths=lengths_B, write_mask=active_B)
  out["cache"] = constrain_cache(out["cache"])
  return out, pos_B + e_BTD.shape[1] * active_B.astype(jnp.int32)


def run_scan(step, P, cache, carry, xs, impl, window_fn=None, window=None):
  """Scan `step(P, cache, carry, x, window)` with the requested reverse-mode scheme.

  appendonly: the bounded-memory reverse pass; `window_fn(final carry)` gives the window.
  scan / scan_remat: plain autodiff (with a rematerialised body); `window` is given.
  """
  if impl == "appendonly":
    return appendonly_scan(step, P, cache, carry, xs, window_fn)
  if impl not in ("scan", "scan_remat"):
    raise ValueError(f"Unknown bptt_impl {impl!r}; expected appendonly, scan or scan_remat.")

  def body(state, x):
    c, k = state
    c, k, y = step(P, c, k, x, window)
    return (c, k), y
  if impl == "scan_remat":
    body = jax.checkpoint(body)
  (cache, carry), ys = jax.lax.scan(body, (cache, carry), xs)
  return cache, carry, ys
