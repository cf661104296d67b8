"""Stabilisers of a memory selector (seeds/004, "Pre-training and Stabilization").

- Supervised pre-training with an exponential recency bias: the target distribution over a
  bank's items is

      p*(i) ∝ (1 - alpha) * rel(i) / sum rel  +  alpha * exp(-lam * age(i)) / sum exp(-lam * age)

  (``rel``: relevance labels where the task has them; alpha = 1 is the pure recency prior,
  "recent memories first"), and the loss is the cross-entropy of softmax(scores) to p*.
- Distillation regulariser: KL(p_ref || p) of the current selector's distribution to a frozen
  pre-trained selector's, added to the RL loss to keep the selector near its initialisation.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from slnjax.memory.bank import Bank

_NEG = -1e30


def recency_targets(bank: Bank, lam: float, relevant_BC=None, alpha: float = 1.0):
  """The pre-training target p* [B,C] (zero on padded slots)."""
  if relevant_BC is None and alpha != 1.0:
    raise ValueError("recency_targets: alpha < 1 mixes in relevance labels: pass relevant_BC.")
  mask = bank.mask_BC
  f = jnp.float32 if bank.keys_BCD.dtype != jnp.float64 else jnp.float64
  age = bank.age_BC().astype(f)
  rec = jnp.where(mask, jnp.exp(-lam * age), 0.0)
  p = rec / jnp.maximum(jnp.sum(rec, 1, keepdims=True), 1e-30)
  if relevant_BC is not None and alpha < 1.0:
    rel = jnp.where(mask, relevant_BC.astype(f), 0.0)
    rel = rel / jnp.maximum(jnp.sum(rel, 1, keepdims=True), 1e-30)
    p = alpha * p + (1 - alpha) * rel
  return p


def _logp(scores_BC, mask_BC, temperature):
  z = jnp.where(mask_BC, scores_BC / temperature, _NEG)
  return jax.nn.log_softmax(z, axis=-1)


def pretrain_loss(scores_BC, mask_BC, target_BC, weight_B=None):
  """Cross-entropy H(p*, softmax(scores)) per example, averaged (weight_B: which count)."""
  lp = _logp(scores_BC, mask_BC, 1.0)
  ce_B = -jnp.sum(jnp.where(mask_BC, target_BC * lp, 0.0), axis=1)
  w = jnp.ones_like(ce_B) if weight_B is None else weight_B.astype(ce_B.dtype)
  return jnp.sum(w * ce_B) / jnp.maximum(jnp.sum(w), 1.0)


def distill_loss(scores_BC, ref_scores_BC, mask_BC, temperature=1.0, weight_B=None):
  """KL(softmax(ref / T) || softmax(scores / T)) per example, averaged; ref carries no grad."""
  lp = _logp(scores_BC, mask_BC, temperature)
  lq = _logp(jax.lax.stop_gradient(ref_scores_BC), mask_BC, temperature)
  kl_B = jnp.sum(jnp.where(mask_BC, jnp.exp(lq) * (lq - lp), 0.0), axis=1)
  w = jnp.ones_like(kl_B) if weight_B is None else weight_B.astype(kl_B.dtype)
  return jnp.sum(w * kl_B) / jnp.maximum(jnp.sum(w), 1.0)
