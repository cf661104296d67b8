"""Actor-critic with an external reward and a TD error (the note after eq. 8 / Alg. 2).

With the task verifier's reward r_n of turn n (rollout["reward_NB"], filled by the train
loop), the critic's score ŷ_true = Critic(x + y_true) and ŷ_n = Critic(x + x_left^n):

    δ_n = r_n + γ·ŷ_true - ŷ_n                                      (step 4)
    critic: θ_c += α δ_n ∇ŷ_n      -> loss  -sg(δ_n)·ŷ_n              (step 5, semi-gradient)
            plus bce_weight · eq. 7 on the same data                  (step 3)
    actor:  ∇J = ∇log π(x_left^n | ·) δ_n  -> loss -sg(δ_n)·logp     (steps 6-7)

Means are over the active turns (critic) and over the left lobe's valid tokens (actor; every
token of turn n carries δ_n). ŷ_true and ŷ_n are recomputed with gradient under the
current critic (critic_bce.critic_logits on prompt + answer ids).

Hyper-parameters: gamma (0.99), td_weight (1.0), bce_weight (1.0), critic_negatives ("all").
Rollout: ``sample`` under the current parameters (loop.mode hard / straight_through /
gumbel_st). Reward: "verifier". One update per rollout.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from slnjax import sln
from slnjax.objectives import critic_bce
from slnjax.objectives.base import Objective, batch_valid, hparams, register, sample
from slnjax.objectives.reinforce import check_sampling, replay, token_mask, turn_rewards

DEFAULTS = {"gamma": 0.99, "td_weight": 1.0, "bce_weight": 1.0, "critic_negatives": "all"}


def td_terms(model, params, batch, rollout, gamma):
  """(δ [N,R] (0 where inactive), ŷ_n [N,R], ŷ_true [B]) with gradient to the critic."""
  _, pr = sln.roles(model, params)
  s_true_B = critic_bce.critic_logits(model, pr, batch["ids"],
                                      batch["prompt_len"] + batch["target_len"])
  s_NR = critic_bce.turn_logits(model, pr, rollout)
  y_true_B, y_NR = jax.nn.sigmoid(s_true_B), jax.nn.sigmoid(s_NR)
  r_NR = turn_rewards(rollout, "verifier")
  delta_NR = r_NR + gamma * y_true_B[rollout["batch_row"]][None, :] - y_NR
  return jnp.where(rollout["active_NB"], delta_NR, 0.0), y_NR, y_true_B


def td_loss(ctx, params, frozen, batch, rollout, rng):
  del frozen, rng
  hp = hparams(ACTOR_CRITIC_TD, ctx.cfg)
  model = ctx.model
  check_sampling(model, "actor_critic_td")
  critic_bce.require_critic(model, "actor_critic_td")
  delta_NR, y_NR, _ = td_terms(model, params, batch, rollout, hp["gamma"])
  d_NR = jax.lax.stop_gradient(delta_NR)
  w_NR = rollout["active_NB"] * batch_valid(batch)[rollout["batch_row"]][None, :]
  critic_td = -(w_NR * d_NR * y_NR).sum() / jnp.maximum(w_NR.sum(), 1.0)
  mask_NRM = token_mask(rollout, batch)
  logp_NRM, _ = replay(model, params, rollout)
  actor = -(mask_NRM * d_NR[..., None] * logp_NRM).sum() / jnp.maximum(mask_NRM.sum(), 1.0)
  _, pr = sln.roles(model, params)
  bce, metrics = critic_bce.critic_loss(
      model, pr, batch, rollout, {**critic_bce.DEFAULTS, "negatives": hp["critic_negatives"]})
  loss = actor + hp["td_weight"] * critic_td + hp["bce_weight"] * bce
  metrics.update(loss=loss, actor_loss=actor, critic_td=critic_td,
                 td_error=(w_NR * d_NR).sum() / jnp.maximum(w_NR.sum(), 1.0),
                 reward_mean=(w_NR * turn_rewards(rollout, "verifier")).sum()
                 / jnp.maximum(w_NR.sum(), 1.0))
  return loss, metrics


def _td_rollout(ctx, params, frozen, batch, rng):
  del frozen
  check_sampling(ctx.model, "actor_critic_td")
  return sample(ctx, params, batch, rng)


ACTOR_CRITIC_TD = register(Objective("actor_critic_td", td_loss, rollout_fn=_td_rollout,
                                     reward="verifier", defaults=DEFAULTS))
