"""GAN (Alg. 1): the left lobe generates through soft tokens, the right lobe discriminates.

G(x) is the left lobe's turn where each example halted, from a differentiable unroll of the
dialogue (eq. 5: soft / straight-through / Gumbel tokens, loop.mode), as the right lobe
receives it (embeddings in the right lobe's space). D reads prompt + answer and gives
D = sigmoid(score logit). One scalar loss, with stop-gradients so each lobe learns only
its part:

    d_term = -mean_b [log D(x + y_true) + log(1 - D(x + sg(G(x))))]     (Alg. 1 line 4)
    g_term =  mean_b log(1 - D_sg(x + G(x)))      ("saturating", Alg. 1 line 5)
           or -mean_b log D_sg(x + G(x))           ("non_saturating")
    loss = d_weight·d_term + g_weight·g_term

D_sg has stop-gradient parameters; the unroll runs the right lobe with stop-gradient
parameters too (the generator learns through the critic's score feedback, the critic does
not learn from it). With one shared lobe (self_reflection) each role's gradient still reaches
only its own terms. In mode "soft" / "gumbel" the fakes are soft mixtures while the
positives are exact one-hot tokens (a tell a discriminator can learn); straight_through /
gumbel_st give exact one-hot fakes.

Hyper-parameters: generator_loss ("saturating"), d_weight (1.0), g_weight (1.0).
No rollout, reward or frozen copy; one update per batch.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from slnjax import lobes, loop, sln, soft_tokens
from slnjax.objectives import critic_bce
from slnjax.objectives.base import Objective, batch_valid, hparams, register

DEFAULTS = {"generator_loss": "saturating", "d_weight": 1.0, "g_weight": 1.0}


def fake_logits(model: sln.SLN, params_right, prompt_ids_BP, prompt_len_B, e_BMR, len_B):
  """D's score logit of prompt + an embedded turn (its first len_B tokens) [B]."""
  rc = model.spec.right
  x_BPR = lobes.embed_ids(rc, params_right, prompt_ids_BP)
  x_BSR = jnp.concatenate([x_BPR, jnp.zeros_like(x_BPR[:, :e_BMR.shape[1]])], axis=1)
  put = jax.vmap(lambda x, u, s: jax.lax.dynamic_update_slice_in_dim(x, u, s, axis=0))
  x_BSR = put(x_BSR, e_BMR.astype(x_BSR.dtype), prompt_len_B)
  out = lobes.apply(rc, params_right, embeds=x_BSR, lengths=prompt_len_B + len_B)
  return out["score_logit_B"]


def gan_terms(ctx, params, batch, rng):
  """(d_term, g_term, metrics)."""
  hp = hparams(GAN, ctx.cfg)
  model = ctx.model
  critic_bce.require_critic(model, "gan")
  L = model.spec.loop
  if L.mode in soft_tokens.HARD_MODES or L.bptt_depth == 0:
    raise ValueError(f"gan trains the generator through its tokens: loop.mode={L.mode!r}, "
                     f"bptt_depth={L.bptt_depth} give no gradient. Use mode soft, "
                     f"straight_through, gumbel or gumbel_st and bptt_depth None or k > 0.")
  pl, pr = sln.roles(model, params)
  pr_sg = jax.lax.stop_gradient(pr)
  p_ids, p_len = batch["prompt_ids"], batch["prompt_len"]
  d = loop.unroll(model.spec, pl, pr_sg, p_ids, p_len, rng, ctx.tau)
  fin = (d.turns_B - 1)[None, :, None]
  e_BMR = jnp.take_along_axis(d.left_emb_NBMR, fin[..., None], axis=0)[0]
  len_B = jnp.take_along_axis(d.left_valid_NBM, fin, axis=0)[0].sum(-1)
  s_real = critic_bce.critic_logits(model, pr, batch["ids"], p_len + batch["target_len"])
  s_fake_d = fake_logits(model, pr, p_ids, p_len, jax.lax.stop_gradient(e_BMR), len_B)
  s_fake_g = fake_logits(model, pr_sg, p_ids, p_len, e_BMR, len_B)
  v_B = batch_valid(batch)
  mean = lambda x: (v_B * x).sum() / jnp.maximum(v_B.sum(), 1.0)
  d_term = mean(jax.nn.softplus(-s_real) + jax.nn.softplus(s_fake_d))
  if hp["generator_loss"] == "saturating":
    g_term = mean(-jax.nn.softplus(s_fake_g))  # log(1 - D)
  elif hp["generator_loss"] == "non_saturating":
    g_term = mean(jax.nn.softplus(-s_fake_g))  # -log D
  else:
    raise ValueError(f"gan generator_loss={hp['generator_loss']!r}; expected 'saturating' "
                     f"or 'non_saturating'.")
  metrics = {"d_loss": d_term, "g_loss": g_term, "d_real": mean(jax.nn.sigmoid(s_real)),
             "d_fake": mean(jax.nn.sigmoid(s_fake_d)), "turns_mean": mean(d.turns_B)}
  return hp["d_weight"] * d_term, hp["g_weight"] * g_term, metrics


def gan_loss(ctx, params, frozen, batch, rollout, rng):
  del frozen, rollout
  d_term, g_term, metrics = gan_terms(ctx, params, batch, rng)
  metrics["loss"] = d_term + g_term
  return metrics["loss"], metrics


GAN = register(Objective("gan", gan_loss, defaults=DEFAULTS))
