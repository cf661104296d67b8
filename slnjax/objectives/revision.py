"""Training later turns to revise: ``revision_sft`` and ``revision_rl``.

revision_sft (after Snell et al. 2024 and RISE, Qu et al. 2024). A rollout of the generator
as of the last refresh (frozen copy "prev", refreshed every ``refresh_every`` steps: the
traces are regenerated on-policy every K steps) runs all ``max_turns`` turns (the critic's
threshold is ignored; its scores are fed back as usual), and the verifier labels each turn.
Row r's training dialogue, built by ``revision_dialogue``:

  - turn 1 right:  [prompt] [correct answer]                       (kept, not revised)
  - turn 1 wrong:  [prompt] [wrong 1] s_1 ... [wrong k] s_k [correct answer]
    with k uniform in 0..min(max_wrong, max_turns - 1, the number of leading wrong turns):
    the wrong attempts are the rollout's own turns 1..k, token for token (all turn_len
    tokens, as the left lobe's cache holds them), each followed by the critic's score s_n
    that the rollout fed back.

The correct answer is batch["target_ids"] (the tokens SFT trains on, eos included) placed at
turn k+1. The dialogue is scored by the loop's own teacher-forced replay
(``loop.replay_logp``: every turn at the positions the loop writes it), and the loss is the
mean negative log-likelihood of the correct answer's target_len tokens only: the prompt,
the scores and the wrong attempts are context, never targets.

revision_rl (after SCoRe, Kumar et al. 2024): RLOO over ``samples`` rollouts per prompt under
the current parameters (the loop as configured, halting by the critic), with the verifier's
rewards r_1 (turn 1) and r_T (the turn where the loop halted):

    R = r_1 + r_T + α (r_T - r_1)
    L = -mean_r (R_r - b_r) log π(all left turns of r) + β KL_k3(π || π_ref on turn 1)

b_r: the mean return of the other samples of the same prompt (reinforce.rloo_baseline); the
KL is ppo.kl_k3 on turn 1's tokens against the frozen copy "ref" (the run's starting point).

Hyper-parameters: revision_sft max_wrong (3), refresh_every (1); revision_rl samples (4),
alpha (10.0), beta (0.1). Both need a critic (lateralized kinds) and a sampling loop.mode;
reward "verifier"; one update per rollout. Neither trains the critic.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from slnjax import loop, sln
from slnjax.objectives import critic_bce
from slnjax.objectives.base import (Objective, batch_valid, dialogue, hparams, register,
                                    sample)
from slnjax.objectives.ppo import kl_k3
from slnjax.objectives.reinforce import (check_sampling, final_turn, replay, rloo_baseline,
                                         token_mask, turn_rewards)

SFT_DEFAULTS = {"max_wrong": 3, "refresh_every": 1}
RL_DEFAULTS = {"samples": 4, "alpha": 10.0, "beta": 0.1}


def without_threshold(model: sln.SLN) -> sln.SLN:
  """The model whose loop runs every turn (critic threshold off; scores still fed back)."""
  spec = model.spec
  return dataclasses.replace(model, spec=dataclasses.replace(
      spec, loop=dataclasses.replace(spec.loop, threshold=None)))


def choose_wrong(reward_NR, active_NR, u_R, max_wrong: int):
  """The number of wrong attempts kept per row [R] (int32): 0 when turn 1 was right, else
  floor(u·(cap+1)) with cap = min(max_wrong, N - 1, leading wrong active turns); u in [0,1)."""
  N = reward_NR.shape[0]
  wrong_NR = (active_NR & (reward_NR < 0.5)).astype(jnp.int32)
  lead_R = jnp.cumprod(wrong_NR, axis=0).sum(0)
  cap_R = jnp.minimum(jnp.minimum(lead_R, max_wrong), N - 1)
  k_R = jnp.floor(u_R * (cap_R + 1)).astype(jnp.int32)
  return jnp.clip(k_R, 0, cap_R)


def revision_dialogue(rollout, target_ids_RM, target_len_R, k_R):
  """(Dialogue, loss mask [N,R,m]): rollout turns 1..k_R kept as written, the correct answer
  (the first target_len target_ids, then 0; those target_len tokens scored) at turn k_R + 1,
  nothing after (inactive turns: zeros)."""
  d = dialogue(rollout)
  N, R, m = d.left_ids_NBM.shape
  M = target_ids_RM.shape[1]
  if M > m:
    raise ValueError(f"revision_sft: the targets are {M} tokens wide but a turn holds "
                     f"turn_len={m}; set target_len <= model.loop.turn_len.")
  tgt_RM = jnp.pad(target_ids_RM.astype(d.left_ids_NBM.dtype), ((0, 0), (0, m - M)))
  tvalid_RM = jnp.arange(m)[None, :] < target_len_R[:, None]
  tgt_RM = jnp.where(tvalid_RM, tgt_RM, 0)
  n_N1 = jnp.arange(N)[:, None]
  keep_NR, final_NR = n_N1 < k_R[None, :], n_N1 == k_R[None, :]
  k3, f3 = keep_NR[..., None], final_NR[..., None]
  ids = jnp.where(k3, d.left_ids_NBM, jnp.where(f3, tgt_RM[None], 0))
  valid = jnp.where(k3, d.left_valid_NBM, f3 & tvalid_RM[None])
  zero = lambda x: jnp.where(keep_NR.reshape(keep_NR.shape + (1,) * (x.ndim - 2)), x, 0)
  new = d._replace(left_ids_NBM=ids, left_valid_NBM=valid, left_logp_NBM=zero(d.left_logp_NBM),
                   left_logp_target_NBM=zero(d.left_logp_target_NBM),
                   left_emb_NBMR=zero(d.left_emb_NBMR), score_NB=zero(d.score_NB),
                   score_logit_NB=zero(d.score_logit_NB), active_NB=keep_NR | final_NR,
                   turns_B=(k_R + 1).astype(d.turns_B.dtype))
  return new, (f3 & tvalid_RM[None]).astype(jnp.float32)


def _need_critic_and_sampling(model, who):
  check_sampling(model, who)
  critic_bce.require_critic(model, who)


def revision_sft_loss(ctx, params, frozen, batch, rollout, rng):
  del frozen
  hp = hparams(REVISION_SFT, ctx.cfg)
  model = ctx.model
  _need_critic_and_sampling(model, "revision_sft")
  row_R = rollout["batch_row"]
  r_NR = turn_rewards(rollout, "verifier")
  u_R = jax.random.uniform(rng, row_R.shape)
  k_R = choose_wrong(r_NR, rollout["active_NB"], u_R, int(hp["max_wrong"]))
  d, mask_NRM = revision_dialogue(rollout, jnp.asarray(batch["target_ids"])[row_R],
                                  jnp.asarray(batch["target_len"])[row_R], k_R)
  v_R = batch_valid(batch)[row_R]
  mask_NRM = mask_NRM * v_R[None, :, None]
  pl, _ = sln.roles(model, params)
  logp_NRM, _ = loop.replay_logp(model.spec, pl, rollout["prompt_ids"], rollout["prompt_len"], d)
  n_tok = jnp.maximum(mask_NRM.sum(), 1.0)
  nll = -(mask_NRM * logp_NRM).sum() / n_tok
  n = jnp.maximum(v_R.sum(), 1.0)
  wrong1_R = v_R * (1.0 - r_NR[0])
  later_R = (r_NR[1:].max(0) if r_NR.shape[0] > 1 else jnp.zeros_like(v_R)) * wrong1_R
  metrics = {"loss": nll, "nll": nll, "right_first": (v_R * r_NR[0]).sum() / n,
             "wrong_kept": (v_R * k_R).sum() / n,
             "revised_in_rollout": later_R.sum() / jnp.maximum(wrong1_R.sum(), 1.0)}
  return nll, metrics


def _sft_rollout(ctx, params, frozen, batch, rng):
  _need_critic_and_sampling(ctx.model, "revision_sft")
  src = params if frozen is None or "prev" not in frozen else frozen["prev"]
  return sample(dataclasses.replace(ctx, model=without_threshold(ctx.model)), src, batch, rng)


def rl_returns(r_NR, turns_R, alpha):
  """(R [R], r_1 [R], r_T [R]) with R = r_1 + r_T + α (r_T - r_1)."""
  r1_R, rT_R = r_NR[0], final_turn(r_NR, turns_R)
  return r1_R + rT_R + alpha * (rT_R - r1_R), r1_R, rT_R


def revision_rl_loss(ctx, params, frozen, batch, rollout, rng):
  del rng
  hp = hparams(REVISION_RL, ctx.cfg)
  model = ctx.model
  _need_critic_and_sampling(model, "revision_rl")
  R_R, r1_R, rT_R = rl_returns(turn_rewards(rollout, "verifier"), rollout["turns_B"],
                               hp["alpha"])
  B = batch["prompt_ids"].shape[0]
  adv_R = jax.lax.stop_gradient(R_R - rloo_baseline(R_R.reshape(B, -1)).reshape(-1))
  mask_NRM = token_mask(rollout, batch)
  logp_NRM, _ = replay(model, params, rollout)
  lp_R = (mask_NRM * logp_NRM).sum((0, 2))
  v_R = batch_valid(batch)[rollout["batch_row"]]
  n = jnp.maximum(v_R.sum(), 1.0)
  pg = -(v_R * adv_R * lp_R).sum() / n
  mean = lambda x: (v_R * x).sum() / n
  metrics = {"pg_loss": pg, "return_mean": mean(R_R), "reward_turn1": mean(r1_R),
             "reward_last": mean(rT_R), "turns_mean": mean(rollout["turns_B"]),
             "advantage_abs": mean(jnp.abs(adv_R))}
  loss = pg
  if hp["beta"]:
    if frozen is None or "ref" not in frozen:
      raise ValueError("revision_rl with beta > 0 needs the frozen copy 'ref'.")
    logp_ref_NRM, _ = replay(model, frozen["ref"], rollout)
    kl = kl_k3(logp_NRM[:1], logp_ref_NRM[:1], mask_NRM[:1])
    loss = loss + hp["beta"] * kl
    metrics["kl_turn1"] = kl
  metrics["loss"] = loss
  return loss, metrics


def _rl_rollout(ctx, params, frozen, batch, rng):
  del frozen
  _need_critic_and_sampling(ctx.model, "revision_rl")
  return sample(ctx, params, batch, rng, repeat=int(hparams(REVISION_RL, ctx.cfg)["samples"]))


REVISION_SFT = register(Objective("revision_sft", revision_sft_loss, rollout_fn=_sft_rollout,
                                  reward="verifier", frozen_copies=("prev",),
                                  defaults=SFT_DEFAULTS))
REVISION_RL = register(Objective("revision_rl", revision_rl_loss, rollout_fn=_rl_rollout,
                                 reward="verifier", frozen_copies=("ref",),
                                 defaults=RL_DEFAULTS))
