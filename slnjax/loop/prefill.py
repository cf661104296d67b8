"""The prompt's prefill: the prompt (after a lobe's memory prefix, if it has one) written
into each lobe's KV cache, and the left lobe's first pending emission. It is a one-segment
step program (``prefill_program``) so that the append-only reverse pass runs it inside its
custom-vjp region; ``prefill_inputs`` prepares each lobe for decoding (``lobes.prepare_decoding``:
the loop knows nothing of a kernel's packing)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from slnjax import lobes
from slnjax.appendonly import Plain, run_program
from slnjax.loop.config import DialogueSpec
from slnjax.loop.decode import emit


def memory_prefix_of(memory_prefix, has_right: bool) -> dict:
  """The checked {lobe: [B,T,D]} memory prefixes (None: none). A lobe's prefix is written
  into its cache before the prompt (memory/dialogue.py builds them from a bank)."""
  prefix = dict(memory_prefix or {})
  bad = sorted(set(prefix) - {"left", "right"})
  if bad:
    raise ValueError(f"Memory prefixes for {bad}: only the left and right lobes read memories.")
  for name, p in prefix.items():
    if p.ndim != 3:
      raise ValueError(f"The {name} lobe's memory prefix has shape {p.shape}; expected "
                       "[B, T, D].")
  if "right" in prefix and not has_right:
    raise ValueError("A memory prefix for the right lobe, but this dialogue has none.")
  return prefix


def prefix_len(prefix: dict, name: str) -> int:
  p = prefix.get(name)
  return 0 if p is None else p.shape[1]


def _prompt_inputs(cfg, params, prompt_ids_BP, prompt_embeds_BPD, prefix_BTD=None):
  """The lobe's prefill input: the prompt (ids, or an encoder's embeddings), after its
  memory prefix when it has one."""
  if prompt_embeds_BPD is not None and prompt_embeds_BPD.shape[-1] != cfg.d_model:
    raise ValueError(f"Encoded prompt has width {prompt_embeds_BPD.shape[-1]} but a lobe has "
                     f"d_model={cfg.d_model}: an encoder must match both lobes' d_model.")
  if prefix_BTD is None:
    return {"ids": prompt_ids_BP} if prompt_embeds_BPD is None else {"embeds": prompt_embeds_BPD}
  if prefix_BTD.shape[0] != prompt_ids_BP.shape[0] or prefix_BTD.shape[2] != cfg.d_model:
    raise ValueError(f"A memory prefix of shape {prefix_BTD.shape} does not fit a lobe with "
                     f"d_model={cfg.d_model} and a batch of {prompt_ids_BP.shape[0]}.")
  x_BPD = (lobes.embed_ids(cfg, params, prompt_ids_BP) if prompt_embeds_BPD is None
           else prompt_embeds_BPD.astype(cfg.compute_dtype))
  return {"embeds": jnp.concatenate([prefix_BTD.astype(x_BPD.dtype), x_BPD], axis=1)}


def _encode_prompt(spec: DialogueSpec, P):
  """The prefill proper: the prompt (after its memory prefix) into each lobe's cache, and the
  first pending emission of the left lobe. Reads only P (P["pre"]: the prompt inputs)."""
  lc, rc, L = spec.left, spec.right, spec.loop
  pre = P["pre"]
  ids_BP, len_B, prefix = pre["ids_BP"], pre["len_B"], pre["prefix"]
  B, Pn = ids_BP.shape
  t_l, t_r = (prefix_len(prefix, n) for n in ("left", "right"))
  s_left, s_right = spec.cache_lengths(Pn, t_l, t_r)
  E_l = lobes.embedding_matrix(lc, P["left"])
  E_r = None if rc is None else lobes.embedding_matrix(rc, P["right"])
  out = lobes.apply(lc, P["left"], **_prompt_inputs(lc, P["left"], ids_BP, pre["embeds_BPD"],
                                                    prefix.get("left")),
                    cache=lobes.init_cache(lobes.laid_out(lc, P["left"]), B, s_left),
                    logits_at=t_l + len_B - 1)
  target_BM = P["target_BM"]
  pend_l = emit(out["logits_BV"], mode=L.mode, key=pre["key"], tau=P["tau"],
                temperature=L.temperature, emb_self_VD=E_l, emb_recv_VD=E_r,
                target_B=None if target_BM is None else target_BM[:, 0])
  caches = {"left": out["cache"], "right": None}
  fdt = jnp.promote_types(lc.compute_dtype, jnp.float32)
  carry = {"pend_l": pend_l, "len_l": len_B + t_l, "len_r": len_B + t_r,
           "active_B": jnp.ones((B,), bool), "turns_B": jnp.zeros((B,), jnp.int32),
           "halt_B": jnp.zeros((B,), jnp.int32), "score_logit_B": jnp.zeros((B,), fdt),
           "prev_ids_BM": jnp.full((B, L.turn_len), -1, jnp.int32)}
  if rc is not None:
    rout = lobes.apply(rc, P["right"], **_prompt_inputs(rc, P["right"], ids_BP,
                                                        pre["embeds_BPD"], prefix.get("right")),
                       cache=lobes.init_cache(lobes.laid_out(rc, P["right"]), B, s_right))
    # Tall: the right lobe's own context. Lateralized: the prompt cache that the critic
    # re-reads at every turn ("rcache0", never written by a turn).
    caches["right" if spec.tall else "rcache0"] = rout["cache"]
  return caches, carry


def prefill_program(spec: DialogueSpec):
  """The prefill as a one-segment step program (appendonly.Plain), so that the append-only
  reverse pass can run it inside its custom-vjp region (``program_scan(head=...)``). It
  ignores its input cache and carry (placeholders) and reads the prompt from P["pre"]."""
  def fn(P, caches, state, x, window):
    del caches, state, x, window
    caches, carry = _encode_prompt(spec, P)
    return caches, {"carry": carry, "y": {}}
  return [Plain(fn)]


def prefill_inputs(spec: DialogueSpec, params_left, params_right, prompt_ids_BP, prompt_len_B,
                   key, tau, target_BM=None, prompt_embeds_BPD=None, memory_prefix=None):
  """What the prefill program reads: (P, placeholder caches, placeholder carry, program)."""
  lc, rc, L = spec.left, spec.right, spec.loop
  B, _ = prompt_ids_BP.shape
  if target_BM is not None and target_BM.shape != (B, L.turn_len):
    raise ValueError(f"target ids have shape {target_BM.shape}; expected [B, turn_len] = "
                     f"{(B, L.turn_len)}.")
  prefix = memory_prefix_of(memory_prefix, rc is not None)
  t_r = prefix_len(prefix, "right")
  prompt_len_B = prompt_len_B.astype(jnp.int32)
  fdt = jnp.promote_types(lc.compute_dtype, jnp.float32)
  # "prompt_len_B": where the right lobe's prompt cache ends (its memory prefix included)
  # Each lobe prepared for decoding here, before the dialogue loop, once per call (XLA:CPU
  # hoists neither out of a while loop): its params in the layer layout it decodes with
  # (LobeConfig.decode_layers) and "packed", its weights for the few-rows CPU kernel (None
  # unless its config asks).
  params_left, packed_left = lobes.prepare_decoding(lc, params_left)
  params_right, packed_right = ((params_right, None) if rc is None else
                                lobes.prepare_decoding(rc, params_right))
  packed = {"left": packed_left, "right": packed_right}
  P = {"left": params_left, "right": params_right, "tau": jnp.asarray(tau, fdt),
       "packed": packed, "target_BM": target_BM, "prompt_len_B": prompt_len_B + t_r,
       "pre": {"ids_BP": prompt_ids_BP, "len_B": prompt_len_B, "embeds_BPD": prompt_embeds_BPD,
               "prefix": prefix, "key": key}}
  head = prefill_program(spec)
  caches, state = jax.eval_shape(lambda P: head[0].fn(P, None, None, {}, None), P)
  zeros = lambda s: jnp.zeros(s.shape, s.dtype)
  return P, jax.tree.map(zeros, caches), jax.tree.map(zeros, state["carry"]), head


def prefill(spec: DialogueSpec, params_left, params_right, prompt_ids_BP, prompt_len_B, key,
            tau, target_BM=None, prompt_embeds_BPD=None, memory_prefix=None):
  """Encodes the prompt into each lobe's cache. Returns (P, caches, carry) for `turn`.

  `prompt_embeds_BPD` (optional): the prompt as an encoder's output, used instead of the
  lobes' own embeddings of `prompt_ids_BP` (paper Fig. 2: an encoder before the loop).
  `memory_prefix` (optional): {"left"|"right": [B,T,D]}, a lobe's memories in its input
  embedding (memory/dialogue.py: ``read(...).prefix``), written before the prompt (the
  lobe's positions and cache grow by T); a lobe not named reads no memory.
  """
  P, caches, carry, head = prefill_inputs(spec, params_left, params_right, prompt_ids_BP,
                                          prompt_len_B, key, tau, target_BM, prompt_embeds_BPD,
                                          memory_prefix)
  caches, carry, _ = run_program(head, P, caches, carry, {})
  return P, caches, carry

