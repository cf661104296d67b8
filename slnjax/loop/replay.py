"""The teacher-forced replay of a transcript: the left lobe's context rebuilt from a
``Dialogue`` and the log-probs of what it wrote, in one parallel forward pass (PPO ratios,
KL to a reference, SPIN, revision training)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from slnjax import lobes
from slnjax.loop.config import DialogueSpec
from slnjax.loop.drivers import Dialogue
from slnjax.loop.prefill import _prompt_inputs, memory_prefix_of, prefix_len


def left_context(spec: DialogueSpec, params_left, prompt_ids_BP, prompt_len_B, d: Dialogue,
                 prompt_embeds_BPD=None, memory_prefix=None):
  """The left lobe's whole context as input embeddings [B,S,D], rebuilt from a transcript.

  Written tokens enter as hard ids (a replay scores what was sampled), scores as the
  learned score embedding of the recorded (stop-gradient) score. A left memory prefix
  (`memory_prefix["left"]`, e.g. the replayed selection) comes first.
  Returns (embeds_BSD, token_pos_NBM): the context position of each left token (for
  gathering its logits).
  """
  lc, L = spec.left, spec.loop
  B, Pn = prompt_ids_BP.shape
  m, n = L.turn_len, L.max_turns
  prefix = memory_prefix_of(memory_prefix, spec.right is not None)
  t_l = prefix_len(prefix, "left")
  s_left, _ = spec.cache_lengths(Pn, t_l)
  x_BSD = jnp.zeros((B, s_left, lc.d_model), lc.compute_dtype)
  inp = _prompt_inputs(lc, params_left, prompt_ids_BP, prompt_embeds_BPD, prefix.get("left"))
  first_BTD = inp["embeds"] if "embeds" in inp else lobes.embed_ids(lc, params_left, inp["ids"])
  x_BSD = x_BSD.at[:, :t_l + Pn].set(first_BTD.astype(lc.compute_dtype))
  per_turn = m + (m if spec.tall else 0) + (1 if spec.feeds_score else 0)
  base_NB = t_l + prompt_len_B[None, :] + per_turn * jnp.arange(n)[:, None]
  put = jax.vmap(lambda x, u, s: jax.lax.dynamic_update_slice_in_dim(x, u, s, axis=0))
  for i in range(n):
    x_BSD = put(x_BSD, lobes.embed_ids(lc, params_left, d.left_ids_NBM[i]), base_NB[i])
    off = m
    if spec.tall:
      x_BSD = put(x_BSD, lobes.embed_ids(lc, params_left, d.right_ids_NBM[i]), base_NB[i] + off)
      off += m
    if spec.feeds_score:
      e_BD = lobes.embed_score(lc, params_left, jax.lax.stop_gradient(d.score_NB[i]))
      x_BSD = put(x_BSD, e_BD[:, None], base_NB[i] + off)
  token_pos_NBM = base_NB[:, :, None] + jnp.arange(m)[None, None, :]
  return x_BSD, token_pos_NBM


def replay_logp(spec: DialogueSpec, params_left, prompt_ids_BP, prompt_len_B, d: Dialogue,
                temperature=None, prompt_embeds_BPD=None, memory_prefix=None):
  """Teacher-forced log-probs of the left lobe's written tokens under `params_left`, in one
  parallel forward pass (PPO ratios, KL to a reference, SPIN). Returns logp_NBM and the
  per-token entropy_NBM (zeros where the example had halted)."""
  x_BSD, pos_NBM = left_context(spec, params_left, prompt_ids_BP, prompt_len_B, d,
                                prompt_embeds_BPD, memory_prefix)
  logits_BSV = lobes.apply(spec.left, params_left, embeds=x_BSD)["logits_BTV"]
  temp = spec.loop.temperature if temperature is None else temperature
  logprobs_BSV = jax.nn.log_softmax(logits_BSV.astype(jnp.promote_types(
      logits_BSV.dtype, jnp.float32)) / temp, axis=-1)
  # The logits at position p predict the token at p + 1.
  prev_NBM = pos_NBM - 1
  gather = jax.vmap(lambda lp_SV, pos_NM: lp_SV[pos_NM], in_axes=(0, 1), out_axes=1)
  lp_NBMV = gather(logprobs_BSV, prev_NBM)
  logp_NBM = jnp.take_along_axis(lp_NBMV, d.left_ids_NBM[..., None], axis=-1)[..., 0]
  ent_NBM = -jnp.sum(jnp.exp(lp_NBMV) * lp_NBMV, axis=-1)
  mask = d.active_NB[..., None]
  return jnp.where(mask, logp_NBM, 0.0), jnp.where(mask, ent_NBM, 0.0)
