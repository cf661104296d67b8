"""Wide SLNs: routing, halting (while_loop vs differentiable driver), MoE load balancing."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slnjax import lobes, sln, wide
from slnjax.loop import LoopConfig
from slnjax.wide import blocks
from slnjax.wide.gate import LEFT, OUTPUT, RIGHT

LM = lobes.tiny(n_layers=3)
B, P, M, N, W, X, K = 4, 6, 3, 3, 2, 3, 2
# RBG keys: random numbers that compile much faster than threefry on this CPU (tests only).
KEY = functools.partial(jax.random.key, impl="rbg")


def _batch():
  ids = jnp.asarray(np.random.default_rng(1).integers(4, 260, (B, P)), jnp.int32)
  plen = jnp.array([6, 3, 5, 2])
  return ids, plen


@functools.lru_cache(maxsize=None)
def _setup(kind, route):
  cfg = wide.WideConfig(k_in=1, k_out=1, max_iters=N, write_len=W, n_experts=X, top_k=K,
                        route=route, answer_len=M)
  model = sln.build(kind, LM, None, cfg)
  params = wide.init(model, KEY(0))
  # Sharpen the gate (random init is near uniform) so that examples halt at different steps.
  params["left"]["gate"]["w_out"] = params["left"]["gate"]["w_out"] * 300.0
  ids, plen = _batch()
  roll = jax.jit(lambda p, k: wide.rollout(model, p, ids, plen, k))
  unroll = jax.jit(lambda p, k, t, tl: wide.unroll(model, p, ids, plen, k, t, tl,
                                                   keep_logits=True))
  return model, params, roll, unroll


def test_registered_kinds_and_config_mapping():
  assert {"wide", "lateralized_wide"} <= set(sln.KINDS)
  m = sln.build("wide", LM, None, LoopConfig(max_turns=5, mode="gumbel_st", turn_len=4))
  assert isinstance(m, wide.WideSLN) and m.cfg.max_iters == 5 and m.cfg.answer_len == 4
  g = sln.build("lateralized_wide", LM, None, {"max_iters": 2, "route": "hard"})
  assert g.cfg.lateralized and g.cfg.route == "hard" and not m.cfg.lateralized
  with pytest.raises(ValueError, match="Unknown wide config keys"):
    sln.build("wide", LM, None, {"max_iter": 2})
  with pytest.raises(ValueError, match="exceed the LM's n_layers"):
    wide.build("wide", LM, wide.WideConfig(k_in=2, k_out=2))
  with pytest.raises(ValueError, match="route"):
    wide.WideConfig(route="argmax")


def test_from_lobe_reuses_first_and_last_blocks():
  lm4 = lobes.tiny(n_layers=4)
  lobe = jax.jit(lambda k: lobes.init(lm4, k))(KEY(3))
  unrolled = {k: v for k, v in lobe.items() if k != "layers"}  # scan_layers=False layout
  unrolled.update({f"layer_{i}": jax.tree.map(lambda x: x[i], lobe["layers"]) for i in range(4)})
  model = wide.build("wide", lm4, wide.WideConfig(k_in=1, k_out=2))
  same = lambda a, b: jax.tree.all(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), a, b))
  for source in (lobe, unrolled):
    params = wide.from_lobe(model, source, KEY(4))
    assert same(params["left"]["encoder"], jax.tree.map(lambda x: x[:1], lobe["layers"]))
    assert same(params["left"]["decoder"], jax.tree.map(lambda x: x[2:], lobe["layers"]))
    assert params["left"]["embedding"] is source["embedding"]
  axes = wide.logical_axes(model)
  is_spec = lambda x: isinstance(x, jax.sharding.PartitionSpec)
  assert (jax.tree.structure(jax.tree.map(lambda _: 0, params))
          == jax.tree.structure(jax.tree.map(lambda _: 0, axes, is_leaf=is_spec)))
  with pytest.raises(ValueError, match="n_layers"):
    wide.from_lobe(wide.build("wide", LM, wide.WideConfig()), lobe, KEY(4))


@pytest.mark.parametrize("kind,route", [("wide", "gumbel_st"), ("lateralized_wide", "greedy")])
def test_gate_halting_matches_while_loop_driver(kind, route):
  model, params, roll, unroll = _setup(kind, route)
  seen = set()
  for seed in range(4):
    key = KEY(10 + seed)
    # A different bias towards OUTPUT per round: from rarely to mostly halting at once.
    gate = {**params["left"]["gate"], "b_out": jnp.array([0.0, 0.0, 2.0 * (seed - 1.5)])}
    params = {**params, "left": {**params["left"], "gate": gate}}
    tr = roll(params, key)
    # Teacher-force the rollout's own greedy answer: it must be reproduced token by token.
    out = unroll(params, key, tr.answer_ids_BM, jnp.full((B,), M))
    it = np.asarray(tr.iters_B)
    seen.update(it.tolist())
    np.testing.assert_array_equal(np.asarray(out.iters_B), it)
    np.testing.assert_array_equal(np.asarray(tr.gate_halted_B), it < N)
    t_NB = np.arange(N)[:, None]
    ch_r, ch_u = np.asarray(tr.choice_NB), np.asarray(out.choice_NB)
    np.testing.assert_array_equal(np.where(t_NB <= it, ch_u, -1), ch_r)
    np.testing.assert_array_equal(np.asarray(tr.active_NB), t_NB <= it)
    assert np.all(ch_r[np.minimum(it, N - 1), np.arange(B)][it < N] == OUTPUT)
    assert np.all((ch_r[t_NB < it] == LEFT) | (ch_r[t_NB < it] == RIGHT))
    first = np.asarray(out.first_logits_nBV)[it, np.arange(B)]
    np.testing.assert_allclose(first, np.asarray(tr.answer_logits0_BV), atol=2e-5, rtol=1e-5)
    assert np.all(np.asarray(out.correct_nB)[it, np.arange(B)])
    np.testing.assert_array_equal(np.asarray(tr.answer_ids_BM)[:, 0],
                                  np.argmax(np.asarray(tr.answer_logits0_BV), -1))
    # Routing shapes: every slot routes to top_k distinct experts in range (in the steps that
    # ran: the while_loop leaves the rows of steps after every example halted as zeros).
    ran_NB = t_NB <= it.max()
    for idx, ran in ((tr.index_left_NBWk, ran_NB), (out.index_left_NBWk, np.ones_like(ran_NB)),
                     (tr.index_right_NBWk, ran_NB)):
      idx = np.asarray(idx)
      assert idx.shape == (N, B, W, K) and idx.min() >= 0 and idx.max() < X
      assert np.all((idx[..., 0] != idx[..., 1])[np.broadcast_to(ran, idx.shape[:2])])
    probs = np.asarray(out.probs_left_NBWX)
    assert probs.shape == (N, B, W, X)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    if model.cfg.lateralized:
      s = np.asarray(tr.score_NB)
      assert np.all(((s > 0) & (s < 1))[ran_NB.repeat(B, 1)])
  assert len(seen) > 1, f"all examples halted alike ({seen}): the test would prove little"


@jax.jit
def _routes(logits, key):
  out = {m: wide.route(logits, m, key, tau=0.5) for m in
         ("hard", "gumbel", "gumbel_st", "straight_through")}
  out["soft"] = wide.route(logits, "soft", tau=1.0)
  out["forced"] = wide.route(logits, "hard", key, forced_B=jnp.full(logits.shape[:1], RIGHT))
  grads = {m: jax.grad(lambda l: wide.route(l, m, key, tau=0.5).halt_w_B.sum())(logits)
           for m in ("gumbel_st", "hard")}
  return out, grads


def test_route_modes():
  logits = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32) * 2
  out, grads = jax.tree.map(np.asarray, _routes(logits, KEY(1)))
  hard = out["hard"]
  for mode in ("gumbel", "gumbel_st", "straight_through"):  # one draw, the same choices
    r = out[mode]
    np.testing.assert_array_equal(r.choice_B, hard.choice_B)
    cont = r.choice_B != OUTPUT
    np.testing.assert_array_equal(r.lobe_B[cont], r.choice_B[cont])
  st = out["gumbel_st"]
  np.testing.assert_allclose(st.halt_w_B, (st.choice_B == OUTPUT).astype(float), atol=1e-6)
  np.testing.assert_allclose(st.lobe_w_B2.sum(-1), 1.0, atol=1e-6)
  lp = np.asarray(jax.nn.log_softmax(logits))
  np.testing.assert_allclose(out["soft"].halt_w_B, np.exp(lp[:, OUTPUT]), rtol=1e-5)
  np.testing.assert_allclose(hard.logp_B, lp[np.arange(64), hard.choice_B], rtol=1e-5)
  np.testing.assert_allclose(out["forced"].logp_B, lp[:, RIGHT], rtol=1e-5)
  # The straight-through halting weight has the relaxed gradient; the hard one has none.
  assert np.abs(grads["gumbel_st"]).sum() > 0 and np.abs(grads["hard"]).sum() == 0


def test_load_balancing_loss_by_hand():
  probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.5, 0.25, 0.25]])
  top1 = np.argmax(probs, -1)[:, None]
  weight = np.array([1.0, 1.0, 0.0, 1.0])  # the third vector was never produced
  rows = weight > 0
  f = np.bincount(top1[rows, 0], minlength=3) / rows.sum()  # [2/3, 1/3, 0]
  p_mean = probs[rows].mean(0)
  want = 3 * np.sum(f * p_mean)
  top2 = np.argsort(-probs, -1)[:, :2]
  f2 = np.zeros(3)
  for r in np.flatnonzero(rows):
    f2[top2[r]] += 0.5
  f2 /= rows.sum()
  lb = jax.jit(wide.load_balance_loss)
  np.testing.assert_allclose(lb(probs, top1, weight), want, rtol=1e-6)
  np.testing.assert_allclose(lb(probs, top2, weight), 3 * np.sum(f2 * p_mean), rtol=1e-6)
  uniform = np.full((4, 3), 1 / 3)
  np.testing.assert_allclose(lb(uniform, np.arange(4)[:, None] % 3, np.ones(4)), 1.0,
                             rtol=1e-6)
  counts = jax.jit(wide.expert_counts, static_argnums=2)(top1, weight, 3)
  np.testing.assert_array_equal(counts, [2, 1, 0])


def test_halting_distribution_and_prior():
  h = np.random.default_rng(0).uniform(size=(4, 5)).astype(np.float32)
  hard = np.array([[0.0], [1.0], [1.0], [0.0]])  # first OUTPUT at call 1
  prior = wide.geometric_prior(4, 0.3)
  q, q_hard, kl0, kl = jax.jit(lambda h, hh, p: (
      wide.halting_distribution(h), wide.halting_distribution(hh),
      wide.ponder_kl(p[:, None], p), wide.ponder_kl(wide.halting_distribution(h), p)))(
          h, hard, prior)
  assert q.shape == (5, 5)
  np.testing.assert_allclose(q.sum(0), 1.0, rtol=1e-6)
  np.testing.assert_allclose(q[0], h[0], rtol=1e-6)
  np.testing.assert_allclose(q[1], (1 - h[0]) * h[1], rtol=1e-6)
  np.testing.assert_array_equal(q_hard[:, 0], [0, 1, 0, 0, 0])
  np.testing.assert_allclose(prior.sum(), 1.0, rtol=1e-6)
  np.testing.assert_allclose(kl0, 0.0, atol=1e-6)
  assert float(kl.min()) > 0


@pytest.mark.slow
@pytest.mark.parametrize("route,pg", [("gumbel_st", "reinforce"), ("soft", "reinforce"),
                                      ("hard", "reinforce"), ("hard", "ppo")])
def test_gate_gets_a_training_signal(route, pg):
  cfg = wide.WideConfig(max_iters=2, route=route, n_experts=2, answer_len=2, bptt_depth=1)
  model = wide.build("lateralized_wide", LM, cfg)
  params = wide.init(model, KEY(0))
  ids, plen = _batch()
  tgt = jnp.asarray(np.random.default_rng(5).integers(4, 260, (B, 2)), jnp.int32)
  lcfg = wide.WideLossConfig(pg=pg, reward="neg_ce", ponder_kl=0.1, compute_cost=0.01)
  key = KEY(7)
  old = wide.rollout(model, params, ids, plen, key).logp_NB if pg == "ppo" else None
  forced = wide.rollout(model, params, ids, plen, key).choice_NB if pg == "ppo" else None

  def loss(p):
    out = wide.unroll(model, p, ids, plen, key, tgt, jnp.array([2, 1, 2, 2]),
                      forced_choice_NB=forced)
    return wide.wide_loss(out, lcfg, route, True, old_logp_NB=old)

  (l, met), g = jax.value_and_grad(loss, has_aux=True)(params)
  assert np.isfinite(float(l)) and "critic_bce" in met
  norm = lambda t: float(jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(t))))
  assert norm(g["left"]["gate"]) > 0 and norm(g["right"]["lobe"]) > 0
  assert norm(g["left"]["encoder"]) > 0 and norm(g["left"]["decoder"]) > 0


@pytest.mark.slow
def test_truncated_bptt_keeps_the_last_k_calls():
  cfg = wide.WideConfig(max_iters=3, route="gumbel_st", n_experts=2, answer_len=2, bptt_depth=1)
  model = wide.build("wide", LM, cfg)
  params = wide.init(model, KEY(0))
  ids, plen = _batch()
  tgt = jnp.asarray(np.random.default_rng(5).integers(4, 260, (B, 2)), jnp.int32)
  forced = jnp.full((N, B), LEFT)  # never OUTPUT: t* = N, the window is call N-1 only

  def grads(p, n):
    out = wide.unroll(model, p, ids, plen, KEY(1), tgt, jnp.full((B,), 2),
                      forced_choice_NB=forced)
    return out.ce_nB[n].sum() + out.halt_w_NB[: N - 1].sum()

  norm = lambda t: float(jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(t))))
  g1 = jax.jit(jax.grad(grads), static_argnums=1)(params, 1)  # reads call 0's slot only
  assert norm(g1["left"]["lobe"]) == 0 and norm(g1["left"]["gate"]) == 0
  assert norm(g1["left"]["decoder"]) > 0
  gN = jax.jit(jax.grad(grads), static_argnums=1)(params, N)
  assert norm(gN["left"]["lobe"]) > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["wide.py", "lateralized_wide.py"])
def test_experiment_configs_train(tmp_path, name):
  from slnjax.wide import train as wide_train
  c = wide_train.load_config(f"experiments/{name}:smoke")
  c.task.data_dir = str(tmp_path / "data")
  res = wide_train.train(c, str(tmp_path / "work"), log=lambda *_: None)
  assert res["examples"] > 0 and "experts_left" in res and "iters_by_difficulty" in res
