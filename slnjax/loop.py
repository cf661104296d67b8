"""The inner dialogue loop (IDL): the prompt's prefill, two drivers of turn.py's turn, and
the teacher-forced replay of a transcript.

Each lobe's context is the whole dialogue so far (append-only), which makes the paper's
concat(x, x_left^t, y_right^t) inputs a window of it. The turn itself (what each lobe does,
the stopping rules) and the loop's configuration are in turn.py; its names are re-exported
here (``loop.LoopConfig``, ``loop.DialogueSpec``, ``loop.turn``, ``loop.HALT_*``).

Drivers:
- ``rollout``: ``lax.while_loop``; stops as soon as every example has halted (inference,
  rollouts for score-function training). Not differentiable.
- ``unroll``: ``max_turns`` turns on a scan with done-masks; differentiable with truncated
  BPTT depth ``bptt_depth`` (k turns before each example halts; 0: none; None: full) and a
  reverse scheme ``bptt_impl``: "appendonly" (memory bounded by the caches, one parameter
  accumulator: appendonly.program_scan), "scan" (plain autodiff) or "scan_remat". Forward
  values equal ``rollout``'s.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from slnjax import lobes
from slnjax.appendonly import Plain, run_program
from slnjax.decode import emit, run_scan
from slnjax.memory import dialogue as memory_inputs
from slnjax.turn import (HALT_AGREEMENT, HALT_LIMIT, HALT_NAMES, HALT_NONE, HALT_STOP,  # noqa: F401
                         HALT_THRESHOLD, DialogueSpec, LoopConfig, turn, turn_program)


class Dialogue(NamedTuple):
  """A batch of dialogues. Per-turn fields are [N,B,...] (N = max_turns); zeros where the
  example had already halted."""
  left_ids_NBM: jax.Array
  left_valid_NBM: jax.Array  # tokens up to and including the first stop token
  left_logp_NBM: jax.Array  # behaviour log-probs of the written ids
  left_logp_target_NBM: jax.Array  # log p(target token i) at turn position i
  left_emb_NBMR: jax.Array  # the left turns as the right lobe received them
  right_ids_NBM: jax.Array  # tall SLN only (zeros otherwise)
  score_NB: jax.Array
  score_logit_NB: jax.Array
  active_NB: jax.Array  # the example took part in turn n
  turns_B: jax.Array  # turns used
  halt_reason_B: jax.Array  # HALT_* codes
  final_score_B: jax.Array

  def at_halt(self, x_NB):
    """``x_NB`` (a per-turn field [N,B,...]) at each example's halting turn, its last taken
    turn ``turns_B - 1``: [B,...]. A loss on the outcome of the dialogue reads this, not
    ``x_NB[-1]`` (turn ``max_turns``, all zeros for an example that halted earlier)."""
    last_B = jnp.maximum(self.turns_B - 1, 0)
    return x_NB[last_B, jnp.arange(last_B.shape[0])]


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
  t_l, t_r = (memory_inputs.prefix_len(prefix, n) for n in ("left", "right"))
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
                   key, tau, target_BM=None, prompt_embeds_BPD=None):
  """What the prefill program reads: (P, placeholder caches, placeholder carry, program)."""
  lc, rc, L = spec.left, spec.right, spec.loop
  B, _ = prompt_ids_BP.shape
  if target_BM is not None and target_BM.shape != (B, L.turn_len):
    raise ValueError(f"target ids have shape {target_BM.shape}; expected [B, turn_len] = "
                     f"{(B, L.turn_len)}.")
  prompt_embeds_BPD, prefix = memory_inputs.split_inputs(prompt_embeds_BPD)
  if "right" in prefix and rc is None:
    raise ValueError("A memory prefix for the right lobe, but this dialogue has none.")
  t_r = memory_inputs.prefix_len(prefix, "right")
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
            tau, target_BM=None, prompt_embeds_BPD=None):
  """Encodes the prompt into each lobe's cache. Returns (P, caches, carry) for `turn`.

  `prompt_embeds_BPD` (optional): the prompt as an encoder's output, used instead of the
  lobes' own embeddings of `prompt_ids_BP` (paper Fig. 2: an encoder before the loop); or a
  `memory.dialogue.Inputs` with those embeddings and per-lobe memory prefixes [B,T,D],
  written before the prompt (the lobe's positions and cache grow by T).
  """
  P, caches, carry, head = prefill_inputs(spec, params_left, params_right, prompt_ids_BP,
                                          prompt_len_B, key, tau, target_BM, prompt_embeds_BPD)
  caches, carry, _ = run_program(head, P, caches, carry, {})
  return P, caches, carry


def _turn_xs(key, n):
  ts = jnp.arange(n, dtype=jnp.int32)
  return {"t": ts, "key": jax.vmap(lambda t: jax.random.fold_in(key, t))(ts)}


def _dialogue(ys, carry) -> Dialogue:
  return Dialogue(ys["left_ids"], ys["left_valid"], ys["left_logp"], ys["left_logp_target"],
                  ys["left_emb"], ys["right_ids"], ys["score"], ys["score_logit"], ys["active"],
                  carry["turns_B"], carry["halt_B"], jax.nn.sigmoid(carry["score_logit_B"]))


def _check_prompt(prompt_ids_BP, prompt_len_B):
  if prompt_ids_BP.ndim != 2:
    raise ValueError(f"prompt ids have shape {prompt_ids_BP.shape}; expected [B, P].")
  if prompt_len_B.shape != prompt_ids_BP.shape[:1]:
    raise ValueError(f"prompt lengths have shape {prompt_len_B.shape}; expected "
                     f"[{prompt_ids_BP.shape[0]}].")


def rollout(spec: DialogueSpec, params_left, params_right, prompt_ids_BP, prompt_len_B, key,
            tau=1.0, target_BM=None, prompt_embeds_BPD=None) -> Dialogue:
  """Inference driver: ``lax.while_loop`` that ends when every example has halted."""
  _check_prompt(prompt_ids_BP, prompt_len_B)
  k_pre, k_loop = jax.random.split(key)
  P, caches, carry = prefill(spec, params_left, params_right, prompt_ids_BP, prompt_len_B,
                             k_pre, tau, target_BM, prompt_embeds_BPD)
  n = spec.loop.max_turns
  xs = _turn_xs(k_loop, n)
  x0 = jax.tree.map(lambda a: a[0], xs)
  y_shape = jax.eval_shape(lambda c, k: turn(spec, P, c, k, x0)[2], caches, carry)
  bufs = jax.tree.map(lambda s: jnp.zeros((n,) + s.shape, s.dtype), y_shape)

  def cond(state):
    t, _, carry, _ = state
    return (t < n) & carry["active_B"].any()

  def body(state):
    t, caches, carry, bufs = state
    x = jax.tree.map(lambda a: a[t], xs)
    caches, carry, y = turn(spec, P, caches, carry, x)
    bufs = jax.tree.map(lambda b, v: b.at[t].set(v), bufs, y)
    return t + 1, caches, carry, bufs

  _, _, carry, ys = jax.lax.while_loop(cond, body, (jnp.int32(0), caches, carry, bufs))
  return jax.tree.map(jax.lax.stop_gradient, _dialogue(ys, carry))


def unroll(spec: DialogueSpec, params_left, params_right, prompt_ids_BP, prompt_len_B, key,
           tau=1.0, target_BM=None, prompt_embeds_BPD=None) -> Dialogue:
  """Differentiable driver: all ``max_turns`` turns with done-masks (same values as rollout)."""
  _check_prompt(prompt_ids_BP, prompt_len_B)
  L = spec.loop
  k = L.bptt_depth
  if k == 0:
    return rollout(spec, params_left, params_right, prompt_ids_BP, prompt_len_B, key, tau,
                   target_BM, prompt_embeds_BPD)
  k_pre, k_loop = jax.random.split(key)
  P, caches, carry, head = prefill_inputs(spec, params_left, params_right, prompt_ids_BP,
                                          prompt_len_B, k_pre, tau, target_BM, prompt_embeds_BPD)
  xs = _turn_xs(k_loop, L.max_turns)
  window_fn = window = None
  if k is not None:
    window_fn = lambda final: {"turns_B": final["turns_B"], "k": k}
    if L.bptt_impl != "appendonly":  # plain autodiff: learn the turns used first
      ahead = rollout(spec, params_left, params_right, prompt_ids_BP, prompt_len_B, key, tau,
                      target_BM, prompt_embeds_BPD)
      window = {"turns_B": ahead.turns_B, "k": k}
  _, carry, ys = run_scan(turn_program(spec), P, caches, carry, xs, L.bptt_impl,
                          window_fn, window, head)
  return _dialogue(ys, carry)


def left_context(spec: DialogueSpec, params_left, prompt_ids_BP, prompt_len_B, d: Dialogue,
                 prompt_embeds_BPD=None):
  """The left lobe's whole context as input embeddings [B,S,D], rebuilt from a transcript.

  Written tokens enter as hard ids (a replay scores what was sampled), scores as the
  learned score embedding of the recorded (stop-gradient) score. A left memory prefix
  (`prompt_embeds_BPD` a `memory.dialogue.Inputs`, e.g. the replayed selection) comes first.
  Returns (embeds_BSD, token_pos_NBM): the context position of each left token (for
  gathering its logits).
  """
  lc, L = spec.left, spec.loop
  B, Pn = prompt_ids_BP.shape
  m, n = L.turn_len, L.max_turns
  prompt_embeds_BPD, prefix = memory_inputs.split_inputs(prompt_embeds_BPD)
  t_l = memory_inputs.prefix_len(prefix, "left")
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
                temperature=None, prompt_embeds_BPD=None):
  """Teacher-forced log-probs of the left lobe's written tokens under `params_left`, in one
  parallel forward pass (PPO ratios, KL to a reference, SPIN). Returns logp_NBM and the
  per-token entropy_NBM (zeros where the example had halted)."""
  x_BSD, pos_NBM = left_context(spec, params_left, prompt_ids_BP, prompt_len_B, d,
                                prompt_embeds_BPD)
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
