"""Memories in the dialogue loop: the prefix reaches only the configured lobes, at the right
positions; padded items are never selected; gradients reach the selector; rollout and
unroll agree; a train step runs with a bank from the facts task."""
import dataclasses
import functools
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slnjax import config as cfg, data, lobes, loop, memory, sln, train
from experiments import common
from slnjax import finalize
from slnjax.memory import dialogue as mdl

from loop_helpers import make, prompts

DATA_DIR = os.path.join(tempfile.gettempdir(), "slnjax_test_data")


def bank(B=3, C=4, L=3, counts=(4, 1, 2), seed=5):
  ids = jax.random.randint(jax.random.key(seed), (B, C, L), 4, 260)
  lens = jnp.full((B, C), L).at[:, 0].set(2)
  mask = jnp.arange(C)[None, :] < jnp.array(counts)[:, None]
  return memory.from_arrays(jnp.zeros((B, C, 1)), ids, lens, mask)


def mcfg(**kw):
  kw = {"selector": "mha", "residual": True, "k": 2, "key_dim": 8, "buckets": 64, "hidden": 8,
        "heads": 2, "mode": "greedy", **kw}
  return memory.MemoryConfig(**kw)


def read_for(spec, pl, pr, mc, ids, plen, b, key=jax.random.key(3), tau=1.0):
  mp = memory.init(mc, jax.random.key(4))
  return _read(mc, spec.left, spec.right, mp, b, pl, pr, ids, plen, key, tau)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _read(mc, left, right, mp, b, pl, pr, ids, plen, key, tau):
  return mdl.read(mc, mp, b, {"left": (left, pl), "right": (right, pr)}, ids, plen, key, tau)


def test_prefix_goes_only_to_the_configured_lobes():
  spec, pl, pr = make()
  ids, plen = prompts()
  b = bank()
  T = 2 * 3
  key = jax.random.key(7)
  prefill = jax.jit(loop.prefill, static_argnums=0)
  P0, c0, k0 = prefill(spec, pl, pr, ids, plen, key, 1.0)
  # Left lobe reads: its cache and positions grow by T; the right lobe is unchanged.
  r = read_for(spec, pl, pr, mcfg(lobes=("left",)), ids, plen, b)
  assert set(r.prefix) == {"left"} and r.prefix["left"].shape == (3, T, spec.left.d_model)
  P1, c1, k1 = prefill(spec, pl, pr, ids, plen, key, 1.0, None,
                       memory_prefix=r.prefix)
  s_left, _ = spec.cache_lengths(ids.shape[1])
  assert lobes.cache_length(c1["left"]) == s_left + T == spec.cache_lengths(ids.shape[1], T)[0]
  np.testing.assert_array_equal(k1["len_l"], plen + T)
  np.testing.assert_array_equal(P1["prompt_len_B"], plen)
  for a, b0 in zip(jax.tree.leaves(c1["rcache0"]), jax.tree.leaves(c0["rcache0"])):
    np.testing.assert_array_equal(a, b0)
  # The prefix's keys are those of the prefix alone (it comes first, causally).
  alone = lobes.apply(spec.left, pl, embeds=r.prefix["left"],
                      cache=lobes.init_cache(spec.left, 3, T), start=jnp.zeros(3, jnp.int32))
  np.testing.assert_allclose(lobes.stacked_cache(c1["left"])["k"][:, :, :, :T],
                             lobes.stacked_cache(alone["cache"])["k"], atol=1e-5)
  # The prompt follows at T: one pass over [prefix; prompt] predicts the same next token.
  x = jnp.concatenate([r.prefix["left"], lobes.embed_ids(spec.left, pl, ids)], 1)
  logits = lobes.apply(spec.left, pl, embeds=x)["logits_BTV"]
  last = jnp.take_along_axis(logits, (T + plen - 1)[:, None, None], 1)[:, 0]
  np.testing.assert_array_equal(jnp.argmax(last, -1), k1["pend_l"].ids_B)
  # Right lobe reads: the left lobe's prefill is unchanged bit for bit.
  r = read_for(spec, pl, pr, mcfg(lobes=("right",)), ids, plen, b)
  P2, c2, k2 = prefill(spec, pl, pr, ids, plen, key, 1.0, None,
                       memory_prefix=r.prefix)
  for a, b0 in zip(jax.tree.leaves((c2["left"], k2["pend_l"], k2["len_l"])),
                   jax.tree.leaves((c0["left"], k0["pend_l"], k0["len_l"]))):
    np.testing.assert_array_equal(a, b0)
  np.testing.assert_array_equal(P2["prompt_len_B"], plen + T)
  assert lobes.cache_length(c2["rcache0"]) == lobes.cache_length(c0["rcache0"]) + T


def test_lobe_without_memory_is_unchanged_over_the_dialogue():
  spec, pl, pr = make(mode="hard", feed_score=False)
  ids, plen = prompts()
  r = read_for(spec, pl, pr, mcfg(lobes=("right",)), ids, plen, bank())
  key = jax.random.key(8)
  rollout = jax.jit(loop.rollout, static_argnums=0)
  d0 = rollout(spec, pl, pr, ids, plen, key)
  d1 = rollout(spec, pl, pr, ids, plen, key, 1.0, None,
               memory_prefix=r.prefix)
  np.testing.assert_array_equal(d1.left_ids_NBM, d0.left_ids_NBM)
  np.testing.assert_array_equal(d1.left_logp_NBM, d0.left_logp_NBM)
  assert not np.allclose(d1.score_NB, d0.score_NB)  # the right lobe did read its memories


@pytest.mark.parametrize("tall", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_replay_positions_with_a_left_prefix(tall):
  """The replay (one parallel pass over left_context) scores the rollout's sampled tokens
  with the behaviour log-probs: the prefix shifts every position by T."""
  spec, pl, pr = make(tall=tall, mode="hard")
  ids, plen = prompts()
  r = read_for(spec, pl, pr, mcfg(lobes=("left", "right") if tall else ("left",)), ids, plen,
               bank())
  d = jax.jit(loop.rollout, static_argnums=0)(spec, pl, pr, ids, plen, jax.random.key(9), 1.0,
                                              None, memory_prefix=r.prefix)
  replay = jax.jit(loop.replay_logp, static_argnums=0)
  lp, _ = replay(spec, pl, ids, plen, d, memory_prefix=r.prefix)
  m = d.active_NB[..., None]
  np.testing.assert_allclose(np.where(m, lp, 0), np.where(m, d.left_logp_NBM, 0), atol=2e-4)
  lp_wrong, _ = replay(spec, pl, ids, plen, d)  # without the prefix: different
  assert not np.allclose(np.where(m, lp_wrong, 0), np.where(m, d.left_logp_NBM, 0), atol=1e-2)


# The mask is applied in select() before any mode's path: one relaxed and one sampled mode
# run by default (70 s each), the other two in `make test-all`.
@pytest.mark.parametrize("mode", ["soft", "sample",
                                  pytest.param("gumbel_st", marks=pytest.mark.slow),
                                  pytest.param("greedy", marks=pytest.mark.slow)])
def test_padded_bank_items_are_never_selected_in_the_loop(mode):
  spec, pl, pr = make()
  ids, plen = prompts()
  b = bank()
  # Padded slots hold the prompt itself (the best possible match), but are masked.
  b = b._replace(ids_BCL=b.ids_BCL.at[:, :, :].set(ids[:, None, :3]),
                 len_BC=jnp.where(b.mask_BC, b.len_BC, 3))
  b = b._replace(ids_BCL=jnp.where(b.mask_BC[..., None], bank().ids_BCL, b.ids_BCL))
  mc = mcfg(lobes=("left", "right"), mode=mode)
  model = sln.build("lateralized", spec.left, spec.right, spec.loop, memory=mc)
  params = sln.init(model, jax.random.key(0))
  read = jax.jit(lambda k: sln.read_memory(model, params, ids, plen, b, k, tau=0.5))
  rollout = jax.jit(lambda k, r: sln.rollout(model, params, ids, plen, k, 0.5, memory=r))
  for s in range(4):
    r = read(jax.random.key(s))
    w = np.asarray(r.sel.weights_BJC)
    assert np.all(w[~np.broadcast_to(np.asarray(b.mask_BC)[:, None], w.shape)] == 0)
    pick = np.asarray(r.sel.index_BJ)[np.asarray(r.sel.valid_BJ)]
    rows = np.nonzero(np.asarray(r.sel.valid_BJ))[0]
    assert np.asarray(b.mask_BC)[rows, pick].all()
    np.testing.assert_array_equal(r.sel.valid_BJ, [[1, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(r.prefix["left"][1, 3:], 0.0)  # row 1: one item, slot 2 empty
    d = rollout(jax.random.key(s), r)
    assert np.isfinite(np.asarray(d.score_NB)).all()


def _model(f64=False, mode="soft", lobes_=("left",), loop_mode="soft", **loop_kw):
  spec, pl, pr = make(f64=f64, mode=loop_mode, **loop_kw)
  mc = mcfg(lobes=lobes_, mode=mode)
  model = sln.build("lateralized", spec.left, spec.right, spec.loop, memory=mc)
  params = sln.init(model, jax.random.key(0))
  if f64:
    params = jax.tree.map(lambda x: x.astype(jnp.float64), params)
  return model, params


def _loss(model, params, ids, plen, b, key):
  r = sln.read_memory(model, params, ids, plen, b, key, tau=0.7)
  d = sln.unroll(model, params, ids, plen, key, 0.7, memory=r)
  return jnp.sum(d.score_logit_NB * d.active_NB) + 0.1 * jnp.sum(d.left_logp_NBM)


def test_soft_selection_gradient_matches_finite_differences(x64):
  model, params = _model(f64=True, mode="soft")
  ids, plen = prompts()
  b = bank()
  b = b._replace(keys_BCD=b.keys_BCD.astype(jnp.float64))
  key = jax.random.key(11)
  f = jax.jit(lambda mp: _loss(model, {**params, "memory": mp}, ids, plen, b, key))
  g = jax.jit(jax.grad(f))(params["memory"])
  gsel = jax.tree.leaves(g["selector"])
  assert sum(float(jnp.abs(x).sum()) for x in gsel) > 0
  assert float(jnp.abs(g["encoder"]["table"]).sum()) > 0
  v = jax.tree.map(lambda x: jax.random.normal(jax.random.key(x.size), x.shape, x.dtype),
                   params["memory"])
  eps = 1e-5
  plus = jax.tree.map(lambda p, d: p + eps * d, params["memory"], v)
  minus = jax.tree.map(lambda p, d: p - eps * d, params["memory"], v)
  fd = (f(plus) - f(minus)) / (2 * eps)
  an = sum(jnp.vdot(a, d) for a, d in zip(jax.tree.leaves(g), jax.tree.leaves(v)))
  np.testing.assert_allclose(an, fd, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("lobes_", [("left",), pytest.param(("right",), marks=pytest.mark.slow)])
def test_gumbel_st_gradient_reaches_the_selector(lobes_):
  model, params = _model(mode="gumbel_st", lobes_=lobes_)
  ids, plen = prompts()
  g = jax.jit(jax.grad(lambda mp: _loss(model, {**params, "memory": mp}, ids, plen, bank(),
                                        jax.random.key(12))))(params["memory"])
  assert sum(float(jnp.abs(x).sum()) for x in jax.tree.leaves(g["selector"])) > 0
  # "sample" gives no pathwise gradient: only its log-prob does.
  model_s, _ = _model(mode="sample", lobes_=lobes_)
  g = jax.jit(jax.grad(lambda mp: _loss(model_s, {**params, "memory": mp}, ids, plen, bank(),
                                        jax.random.key(12))))(params["memory"])
  assert sum(float(jnp.abs(x).sum()) for x in jax.tree.leaves(g)) == 0
  lp = jax.jit(jax.grad(lambda mp: sln.read_memory(model_s, {**params, "memory": mp}, ids,
                                                   plen, bank(), jax.random.key(12)
                                                   ).sel.logp_B.sum()))
  assert sum(float(jnp.abs(x).sum()) for x in jax.tree.leaves(lp(params["memory"]))) > 0


@pytest.mark.parametrize("tall", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_rollout_and_unroll_agree_with_memory(tall):
  spec, pl, pr = make(tall=tall, mode="gumbel_st", threshold=0.5)
  mc = mcfg(lobes=("left", "right"), mode="gumbel_st")
  model = sln.build("tall" if tall else "lateralized", spec.left, spec.right, spec.loop,
                    memory=mc)
  params = sln.init(model, jax.random.key(0))
  ids, plen = prompts()
  r = jax.jit(sln.read_memory, static_argnums=0)(model, params, ids, plen, bank(),
                                                 jax.random.key(13), 0.5)
  run = lambda f: jax.jit(lambda p, r: f(model, p, ids, plen, jax.random.key(14), 0.5,
                                         memory=r))(params, r)
  a, u = run(sln.rollout), run(sln.unroll)
  np.testing.assert_array_equal(a.turns_B, u.turns_B)
  np.testing.assert_array_equal(a.left_ids_NBM, u.left_ids_NBM)
  np.testing.assert_allclose(a.score_NB, u.score_NB, atol=1e-5)
  np.testing.assert_allclose(a.left_logp_NBM, u.left_logp_NBM, atol=1e-5)


def test_bad_memory_input_is_a_clear_error():
  spec, pl, pr = make()
  with pytest.raises(ValueError, match="lobes"):
    mcfg(lobes=("middle",))
  with pytest.raises(ValueError, match="lobes"):
    mcfg(lobes=())
  single = sln.build("single", spec.left, None, spec.loop)
  with pytest.raises(ValueError, match="right lobe"):
    sln.build("single", spec.left, None, spec.loop, memory=mcfg(lobes=("right",)))
  model = sln.build("lateralized", spec.left, spec.right, spec.loop, memory=mcfg())
  params = sln.init(model, jax.random.key(0))
  ids, plen = prompts()
  with pytest.raises(ValueError, match="memory=sln.read_memory"):
    sln.rollout(model, params, ids, plen, jax.random.key(0))
  with pytest.raises(ValueError, match="has no memory"):
    sln.read_memory(single, sln.init(single, jax.random.key(0)), ids, plen, bank(),
                    jax.random.key(0))
  with pytest.raises(ValueError, match="one bank per example"):
    sln.read_memory(model, params, ids[:2], plen[:2], bank(), jax.random.key(0))
  tiny = dict(task=dict(name="facts", config="closed_book", data_dir=DATA_DIR,
                        overrides=dict(name="mem_smoke", num_people=20, num_train=32,
                                       num_test=8)),
              model=dict(memory=dict(lobes=("left",))))
  fin = lambda *a, **kw: finalize.finalize(common.experiment(*a, **kw))
  with pytest.raises(ValueError, match="gives no memory bank"):
    fin("lateralized", "bptt", smoke=True, model=dict(memory=dict(lobes=("left",))))
  with pytest.raises(ValueError, match="does not read a memory bank"):
    fin("lateralized", "sft", smoke=True, **tiny)
  assert fin("lateralized", "bptt", smoke=True, eval_every=5, **tiny).eval_every == 5
  with pytest.raises(ValueError, match="config.model.memory"):
    fin("lateralized", "bptt", smoke=True,
        **{**tiny, "model": dict(memory=dict(lobes=("left", "middle")))})
  with pytest.raises(ValueError, match="gives no memory bank"):
    data.encode_bank({"prompt": "x"}, 0, data.ByteTokenizer(), capacity=4, item_len=8)


def test_bank_from_a_facts_record():
  rec = {"relevant_facts": ["Ana is 170 cm tall."], "distractor_facts": ["Bo lives in Lima.",
                                                                         "Cy was born in 1950."]}
  tok = data.ByteTokenizer()
  out = data.encode_bank(rec, 3, tok, capacity=4, item_len=24)
  assert out["memory_mask"].tolist().count(1) == 3 and out["memory_relevant"].sum() == 1
  j = int(np.argmax(out["memory_relevant"]))
  assert tok.decode(out["memory_ids"][j, :out["memory_len"][j]].tolist()) == rec[
      "relevant_facts"][0]
  again = data.encode_bank(rec, 3, tok, capacity=4, item_len=24)
  np.testing.assert_array_equal(out["memory_ids"], again["memory_ids"])  # deterministic
  with pytest.raises(ValueError, match="item_len"):
    data.encode_bank(rec, 3, tok, capacity=4, item_len=10)
  with pytest.raises(ValueError, match="capacity"):
    data.encode_bank({**rec, "relevant_facts": ["a", "b"]}, 3, tok, capacity=1, item_len=10)


@pytest.mark.parametrize("objective,mode", [("bptt", "gumbel_st"), pytest.param(
    "reinforce", "sample", marks=pytest.mark.slow)])
def test_train_step_with_a_facts_bank(tmp_path, objective, mode):
  loop_mode = "soft" if objective == "bptt" else "hard"
  c = common.experiment(
      "lateralized", objective, smoke=True, prompt_len=72, steps=2, log_every=1,
      task=dict(name="facts", config="closed_book", data_dir=DATA_DIR,
                overrides=dict(name="mem_smoke", num_people=20, num_train=32, num_test=8),
                bank=dict(capacity=6, item_len=72)),
      model=dict(loop=dict(turn_len=8, max_turns=2, mode=loop_mode),
                 memory=dict(lobes=("left", "right"), mode=mode, key_dim=8, buckets=64,
                             hidden=8, heads=2, k=1)))
  out = train.train(c, str(tmp_path))
  assert out["step"] == 2 and np.isfinite(out["loss"])
  assert out["grad_norm/memory"] > 0 and 0 <= out["memory_precision"] <= 1
