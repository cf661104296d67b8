"""The inner dialogue loop (IDL): one turn function, two drivers.

A turn: the left lobe writes m tokens (KV-cached, soft tokens as configured); the right lobe
answers — a score (lateralized: it reads the prompt and the left lobe's latest turn), or, in a
tall SLN, it reads the turn into its own dialogue cache, scores it if it has a score head and
writes a turn of its own, which the left lobe then reads. A score is fed back to the left lobe
as a learned embedding of the scalar (differentiable). Then the stopping rules are applied per
example; halted examples are frozen (no cache write, no state change) from then on.

Each lobe's context is the whole dialogue so far (append-only), which makes the paper's
concat(x, x_left^t, y_right^t) inputs a window of it.

Drivers:
- ``rollout``: ``lax.while_loop``; stops as soon as every example has halted (inference,
  rollouts for score-function training). Not differentiable.
- ``unroll``: ``max_turns`` turns on a scan with done-masks; differentiable with truncated
  BPTT depth ``bptt_depth`` (k turns before each example halts; 0: none; None: full) and a
  reverse scheme ``bptt_impl``: "appendonly" (memory bounded by the caches, appendonly.py),
  "scan" (plain autodiff) or "scan_remat". Forward values equal ``rollout``'s.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from slnjax import lobes, soft_tokens
from slnjax.appendonly import Loop, Plain, run_program
from slnjax.decode import (begin_turn, constrain_cache, emit, end_turn, freeze, ingest,
                           run_scan, token_unit)
from slnjax.lobes.config import LobeConfig
from slnjax.memory import dialogue as memory_inputs

HALT_NONE, HALT_LIMIT, HALT_THRESHOLD, HALT_AGREEMENT, HALT_STOP = 0, 1, 2, 3, 4
HALT_NAMES = {0: "running", 1: "idl_limit", 2: "threshold", 3: "agreement", 4: "stop_token"}


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  turn_len: int = 8  # m: tokens per turn
  max_turns: int = 4  # the IDL limit
  mode: str = "soft"  # soft_tokens.MODES
  temperature: float = 1.0  # sampling temperature (ids); tau is the relaxation temperature
  threshold: float | None = 0.5  # halt when the critic's score >= threshold
  stop_on_agreement: bool = False  # tall: both lobes wrote the same turn; else: a fixed point
  stop_token: int | None = None  # halt after a turn in which the left lobe wrote this id
  feed_score: bool = True  # the left lobe reads the score (needs LobeConfig.score_input)
  bptt_depth: int | None = None  # None: full BPTT; k: the last k turns; 0: no gradient
  bptt_impl: str = "appendonly"  # "appendonly" | "scan" | "scan_remat"

  def __post_init__(self):
    soft_tokens.check_mode(self.mode)
    if self.turn_len < 1 or self.max_turns < 1:
      raise ValueError("turn_len and max_turns must be >= 1.")
    if self.bptt_depth is not None and self.bptt_depth < 0:
      raise ValueError(f"bptt_depth={self.bptt_depth}: use None (full), 0 (none) or k > 0.")
    if self.bptt_impl not in ("appendonly", "scan", "scan_remat"):
      raise ValueError(f"bptt_impl={self.bptt_impl!r}; expected appendonly, scan, scan_remat.")


@dataclasses.dataclass(frozen=True)
class DialogueSpec:
  """Who talks: a left lobe, an optional right lobe, and whether the right lobe writes."""
  left: LobeConfig
  right: LobeConfig | None = None
  tall: bool = False  # True: the right lobe writes turns too; False: lateralized (scores)
  loop: LoopConfig = LoopConfig()

  def __post_init__(self):
    r = self.right
    if r is None and self.tall:
      raise ValueError("A tall SLN needs a right lobe.")
    if r is not None and not self.tall and not r.score_head:
      raise ValueError("A lateralized right lobe must have score_head=True.")
    if self.tall and not r.lm_head:
      raise ValueError("In a tall SLN the right lobe writes turns: it needs lm_head=True.")
    if not self.left.lm_head:
      raise ValueError("The left lobe writes turns: it needs lm_head=True.")

  @property
  def scored(self) -> bool:
    return self.right is not None and self.right.score_head

  @property
  def feeds_score(self) -> bool:
    return self.scored and self.loop.feed_score and self.left.score_input

  def cache_lengths(self, prompt_len: int, prefix_left: int = 0,
                    prefix_right: int = 0) -> tuple[int, int]:
    """(left, right) cache lengths; a lobe's memory prefix (memory/dialogue.py) comes first."""
    m, n = self.loop.turn_len, self.loop.max_turns
    per_turn = m + (m if self.tall else 0) + (1 if self.feeds_score else 0)
    right = prompt_len + (2 * m * n if self.tall else m)
    return prefix_left + prompt_len + n * per_turn, prefix_right + right


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


def _gate(tree, pass_B, batch_axis):
  """stop_gradient for the examples where pass_B is False (float leaves only)."""
  def g(x):
    if not jnp.issubdtype(x.dtype, jnp.inexact):
      return x
    shape = [1] * x.ndim
    shape[batch_axis] = x.shape[batch_axis]
    return jnp.where(pass_B.reshape(shape), x, jax.lax.stop_gradient(x))
  return jax.tree.map(g, tree)


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


def prefill(spec: DialogueSpec, params_left, params_right, prompt_ids_BP, prompt_len_B, key,
            tau, target_BM=None, prompt_embeds_BPD=None):
  """Encodes the prompt into each lobe's cache. Returns (P, caches, carry) for `turn`.

  `prompt_embeds_BPD` (optional): the prompt as an encoder's output, used instead of the
  lobes' own embeddings of `prompt_ids_BP` (paper Fig. 2: an encoder before the loop); or a
  `memory.dialogue.Inputs` with those embeddings and per-lobe memory prefixes [B,T,D],
  written before the prompt (the lobe's positions and cache grow by T).
  """
  lc, rc, L = spec.left, spec.right, spec.loop
  B, Pn = prompt_ids_BP.shape
  if target_BM is not None and target_BM.shape != (B, L.turn_len):
    raise ValueError(f"target ids have shape {target_BM.shape}; expected [B, turn_len] = "
                     f"{(B, L.turn_len)}.")
  prompt_embeds_BPD, prefix = memory_inputs.split_inputs(prompt_embeds_BPD)
  if "right" in prefix and rc is None:
    raise ValueError("A memory prefix for the right lobe, but this dialogue has none.")
  t_l, t_r = (memory_inputs.prefix_len(prefix, n) for n in ("left", "right"))
  s_left, s_right = spec.cache_lengths(Pn, t_l, t_r)
  prompt_len_B = prompt_len_B.astype(jnp.int32)
  E_l = lobes.embedding_matrix(lc, params_left)
  E_r = None if rc is None else lobes.embedding_matrix(rc, params_right)
  out = lobes.apply(lc, params_left, **_prompt_inputs(lc, params_left, prompt_ids_BP,
                                                      prompt_embeds_BPD, prefix.get("left")),
                    cache=lobes.init_cache(lc, B, s_left), start=jnp.zeros((B,), jnp.int32))
  last_BV = jnp.take_along_axis(out["logits_BTV"], (t_l + prompt_len_B - 1)[:, None, None],
                                1)[:, 0]
  fdt = jnp.promote_types(lc.compute_dtype, jnp.float32)
  tau = jnp.asarray(tau, fdt)
  pend_l = emit(last_BV, mode=L.mode, key=key, tau=tau, temperature=L.temperature,
                emb_self_VD=E_l, emb_recv_VD=E_r,
                target_B=None if target_BM is None else target_BM[:, 0])
  # "prompt_len_B": where the right lobe's prompt cache ends (its memory prefix included)
  P = {"left": params_left, "right": params_right, "tau": tau, "target_BM": target_BM,
       "prompt_len_B": prompt_len_B + t_r, "rcache0": None}
  caches = {"left": out["cache"], "right": None}
  carry = {"pend_l": pend_l, "len_l": prompt_len_B + t_l, "len_r": prompt_len_B + t_r,
           "active_B": jnp.ones((B,), bool), "turns_B": jnp.zeros((B,), jnp.int32),
           "halt_B": jnp.zeros((B,), jnp.int32), "score_logit_B": jnp.zeros((B,), fdt),
           "prev_ids_BM": jnp.full((B, L.turn_len), -1, jnp.int32)}
  if rc is not None:
    rout = lobes.apply(rc, params_right, **_prompt_inputs(rc, params_right, prompt_ids_BP,
                                                          prompt_embeds_BPD, prefix.get("right")),
                       start=jnp.zeros((B,), jnp.int32), cache=lobes.init_cache(rc, B, s_right))
    if spec.tall:
      caches["right"] = rout["cache"]
    else:
      P["rcache0"] = rout["cache"]
  return P, caches, carry


def _enter(t, window):
  """Per example: whether gradients may enter turn t from before it (truncated BPTT). An
  example that used at most k turns keeps its whole history, prompt encoding included, so
  k >= turns used is exactly full BPTT."""
  return (t > window["turns_B"] - window["k"]) | (window["turns_B"] <= window["k"])


def _start(spec, P, caches, state, x, window):
  """Turn segment 1: cut gradients entering the turn (truncated BPTT), set up the left lobe's
  token loop."""
  carry = state["carry"]
  k_left, k_rpend, k_right, k_lpend = jax.random.split(x["key"], 4)
  if window is not None:
    enter_B = _enter(x["t"], window)
    caches = {"left": _gate(caches["left"], enter_B, 1),
              "right": None if caches["right"] is None else _gate(caches["right"], enter_B, 1)}
    carry = _gate(carry, enter_B, 0)
  uc, uxs = begin_turn(carry["pend_l"], carry["len_l"], carry["active_B"], k_left,
                       spec.loop.turn_len)
  keys = {"rpend": k_rpend, "right": k_right, "lpend": k_lpend}
  return caches, {"carry": carry, "keys": keys, "lu": uc, "lu_xs": uxs}


def _emit_kw(spec, P):
  return dict(mode=spec.loop.mode, tau=P["tau"], temperature=spec.loop.temperature)


def _embeddings(spec, P):
  E_l = lobes.embedding_matrix(spec.left, P["left"])
  E_r = None if spec.right is None else lobes.embedding_matrix(spec.right, P["right"])
  return E_l, E_r


def _left_written(spec, P, caches, state, x, window):
  """Turn segment 3: the left lobe's turn is written; the right lobe reads it (a score in a
  lateralized SLN, the start of its own turn in a tall one)."""
  lc, rc, L = spec.left, spec.right, spec.loop
  carry, keys = state["carry"], state["keys"]
  active_B = carry["active_B"]
  len_l, lturn, pend_l = end_turn(carry["pend_l"], state["lu"], state["lu_ys"])
  caches = {**caches, "left": constrain_cache(caches["left"])}
  ids_BM = lturn.ids_B
  if L.stop_token is not None:
    stop_BM = ids_BM == L.stop_token
    valid_BM = (jnp.cumsum(stop_BM, axis=1) - stop_BM) == 0
    has_stop_B = stop_BM.any(axis=1)
  else:
    valid_BM = jnp.ones_like(ids_BM, bool)
    has_stop_B = jnp.zeros_like(active_B)
  valid_len_B = valid_BM.sum(axis=1).astype(jnp.int32)
  w = {"lturn": lturn, "valid_BM": valid_BM, "has_stop_B": has_stop_B, "pend_l": pend_l,
       "len_l": len_l, "len_r": carry["len_r"], "score_logit_B": carry["score_logit_B"]}
  out = {"carry": carry, "keys": keys, "w": w}
  if rc is not None and not spec.tall:
    rcache0 = P["rcache0"]
    if window is not None:
      rcache0 = _gate(rcache0, _enter(x["t"], window), 1)
    r = lobes.apply(rc, P["right"], embeds=lturn.e_recv_BR, cache=rcache0,
                    start=P["prompt_len_B"], lengths=valid_len_B)
    w["score_logit_B"] = r["score_logit_B"]
  if spec.tall:
    E_l, E_r = _embeddings(spec, P)
    r, w["len_r"] = ingest(rc, P["right"], caches["right"], lturn.e_recv_BR, carry["len_r"],
                           active_B, lengths_B=valid_len_B)
    caches = {**caches, "right": r["cache"]}
    if rc.score_head:
      w["score_logit_B"] = r["score_logit_B"]
    pend_r = emit(r["logits_BTV"][:, -1], key=keys["rpend"], emb_self_VD=E_r, emb_recv_VD=E_l,
                  **_emit_kw(spec, P))
    w["pend_r"] = pend_r
    out["ru"], out["ru_xs"] = begin_turn(pend_r, w["len_r"], active_B, keys["right"],
                                         L.turn_len)
    return caches, out
  return _finish(spec, P, caches, out, x, window)


def _right_written(spec, P, caches, state, x, window):
  """Tall SLN, turn segment 5: the right lobe's turn is written; the left lobe reads it."""
  carry, w = state["carry"], dict(state["w"])
  E_l, E_r = _embeddings(spec, P)
  w["len_r"], rturn, _ = end_turn(w["pend_r"], state["ru"], state["ru_ys"])
  caches = {**caches, "right": constrain_cache(caches["right"])}
  w["right_ids_BM"] = rturn.ids_B
  out, w["len_l"] = ingest(spec.left, P["left"], caches["left"], rturn.e_recv_BR, w["len_l"],
                           carry["active_B"])
  caches = {**caches, "left": out["cache"]}
  target0 = None if P["target_BM"] is None else P["target_BM"][:, 0]
  w["pend_l"] = emit(out["logits_BTV"][:, -1], key=state["keys"]["lpend"], emb_self_VD=E_l,
                     emb_recv_VD=E_r, target_B=target0, **_emit_kw(spec, P))
  del w["pend_r"]
  return _finish(spec, P, caches, {"carry": carry, "keys": state["keys"], "w": w}, x, window)


def _finish(spec, P, caches, state, x, window):
  """The score is fed back to the left lobe; the stopping rules halt examples; halted
  examples are frozen. Ends the turn: state {"carry", "y"}."""
  L, carry, w = spec.loop, state["carry"], state["w"]
  t, active_B, lturn = x["t"], carry["active_B"], w["lturn"]
  ids_BM, valid_BM = lturn.ids_B, w["valid_BM"]
  right_ids_BM = w.get("right_ids_BM", jnp.zeros_like(ids_BM))
  score_logit_B, pend_l, len_l = w["score_logit_B"], w["pend_l"], w["len_l"]
  score_B = jax.nn.sigmoid(score_logit_B)
  if spec.feeds_score:
    E_l, E_r = _embeddings(spec, P)
    target0 = None if P["target_BM"] is None else P["target_BM"][:, 0]
    e_BD = lobes.embed_score(spec.left, P["left"], score_B)
    out, len_l = ingest(spec.left, P["left"], caches["left"], e_BD[:, None], len_l, active_B)
    caches = {**caches, "left": out["cache"]}
    pend_l = emit(out["logits_BTV"][:, -1], key=state["keys"]["lpend"], emb_self_VD=E_l,
                  emb_recv_VD=E_r, target_B=target0, **_emit_kw(spec, P))

  # Stopping rules, in priority order: stop token, threshold, agreement, IDL limit.
  reasons = [(HALT_STOP, w["has_stop_B"])]
  if spec.scored and L.threshold is not None:
    reasons.append((HALT_THRESHOLD, score_B >= L.threshold))
  if L.stop_on_agreement:
    other = right_ids_BM if spec.tall else carry["prev_ids_BM"]
    reasons.append((HALT_AGREEMENT, jnp.all((ids_BM == other) | ~valid_BM, axis=1)))
  reasons.append((HALT_LIMIT, jnp.broadcast_to(t + 1 >= L.max_turns, active_B.shape)))
  halt_code_B = jnp.zeros_like(carry["halt_B"])
  for code, hit in reversed(reasons):
    halt_code_B = jnp.where(hit, code, halt_code_B)
  halting_B = active_B & (halt_code_B > 0)

  new = {"pend_l": pend_l, "len_l": len_l, "len_r": w["len_r"], "score_logit_B": score_logit_B,
         "prev_ids_BM": ids_BM, "halt_B": jnp.where(halting_B, halt_code_B, carry["halt_B"]),
         "turns_B": carry["turns_B"] + 1, "active_B": active_B & ~halting_B}
  new_carry = freeze(active_B, new, carry)
  ys = {"left_ids": ids_BM, "left_valid": valid_BM, "left_logp": lturn.logp_B,
        "left_logp_target": lturn.logp_target_B, "left_emb": lturn.e_recv_BR,
        "right_ids": right_ids_BM, "score": score_B, "score_logit": score_logit_B,
        "active": active_B}
  ys = freeze(active_B, ys, jax.tree.map(jnp.zeros_like, ys))
  if window is not None:  # outputs of turns before the window carry no gradient
    ys = _gate(ys, t >= window["turns_B"] - window["k"], 0)
  return caches, {"carry": new_carry, "y": ys}


def turn_program(spec: DialogueSpec):
  """A turn as a step program (appendonly.Plain / Loop segments): the left lobe's token loop,
  the right lobe's reply (and, in a tall SLN, its own token loop), the score fed back and the
  stopping rules. One program serves rollout, plain scans and the append-only reverse pass."""
  lc, rc, L = spec.left, spec.right, spec.loop
  opts = {"mode": L.mode, "temperature": L.temperature, "cfgs": {"left": lc, "right": rc}}
  seg = lambda f: Plain(lambda P, c, s, x, w: f(spec, P, c, s, x, w))
  program = [seg(_start),
             Loop(token_unit(lc, opts, "left", None if rc is None else "right", True),
                  "lu", "lu_xs", "lu_ys"),
             seg(_left_written)]
  if spec.tall:
    program += [Loop(token_unit(rc, opts, "right", "left", False), "ru", "ru_xs", "ru_ys"),
                seg(_right_written)]
  return program


def turn(spec: DialogueSpec, P, caches, carry, x, window=None):
  """One inner-dialogue turn for every example (halted ones frozen). Returns
  (caches, carry, per-turn outputs)."""
  return run_program(turn_program(spec), P, caches, carry, x, window)


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
  P, caches, carry = prefill(spec, params_left, params_right, prompt_ids_BP, prompt_len_B,
                             k_pre, tau, target_BM, prompt_embeds_BPD)
  xs = _turn_xs(k_loop, L.max_turns)
  window_fn = window = None
  if k is not None:
    window_fn = lambda final: {"turns_B": final["turns_B"], "k": k}
    if L.bptt_impl != "appendonly":  # plain autodiff: learn the turns used first
      ahead = rollout(spec, params_left, params_right, prompt_ids_BP, prompt_len_B, key, tau,
                      target_BM, prompt_embeds_BPD)
      window = {"turns_B": ahead.turns_B, "k": k}
  _, carry, ys = run_scan(turn_program(spec), P, caches, carry, xs, L.bptt_impl,
                         window_fn, window)
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
