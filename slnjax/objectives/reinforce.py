"""REINFORCE and RLOO: the plain score-function reference for the left lobe.

A trajectory is one rollout row: every turn the left lobe wrote. Its return R is the reward
of the turn where the example halted (the answer), its log-probability the sum of the
left lobe's log-probs of its valid tokens (teacher-forced replay, ``loop.replay_logp``):

    L = -mean_r  (R_r - b_r) · log π(trajectory_r | x_r)

- "reinforce": b = the batch mean of R (``baseline``="mean") or 0 ("none").
- "rloo": each prompt is sampled ``samples`` = K times; b_r is the mean return of the other
  K-1 samples of the same prompt (leave-one-out: the sample itself is excluded).

Rewards: "reinforce" / "rloo" use the critic's score of the final turn (recorded in the
rollout); "reinforce_verifier" / "rloo_verifier" use the task verifier (the train loop
fills rollout["reward_NB"]). With a critic in the model, ``critic_weight`` > 0 also trains
it by eq. 7 on the same rollout (critic_bce.py), as Alg. 2 trains both lobes together.

Hyper-parameters: baseline ("mean", reinforce), samples (4, rloo), critic_weight (1.0),
critic_negatives ("final"). Rollout: ``sample`` under the current parameters in a sampling
token mode (hard, straight_through, gumbel_st). One update per rollout.

Helpers shared by the other score-function objectives (ppo, self_play, actor_critic_td)
live here too.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from slnjax import loop, sln
from slnjax.objectives import critic_bce
from slnjax.objectives.base import (Objective, batch_valid, dialogue, hparams, memory_metrics,
                                    read_memory, register, sample)

SAMPLING_MODES = ("hard", "straight_through", "gumbel_st")  # exact one-hot tokens forward


def check_sampling(model: sln.SLN, who: str):
  mode = model.spec.loop.mode
  if mode not in SAMPLING_MODES:
    raise ValueError(f"{who} is a score-function method: the rollout must sample tokens whose "
                     f"log-probs the replay can score, but loop.mode={mode!r}. Set loop.mode "
                     f"to one of {SAMPLING_MODES}.")


def turn_rewards(rollout, reward: str):
  """Reward of each turn [N,R] (0 where inactive): the critic's recorded score, or the
  verifier's rollout["reward_NB"]."""
  act_NR = rollout["active_NB"]
  if reward == "critic":
    r_NR = rollout["score_NB"]
  elif reward == "verifier":
    if "reward_NB" not in rollout:
      raise ValueError("This objective's reward is 'verifier': the train loop must fill "
                       "rollout['reward_NB'] [N,R] (the task verifier on each turn) before "
                       "calling the loss.")
    r_NR = rollout["reward_NB"]
  else:
    raise ValueError(f"reward={reward!r}; expected 'critic' or 'verifier'.")
  return jnp.where(act_NR, jax.lax.stop_gradient(r_NR), 0.0)


def final_turn(x_NR, turns_R):
  """The value at the turn where each row halted [R]."""
  return jnp.take_along_axis(x_NR, (turns_R - 1)[None, :], axis=0)[0]


def token_mask(rollout, batch):
  """[N,R,M] float: tokens the left lobe wrote (active turn, valid token, valid row)."""
  v_R = batch_valid(batch)[rollout["batch_row"]]
  m = rollout["active_NB"][..., None] & rollout["left_valid_NBM"]
  return m * v_R[None, :, None]


def replay(model: sln.SLN, params, rollout, mem=None):
  """Teacher-forced (logp_NRM, entropy_NRM) of the rollout's left turns under ``params``
  (``mem``: the replayed memory read, whose left prefix the left lobe reads first)."""
  pl, _ = sln.roles(model, params)
  return loop.replay_logp(model.spec, pl, rollout["prompt_ids"], rollout["prompt_len"],
                          dialogue(rollout), memory_prefix=None if mem is None else mem.prefix)


def replay_memory(ctx, params, batch, rollout, rng, who: str):
  """The rollout's recorded memory choice under the current selector (one-hot prefix and
  its log-prob), or None without memory. The choice must be a sample of the selector's
  Plackett-Luce policy (mode "sample" or "gumbel_st") for the score function to hold."""
  model = ctx.model
  if model.memory is None:
    return None
  if model.memory.mode not in ("sample", "gumbel_st"):
    raise ValueError(f"{who} learns the memory selector by its log-prob: model.memory.mode="
                     f"{model.memory.mode!r} is not a sample of it; use 'sample' (or "
                     "'gumbel_st').")
  return read_memory(ctx, params, batch, rng, rollout["batch_row"],
                     (rollout["memory_index"], rollout["memory_valid"]))


def add_critic_term(model, params, batch, rollout, hp, loss, metrics, weight=None):
  """loss + critic_weight · eq. 7 on this rollout, when the model has a critic."""
  weight = hp["critic_weight"] if weight is None else weight
  if not hp["critic_weight"] or not model.spec.scored:
    return loss
  _, pr = sln.roles(model, params)
  c_loss, c_metrics = critic_bce.critic_loss(
      model, pr, batch, rollout, {**critic_bce.DEFAULTS, "negatives": hp["critic_negatives"]})
  metrics.update(c_metrics)
  return loss + weight * c_loss


def rloo_baseline(R_BK):
  """Leave-one-out mean of the other K-1 returns of the same prompt [B,K]."""
  K = R_BK.shape[1]
  if K < 2:
    raise ValueError("RLOO needs samples >= 2 per prompt.")
  return (R_BK.sum(1, keepdims=True) - R_BK) / (K - 1)


def _score_function_loss(name, reward, loo):
  def loss_fn(ctx, params, frozen, batch, rollout, rng):
    del frozen
    hp = hparams(REGISTRY_LOCAL[name], ctx.cfg)
    model = ctx.model
    check_sampling(model, name)
    if reward == "critic":
      critic_bce.require_critic(model, f"{name} (reward: the critic's score)")
    R_R = final_turn(turn_rewards(rollout, reward), rollout["turns_B"])
    mask_NRM = token_mask(rollout, batch)
    mem = replay_memory(ctx, params, batch, rollout, rng, name)
    logp_NRM, ent_NRM = replay(model, params, rollout, mem)
    lp_R = (mask_NRM * logp_NRM).sum((0, 2))
    if mem is not None:  # the trajectory includes the memory choice
      lp_R = lp_R + mem.sel.logp_B
    v_R = batch_valid(batch)[rollout["batch_row"]]
    if loo:
      B = batch["prompt_ids"].shape[0]
      b_R = rloo_baseline(R_R.reshape(B, -1)).reshape(-1)
    elif hp["baseline"] == "mean":
      b_R = jnp.full_like(R_R, (v_R * R_R).sum() / jnp.maximum(v_R.sum(), 1.0))
    elif hp["baseline"] == "none":
      b_R = jnp.zeros_like(R_R)
    else:
      raise ValueError(f"{name} baseline={hp['baseline']!r}; expected 'mean' or 'none'.")
    adv_R = jax.lax.stop_gradient(R_R - b_R)
    n = jnp.maximum(v_R.sum(), 1.0)
    pg = -(v_R * adv_R * lp_R).sum() / n
    metrics = {"pg_loss": pg, "reward_mean": (v_R * R_R).sum() / n,
               "advantage_abs": (v_R * jnp.abs(adv_R)).sum() / n,
               "entropy": (mask_NRM * ent_NRM).sum() / jnp.maximum(mask_NRM.sum(), 1.0),
               "turns_mean": (v_R * rollout["turns_B"]).sum() / n,
               **memory_metrics(mem, batch, rollout["batch_row"], v_R)}
    loss = add_critic_term(model, params, batch, rollout, hp, pg, metrics)
    metrics["loss"] = loss
    return loss, metrics
  return loss_fn


def _rollout_fn(name):
  def fn(ctx, params, frozen, batch, rng):
    del frozen
    check_sampling(ctx.model, name)
    hp = hparams(REGISTRY_LOCAL[name], ctx.cfg)
    return sample(ctx, params, batch, rng, repeat=hp.get("samples", 1))
  return fn


_COMMON = {"critic_weight": 1.0, "critic_negatives": "final"}
REGISTRY_LOCAL = {}
for _name, _reward, _loo in (("reinforce", "critic", False), ("reinforce_verifier", "verifier", False),
                             ("rloo", "critic", True), ("rloo_verifier", "verifier", True)):
  _defaults = {**_COMMON, **({"samples": 4} if _loo else {"baseline": "mean"})}
  REGISTRY_LOCAL[_name] = register(Objective(
      _name, _score_function_loss(_name, _reward, _loo), rollout_fn=_rollout_fn(_name),
      reward=_reward, defaults=_defaults, memory=True))
