"""Selecting memories from their scores, with or without a gradient.

    sel = select(scores_BC, mask_BC, k, mode, key, tau=tau)

``sel.weights_BJC`` has one row per selection slot j < k: what slot j reads from the bank.
Modes:
  soft       soft attention read-out (differentiable nearest-neighbour retrieval): slot j is
             softmax(s / tau + log(1 - mass already read)) (a relaxed top-k; k = 1 is a plain
             attention read-out); ``index_BJ`` is the hard top-k for reports.
  gumbel_st  Gumbel top-k: the k largest of s / temperature + g are exactly k distinct items,
             one-hot forward; the relaxed top-k of the same perturbed scores is the gradient
             (straight-through).
  sample     the same Gumbel top-k draw (a Plackett-Luce sample without replacement), no
             pathwise gradient: train with REINFORCE / PPO on ``logp_B``.
  greedy     the top-k scores (evaluation).
Slots beyond an example's number of items are invalid (``valid_BJ`` False, zero weights):
padded slots are never selected.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

MODES = ("soft", "gumbel_st", "sample", "greedy")
_NEG = -1e30


class Selection(NamedTuple):
  weights_BJC: jax.Array
  index_BJ: jax.Array  # int32 hard choice per slot
  valid_BJ: jax.Array  # bool
  logp_B: jax.Array  # log-prob of the ordered choice (Plackett-Luce of scores / temperature)


def plackett_luce_logp(z_BC, mask_BC, index_BJ, valid_BJ):
  """log P(index_1, ..., index_k) drawn without replacement from softmax(z) over the mask."""
  J = index_BJ.shape[1]
  avail_BC = mask_BC
  total = jnp.zeros(z_BC.shape[:1], z_BC.dtype)
  for j in range(J):
    zz = jnp.where(avail_BC, z_BC, _NEG)
    lse = jax.nn.logsumexp(zz, axis=-1)
    z_sel = jnp.take_along_axis(z_BC, index_BJ[:, j:j + 1], axis=1)[:, 0]
    total = total + jnp.where(valid_BJ[:, j], z_sel - lse, 0.0)
    avail_BC = avail_BC & ~(jax.nn.one_hot(index_BJ[:, j], z_BC.shape[1], dtype=bool)
                            & valid_BJ[:, j:j + 1])
  return total


def relaxed_topk(z_BC, mask_BC, k: int, tau):
  """Sequential softmax relaxation of top-k: slot j avoids the mass slots < j took."""
  logmask = jnp.where(mask_BC, 0.0, _NEG)
  taken_BC = jnp.zeros_like(z_BC)
  rows = []
  for _ in range(k):
    free = jnp.log(jnp.clip(1.0 - taken_BC, 1e-12, 1.0))
    r_BC = jax.nn.softmax(z_BC / tau + free + logmask, axis=-1) * mask_BC
    rows.append(r_BC)
    taken_BC = taken_BC + r_BC
  return jnp.stack(rows, axis=1)


def select(scores_BC, mask_BC, k: int, mode: str, key=None, tau=1.0,
           temperature=1.0) -> Selection:
  if mode not in MODES:
    raise ValueError(f"Selection mode {mode!r}; expected one of {MODES}.")
  B, C = scores_BC.shape
  if not 1 <= k <= C:
    raise ValueError(f"Cannot select k={k} of a bank of capacity {C}.")
  mask_BC = mask_BC.astype(bool)
  f = jnp.promote_types(scores_BC.dtype, jnp.float32)
  z_BC = jnp.where(mask_BC, scores_BC.astype(f) / temperature, _NEG)
  if mode in ("gumbel_st", "sample"):
    if key is None:
      raise ValueError(f"Selection mode {mode!r} samples: pass an rng key.")
    g_BC = jax.random.gumbel(key, (B, C), f)
  else:
    g_BC = jnp.zeros((B, C), f)
  perturbed_BC = jnp.where(mask_BC, z_BC + g_BC, _NEG)
  _, index_BJ = jax.lax.top_k(jax.lax.stop_gradient(perturbed_BC), k)
  index_BJ = index_BJ.astype(jnp.int32)
  count_B = jnp.sum(mask_BC, axis=1)
  valid_BJ = jnp.arange(k)[None, :] < count_B[:, None]
  hard_BJC = jax.nn.one_hot(index_BJ, C, dtype=f) * valid_BJ[..., None]
  if mode == "soft":
    w_BJC = relaxed_topk(scores_BC.astype(f), mask_BC, k, tau)
  elif mode == "gumbel_st":
    r_BJC = relaxed_topk(scores_BC.astype(f) / temperature + g_BC, mask_BC, k, tau)
    w_BJC = hard_BJC + (r_BJC - jax.lax.stop_gradient(r_BJC))
  else:
    w_BJC = hard_BJC
  w_BJC = w_BJC * valid_BJ[..., None]
  logp_B = plackett_luce_logp(z_BC, mask_BC, index_BJ, valid_BJ)
  return Selection(w_BJC, index_BJ, valid_BJ, logp_B)


def replay(scores_BC, mask_BC, index_BJ, valid_BJ, temperature=1.0) -> Selection:
  """A recorded hard selection (a rollout's) re-scored under new scores: the same one-hot
  weights, and the log-prob of the same ordered choice (PPO ratios)."""
  mask_BC = mask_BC.astype(bool)
  f = jnp.promote_types(scores_BC.dtype, jnp.float32)
  z_BC = jnp.where(mask_BC, scores_BC.astype(f) / temperature, _NEG)
  w_BJC = jax.nn.one_hot(index_BJ, scores_BC.shape[1], dtype=f) * valid_BJ[..., None]
  return Selection(w_BJC, index_BJ, valid_BJ, plackett_luce_logp(z_BC, mask_BC, index_BJ,
                                                                 valid_BJ))


def reinforce_loss(logp_B, reward_B, baseline_B=None, weight_B=None):
  """Score-function surrogate -(R - b) log p; b defaults to the batch mean of R."""
  w_B = jnp.ones_like(reward_B) if weight_B is None else weight_B.astype(reward_B.dtype)
  n = jnp.maximum(jnp.sum(w_B), 1.0)
  if baseline_B is None:
    baseline_B = jnp.sum(reward_B * w_B) / n
  adv_B = jax.lax.stop_gradient(reward_B - baseline_B)
  return -jnp.sum(w_B * adv_B * logp_B) / n


def ppo_loss(logp_B, old_logp_B, adv_B, clip_eps=0.2, weight_B=None):
  """PPO-clip surrogate on the selection's log-prob (old_logp from the behaviour policy)."""
  w_B = jnp.ones_like(adv_B) if weight_B is None else weight_B.astype(adv_B.dtype)
  adv_B = jax.lax.stop_gradient(adv_B)
  ratio = jnp.exp(logp_B - jax.lax.stop_gradient(old_logp_B))
  surr = jnp.minimum(ratio * adv_B, jnp.clip(ratio, 1 - clip_eps, 1 + clip_eps) * adv_B)
  return -jnp.sum(w_B * surr) / jnp.maximum(jnp.sum(w_B), 1.0)


def precision_at_k(sel: Selection, relevant_BC):
  """Fraction of the filled slots that picked a relevant item [B]."""
  hit_BJ = jnp.take_along_axis(relevant_BC.astype(bool), sel.index_BJ, axis=1) & sel.valid_BJ
  return jnp.sum(hit_BJ, 1) / jnp.maximum(jnp.sum(sel.valid_BJ, 1), 1)


def recall_at_k(sel: Selection, relevant_BC):
  """Fraction of the relevant items that were selected [B]."""
  hit_BJ = jnp.take_along_axis(relevant_BC.astype(bool), sel.index_BJ, axis=1) & sel.valid_BJ
  return jnp.sum(hit_BJ, 1) / jnp.maximum(jnp.sum(relevant_BC, 1), 1)
