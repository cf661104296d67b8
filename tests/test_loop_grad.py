"""Gradients through the dialogue loop, in float64: the append-only reverse pass equals plain
autodiff, matches finite differences, and truncated BPTT cuts exactly what it should."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slnjax import lobes, loop
from loop_helpers import make, prompts

KEY = jax.random.key(3)
TAU = 0.7


def _loss(spec, pl, pr, ids, plen, tgt):
  d = loop.unroll(spec, pl, pr, ids, plen, KEY, TAU, tgt)
  return (jnp.sum(d.left_logp_target_NBM) + jnp.sum(d.score_logit_NB ** 2)
          + 0.1 * jnp.sum(d.left_emb_NBMR ** 2))


def _grads(spec, pl, pr, ids, plen, tgt):
  return jax.jit(jax.grad(_loss, argnums=(1, 2)), static_argnums=0)(spec, pl, pr, ids, plen, tgt)


def _max_rel(a, b):
  return max(float(jnp.max(jnp.abs(x - y)) / (jnp.max(jnp.abs(y)) + 1e-300))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _setup(tall=False, B=3, **kw):
  spec, pl, pr = make(tall, f64=True, **kw)
  ids, plen = prompts(B=B)
  tgt = jax.random.randint(jax.random.key(5), (B, spec.loop.turn_len), 4, 260)
  return spec, pl, pr, ids, plen, tgt


def _impl(spec, impl, k="same"):
  kw = {"bptt_impl": impl}
  if k != "same":
    kw["bptt_depth"] = k
  return dataclasses.replace(spec, loop=dataclasses.replace(spec.loop, **kw))


@pytest.mark.parametrize("tall,mode,k", [
    (False, "soft", None), (True, "gumbel_st", 1),
    pytest.param(False, "gumbel_st", 2, marks=pytest.mark.slow),
    pytest.param(True, "straight_through", None, marks=pytest.mark.slow)])
def test_appendonly_equals_plain_autodiff(x64, tall, mode, k):
  spec, pl, pr, ids, plen, tgt = _setup(tall, mode=mode, threshold=0.4818, max_turns=3,
                                        bptt_depth=k)
  g_ao = _grads(_impl(spec, "appendonly"), pl, pr, ids, plen, tgt)
  g_scan = _grads(_impl(spec, "scan"), pl, pr, ids, plen, tgt)
  assert _max_rel(g_ao, g_scan) < 1e-10
  assert sum(float(jnp.sum(g ** 2)) for g in jax.tree.leaves(g_ao)) > 0


@pytest.mark.parametrize("mode", ["soft", pytest.param("gumbel", marks=pytest.mark.slow)])
def test_soft_token_gradient_matches_finite_differences(x64, mode):
  spec, pl, pr, ids, plen, tgt = _setup(mode=mode, B=2, max_turns=2)
  g = _grads(spec, pl, pr, ids, plen, tgt)
  v = jax.tree.map(lambda x: jax.random.normal(jax.random.key(x.size), x.shape, x.dtype),
                   (pl, pr))
  f = jax.jit(lambda a, b: _loss(spec, a, b, ids, plen, tgt))
  eps = 1e-6
  plus = f(*jax.tree.map(lambda p, d: p + eps * d, (pl, pr), v))
  minus = f(*jax.tree.map(lambda p, d: p - eps * d, (pl, pr), v))
  fd = (plus - minus) / (2 * eps)
  an = sum(jnp.sum(a * b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(v)))
  np.testing.assert_allclose(an, fd, rtol=1e-6)


def _hand_split(spec, pl, pr, ids, plen, tgt, turns_B, k):
  """Per example: run the turns by hand, cutting the gradient before the last k turns."""
  total = 0.0
  for b in range(ids.shape[0]):
    k_pre, k_loop = jax.random.split(KEY)
    P, caches, carry = loop.prefill(spec, pl, pr, ids[b:b + 1], plen[b:b + 1], k_pre, TAU,
                                    tgt[b:b + 1])
    h = int(turns_B[b])
    for t in range(spec.loop.max_turns):
      if t <= h - k and h > k:  # an example within k turns keeps its prompt's gradient
        caches, carry = jax.lax.stop_gradient((caches, carry))  # with the critic's rcache0
      x = {"t": jnp.int32(t), "key": jax.random.fold_in(k_loop, t)}
      caches, carry, y = loop.turn(spec, P, caches, carry, x)
      if t < h - k:
        y = jax.lax.stop_gradient(y)
      total += (jnp.sum(y["left_logp_target"]) + jnp.sum(y["score_logit"] ** 2)
                + 0.1 * jnp.sum(y["left_emb"] ** 2))
  return total


def _unrolled(spec, pl, pr):
  """The same dialogue with unrolled lobe layers (a cache leaf is then [B,K,S,E])."""
  lc, rc = spec.left.replace(scan_layers=False), spec.right.replace(scan_layers=False)
  return (dataclasses.replace(spec, left=lc, right=rc), lobes.with_layer_layout(pl, False),
          lobes.with_layer_layout(pr, False))


@pytest.mark.parametrize("k,scan_layers", [(2, False), pytest.param(1, True, marks=pytest.mark.slow)])
def test_truncated_bptt_equals_hand_split_computation(x64, k, scan_layers):
  # k = 2 of 3 turns: gradient crosses a turn boundary inside the window, and the critic
  # re-reads its prompt cache there (cut for an example that used more than k turns).
  spec, pl, pr, ids, plen, tgt = _setup(B=3, max_turns=3, threshold=0.4818)
  free = jax.jit(loop.rollout, static_argnums=0)(spec, pl, pr, ids, plen, KEY, TAU, tgt)
  turns = np.asarray(free.turns_B).tolist()
  assert len(set(turns)) > 1 and max(turns) > k  # halts at different turns; some are cut
  if scan_layers:
    g = _grads(_impl(spec, "appendonly", k), pl, pr, ids, plen, tgt)
  else:
    u_spec, u_pl, u_pr = _unrolled(spec, pl, pr)
    g = _grads(_impl(u_spec, "appendonly", k), u_pl, u_pr, ids, plen, tgt)
    g = tuple(lobes.with_layer_layout(x, True) for x in g)
  hand = jax.jit(jax.grad(lambda a, b: _hand_split(_impl(spec, "appendonly", None), a, b, ids,
                                                   plen, tgt, np.asarray(free.turns_B), k),
                   argnums=(0, 1)))
  assert _max_rel(g, hand(pl, pr)) < 1e-10


def test_turns_before_the_window_contribute_exactly_zero(x64):
  spec, pl, pr, ids, plen, _ = _setup(max_turns=3)  # every example runs all 3 turns

  def first_turn_only(spec, a, b):
    d = loop.unroll(spec, a, b, ids, plen, KEY, TAU)
    return jnp.sum(d.score_logit_NB[0]) + jnp.sum(d.left_emb_NBMR[0])
  for impl in ("appendonly", "scan"):
    g1 = jax.jit(jax.grad(first_turn_only, argnums=(1, 2)), static_argnums=0)(
        _impl(spec, impl, 1), pl, pr)
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(g1)), impl
  g_full = jax.jit(jax.grad(first_turn_only, argnums=(1, 2)), static_argnums=0)(
      _impl(spec, "appendonly", None), pl, pr)
  assert any(np.any(np.asarray(x) != 0) for x in jax.tree.leaves(g_full))


def test_full_depth_window_equals_untruncated(x64):
  spec, pl, pr, ids, plen, tgt = _setup(max_turns=3, threshold=0.4818)
  g_none = _grads(_impl(spec, "appendonly", None), pl, pr, ids, plen, tgt)
  g_k = _grads(_impl(spec, "appendonly", 3), pl, pr, ids, plen, tgt)
  assert _max_rel(g_k, g_none) < 1e-12


def test_depth_zero_means_no_gradient(x64):
  spec, pl, pr, ids, plen, tgt = _setup(max_turns=2)
  g = _grads(_impl(spec, "appendonly", 0), pl, pr, ids, plen, tgt)
  assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(g))


def _bptt_temp_bytes(turns, lc=None, B=2):
  """Compiled temporaries of a full-BPTT gradient of a single lobe (params >> caches), and
  the lobe's parameters."""
  lc = lc or lobes.tiny("llama", d_ff=1024)
  spec = loop.DialogueSpec(lc, None, loop=loop.LoopConfig(turn_len=3, max_turns=turns,
                                                          threshold=None, mode="soft"))
  pl = lobes.init(lc, jax.random.key(0))
  ids, plen = prompts(B=B)

  def loss(p):
    return jnp.sum(loop.unroll(spec, p, None, ids, plen, KEY, TAU).left_emb_NBMR[-1] ** 2)
  compiled = jax.jit(jax.grad(loss)).lower(pl).compile()
  return compiled.memory_analysis().temp_size_in_bytes, pl


@pytest.mark.parametrize("turns", [1, 3])
def test_gradient_accumulator_is_the_output_buffer(turns):
  # The prefill runs inside the reverse pass's custom-vjp region and its reverse inside the
  # loop, so the loop's parameter accumulator leaves it as the gradient (no copy). Here the
  # LM head is half the parameters; an accumulator added to after the loop (the prefill's
  # gradient) kept a head-sized temporary: 1.26x the head's bytes, with one turn or three.
  temp, pl = _bptt_temp_bytes(turns, lobes.tiny("llama", vocab_size=20000, scan_layers=False),
                              B=1)
  head_bytes = pl["lm_head"].size * 4
  assert temp < 0.5 * head_bytes, (temp, head_bytes)


def test_reverse_pass_holds_one_parameter_accumulator():
  # Turn-level and token-level reverse scans share one parameter cotangent: going from 1 to 4
  # turns adds cache-sized buffers only (nesting two custom-vjp scans added one more
  # parameter-sized accumulator: +0.99x the parameter bytes here).
  t1, pl = _bptt_temp_bytes(1)
  t4, _ = _bptt_temp_bytes(4)
  param_bytes = lobes.param_count(pl) * 4
  assert t4 - t1 < 0.25 * param_bytes, (t1, t4, param_bytes)
