"""PPO-clip for the left lobe rewarded by the critic (eq. 8, Alg. 2), with an optional KL
penalty to a frozen reference (eq. 2).

Every turn n of a rollout row is an action sequence rewarded by the critic's score of that
turn (Alg. 2 computes L_actor at each IDL iteration): A_n = r_n - baseline, every token of
the turn shares it. Per token, with the behaviour log-prob recorded by the rollout and the
current one from a teacher-forced replay (``loop.replay_logp``):

    ratio = exp(logp_θ - logp_old)
    L_clip = -mean_tokens min(ratio·A, clip(ratio, 1-ε, 1+ε)·A)                  (eq. 8)
    L = L_clip + kl_coef·KL(π_θ || π_ref) - ent_coef·H(π_θ) + critic_weight·L_critic

KL is the per-token k3 estimate exp(Δ) - Δ - 1, Δ = logp_ref - logp_θ at the sampled
tokens (>= 0, exactly 0 when θ = ref). L_critic is eq. 7 on the same rollout
(critic_bce.py), applied on the first epoch only (ctx.inner == 0): the critic is updated
once per batch, as in Alg. 2.

Hyper-parameters: clip_eps (0.2), inner_steps (4: PPO epochs over one rollout), kl_coef
(0.0), ent_coef (0.0), baseline ("none": eq. 8 uses the score itself; "mean": the mean
reward of the batch's turns), reward_turns ("each": a turn's own reward; "final": every
turn gets the final turn's), critic_weight (1.0), critic_negatives ("final").
Rollout: ``sample`` under the parameters before the epochs (the behaviour policy), loop.mode
one of hard / straight_through / gumbel_st. Frozen copy: "ref" (used when kl_coef > 0).
"ppo" rewards with the critic; "ppo_verifier" with the task verifier (rollout["reward_NB"]).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from slnjax.objectives import critic_bce
from slnjax.objectives.base import Objective, batch_valid, hparams, register, sample
from slnjax.objectives.reinforce import (add_critic_term, check_sampling, final_turn,
                                         replay, token_mask, turn_rewards)

DEFAULTS = {"clip_eps": 0.2, "inner_steps": 4, "kl_coef": 0.0, "ent_coef": 0.0,
            "baseline": "none", "reward_turns": "each", "critic_weight": 1.0,
            "critic_negatives": "final"}


def advantages(rollout, batch, reward: str, baseline: str, reward_turns: str):
  """Per-turn advantages [N,R] (0 where inactive) and the rewards used."""
  act_NR = rollout["active_NB"]
  r_NR = turn_rewards(rollout, reward)
  if reward_turns == "final":
    r_NR = jnp.where(act_NR, final_turn(r_NR, rollout["turns_B"])[None, :], 0.0)
  elif reward_turns != "each":
    raise ValueError(f"reward_turns={reward_turns!r}; expected 'each' or 'final'.")
  w_NR = act_NR * batch_valid(batch)[rollout["batch_row"]][None, :]
  if baseline == "mean":
    b = (w_NR * r_NR).sum() / jnp.maximum(w_NR.sum(), 1.0)
  elif baseline == "none":
    b = 0.0
  else:
    raise ValueError(f"baseline={baseline!r}; expected 'none' or 'mean'.")
  return jnp.where(act_NR, r_NR - b, 0.0), r_NR, w_NR


def clipped_surrogate(logp_NRM, logp_old_NRM, adv_NR, mask_NRM, eps):
  """-mean over mask of min(ratio·A, clip(ratio)·A); and ratio metrics."""
  ratio = jnp.exp(logp_NRM - jax.lax.stop_gradient(logp_old_NRM))
  a = jax.lax.stop_gradient(adv_NR)[..., None]
  surr = jnp.minimum(ratio * a, jnp.clip(ratio, 1.0 - eps, 1.0 + eps) * a)
  n = jnp.maximum(mask_NRM.sum(), 1.0)
  clipped = mask_NRM * (jnp.abs(ratio - 1.0) > eps)
  metrics = {"ratio_mean": (mask_NRM * ratio).sum() / n,
             "ratio_max": jnp.max(jnp.where(mask_NRM > 0, ratio, 0.0)),
             "clip_frac": clipped.sum() / n}
  return -(mask_NRM * surr).sum() / n, metrics


def kl_k3(logp_NRM, logp_ref_NRM, mask_NRM):
  d = jax.lax.stop_gradient(logp_ref_NRM) - logp_NRM
  return (mask_NRM * (jnp.exp(d) - d - 1.0)).sum() / jnp.maximum(mask_NRM.sum(), 1.0)


def _ppo_loss(name, reward):
  def loss_fn(ctx, params, frozen, batch, rollout, rng):
    del rng
    obj = PPO if reward == "critic" else PPO_VERIFIER
    hp = hparams(obj, ctx.cfg)
    model = ctx.model
    check_sampling(model, name)
    if reward == "critic":
      critic_bce.require_critic(model, f"{name} (reward: the critic's score)")
    mask_NRM = token_mask(rollout, batch)
    adv_NR, r_NR, w_NR = advantages(rollout, batch, reward, hp["baseline"], hp["reward_turns"])
    logp_NRM, ent_NRM = replay(model, params, rollout)
    pg, metrics = clipped_surrogate(logp_NRM, rollout["left_logp_NBM"], adv_NR, mask_NRM,
                                    hp["clip_eps"])
    n = jnp.maximum(mask_NRM.sum(), 1.0)
    ent = (mask_NRM * ent_NRM).sum() / n
    loss = pg - hp["ent_coef"] * ent
    metrics.update(pg_loss=pg, entropy=ent,
                   reward_mean=(w_NR * r_NR).sum() / jnp.maximum(w_NR.sum(), 1.0))
    if hp["kl_coef"]:
      if frozen is None or "ref" not in frozen:
        raise ValueError(f"{name} with kl_coef > 0 needs the frozen copy 'ref'.")
      logp_ref_NRM, _ = replay(model, frozen["ref"], rollout)
      kl = kl_k3(logp_NRM, logp_ref_NRM, mask_NRM)
      loss = loss + hp["kl_coef"] * kl
      metrics["kl"] = kl
    first = (jnp.asarray(ctx.inner) == 0).astype(loss.dtype)
    loss = add_critic_term(model, params, batch, rollout, hp, loss, metrics,
                           weight=hp["critic_weight"] * first)
    metrics["loss"] = loss
    return loss, metrics
  return loss_fn


def _ppo_rollout(ctx, params, frozen, batch, rng):
  del frozen
  check_sampling(ctx.model, "ppo")
  return sample(ctx, params, batch, rng)


PPO = register(Objective("ppo", _ppo_loss("ppo", "critic"), rollout_fn=_ppo_rollout,
                         reward="critic", inner_steps="inner_steps", frozen_copies=("ref",),
                         defaults=DEFAULTS))
PPO_VERIFIER = register(Objective(
    "ppo_verifier", _ppo_loss("ppo_verifier", "verifier"), rollout_fn=_ppo_rollout,
    reward="verifier", inner_steps="inner_steps", frozen_copies=("ref",), defaults=DEFAULTS))
