"""One lobe's side of the dialogue: emitting tokens, decoding a turn, ingesting a turn.

An *emission* is a token sampled from a lobe's logits and embedded for every lobe that will
read it: ``e_self`` in the writer's own embedding (its next input), ``e_recv`` in the other
lobe's (the receiving lobe's E, see soft_tokens.py). A turn of m tokens is the pending
emission plus m-1 emissions of m one-token forward passes ("units"); the m-th unit's
emission becomes the new pending token (the next token, should the lobe go on writing).

Everything here is a pure function of explicit arrays. A turn is written by a Loop segment
of a step program (``appendonly.Loop`` over ``token_unit``, between ``begin_turn`` and
``end_turn``), so the drivers (drivers.py) can run it under ``lax.scan``, ``lax.while_loop`` or
``appendonly.program_scan``.
"""
from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from slnjax import lobes, soft_tokens
from slnjax.lobes.transformer import LAYER_CACHE_AXES, STACKED_CACHE_AXES


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
  return jax.tree.map(lambda x: nn.with_logical_constraint(
      x, STACKED_CACHE_AXES if x.ndim == 5 else LAYER_CACHE_AXES), cache)


def freeze(active_B, new, old):
  """Per-example select: active examples take `new`, halted ones keep `old`."""
  def sel(n, o):
    m = active_B.reshape(active_B.shape + (1,) * (n.ndim - 1))
    return jnp.where(m, n, o)
  return jax.tree.map(sel, new, old)


def token_unit(cfg, opts, lobe: str, recv: str | None, targets: bool):
  """A Loop unit (appendonly.Loop) in which lobe `lobe` ("left" | "right") writes one token:
  one forward pass at each example's position, then the emission of the next token, embedded
  also for lobe `recv` (None: nobody receives). `targets`: record log p(P["target_BM"])."""
  def unit(P, caches, uc, ux, window):
    del window
    out = lobes.apply(cfg, P[lobe], embeds=uc["e_BD"][:, None], cache=caches[lobe],
                      start=uc["pos_B"], write_mask=uc["active_B"],
                      packed=P.get("packed", {}).get(lobe))
    target = None
    if targets and P["target_BM"] is not None:
      tgt_BM = P["target_BM"]
      target = jnp.take(tgt_BM, jnp.minimum(ux["idx"] + 1, tgt_BM.shape[1] - 1), axis=1)
    emb_recv = None if recv is None else lobes.embedding_matrix(opts["cfgs"][recv], P[recv])
    em = emit(out["logits_BTV"][:, 0], mode=opts["mode"], key=ux["key"], tau=P["tau"],
              temperature=opts["temperature"], emb_self_VD=lobes.embedding_matrix(cfg, P[lobe]),
              emb_recv_VD=emb_recv, target_B=target)
    pos = uc["pos_B"] + uc["active_B"].astype(jnp.int32)
    return {**caches, lobe: out["cache"]}, {**uc, "e_BD": em.e_self_BD, "pos_B": pos}, em
  return unit


def begin_turn(pending: Emission, pos_B, active_B, key, m: int):
  """The unit carry and the unit inputs of a turn of m tokens that starts with `pending`."""
  uc = {"e_BD": pending.e_self_BD, "pos_B": pos_B, "active_B": active_B}
  return uc, {"key": jax.random.split(key, m), "idx": jnp.arange(m)}


def end_turn(pending: Emission, uc, uys: Emission):
  """Assembles a turn from its units. Returns (pos_B, turn, new pending): turn is an Emission
  with [B,m(,D)] fields, token i of the turn at index i (token 0 is the pending emission;
  units 0..m-2 emitted tokens 1..m-1, unit m-1 the next pending one)."""
  turn = jax.tree.map(lambda p, y: jnp.concatenate([p[:, None], jnp.moveaxis(y[:-1], 0, 1)], 1),
                      pending, uys)
  return uc["pos_B"], turn, jax.tree.map(lambda y: y[-1], uys)


def ingest(cfg, lobe_params, cache, e_BTD, pos_B, active_B, *, lengths_B=None):
  """Appends a chunk of input embeddings (the other lobe's turn) to a lobe's cache; the
  logits are computed at the chunk's last position only (``out["logits_BV"]``)."""
  B, T = e_BTD.shape[:2]
  out = lobes.apply(cfg, lobe_params, embeds=e_BTD, cache=cache, start=pos_B,
                    lengths=lengths_B, write_mask=active_B,
                    logits_at=jnp.full((B,), T - 1, jnp.int32))
  out["cache"] = constrain_cache(out["cache"])
  return out, pos_B + e_BTD.shape[1] * active_B.astype(jnp.int32)
