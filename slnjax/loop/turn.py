"""One inner-dialogue turn (IDL), as a step program.

A turn: the left lobe writes m tokens (KV-cached, soft tokens as configured); the right lobe
answers — a score (lateralized: it reads the prompt and the left lobe's latest turn), or, in a
tall SLN, it reads the turn into its own dialogue cache, scores it if it has a score head and
writes a turn of its own, which the left lobe then reads. A score is fed back to the left lobe
as a learned embedding of the scalar (differentiable). Then the stopping rules are applied per
example; halted examples are frozen (no cache write, no state change) from then on.

The turn is a list of segments (``appendonly.Plain`` / ``appendonly.Loop``, see
``turn_program``) so that ``appendonly.program_scan`` can run its reverse pass with a single
parameter-cotangent accumulator; ``turn`` runs the same program forwards. The drivers that
repeat it until every example has halted are in drivers.py.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from slnjax import lobes
from slnjax.appendonly import Loop, Plain, run_program
from slnjax.loop.config import (HALT_AGREEMENT, HALT_LIMIT, HALT_STOP, HALT_THRESHOLD,
                                DialogueSpec)
from slnjax.loop.decode import (begin_turn, constrain_cache, emit, end_turn, freeze, ingest,
                                token_unit)

def gate(tree, pass_B, batch_axis):
  """stop_gradient for the examples where pass_B is False (float leaves only)."""
  def g(x):
    if not jnp.issubdtype(x.dtype, jnp.inexact):
      return x
    shape = [1] * x.ndim
    shape[batch_axis] = x.shape[batch_axis]
    return jnp.where(pass_B.reshape(shape), x, jax.lax.stop_gradient(x))
  return jax.tree.map(g, tree)


def gate_cache(cache, pass_B):
  """``gate`` for a KV cache (any lobe layout: a leaf is [..., B, K, S, E])."""
  return jax.tree.map(lambda x: gate(x, pass_B, x.ndim - 4), cache)


def _keeps_history(window):
  """Per example: whether the prompt's encoding (before turn 0) is inside the window."""
  return window["turns_B"] <= window["k"]


def _enter(t, window):
  """Per example: whether gradients may enter turn t from before it (truncated BPTT). An
  example that used at most k turns keeps its whole history, prompt encoding included, so
  k >= turns used is exactly full BPTT."""
  return (t > window["turns_B"] - window["k"]) | _keeps_history(window)


def _start(spec, P, caches, state, x, window):
  """Turn segment 1: cut gradients entering the turn (truncated BPTT), set up the left lobe's
  token loop."""
  carry = state["carry"]
  k_left, k_rpend, k_right, k_lpend = jax.random.split(x["key"], 4)
  if window is not None:
    enter_B = _enter(x["t"], window)
    caches = {**caches, "left": gate_cache(caches["left"], enter_B),  # rcache0: where read
              "right": None if caches["right"] is None else gate_cache(caches["right"], enter_B)}
    carry = gate(carry, enter_B, 0)
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
  rc, L = spec.right, spec.loop
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
    rcache0 = caches["rcache0"]
    if window is not None:  # the prompt's encoding: cut like the left lobe's prompt positions
      rcache0 = gate_cache(rcache0, _keeps_history(window))
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
    pend_r = emit(r["logits_BV"], key=keys["rpend"], emb_self_VD=E_r, emb_recv_VD=E_l,
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
  w["pend_l"] = emit(out["logits_BV"], key=state["keys"]["lpend"], emb_self_VD=E_l,
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
    pend_l = emit(out["logits_BV"], key=state["keys"]["lpend"], emb_self_VD=E_l,
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
    ys = gate(ys, t >= window["turns_B"] - window["k"], 0)
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
