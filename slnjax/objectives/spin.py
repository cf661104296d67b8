"""SPIN (Alg. 3): self-play fine-tuning of the left lobe against its previous iterate, with
self-generated negatives from every loop turn; the right lobe trained by BCE on the same data.

The previous iterate θ_t (frozen copy "prev", refreshed every ``refresh_every`` steps by the
train loop) plays the whole dialogue (``rollout_fn``); every turn y'_n it wrote is a
negative for the true answer y of the same prompt (Alg. 3 lines 3-10). Sequences are scored
as answers to the prompt alone (teacher-forced, temperature 1):

    t_n = λ·[log p_θ(y|x)/p_prev(y|x) - log p_θ(y'_n|x)/p_prev(y'_n|x)]
    L_left  = mean_{b, active n} ℓ(t_n),   ℓ(t) = log(1 + e^{-t})                (line 11)
    L_right = eq. 7 over the true answers and every turn ("all" negatives)        (line 12)
    loss = L_left + critic_weight·L_right     (the critic term only when the model has one)

Line 11 prints σ(·) inside the argmin; the SPIN loss it cites is the logistic loss ℓ, used
here. At θ = θ_prev every t_n = 0 and L_left = log 2.

Hyper-parameters: lam (0.1), refresh_every (500), critic_weight (1.0).
Rollout: ``sample`` under frozen["prev"] (both lobes). Frozen copy: "prev".
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from slnjax import sln
from slnjax.objectives import critic_bce
from slnjax.objectives.base import Objective, batch_valid, hparams, register, sample
from slnjax.objectives.sft import token_logp

DEFAULTS = {"lam": 0.1, "refresh_every": 500, "critic_weight": 1.0}


def seq_logp(model, params_left, ids_BT, mask_BT):
  """Σ over mask of log p(ids[t] | ids[<t]) under the left lobe [B]."""
  return (mask_BT * token_logp(model.spec.left, params_left, ids_BT)).sum(1)


def fake_sequences(rollout):
  """Every turn joined to its prompt: ids [N*R, P+M], answer mask, in turn-major order."""
  ids_NRM, valid_NRM = rollout["left_ids_NBM"], rollout["left_valid_NBM"]
  N, R, M = ids_NRM.shape
  rep = lambda a: jnp.broadcast_to(a[None], (N,) + a.shape).reshape((N * R,) + a.shape[1:])
  p_len = rep(rollout["prompt_len"])
  ids, lens = critic_bce.join(rep(rollout["prompt_ids"]), p_len, ids_NRM.reshape(N * R, M),
                              valid_NRM.sum(-1).reshape(N * R))
  t = jnp.arange(ids.shape[1])[None, :]
  return ids, (t >= p_len[:, None]) & (t < lens[:, None])


def spin_left(model, params, prev, batch, rollout, lam):
  """(L_left, t_NR margins)."""
  pl, _ = sln.roles(model, params)
  pl_prev = jax.lax.stop_gradient(sln.roles(model, prev)[0])
  real_mask = batch["loss_mask"]
  real = seq_logp(model, pl, batch["ids"], real_mask) - seq_logp(model, pl_prev, batch["ids"],
                                                                  real_mask)
  f_ids, f_mask = fake_sequences(rollout)
  N, R = rollout["active_NB"].shape
  fake = (seq_logp(model, pl, f_ids, f_mask) - seq_logp(model, pl_prev, f_ids, f_mask))
  t_NR = lam * (real[rollout["batch_row"]][None, :] - fake.reshape(N, R))
  w_NR = rollout["active_NB"] * batch_valid(batch)[rollout["batch_row"]][None, :]
  loss = (w_NR * jax.nn.softplus(-t_NR)).sum() / jnp.maximum(w_NR.sum(), 1.0)
  return loss, t_NR


def spin_loss(ctx, params, frozen, batch, rollout, rng):
  del rng
  hp = hparams(SPIN, ctx.cfg)
  model = ctx.model
  if frozen is None or "prev" not in frozen:
    raise ValueError("spin needs the frozen copy 'prev' (the previous iterate).")
  left, t_NR = spin_left(model, params, frozen["prev"], batch, rollout, hp["lam"])
  act = rollout["active_NB"]
  metrics = {"spin_loss": left,
             "margin": (act * t_NR).sum() / jnp.maximum(act.sum(), 1.0)}
  loss = left
  if hp["critic_weight"] and model.spec.scored:
    _, pr = sln.roles(model, params)
    c_loss, c_metrics = critic_bce.critic_loss(model, pr, batch, rollout,
                                               {**critic_bce.DEFAULTS, "negatives": "all"})
    loss = loss + hp["critic_weight"] * c_loss
    metrics.update(c_metrics)
  metrics["loss"] = loss
  return loss, metrics


def spin_rollout(ctx, params, frozen, batch, rng):
  del params
  return sample(ctx, frozen["prev"], batch, rng)


SPIN = register(Objective("spin", spin_loss, rollout_fn=spin_rollout, frozen_copies=("prev",),
                          defaults=DEFAULTS))
