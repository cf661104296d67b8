"""The critic (right lobe) as a verifier: BCE on the task verifier's label of on-policy turns.

Unlike eq. 7 (critic_bce.py: every generated turn labelled fake), each turn the left lobe
wrote in a no-gradient rollout under the current parameters is labelled by the task
verifier (rollout["reward_NB"], 1.0 right / 0.0 wrong, filled by the train loop):

    L = mean over active turns n and valid rows r of  BCE(Critic(x_r + x_left^n_r), r_n)

so the critic learns to predict whether a turn is right, and the loop can halt on its score.
Its threshold τ for a wanted precision is chosen afterwards on validation
(slnjax.evaluate's report: the critic's precision/recall and the threshold for precision
≥ 0.99). The left lobe gets no gradient from this loss.

Hyper-parameters: samples (1: rollout rows per prompt).
Rollout: ``sample`` under the current parameters (loop.mode hard / straight_through /
gumbel_st). Reward: "verifier". One update per rollout.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from slnjax import sln
from slnjax.objectives import critic_bce
from slnjax.objectives.base import Objective, batch_valid, hparams, register, sample
from slnjax.objectives.reinforce import check_sampling, turn_rewards

DEFAULTS = {"samples": 1}


def verifier_bce(s_NR, y_NR, w_NR):
  """(weighted mean BCE of logits s against labels y, metrics) over the weights w [N,R]."""
  bce_NR = y_NR * jax.nn.softplus(-s_NR) + (1.0 - y_NR) * jax.nn.softplus(s_NR)
  n = jnp.maximum(w_NR.sum(), 1.0)
  loss = (w_NR * bce_NR).sum() / n
  agree_NR = (s_NR >= 0.0) == (y_NR > 0.5)
  pos_NR, neg_NR = w_NR * y_NR, w_NR * (1.0 - y_NR)
  score_NR = jax.nn.sigmoid(s_NR)
  metrics = {"critic_loss": loss, "critic_acc": (w_NR * agree_NR).sum() / n,
             "right_share": pos_NR.sum() / n,
             "critic_score_right": (pos_NR * score_NR).sum() / jnp.maximum(pos_NR.sum(), 1.0),
             "critic_score_wrong": (neg_NR * score_NR).sum() / jnp.maximum(neg_NR.sum(), 1.0)}
  return loss, metrics


def verifier_critic_loss(ctx, params, frozen, batch, rollout, rng):
  del frozen, rng
  hparams(VERIFIER_CRITIC, ctx.cfg)
  model = ctx.model
  critic_bce.require_critic(model, "verifier_critic")
  _, pr = sln.roles(model, params)
  s_NR = critic_bce.turn_logits(model, pr, rollout)
  y_NR = turn_rewards(rollout, "verifier")
  w_NR = rollout["active_NB"] * batch_valid(batch)[rollout["batch_row"]][None, :]
  loss, metrics = verifier_bce(s_NR, y_NR, w_NR)
  metrics["loss"] = loss
  return loss, metrics


def _rollout(ctx, params, frozen, batch, rng):
  del frozen
  check_sampling(ctx.model, "verifier_critic")
  return sample(ctx, params, batch, rng, repeat=int(hparams(VERIFIER_CRITIC, ctx.cfg)["samples"]))


VERIFIER_CRITIC = register(Objective("verifier_critic", verifier_critic_loss,
                                     rollout_fn=_rollout, reward="verifier", defaults=DEFAULTS))
