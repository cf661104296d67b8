"""SFT (paper eq. 1): teacher-forced negative log-likelihood of the target, prompt masked.

    L_SFT = -E[log p_left(y | x)]    (mean over the target tokens of the batch)

The left lobe reads batch["ids"] (prompt then target) and is scored on the tokens where
batch["loss_mask"] is 1 (the logits at t-1 predict ids[t]). In a tall SLN, whose right lobe
also writes, ``right_weight`` > 0 adds the same loss for the right lobe.

Hyper-parameters: right_weight (0.0).
No rollout, no reward, no frozen copies, one update per batch.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from slnjax import lobes, sln
from slnjax.objectives.base import Objective, batch_valid, hparams, register

DEFAULTS = {"right_weight": 0.0}


def token_logp(cfg: lobes.LobeConfig, params, ids_BT, temperature=1.0):
  """log p(ids[t] | ids[<t]) under a lobe, [B,T]; 0 at t = 0."""
  logits_BTV = lobes.apply(cfg, params, ids=ids_BT)["logits_BTV"]
  f = jnp.promote_types(logits_BTV.dtype, jnp.float32)
  lp_BTV = jax.nn.log_softmax(logits_BTV[:, :-1].astype(f) / temperature, axis=-1)
  lp_BT = jnp.take_along_axis(lp_BTV, ids_BT[:, 1:, None], axis=-1)[..., 0]
  return jnp.concatenate([jnp.zeros_like(lp_BT[:, :1]), lp_BT], axis=1)


def masked_nll(cfg, params, ids_BT, mask_BT):
  """(mean NLL over mask, token accuracy over mask)."""
  logits_BTV = lobes.apply(cfg, params, ids=ids_BT)["logits_BTV"]
  f = jnp.promote_types(logits_BTV.dtype, jnp.float32)
  lp_BTV = jax.nn.log_softmax(logits_BTV[:, :-1].astype(f), axis=-1)
  lp_BT = jnp.take_along_axis(lp_BTV, ids_BT[:, 1:, None], axis=-1)[..., 0]
  m_BT = mask_BT[:, 1:].astype(f)
  n = jnp.maximum(m_BT.sum(), 1.0)
  hit_BT = jnp.argmax(logits_BTV[:, :-1], axis=-1) == ids_BT[:, 1:]
  return -(m_BT * lp_BT).sum() / n, (m_BT * hit_BT).sum() / n


def check_right_writes(model: sln.SLN, who: str):
  spec = model.spec
  if not (spec.tall and "right" in model.lobe_names and "right" in model.trainable):
    raise ValueError(f"{who}: right_weight > 0 trains the right lobe as a writer, which only "
                     f"a tall SLN with a trainable right lobe has (kind 'tall'); kind "
                     f"{model.kind!r} has none. Set right_weight=0.")


def sft_loss(ctx, params, frozen, batch, rollout, rng):
  del frozen, rollout, rng
  hp = hparams(SFT, ctx.cfg)
  model = ctx.model
  if hp["right_weight"]:
    check_right_writes(model, "sft")
  mask_BT = batch["loss_mask"] * batch_valid(batch)[:, None]
  pl, pr = sln.roles(model, params)
  nll, acc = masked_nll(model.spec.left, pl, batch["ids"], mask_BT)
  loss, metrics = nll, {"nll": nll, "token_acc": acc}
  if hp["right_weight"]:
    nll_r, acc_r = masked_nll(model.spec.right, pr, batch["ids"], mask_BT)
    loss = loss + hp["right_weight"] * nll_r
    metrics.update(nll_right=nll_r, token_acc_right=acc_r)
  metrics["loss"] = loss
  return loss, metrics


SFT = register(Objective("sft", sft_loss, defaults=DEFAULTS))
