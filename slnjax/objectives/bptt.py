"""End-to-end training through soft tokens (eq. 3-4), with truncated BPTT.

The whole inner dialogue is unrolled differentiably (``sln.unroll``: tokens passed as
soft / straight-through / Gumbel tokens per loop.mode; gradient through the last
loop.bptt_depth = k turns before each example halts). At every position i of every turn the
loop records log p(target_i) given the model's own previous tokens; the loss is the
cross-entropy of the turn where each example halted:

    L = -mean_{b, i < target_len_b} log p_left(y_true[b, i] | x, dialogue so far)

Both lobes learn from it where the left lobe reads them (the critic's score feedback, a
tall right lobe's turns). ``critic_weight`` > 0 adds the critic's eq. 7 with the unrolled
turns as negatives (critic_bce.py).

With a memory (model.memory): the selection is read once per dialogue (base.read_memory);
"soft" / "gumbel_st" learn the selector through the prefix the lobes read, "sample" by
REINFORCE on its log-prob with the reward -CE per token of the example (batch-mean
baseline).

target_ids [B,M] needs M <= loop.turn_len (one turn is a whole answer); shorter targets are
padded. Hyper-parameters: critic_weight (0.0), critic_negatives ("final").
No rollout, reward or frozen copy; one update per batch.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from slnjax import memory, sln
from slnjax.objectives import critic_bce
from slnjax.objectives.base import (Objective, batch_valid, hparams, make_rollout,
                                    memory_metrics, read_memory, register)

DEFAULTS = {"critic_weight": 0.0, "critic_negatives": "final"}


def target_for_turn(model: sln.SLN, batch):
  """target_ids padded to [B, turn_len], and the target lengths."""
  m = model.spec.loop.turn_len
  t_BM = batch["target_ids"]
  M = t_BM.shape[1]
  if M > m:
    raise ValueError(f"bptt: target_ids are {M} tokens wide but a turn is loop.turn_len={m} "
                     f"tokens: set the task's target length to at most turn_len (or raise "
                     f"turn_len).")
  return jnp.pad(t_BM, ((0, 0), (0, m - M))), batch["target_len"]


def bptt_loss(ctx, params, frozen, batch, rollout, rng):
  del frozen, rollout
  hp = hparams(BPTT, ctx.cfg)
  model = ctx.model
  if model.spec.loop.bptt_depth == 0:
    raise ValueError("bptt with loop.bptt_depth=0 has no gradient: use None (full) or k > 0.")
  target_BM, tl_B = target_for_turn(model, batch)
  mem = read_memory(ctx, params, batch, rng)
  d = sln.unroll(model, params, batch["prompt_ids"], batch["prompt_len"], rng, ctx.tau,
                 target_BM, memory=mem)
  lp_BM = jnp.take_along_axis(d.left_logp_target_NBM, (d.turns_B - 1)[None, :, None],
                              axis=0)[0]
  v_B = batch_valid(batch)
  mask_BM = (jnp.arange(target_BM.shape[1])[None, :] < tl_B[:, None]) * v_B[:, None]
  ce = -(mask_BM * lp_BM).sum() / jnp.maximum(mask_BM.sum(), 1.0)
  n = jnp.maximum(v_B.sum(), 1.0)
  metrics = {"ce": ce, "turns_mean": (v_B * d.turns_B).sum() / n,
             "final_score": (v_B * d.final_score_B).sum() / n,
             **memory_metrics(mem, batch, weight_R=v_B)}
  loss = ce
  if mem is not None and model.memory.mode == "sample":
    ce_B = -(mask_BM * lp_BM).sum(1) / jnp.maximum(mask_BM.sum(1), 1.0)
    pg = memory.reinforce_loss(mem.sel.logp_B, jax.lax.stop_gradient(-ce_B), weight_B=v_B)
    loss, metrics["memory_pg"] = loss + pg, pg
  if hp["critic_weight"]:
    critic_bce.require_critic(model, "bptt with critic_weight > 0")
    ro = make_rollout(jax.tree.map(jax.lax.stop_gradient, d), batch["prompt_ids"],
                      batch["prompt_len"], jnp.arange(tl_B.shape[0], dtype=jnp.int32))
    _, pr = sln.roles(model, params)
    c_loss, c_metrics = critic_bce.critic_loss(
        model, pr, batch, ro, {**critic_bce.DEFAULTS, "negatives": hp["critic_negatives"]})
    loss = loss + hp["critic_weight"] * c_loss
    metrics.update(c_metrics)
  metrics["loss"] = loss
  return loss, metrics


BPTT = register(Objective("bptt", bptt_loss, defaults=DEFAULTS, memory=True))
