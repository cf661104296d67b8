"""The critic (right lobe) as a reward model: BCE of true against generated answers (eq. 7),
optionally with Pavlovian Gradient Decay (§5.5).

    L_critic = -log Critic(x + y_true) - log(1 - Critic(x + x_left))          (eq. 7)

The critic reads prompt + answer ids (``critic_logits``); negatives are the left lobe's turns
from a no-gradient rollout under the current parameters. ``negatives``: "final" (the turn
where each example halted, eq. 7) or "all" (every turn). With ``pgd`` (§5.5):

- positives are the prefixes y_true[:k], k = 1..n (n = target_len, eos included), weighted
  C0·exp(-λ(n-k)): the whole answer gets C0;
- negatives are every turn k = 0..T (T = the turn where the example halted), weighted
  1 - C0·exp(-λ(T-k)): with C0 = 1 the last turn weighs 0 and earlier turns more. (This is
  the paper's formula; its prose says the opposite — "not penalize ... earlier iterations
  as much" — the formula is what is implemented.)

Per example, each class is the weighted mean over its samples (sum of w·BCE / count); the
loss is the mean over valid rows of (positive + negative), i.e. eq. 7 without PGD.
Prefix scores come from one causal pass: the score head read at every position.

Hyper-parameters: negatives ("final"), pgd (False), c0 (1.0), lam (0.1).
Rollout: ``sample`` under the current parameters. Reward: none. One update per batch.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from slnjax import lobes, sln
from slnjax.objectives.base import (Objective, batch_valid, hparams, register, sample)

DEFAULTS = {"negatives": "final", "pgd": False, "c0": 1.0, "lam": 0.1}


def require_critic(model: sln.SLN, who: str):
  if not model.spec.scored:
    raise ValueError(f"{who} needs a critic (a right lobe with a score head: kinds "
                     f"'lateralized', 'self_reflection', or 'tall' with right.score_head=True);"
                     f" kind {model.kind!r} has none.")


def join(prompt_ids_BP, prompt_len_B, ans_BM, ans_len_B):
  """ids [B,P+M]: each prompt's first prompt_len ids, then the answer's first ans_len ids,
  then 0; and their lengths [B]."""
  P, M = prompt_ids_BP.shape[1], ans_BM.shape[1]
  t_T = jnp.arange(P + M)
  j_BT = t_T[None, :] - prompt_len_B[:, None]
  from_prompt = prompt_ids_BP[:, jnp.clip(t_T, 0, P - 1)]
  from_ans = jnp.take_along_axis(ans_BM, jnp.clip(j_BT, 0, M - 1), axis=1)
  ids_BT = jnp.where(j_BT < 0, from_prompt, jnp.where(j_BT < ans_len_B[:, None], from_ans, 0))
  return ids_BT.astype(jnp.int32), (prompt_len_B + ans_len_B).astype(jnp.int32)


def critic_logits(model: sln.SLN, params_right, ids_BT, len_B):
  """The critic's score logit of each whole sequence ids[:len] [B]."""
  return lobes.apply(model.spec.right, params_right, ids=ids_BT, lengths=len_B)["score_logit_B"]


def prefix_logits(model: sln.SLN, params_right, ids_BT):
  """The critic's score logit of every prefix ids[:t+1], [B,T], from one causal pass
  (equals ``critic_logits`` with lengths t+1: the score head is read at position t)."""
  cfg = model.spec.right
  h_BTD = lobes.apply(cfg, params_right, ids=ids_BT)["hidden_BTD"]
  f = jnp.promote_types(cfg.compute_dtype, jnp.float32)
  return h_BTD.astype(f) @ params_right["score_w"].astype(f) + params_right["score_b"].astype(f)


def turn_logits(model: sln.SLN, params_right, rollout):
  """The critic's score logit of prompt + each turn of the left lobe [N,R] (valid ids only)."""
  ids_NRM, valid_NRM = rollout["left_ids_NBM"], rollout["left_valid_NBM"]
  N, R, _ = ids_NRM.shape
  rep = lambda a: jnp.broadcast_to(a[None], (N,) + a.shape).reshape((N * R,) + a.shape[1:])
  ids, lens = join(rep(rollout["prompt_ids"]), rep(rollout["prompt_len"]),
                   ids_NRM.reshape(N * R, -1), valid_NRM.sum(-1).reshape(N * R))
  return critic_logits(model, params_right, ids, lens).reshape(N, R)


def pgd_weight(dt, c0, lam):
  """Pavlovian conditioning strength C0·exp(-λ·ΔT) (eq. 9)."""
  return c0 * jnp.exp(-lam * dt)


def positive_terms(model, params_right, batch, hp):
  """Per-row positive BCE [B] and the whole answer's score logit [B]."""
  pl_B, tl_B = batch["prompt_len"], batch["target_len"]
  if hp["pgd"]:
    s_BT = prefix_logits(model, params_right, batch["ids"])
    k_BT = jnp.arange(s_BT.shape[1])[None, :] - pl_B[:, None] + 1  # prefix length
    use_BT = (k_BT >= 1) & (k_BT <= tl_B[:, None])
    w_BT = pgd_weight(tl_B[:, None] - k_BT, hp["c0"], hp["lam"])
    pos_B = (use_BT * w_BT * jax.nn.softplus(-s_BT)).sum(1) / jnp.maximum(tl_B, 1)
    full_B = jnp.take_along_axis(s_BT, (pl_B + tl_B - 1)[:, None], axis=1)[:, 0]
    return pos_B, full_B
  s_B = critic_logits(model, params_right, batch["ids"], pl_B + tl_B)
  return jax.nn.softplus(-s_B), s_B


def negative_terms(s_NR, rollout, hp):
  """Per-rollout-row negative BCE [R] from the turns' score logits."""
  N = s_NR.shape[0]
  turns_R = rollout["turns_B"]
  act_NR = rollout["active_NB"]
  n_N1 = jnp.arange(N)[:, None]
  bce_NR = jax.nn.softplus(s_NR)
  if hp["pgd"]:
    w_NR = 1.0 - pgd_weight(turns_R[None, :] - 1 - n_N1, hp["c0"], hp["lam"])
    return (act_NR * w_NR * bce_NR).sum(0) / jnp.maximum(turns_R, 1)
  if hp["negatives"] == "final":
    return ((n_N1 == turns_R[None, :] - 1) * bce_NR).sum(0)
  if hp["negatives"] == "all":
    return (act_NR * bce_NR).sum(0) / jnp.maximum(turns_R, 1)
  raise ValueError(f"critic negatives={hp['negatives']!r}; expected 'final' or 'all'.")


def critic_loss(model: sln.SLN, params_right, batch, rollout, hp):
  """Eq. 7 (or its PGD form) over the batch's true answers and the rollout's turns.
  hp: negatives, pgd, c0, lam. Returns (loss, metrics)."""
  v_B = batch_valid(batch)
  v_R = v_B[rollout["batch_row"]]
  pos_B, s_true_B = positive_terms(model, params_right, batch, hp)
  s_NR = turn_logits(model, params_right, rollout)
  neg_R = negative_terms(s_NR, rollout, hp)
  wmean = lambda x, w: (w * x).sum() / jnp.maximum(w.sum(), 1.0)
  loss = wmean(pos_B, v_B) + wmean(neg_R, v_R)
  fin_R = jnp.take_along_axis(s_NR, (rollout["turns_B"] - 1)[None, :], axis=0)[0]
  metrics = {"critic_loss": loss, "critic_true_score": wmean(jax.nn.sigmoid(s_true_B), v_B),
             "critic_fake_score": wmean(jax.nn.sigmoid(fin_R), v_R)}
  return loss, metrics


def critic_bce_loss(ctx, params, frozen, batch, rollout, rng):
  del frozen, rng
  hp = hparams(CRITIC_BCE, ctx.cfg)
  require_critic(ctx.model, "critic_bce")
  _, pr = sln.roles(ctx.model, params)
  loss, metrics = critic_loss(ctx.model, pr, batch, rollout, hp)
  metrics["loss"] = loss
  return loss, metrics


def critic_rollout(ctx, params, frozen, batch, rng):
  del frozen
  return sample(ctx, params, batch, rng)


CRITIC_BCE = register(Objective("critic_bce", critic_bce_loss, rollout_fn=critic_rollout,
                                defaults=DEFAULTS))
