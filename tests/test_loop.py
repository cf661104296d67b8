"""The inner dialogue loop: drivers agree, stopping rules, frozen halted examples, compiles."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slnjax import loop
from loop_helpers import make, prompts

KEY = jax.random.key(3)


def _with(spec, **kw):
  return dataclasses.replace(spec, loop=dataclasses.replace(spec.loop, **kw))


def _rollout(spec, pl, pr, ids, plen, tau=0.5):
  return jax.jit(loop.rollout, static_argnums=0)(spec, pl, pr, ids, plen, KEY, tau)


@pytest.mark.parametrize("tall", [False, True])
@pytest.mark.parametrize("mode", ["soft", "gumbel_st", "hard"])
def test_while_loop_and_differentiable_driver_agree(tall, mode):
  spec, pl, pr = make(tall, mode=mode, threshold=0.49, max_turns=4)
  ids, plen = prompts(B=4)
  a = _rollout(spec, pl, pr, ids, plen)
  b = jax.jit(loop.unroll, static_argnums=0)(spec, pl, pr, ids, plen, KEY, 0.5)
  for name, x, y in zip(a._fields, a, b):
    if jnp.issubdtype(x.dtype, jnp.floating):
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=name)
    else:
      np.testing.assert_array_equal(x, y, err_msg=name)


def test_idl_limit_and_halted_turns_are_empty():
  spec, pl, pr = make(max_turns=3)
  d = _rollout(spec, pl, pr, *prompts())
  np.testing.assert_array_equal(d.turns_B, 3)
  np.testing.assert_array_equal(d.halt_reason_B, loop.HALT_LIMIT)
  assert d.active_NB.all()


def _first(hit_NB, n):
  """Index of the first True along turns, else n - 1 (the IDL limit)."""
  hit = np.asarray(hit_NB)
  return np.where(hit.any(0), hit.argmax(0), n - 1)


def test_threshold_halts_exactly_the_examples_that_pass():
  spec, pl, pr = make(max_turns=4)
  ids, plen = prompts(B=6)
  free = _rollout(spec, pl, pr, ids, plen)  # scores without any halting but the limit
  s = np.sort(np.asarray(free.score_NB).ravel())
  thr = float((s[len(s) // 2] + s[len(s) // 2 + 1]) / 2)
  d = _rollout(_with(spec, threshold=thr), pl, pr, ids, plen)
  last = _first(np.asarray(free.score_NB) >= thr, 4)
  np.testing.assert_array_equal(d.turns_B, last + 1)
  passed = (np.asarray(free.score_NB) >= thr).any(0)
  np.testing.assert_array_equal(d.halt_reason_B == loop.HALT_THRESHOLD, passed)
  assert 0 < passed.sum() < 6  # the test separates examples
  for b in range(6):  # halted examples never change afterwards: later turns are empty
    assert not np.asarray(d.active_NB)[last[b] + 1:, b].any()
    assert not np.asarray(d.left_ids_NBM)[last[b] + 1:, b].any()
    np.testing.assert_allclose(d.final_score_B[b], free.score_NB[last[b], b], rtol=1e-6)


def test_stop_token_halts_and_masks_the_rest_of_the_turn():
  spec, pl, pr = make(max_turns=3, turn_len=4, mode="hard", temperature=30.0)
  ids, plen = prompts(B=4)
  free = _rollout(spec, pl, pr, ids, plen)
  tok = int(free.left_ids_NBM[1, 0, 2])
  d = _rollout(_with(spec, stop_token=tok), pl, pr, ids, plen)
  hit = (np.asarray(free.left_ids_NBM) == tok).any(-1)
  last = _first(hit, 3)
  np.testing.assert_array_equal(d.turns_B, last + 1)
  np.testing.assert_array_equal(d.halt_reason_B == loop.HALT_STOP, hit.any(0))
  valid = np.asarray(d.left_valid_NBM)[1, 0]
  first = list(np.asarray(d.left_ids_NBM)[1, 0]).index(tok)
  np.testing.assert_array_equal(valid, np.arange(4) <= first)


@pytest.mark.parametrize("tall", [False, True])
def test_agreement(tall):
  spec, pl, pr = make(tall, max_turns=4, mode="greedy", stop_on_agreement=True)
  ids, plen = prompts(B=4)
  free = _rollout(_with(spec, stop_on_agreement=False), pl, pr, ids, plen)
  L = np.asarray(free.left_ids_NBM)
  if tall:
    agree = (L == np.asarray(free.right_ids_NBM)).all(-1)
  else:
    agree = np.concatenate([np.zeros((1, 4), bool), (L[1:] == L[:-1]).all(-1)])
  d = _rollout(spec, pl, pr, ids, plen)
  np.testing.assert_array_equal(d.turns_B, _first(agree, 4) + 1)
  np.testing.assert_array_equal(d.halt_reason_B == loop.HALT_AGREEMENT, agree.any(0))


@pytest.mark.parametrize("tall", [False, True])
def test_halted_example_state_is_frozen_in_a_turn(tall):
  spec, pl, pr = make(tall)
  ids, plen = prompts(B=2)
  P, caches, carry = loop.prefill(spec, pl, pr, ids, plen, KEY, 0.5)
  carry = {**carry, "active_B": jnp.array([True, False])}
  x = {"t": jnp.int32(0), "key": KEY}
  caches2, carry2, ys = jax.jit(loop.turn, static_argnums=0)(spec, P, caches, carry, x)
  for before, after in zip(jax.tree.leaves((caches, carry)), jax.tree.leaves((caches2, carry2))):
    np.testing.assert_array_equal(np.asarray(before)[..., 1, :, :, :] if before.ndim == 5
                                  else np.asarray(before)[1], np.asarray(after)[..., 1, :, :, :]
                                  if after.ndim == 5 else np.asarray(after)[1])
  assert not np.asarray(ys["left_ids"])[1].any()
  assert int(carry2["turns_B"][0]) == 1 and int(carry2["turns_B"][1]) == 0


def test_compiles_once_per_shape():
  spec, pl, pr = make()
  traces = []

  def f(pl, pr, ids, plen, key):
    traces.append(1)
    return loop.rollout(spec, pl, pr, ids, plen, key, 0.5).turns_B
  fj = jax.jit(f)
  ids, plen = prompts()
  for seed in range(3):
    fj(pl, pr, ids + seed, plen, jax.random.key(seed)).block_until_ready()
  assert len(traces) == 1


def test_bad_inputs():
  spec, pl, pr = make()
  ids, plen = prompts()
  with pytest.raises(ValueError, match="expected"):
    loop.rollout(spec, pl, pr, ids[0], plen, KEY)
  with pytest.raises(ValueError, match="target ids"):
    loop.rollout(spec, pl, pr, ids, plen, KEY, target_BM=jnp.zeros((3, 7), jnp.int32))
  with pytest.raises(ValueError, match="score_head"):
    loop.DialogueSpec(spec.left, spec.left, tall=False)
  with pytest.raises(ValueError, match="bptt_depth"):
    loop.LoopConfig(bptt_depth=-1)


def test_at_halt_reads_each_examples_last_taken_turn():
  N, B, M = 4, 3, 2
  x_NBM = jnp.arange(N * B * M, dtype=jnp.float32).reshape(N, B, M) + 1
  turns_B = jnp.array([1, 4, 2])
  z = jnp.zeros((N, B))
  d = loop.Dialogue(*([x_NBM] * 5), x_NBM, z, z, z > 0, turns_B, turns_B, turns_B * 0.0)
  np.testing.assert_array_equal(d.at_halt(x_NBM), np.stack([x_NBM[0, 0], x_NBM[3, 1],
                                                            x_NBM[1, 2]]))
  np.testing.assert_array_equal(d.at_halt(d.score_NB), np.zeros(B))
  grad = jax.grad(lambda x: d._replace(left_logp_target_NBM=x).at_halt(x).sum())(x_NBM)
  assert float(grad.sum()) == B * M and float(grad[-1, 0].sum()) == 0  # halted at turn 1
