"""The left and right lobes of a wide SLN: a context read, a router (the lobe's gate) and a
mixture-of-experts layer.

A lobe call reads the valid part of the context with multi-head attention from W queries (the
last valid slot plus a learned embedding per write slot), routes each of the W vectors to its
top-k experts (softmax router; top-1 is Switch routing) and adds the experts' outputs,
weighted by the router probabilities, to the residual. The W vectors are what the lobe appends
to the context. A lateralized right lobe (row G) instead reduces its first vector to a score.

Experts are computed densely (all E on every vector, then combined with the sparse top-k
weights): each call routes only B x W vectors, where dispatch with capacity buys nothing.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from slnjax.lobes.config import LobeConfig
from slnjax.lobes.layers import Norm, upcast
from slnjax.wide.gate import last_valid, masked_softmax, pparam


class ContextRead(nn.Module):
  """Multi-head attention from queries [B,W,D] to the context slots [0, len_B)."""
  lm: LobeConfig

  @nn.compact
  def __call__(self, q_BWD, ctx_BSD, len_B):
    cfg = self.lm
    D, H, E, dt = cfg.d_model, cfg.n_heads, cfg.hd, cfg.compute_dtype
    init = nn.initializers.normal(0.02)
    wq = pparam(self, "q", (D, H, E), ("embed", "heads", "kv"), init, cfg).astype(dt)
    wk = pparam(self, "k", (D, H, E), ("embed", "heads", "kv"), init, cfg).astype(dt)
    wv = pparam(self, "v", (D, H, E), ("embed", "heads", "kv"), init, cfg).astype(dt)
    wo = pparam(self, "o", (H, E, D), ("heads", "kv", "embed"), init, cfg).astype(dt)
    q_BWHE = jnp.einsum("bwd,dhe->bwhe", q_BWD, wq)
    k_BSHE = jnp.einsum("bsd,dhe->bshe", ctx_BSD, wk)
    v_BSHE = jnp.einsum("bsd,dhe->bshe", ctx_BSD, wv)
    s_BHWS = jnp.einsum("bwhe,bshe->bhws", q_BWHE, k_BSHE).astype(upcast(dt)) / math.sqrt(E)
    mask_BS = jnp.arange(ctx_BSD.shape[1])[None, :] < len_B[:, None]
    p_BHWS = masked_softmax(s_BHWS, mask_BS[:, None, None, :]).astype(dt)
    o_BWHE = jnp.einsum("bhws,bshe->bwhe", p_BHWS, v_BSHE)
    return jnp.einsum("bwhe,hed->bwd", o_BWHE, wo)


class MoE(nn.Module):
  """Top-k routed experts (GELU MLPs). Returns (y_BWD, router aux)."""
  lm: LobeConfig
  n_experts: int
  top_k: int
  d_expert: int

  @nn.compact
  def __call__(self, x_BWD):
    cfg = self.lm
    D, X, F, dt = cfg.d_model, self.n_experts, self.d_expert, cfg.compute_dtype
    f = upcast(dt)
    init = nn.initializers.normal(0.02)
    w_r = pparam(self, "router", (D, X), ("embed", None), init, cfg)
    logits_BWX = jnp.einsum("bwd,dx->bwx", x_BWD.astype(f), w_r.astype(f))
    probs_BWX = jax.nn.softmax(logits_BWX, axis=-1)
    top_BWk, idx_BWk = jax.lax.top_k(probs_BWX, self.top_k)
    if self.top_k > 1:
      top_BWk = top_BWk / jnp.sum(top_BWk, axis=-1, keepdims=True)
    comb_BWX = jnp.sum(jax.nn.one_hot(idx_BWk, X, dtype=f) * top_BWk[..., None], axis=-2)
    up = pparam(self, "up", (X, D, F), (None, "embed", "mlp"), init, cfg).astype(dt)
    b_up = pparam(self, "up_bias", (X, F), (None, "mlp"), nn.initializers.zeros, cfg)
    down = pparam(self, "down", (X, F, D), (None, "mlp", "embed"), init, cfg).astype(dt)
    h_BWXF = jax.nn.gelu(jnp.einsum("bwd,xdf->bwxf", x_BWD, up) + b_up.astype(dt))
    y_BWXD = jnp.einsum("bwxf,xfd->bwxd", h_BWXF, down)
    y_BWD = jnp.einsum("bwx,bwxd->bwd", comb_BWX.astype(dt), y_BWXD)
    return y_BWD, {"probs_BWX": probs_BWX, "index_BWk": idx_BWk}


class ExpertLobe(nn.Module):
  """One lobe call: read the context, route, apply experts. Returns a dict with
  "write_BWD" (the slots to append), "score_logit_B" (score_only lobes), "router"."""
  lm: LobeConfig
  n_experts: int
  top_k: int
  d_expert: int
  write_len: int
  score_only: bool = False

  @nn.compact
  def __call__(self, ctx_BSD, len_B):
    cfg, W, D = self.lm, self.write_len, self.lm.d_model
    init = nn.initializers.normal(0.02)
    dt = cfg.compute_dtype
    last_BD = last_valid(ctx_BSD, len_B)
    slot_WD = pparam(self, "query_emb", (W, D), (None, "embed"), init, cfg).astype(dt)
    q_BWD = last_BD[:, None, :] + slot_WD[None]
    ctx_n = Norm(cfg, name="ctx_norm")(ctx_BSD)
    x_BWD = q_BWD + ContextRead(cfg, name="read")(Norm(cfg, name="q_norm")(q_BWD), ctx_n, len_B)
    y_BWD, router = MoE(cfg, self.n_experts, self.top_k, self.d_expert, name="moe")(
        Norm(cfg, name="moe_norm")(x_BWD))
    y_BWD = x_BWD + y_BWD
    out = {"write_BWD": y_BWD, "router": router}
    if self.score_only:
      f = upcast(dt)
      h_BD = Norm(cfg, name="score_norm")(y_BWD[:, 0]).astype(f)
      w = pparam(self, "score_w", (D,), ("embed",), init, cfg).astype(f)
      b = pparam(self, "score_b", (), (), nn.initializers.zeros, cfg).astype(f)
      score_logit_B = h_BD @ w + b
      s_in = pparam(self, "score_in_w", (W, D), (None, "embed"), init, cfg).astype(dt)
      b_in = pparam(self, "score_in_b", (W, D), (None, "embed"), init, cfg).astype(dt)
      # The only thing the lobe hands on is its score (and this embedding of it).
      s_B = jax.nn.sigmoid(score_logit_B).astype(dt)
      out = {"write_BWD": s_B[:, None, None] * s_in[None] + b_in[None],
             "score_logit_B": score_logit_B, "router": router}
    return out


def load_balance_loss(probs_TX, index_Tk, weight_T):
  """Switch-Transformer auxiliary loss  E * sum_e f_e * P_e  over the routed vectors T.

  f_e: fraction of the (vector, top-k slot) assignments that went to expert e; P_e: mean
  router probability of e; both weighted by weight_T (1 for a vector the lobe really
  produced, 0 for a halted example or a lobe the gate did not pick). 1.0 when balanced.
  """
  X = probs_TX.shape[-1]
  k = index_Tk.shape[-1]
  w_T = jax.lax.stop_gradient(weight_T).astype(probs_TX.dtype)
  total = jnp.maximum(jnp.sum(w_T), 1e-9)
  assign_TX = jnp.sum(jax.nn.one_hot(index_Tk, X, dtype=probs_TX.dtype), axis=-2) / k
  f_X = jnp.sum(w_T[:, None] * assign_TX, axis=0) / total
  p_X = jnp.sum(w_T[:, None] * probs_TX, axis=0) / total
  return X * jnp.sum(f_X * p_X)


def expert_counts(index_Tk, weight_T, n_experts: int):
  """How many (vector, slot) assignments went to each expert [X] (hard weight > 0)."""
  hit_TX = jnp.sum(jax.nn.one_hot(index_Tk, n_experts, dtype=jnp.float32), axis=-2)
  return jnp.sum((weight_T > 0)[:, None] * hit_TX, axis=0)
