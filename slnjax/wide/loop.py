"""The wide SLN's inner loop: one gate-and-lobe step, two drivers, the output lobe.

Step t (for every example): the main gate reads the context and chooses LEFT, RIGHT or OUTPUT
(gate.route); both expert lobes read the context; the chosen lobe's W slots (weighted by the
route's lobe weights, one-hot forward in the hard modes) plus a slot embedding of who wrote
them are appended at the example's write position.

- ``rollout``: ``lax.while_loop``; an example halts (is frozen: no write, no state change) at
  its first OUTPUT choice, the loop ends once every example halted or after ``max_iters``
  lobe calls (the gate's last call is OUTPUT by force); then the output lobe decodes the
  answer. Compute follows the input. Not differentiable.
- ``unroll``: all ``max_iters`` steps on ``lax.scan`` for every example (nothing is frozen, so
  that the answer loss of every halting step n = 0..N is there for the halting gradient),
  then the teacher-forced answer loss ``ce_nB`` of halting after n lobe calls, for each n, in
  one output-lobe pass per n over the shared (append-only) context. The context at the
  step where an example's gate says OUTPUT equals the rollout's final context, so the two
  drivers agree on halting and on the answer (tests/test_wide.py). Truncated BPTT:
  ``bptt_depth`` k keeps the gradient of the last k lobe calls before each example halts.

Both drivers take ``min_calls`` m (default ``WideConfig.min_iters``; an int or a traced int32
scalar, e.g. the loss's warm-up schedule): the gate may not choose OUTPUT at calls t < m.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from slnjax.wide import blocks
from slnjax.wide.config import HARD_OF, RELAXED
from slnjax.wide.gate import LEFT, OUTPUT, RIGHT, route
from slnjax.wide.model import WideSLN, decoder_prefill, embed, encode_prompt, head


class WideTrace(NamedTuple):
  """What a rollout did. Per-step fields are [N,B,...]; choice -1 where already halted."""
  choice_NB: jax.Array
  logp_NB: jax.Array
  active_NB: jax.Array
  index_left_NBWk: jax.Array  # experts the left lobe routed to
  index_right_NBWk: jax.Array
  score_NB: jax.Array  # lateralized: the right lobe's score (0.5 otherwise)
  iters_B: jax.Array  # lobe calls made
  gate_halted_B: jax.Array  # the gate chose OUTPUT (False: stopped by max_iters)
  answer_ids_BM: jax.Array
  answer_logits0_BV: jax.Array  # logits of the answer's first token


class WideOut(NamedTuple):
  """What ``unroll`` returns. Per-step fields [N,B,...]; per-halting-step fields [N+1,B]."""
  halt_w_NB: jax.Array  # halting weight at gate call t (one-hot forward in hard modes)
  choice_NB: jax.Array
  logp_NB: jax.Array
  probs_NB3: jax.Array
  lobe_w_NB2: jax.Array
  running_NB: jax.Array  # not yet halted by a hard OUTPUT choice before step t
  iters_B: jax.Array  # the hard halting step t* (N when the gate never chose OUTPUT)
  probs_left_NBWX: jax.Array
  index_left_NBWk: jax.Array
  probs_right_NBWX: jax.Array
  index_right_NBWk: jax.Array
  score_logit_NB: jax.Array
  ce_nB: jax.Array  # summed token cross-entropy of the answer when halting after n calls
  correct_nB: jax.Array  # teacher-forced argmax equals the whole target
  first_logits_nBV: jax.Array | None  # logits of the answer's first token (tests, reports)
  ntok_B: jax.Array


def _write(ctx_BSD, new_BWD, len_B, mask_B):
  W = new_BWD.shape[1]
  old_BWD = jax.vmap(lambda c, s: jax.lax.dynamic_slice_in_dim(c, s, W, axis=0))(ctx_BSD, len_B)
  new_BWD = jnp.where(mask_B[:, None, None], new_BWD.astype(ctx_BSD.dtype), old_BWD)
  return jax.vmap(lambda c, n, s: jax.lax.dynamic_update_slice_in_dim(c, n, s, axis=0))(
      ctx_BSD, new_BWD, len_B)


def _sg_where(tree, pass_B):
  def g(x):
    if not jnp.issubdtype(x.dtype, jnp.inexact):
      return x
    m = pass_B.reshape(pass_B.shape + (1,) * (x.ndim - 1))
    return jnp.where(m, x, jax.lax.stop_gradient(x))
  return jax.tree.map(g, tree)


def prefill(model: WideSLN, params, prompt_ids_BP, prompt_len_B, answer_len: int):
  """Encodes the prompt; returns (encoder cache, initial loop state)."""
  if prompt_ids_BP.ndim != 2 or prompt_len_B.shape != prompt_ids_BP.shape[:1]:
    raise ValueError(f"prompt ids {prompt_ids_BP.shape} / lengths {prompt_len_B.shape}: "
                     "expected [B, P] and [B].")
  B, P = prompt_ids_BP.shape
  h_BPD, enc_cache = encode_prompt(model, params["left"], prompt_ids_BP, answer_len)
  ctx = jnp.zeros((B, model.context_len(P), model.lm.d_model), h_BPD.dtype)
  ctx = ctx.at[:, :P].set(h_BPD)
  f = jnp.promote_types(model.lm.compute_dtype, jnp.float32)
  state = {"ctx_BSD": ctx, "len_B": prompt_len_B.astype(jnp.int32),
           "active_B": jnp.ones((B,), bool), "iters_B": jnp.zeros((B,), jnp.int32),
           "score_B": jnp.full((B,), 0.5, f)}
  return enc_cache, state


def _min_calls(model: WideSLN, min_calls):
  return model.cfg.min_iters if min_calls is None else min_calls


def step(model: WideSLN, params, state, x, *, mode, tau, freeze, forced_B=None, enter_B=None,
         min_calls=None):
  """One gate call and lobe call for every example. Returns (state, per-step outputs).
  `min_calls` (None: WideConfig.min_iters): no OUTPUT choice at calls t < min_calls."""
  min_calls = _min_calls(model, min_calls)
  if enter_B is not None:  # truncated BPTT: the state entering step t carries no gradient
    state = _sg_where(state, enter_B)
  pl, pr, c = params["left"], params["right"], model.cfg
  ctx, len_B, active_B = state["ctx_BSD"], state["len_B"], state["active_B"]
  logits_B3 = model.gate_module().apply({"params": pl["gate"]}, ctx, len_B, x["t"],
                                        state["score_B"])
  r = route(logits_B3, mode, x["key"], tau, c.temperature, forced_B,
            may_halt=x["t"] >= min_calls)
  left = model.lobe_module("left").apply({"params": pl["lobe"]}, ctx, len_B)
  right = model.lobe_module("right").apply({"params": pr["lobe"]}, ctx, len_B)
  slot = pl["slot_emb"].astype(ctx.dtype)
  u_B2 = r.lobe_w_B2.astype(ctx.dtype)
  new_BWD = (u_B2[:, 0, None, None] * (left["write_BWD"] + slot[LEFT])
             + u_B2[:, 1, None, None] * (right["write_BWD"] + slot[RIGHT]))
  halting_B = active_B & (r.choice_B == OUTPUT)
  write_B = active_B & ~halting_B if freeze else jnp.ones_like(active_B)
  score_B = state["score_B"]
  score_logit_B = jnp.zeros_like(score_B)
  if c.lateralized:
    score_logit_B = right["score_logit_B"].astype(score_B.dtype)
    s_B = jax.nn.sigmoid(score_logit_B)
    score_B = jnp.where(write_B, score_B + r.lobe_w_B2[:, 1] * (s_B - score_B), score_B)
  new_state = {"ctx_BSD": _write(ctx, new_BWD, len_B, write_B),
               "len_B": len_B + c.write_len * write_B.astype(jnp.int32),
               "active_B": active_B & ~halting_B,
               "iters_B": state["iters_B"] + (active_B & ~halting_B).astype(jnp.int32),
               "score_B": score_B}
  ys = {"halt_w": r.halt_w_B, "choice": r.choice_B, "logp": r.logp_B, "probs": r.probs_B3,
        "lobe_w": r.lobe_w_B2, "running": active_B, "len": len_B,
        "probs_left": left["router"]["probs_BWX"], "index_left": left["router"]["index_BWk"],
        "probs_right": right["router"]["probs_BWX"],
        "index_right": right["router"]["index_BWk"], "score_logit": score_logit_B,
        "score": jax.nn.sigmoid(score_logit_B) if c.lateralized else score_B}
  return new_state, ys


def _first_output(choice_NB, n):
  said_NB = choice_NB == OUTPUT
  return jnp.where(said_NB.any(0), jnp.argmax(said_NB, axis=0), n).astype(jnp.int32)


def _xs(key, n):
  ts = jnp.arange(n, dtype=jnp.int32)
  return {"t": ts, "key": jax.vmap(lambda t: jax.random.fold_in(key, t))(ts)}


def _loop(model, params, state, xs, mode, tau, min_calls):
  """The while_loop over steps, freezing halted examples. Returns (state, ys [N,B,...])."""
  n = model.cfg.max_iters
  x0 = jax.tree.map(lambda a: a[0], xs)
  shapes = jax.eval_shape(
      lambda s: step(model, params, s, x0, mode=mode, tau=tau, freeze=True,
                     min_calls=min_calls)[1], state)
  bufs = jax.tree.map(lambda s: jnp.zeros((n,) + s.shape, s.dtype), shapes)
  bufs["choice"] = jnp.full_like(bufs["choice"], -1)  # steps never run (all halted earlier)

  def body(carry):
    t, state, bufs = carry
    x = jax.tree.map(lambda a: a[t], xs)
    state, y = step(model, params, state, x, mode=mode, tau=tau, freeze=True,
                    min_calls=min_calls)
    y["choice"] = jnp.where(y["running"], y["choice"], -1)
    y["logp"] = jnp.where(y["running"], y["logp"], 0.0)
    return t + 1, state, jax.tree.map(lambda b, v: b.at[t].set(v), bufs, y)

  cond = lambda carry: (carry[0] < n) & carry[1]["active_B"].any()
  _, state, ys = jax.lax.while_loop(cond, body, (jnp.int32(0), state, bufs))
  return state, ys


def decode_answer(model: WideSLN, pl, enc_cache, prompt_len_B, ctx_BSD, len_B, answer_len,
                  key=None, temperature=0.0):
  """The output lobe writes `answer_len` tokens (greedy, or sampled when temperature > 0).
  Returns (ids [B,M], logits of the first token [B,V])."""
  dec_h_BSD, dec_cache = decoder_prefill(model, pl, ctx_BSD, answer_len)
  last_BD = jnp.take_along_axis(dec_h_BSD, (len_B - 1)[:, None, None], axis=1)[:, 0]
  logits0_BV = head(model, pl, last_BD[:, None])[:, 0]
  lm = model.lm

  def pick(logits_BV, i):
    if temperature > 0:
      return jax.random.categorical(jax.random.fold_in(key, i), logits_BV / temperature)
    return jnp.argmax(logits_BV, axis=-1)

  def body(carry, i):
    tok_B, enc, dec = carry
    h, enc = blocks.run_blocks(lm, pl["encoder"], embed(model, pl, tok_B[:, None]),
                               cache=enc, start_B=prompt_len_B + i)
    h, dec = blocks.run_blocks(lm, pl["decoder"], h, cache=dec, start_B=len_B + i)
    nxt = pick(head(model, pl, h)[:, 0], i + 1).astype(jnp.int32)
    return (nxt, enc, dec), nxt

  tok0 = pick(logits0_BV, 0).astype(jnp.int32)
  if answer_len == 1:
    return tok0[:, None], logits0_BV
  _, rest = jax.lax.scan(body, (tok0, enc_cache, dec_cache), jnp.arange(answer_len - 1))
  return jnp.concatenate([tok0[:, None], rest.T], axis=1), logits0_BV


def rollout(model: WideSLN, params, prompt_ids_BP, prompt_len_B, rng, tau=1.0, mode=None,
            answer_len=None, answer_temperature=0.0, min_calls=None) -> WideTrace:
  """Inference driver (see the module docstring). `mode` defaults to the hard version of the
  config's route (greedy for soft, sampled for the others)."""
  mode = HARD_OF[mode or model.cfg.route]
  M = answer_len or model.cfg.answer_len
  k_loop, k_ans = jax.random.split(rng)
  enc_cache, state = prefill(model, params, prompt_ids_BP, prompt_len_B, M)
  state, ys = _loop(model, params, state, _xs(k_loop, model.cfg.max_iters), mode, tau,
                    _min_calls(model, min_calls))
  ids, logits0 = decode_answer(model, params["left"], enc_cache, prompt_len_B.astype(jnp.int32),
                               state["ctx_BSD"], state["len_B"], M, k_ans, answer_temperature)
  gate_halted = jnp.any(ys["choice"] == OUTPUT, axis=0)
  tr = WideTrace(ys["choice"], ys["logp"], ys["running"], ys["index_left"], ys["index_right"],
                 ys["score"], state["iters_B"], gate_halted, ids, logits0)
  return jax.tree.map(jax.lax.stop_gradient, tr)


def halting_iters(model: WideSLN, params, prompt_ids_BP, prompt_len_B, rng, tau=1.0,
                  mode=None, min_calls=None):
  """The hard halting step t* of each example (no answer decode, no gradient)."""
  mode = HARD_OF[mode or model.cfg.route]
  enc_cache, state = prefill(model, params, prompt_ids_BP, prompt_len_B, 1)
  del enc_cache
  k_loop, _ = jax.random.split(rng)
  state, _ = _loop(model, params, state, _xs(k_loop, model.cfg.max_iters), mode, tau,
                   _min_calls(model, min_calls))
  return jax.lax.stop_gradient(state["iters_B"])


def answer_losses(model: WideSLN, pl, enc_cache, prompt_len_B, ctx_BSD, len_nB, target_BM,
                  target_len_B, keep_logits=False):
  """Teacher-forced answer loss when the context ends at len_nB[n] (one pass per n)."""
  lm = model.lm
  B, M = target_BM.shape
  tail = max(M - 1, 1)
  dec_h_BSD, dec_cache = decoder_prefill(model, pl, ctx_BSD, tail)
  if M > 1:
    e_BTD, _ = blocks.run_blocks(lm, pl["encoder"], embed(model, pl, target_BM[:, :M - 1]),
                                 cache=enc_cache, start_B=prompt_len_B)
  mask_BM = jnp.arange(M)[None, :] < target_len_B[:, None]

  def one(len_B):
    last_BD = jnp.take_along_axis(dec_h_BSD, (len_B - 1)[:, None, None], axis=1)[:, 0]
    logits_BMV = head(model, pl, last_BD[:, None])
    if M > 1:
      h, _ = blocks.run_blocks(lm, pl["decoder"], e_BTD, cache=dec_cache, start_B=len_B)
      logits_BMV = jnp.concatenate([logits_BMV, head(model, pl, h)], axis=1)
    f = jnp.promote_types(logits_BMV.dtype, jnp.float32)
    lp_BMV = jax.nn.log_softmax(logits_BMV.astype(f), axis=-1)
    lp_BM = jnp.take_along_axis(lp_BMV, target_BM[..., None], axis=-1)[..., 0]
    ce_B = -jnp.sum(jnp.where(mask_BM, lp_BM, 0.0), axis=1)
    hit_BM = jnp.argmax(logits_BMV, axis=-1) == target_BM
    correct_B = jnp.all(hit_BM | ~mask_BM, axis=1)
    return ce_B, correct_B, (logits_BMV[:, 0] if keep_logits else None)

  return jax.vmap(one)(len_nB)


def unroll(model: WideSLN, params, prompt_ids_BP, prompt_len_B, rng, target_BM, target_len_B,
           tau=1.0, mode=None, forced_choice_NB=None, keep_logits=False,
           min_calls=None) -> WideOut:
  """Differentiable driver (see the module docstring). `forced_choice_NB` replays recorded
  choices (e.g. a rollout's, for PPO ratios); -1 entries (halted) are replayed as OUTPUT."""
  c = model.cfg
  mode = mode or c.route
  min_calls = _min_calls(model, min_calls)
  N, M = c.max_iters, target_BM.shape[1]
  k_loop, _ = jax.random.split(rng)
  prompt_len_B = prompt_len_B.astype(jnp.int32)
  enc_cache, state = prefill(model, params, prompt_ids_BP, prompt_len_B, max(M - 1, 1))
  xs = _xs(k_loop, N)
  if forced_choice_NB is not None:
    xs["forced"] = jnp.where(forced_choice_NB < 0, OUTPUT, forced_choice_NB).astype(jnp.int32)
  window_B = None
  if c.bptt_depth is not None:
    if forced_choice_NB is not None:
      t_star_B = _first_output(xs["forced"], N)
    elif mode in RELAXED:
      t_star_B = jnp.full(prompt_len_B.shape, N, jnp.int32)
    else:
      t_star_B = halting_iters(model, params, prompt_ids_BP, prompt_len_B, rng, tau, mode,
                               min_calls)
    window_B = t_star_B - c.bptt_depth

  def body(state, x):
    # The window is calls t*-k .. t*-1 and the gate's OUTPUT call t*: the state entering
    # call t*-k was made before the window (cut), and outputs of calls before it are cut.
    enter = None if window_B is None else x["t"] > window_B
    state, y = step(model, params, state, x, mode=mode, tau=tau, freeze=False,
                    forced_B=x.get("forced"), enter_B=enter, min_calls=min_calls)
    if enter is not None:
      y = _sg_where(y, x["t"] >= window_B)
    return state, y

  state, ys = jax.lax.scan(body, state, xs)
  # Relaxed routes run on regardless; iters_B is where their hard choice said OUTPUT.
  iters_B = _first_output(ys["choice"], N)
  running_NB = jnp.arange(N)[:, None] <= iters_B[None, :]
  len_nB = jnp.concatenate([ys["len"], state["len_B"][None]], axis=0)
  ce, correct, first = answer_losses(model, params["left"], enc_cache, prompt_len_B,
                                     state["ctx_BSD"], len_nB, target_BM, target_len_B,
                                     keep_logits)
  ntok_B = jnp.minimum(target_len_B, M).astype(jnp.int32)
  return WideOut(ys["halt_w"], ys["choice"], ys["logp"], ys["probs"], ys["lobe_w"],
                 running_NB, iters_B.astype(jnp.int32), ys["probs_left"], ys["index_left"],
                 ys["probs_right"], ys["index_right"], ys["score_logit"], ce, correct, first,
                 ntok_B)


__all__ = ["WideTrace", "WideOut", "rollout", "unroll", "decode_answer", "halting_iters",
           "answer_losses", "step", "prefill", "LEFT", "RIGHT", "OUTPUT"]
