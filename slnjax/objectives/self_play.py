"""Actor-critic with self-play (§5.4): the actor plays on one batch until the critic is
satisfied.

Per batch the train loop runs up to ``inner_steps`` updates (the step limit) and stops early
when ``inner_done(metrics)`` holds. Each inner update:

  (b) samples x_left ~ Actor(x) afresh (a no-gradient rollout inside the loss, from ``rng``:
      the train loop must give each inner step its own rng),
  (c) reads ŷ_right, the critic's score of each turn (recorded by the rollout),
  (d) takes the policy gradient ∇log π(x_left | ·)·(ŷ_right - baseline), per token of each
      turn (mean over the left lobe's valid tokens),
  1.  and on the first inner step only (ctx.inner == 0) adds the critic's eq. 7 on the same
      sample (the critic is updated once per batch, the actor many times).

metrics["satisfied"] is 1.0 when the mean final score of the batch's fresh sample reached
``threshold`` (None: loop.threshold, or 0.5 without one); ``inner_done`` reads it. The
sample is drawn before the update, so the step that sees a satisfied critic still updates.

Hyper-parameters: inner_steps (8), threshold (None), baseline ("none": (d) uses ŷ_right
itself; "mean"), reward_turns ("each"), critic_weight (1.0), critic_negatives ("final").
No rollout_fn (the loss samples). Reward: the critic. loop.mode hard / straight_through /
gumbel_st.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from slnjax.objectives import critic_bce
from slnjax.objectives.base import Objective, batch_valid, hparams, register, sample
from slnjax.objectives.ppo import advantages
from slnjax.objectives.reinforce import add_critic_term, check_sampling, replay, token_mask

DEFAULTS = {"inner_steps": 8, "threshold": None, "baseline": "none", "reward_turns": "each",
            "critic_weight": 1.0, "critic_negatives": "final"}


def threshold_of(model, hp) -> float:
  if hp["threshold"] is not None:
    return float(hp["threshold"])
  t = model.spec.loop.threshold
  return 0.5 if t is None else float(t)


def self_play_loss(ctx, params, frozen, batch, rollout, rng):
  del frozen, rollout
  hp = hparams(SELF_PLAY, ctx.cfg)
  model = ctx.model
  check_sampling(model, "self_play")
  critic_bce.require_critic(model, "self_play")
  ro = sample(ctx, params, batch, rng)
  mask_NRM = token_mask(ro, batch)
  adv_NR, r_NR, w_NR = advantages(ro, batch, "critic", hp["baseline"], hp["reward_turns"])
  reward = (w_NR * r_NR).sum() / jnp.maximum(w_NR.sum(), 1.0)
  logp_NRM, ent_NRM = replay(model, params, ro)
  pg = -(mask_NRM * jax.lax.stop_gradient(adv_NR)[..., None] * logp_NRM).sum() / jnp.maximum(
      mask_NRM.sum(), 1.0)
  v_B = batch_valid(batch)
  score = (v_B * ro["final_score_B"]).sum() / jnp.maximum(v_B.sum(), 1.0)
  metrics = {"pg_loss": pg, "score_mean": score, "reward_mean": reward,
             "satisfied": (score >= threshold_of(model, hp)).astype(jnp.float32),
             "entropy": (mask_NRM * ent_NRM).sum() / jnp.maximum(mask_NRM.sum(), 1.0),
             "turns_mean": (v_B * ro["turns_B"]).sum() / jnp.maximum(v_B.sum(), 1.0)}
  first = (jnp.asarray(ctx.inner) == 0).astype(pg.dtype)
  loss = add_critic_term(model, params, batch, ro, hp, pg, metrics,
                         weight=hp["critic_weight"] * first)
  metrics["loss"] = loss
  return loss, metrics


def critic_satisfied(metrics) -> jax.Array:
  """Traced: the train loop evaluates it inside the jitted step."""
  return metrics["satisfied"] > 0.5


SELF_PLAY = register(Objective("self_play", self_play_loss, reward="critic",
                               inner_steps="inner_steps", inner_done=critic_satisfied,
                               defaults=DEFAULTS))
