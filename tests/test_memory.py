"""Memory banks, selectors, selection modes, REINFORCE/PPO estimators, pre-training losses,
and prepending selected memories to a lobe."""
import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slnjax import lobes, memory
from slnjax.memory import bank as bank_lib

KEY = functools.partial(jax.random.key, impl="rbg")  # fast-compiling random numbers


def _items(n, L=4, D=2, start=0):
  ids = (np.arange(start, start + n)[:, None] * 10 + np.arange(L)[None]).astype(np.int32)
  keys = np.tile(np.arange(start, start + n, dtype=np.float32)[:, None], (1, D))
  return keys[None], ids[None], np.full((1, n), L, np.int32)


def test_bank_truncates_to_the_newest_items():
  b = memory.empty(1, 3, 2, 4)
  keys, ids, lens = _items(5)
  valid = np.array([[1, 1, 0, 1, 1]], bool)
  app = jax.jit(memory.append)
  b = app(b, keys, ids, lens, valid, 0)
  kept = sorted(np.asarray(b.ids_BCL)[0, :, 0] // 10)
  assert kept == [1, 3, 4] and bool(b.mask_BC.all()) and int(b.seen_B[0]) == 4
  keys, ids, lens = _items(1, start=7)
  b = app(b, keys, ids, lens, np.ones((1, 1), bool), 5)
  assert sorted(np.asarray(b.ids_BCL)[0, :, 0] // 10) == [3, 4, 7]  # item 1 was the oldest
  np.testing.assert_array_equal(np.sort(np.asarray(b.age_BC())[0]), [0, 5, 5])


def test_bank_reservoir_sampling_is_uniform():
  S, C, n = 2000, 4, 12
  keys, ids, lens = _items(n)
  tile = lambda x: np.repeat(x, S, axis=0)

  @jax.jit
  def run(rng):
    b = memory.empty(S, C, 2, 4)
    return memory.append(b, tile(keys), tile(ids), tile(lens), np.ones((S, n), bool), 0,
                         overflow="sample", rng=rng)

  b = run(KEY(0))
  assert bool(b.mask_BC.all())
  held = np.asarray(b.ids_BCL)[:, :, 0] // 10  # [S, C]
  freq = np.array([(held == i).any(1).mean() for i in range(n)])
  np.testing.assert_allclose(freq, C / n, atol=0.05)  # 5 standard errors
  assert all(len(set(row)) == C for row in held)


@functools.partial(jax.jit, static_argnames=("k", "mode"))
def _select_many(scores, mask, keys, k, mode):
  return jax.vmap(lambda key: memory.select(scores, mask, k, mode, key, tau=0.5))(keys)


@pytest.mark.parametrize("mode", memory.MODES)
def test_padded_items_are_never_selected(mode):
  rng = np.random.default_rng(0)
  C, k = 6, 3
  counts = np.array([0, 1, 2, 4, 6])
  mask = np.arange(C)[None] < counts[:, None]
  mask = np.stack([rng.permutation(m) for m in mask])  # padding anywhere, not only at the end
  scores = rng.normal(size=mask.shape).astype(np.float32)
  scores = np.where(mask, scores, 1e6)  # raw scores of padded slots are huge
  sel = jax.tree.map(np.asarray, _select_many(scores, mask, jax.random.split(KEY(1), 200), k,
                                              mode))
  valid = sel.valid_BJ  # [S, B, k]
  np.testing.assert_array_equal(valid[0], np.arange(k)[None] < np.minimum(counts, k)[:, None])
  picked_mask = np.take_along_axis(np.broadcast_to(mask, (200,) + mask.shape), sel.index_BJ, 2)
  assert picked_mask[valid].all()
  w_pad = np.where(np.broadcast_to(~mask[None, :, None, :], sel.weights_BJC.shape),
                   sel.weights_BJC, 0.0)
  assert np.abs(w_pad).max() == 0.0
  assert np.abs(sel.weights_BJC[~valid]).max(initial=0.0) == 0.0


def test_gumbel_topk_returns_exactly_k_distinct_items():
  C, k, S = 8, 3, 500
  scores = np.random.default_rng(1).normal(size=(2, C)).astype(np.float32)
  mask = np.ones((2, C), bool)
  sel = jax.tree.map(np.asarray, _select_many(scores, mask, jax.random.split(KEY(2), S), k,
                                              "gumbel_st"))
  idx = sel.index_BJ.reshape(-1, k)
  assert all(len(set(r)) == k for r in idx)
  w = sel.weights_BJC.reshape(-1, k, C)
  np.testing.assert_array_equal(w, jax.nn.one_hot(idx, C))  # exactly one-hot forward
  # Different draws pick different sets; the straight-through gradient reaches the scores.
  assert len({tuple(sorted(r)) for r in idx}) > 5
  g = jax.jit(jax.grad(lambda s: jnp.sum(memory.select(s, mask, k, "gumbel_st", KEY(3),
                                                       tau=0.5).weights_BJC
                                         * jnp.arange(C))))(scores)
  assert np.abs(np.asarray(g)).sum() > 0


def _ordered_subsets(C, k):
  return np.array(list(itertools.permutations(range(C), k)), np.int32)


def test_plackett_luce_logp_is_normalised_and_matches_the_sampler():
  C, k, S = 4, 2, 20000
  theta = np.array([[1.0, -0.5, 0.3, 0.0]], np.float32)
  mask = np.ones((1, C), bool)
  subsets = _ordered_subsets(C, k)
  logp = jax.jit(jax.vmap(lambda ix: memory.plackett_luce_logp(
      theta, mask, ix[None], np.ones((1, k), bool))[0]))(subsets)
  p = np.exp(np.asarray(logp))
  np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-5)
  sel = _select_many(theta, mask, jax.random.split(KEY(4), S), k, "sample")
  idx = np.asarray(sel.index_BJ)[:, 0]
  freq = np.array([np.mean(np.all(idx == s, 1)) for s in subsets])
  np.testing.assert_allclose(freq, p, atol=5 * np.sqrt(p * (1 - p) / S).max())
  np.testing.assert_allclose(np.asarray(sel.logp_B)[:, 0],
                             np.asarray(logp)[[np.flatnonzero(np.all(subsets == i, 1))[0]
                                               for i in idx]], rtol=1e-5)


@pytest.mark.parametrize("k", [1, 2])
def test_reinforce_gradient_is_unbiased_on_a_bandit(k):
  """E[-(R - b) grad log p] over sampled subsets equals -grad E[R] (exact, by enumeration)."""
  C, S = 5, 20000
  theta = np.array([0.4, -0.2, 0.9, 0.0, -1.0], np.float32)
  mask = np.ones((1, C), bool)
  r_item = np.array([1.0, 0.0, 0.2, 0.7, 0.5], np.float32)  # reward of a subset: sum of items
  subsets = _ordered_subsets(C, k)

  def exact_value(th):
    lp = jax.vmap(lambda ix: memory.plackett_luce_logp(th[None], mask, ix[None],
                                                       jnp.ones((1, k), bool))[0])(subsets)
    return jnp.sum(jnp.exp(lp) * r_item[subsets].sum(1))

  exact = np.asarray(jax.jit(jax.grad(exact_value))(theta))

  @jax.jit
  def per_sample_grads(keys):
    def one(key):
      def surrogate(th):
        sel = memory.select(th[None], mask, k, "sample", key)
        reward = jnp.sum(jnp.take(r_item, sel.index_BJ[0]))[None]
        return memory.reinforce_loss(sel.logp_B, reward, baseline_B=jnp.full((1,), 0.8))
      return -jax.grad(surrogate)(theta)
    return jax.vmap(one)(keys)

  g = np.asarray(per_sample_grads(jax.random.split(KEY(5 + k), S)))
  mean, se = g.mean(0), g.std(0) / np.sqrt(S)
  assert np.all(np.abs(mean - exact) < 4.5 * se + 1e-6), (mean, exact, se)
  assert np.abs(exact).max() > 10 * se.max()  # the test can tell a wrong gradient apart


def test_ppo_matches_reinforce_on_policy():
  theta = np.array([[0.3, -0.1, 0.5, 0.2]], np.float32)
  mask = np.ones((1, 4), bool)
  adv = jnp.array([0.7])

  def lp(th):
    return memory.plackett_luce_logp(th, mask, jnp.array([[2, 0]]), jnp.ones((1, 2), bool))

  old = lp(theta)
  g_ppo = jax.grad(lambda th: memory.ppo_loss(lp(th), old, adv, 0.2))(theta)
  g_rf = jax.grad(lambda th: -(adv * lp(th)).sum())(theta)
  np.testing.assert_allclose(g_ppo, g_rf, rtol=1e-5)
  # Beyond the clip range the surrogate is flat in the direction that would exceed it.
  far = lp(theta) - 1.0
  g_clip = jax.grad(lambda th: memory.ppo_loss(lp(th), far, adv, 0.2))(theta)
  assert np.abs(np.asarray(g_clip)).max() == 0.0


@pytest.mark.parametrize("residual", [False, True])
def test_selectors_score_shapes_and_masks(residual):
  B, C, D = 3, 5, 8
  rng = np.random.default_rng(0)
  q = rng.normal(size=(B, D)).astype(np.float32)
  keys = rng.normal(size=(B, C, D)).astype(np.float32)
  mask = np.arange(C)[None] < np.array([[5], [3], [1]])

  @jax.jit
  def run(q, keys, mask):
    out = {}
    for kind in memory.KINDS:
      sel = memory.Selector(kind, hidden=16, heads=2, residual=residual)
      p = nn.meta.unbox(sel.init(KEY(1), q, keys, mask)["params"])
      out[kind] = sel.apply({"params": p}, q, keys, mask)
      if residual and kind == "simple":  # residual MLPs start as identities (zero-init out)
        out["skip"] = out[kind] - sel.apply({"params": {**p, "v": jnp.zeros_like(p["v"])}},
                                            q, keys, mask)
        out["dot"] = jnp.einsum("bd,bcd->bc", q, keys) / jnp.sqrt(D)
    return out

  out = jax.tree.map(np.asarray, run(q, keys, mask))
  for kind in memory.KINDS:
    s = out[kind]
    assert s.shape == (B, C)
    assert np.all(s[~mask] < -1e29) and np.all(np.isfinite(s[mask])) and np.all(
        np.abs(s[mask]) < 1e6)
  if residual:
    dot = np.where(mask, out["dot"], 0.0)
    np.testing.assert_allclose(np.where(mask, out["simple"] - out["skip"], 0.0), dot,
                               atol=1e-5)


def test_recency_pretraining_and_distillation():
  time = np.array([[0, 1, 2, 3, 0]])
  mask = np.array([[1, 1, 1, 1, 0]], bool)
  b = memory.from_arrays(np.zeros((1, 5, 2), np.float32), np.zeros((1, 5, 3), np.int32),
                         np.ones((1, 5), np.int32), mask, time)
  p = np.asarray(memory.recency_targets(b, lam=0.5))
  np.testing.assert_allclose(p[0, :4], np.exp(-0.5 * np.array([3, 2, 1, 0])) /
                             np.exp(-0.5 * np.array([3, 2, 1, 0])).sum(), rtol=1e-6)
  assert p[0, 4] == 0
  rel = np.array([[1, 0, 0, 0, 1]])  # a relevance label on a padded slot is ignored
  p_rel = np.asarray(memory.recency_targets(b, 0.5, rel, alpha=0.0))
  np.testing.assert_allclose(p_rel[0], [1, 0, 0, 0, 0], atol=1e-6)
  with pytest.raises(ValueError, match="relevance"):
    memory.recency_targets(b, 0.5, alpha=0.5)
  # The pre-training loss is minimised by scores = log p*: its gradient vanishes there.
  opt = np.where(mask, np.log(np.maximum(p, 1e-30)), -1e30).astype(np.float32)
  g = jax.grad(lambda s: memory.pretrain_loss(s, mask, p))(opt)
  np.testing.assert_allclose(np.asarray(g)[mask], 0.0, atol=1e-6)
  s = np.array([[0.1, 2.0, -1.0, 0.5, 9.0]], np.float32)
  np.testing.assert_allclose(memory.distill_loss(s, s, mask), 0.0, atol=1e-7)
  assert float(memory.distill_loss(s, s[:, ::-1].copy(), mask)) > 0
  g_ref = jax.grad(lambda r: memory.distill_loss(s, r, mask), argnums=0)(s)
  assert np.abs(np.asarray(g_ref)).max() == 0.0


def test_prefix_right_aligned_ends_every_item_at_its_slot_end():
  B, C, L, D = 1, 3, 5, 4
  E = jnp.arange(260 * D, dtype=jnp.float32).reshape(260, D) + 1.0  # no zero rows
  ids = np.array([[[10, 11, 12, 0, 0], [20, 21, 22, 23, 24], [30, 0, 0, 0, 0]]], np.int32)
  b = memory.from_arrays(np.zeros((B, C, 2), np.float32), ids, np.array([[3, 5, 1]]),
                         np.ones((B, C), bool))
  sel = memory.select(jnp.array([[2.0, 0.0, 1.0]]), b.mask_BC, 2, "greedy")  # items 0, 2
  right = np.asarray(memory.prefix_embeds(sel, b, E, align="right"))
  want_ids = [0, 0, 10, 11, 12, 0, 0, 0, 0, 30]
  want = np.where((np.array(want_ids) > 0)[:, None], np.asarray(E)[want_ids], 0.0)
  np.testing.assert_array_equal(right[0], want)
  left = np.asarray(memory.prefix_embeds(sel, b, E))
  np.testing.assert_array_equal(left[0, :3], np.asarray(E)[[10, 11, 12]])
  assert not left[0, 3:5].any() and not left[0, 6:].any()
  # A soft read-out mixes the aligned items position by position.
  soft = memory.select(jnp.array([[0.0, 0.0, -1e9]]), b.mask_BC, 1, "soft", tau=1.0)
  mix = np.asarray(memory.prefix_embeds(soft, b, E, align="right"))
  np.testing.assert_allclose(mix[0, 1], 0.5 * np.asarray(E)[21], rtol=1e-6)
  np.testing.assert_allclose(mix[0, 4], 0.5 * (np.asarray(E)[12] + np.asarray(E)[24]), rtol=1e-6)
  with pytest.raises(ValueError, match="align"):
    memory.prefix_embeds(sel, b, E, align="center")


def test_prefix_prepends_selected_items_to_a_lobe():
  cfg = lobes.tiny()
  lp = jax.jit(lambda k: lobes.init(cfg, k))(KEY(0))
  B, C, L, P = 2, 4, 5, 3
  rng = np.random.default_rng(0)
  ids = rng.integers(4, 260, (B, C, L)).astype(np.int32)
  lens = np.array([[5, 3, 4, 2], [2, 5, 5, 1]], np.int32)
  mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
  b = memory.from_arrays(np.zeros((B, C, 2), np.float32), ids, lens, mask)
  scores = np.array([[0.0, 3.0, 1.0, 9.0], [2.0, 1.0, 9.0, 9.0]], np.float32)
  sel = memory.select(scores, mask, 2, "greedy")
  np.testing.assert_array_equal(sel.index_BJ, [[1, 2], [0, 1]])
  E = lobes.embedding_matrix(cfg, lp)
  pre = np.asarray(memory.prefix_embeds(sel, b, E))
  hard_ids = np.asarray(memory.prefix_ids(sel, b))
  assert pre.shape == (B, 2 * L, cfg.d_model) and hard_ids.shape == (B, 2 * L)
  want = np.where((hard_ids > 0)[..., None], np.asarray(E)[hard_ids], 0.0)
  np.testing.assert_allclose(pre, want, atol=1e-6)
  # Ingesting the prefix into the cache, then the prompt = one pass over [prefix; prompt].
  prompt = rng.integers(4, 260, (B, P)).astype(np.int32)

  @jax.jit
  def both(pre):
    cache = lobes.init_cache(cfg, B, 2 * L + P)
    zero = jnp.zeros((B,), jnp.int32)
    _, pos = memory.ingest_prefix(cfg, lp, cache, pre, zero, jnp.ones((B,), bool))
    out, _ = memory.ingest_prefix(cfg, lp, _["cache"], lobes.embed_ids(cfg, lp, prompt), pos,
                                  jnp.ones((B,), bool))
    full = lobes.apply(cfg, lp, embeds=jnp.concatenate([pre, lobes.embed_ids(cfg, lp, prompt)],
                                                       1))
    return out["logits_BV"], full["logits_BTV"][:, -1]

  a, f = both(pre)
  np.testing.assert_allclose(a, f, atol=1e-5)


def test_reader_gradients_per_mode():
  mcfg = memory.MemoryConfig(selector="mha", k=2, key_dim=16, buckets=256)
  params = memory.init(mcfg, KEY(0))
  B, C, L = 2, 5, 6
  rng = np.random.default_rng(1)
  ids = rng.integers(4, 260, (B, C, L)).astype(np.int32)
  b = memory.from_arrays(np.zeros((B, C, 16), np.float32), ids, np.full((B, C), L),
                         np.ones((B, C), bool))
  q_ids = rng.integers(4, 260, (B, 7)).astype(np.int32)
  E = jnp.asarray(rng.normal(size=(260, 8)).astype(np.float32))

  @functools.partial(jax.jit, static_argnames="mode")
  def grads(params, mode):
    def f(p):
      sel, _ = memory.read(mcfg, p, b, q_ids, jnp.full((B,), 7), KEY(1), tau=0.5, mode=mode)
      return jnp.sum(memory.prefix_embeds(sel, b, E) ** 2), sel.logp_B.sum()
    g_path = jax.grad(lambda p: f(p)[0])(params)
    g_logp = jax.grad(lambda p: f(p)[1])(params)
    n = lambda t: sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(t))
    return n(g_path["selector"]), n(g_path["encoder"]), n(g_logp["selector"])

  for mode in ("soft", "gumbel_st"):
    sel_g, enc_g, _ = grads(params, mode)
    assert float(sel_g) > 0 and float(enc_g) > 0, mode
  sel_g, _, logp_g = grads(params, "sample")
  assert float(sel_g) == 0 and float(logp_g) > 0
