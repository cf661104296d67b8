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
def _setup(kind, route, min_iters=0):
  cfg = wide.WideConfig(k_in=1, k_out=1, max_iters=N, write_len=W, n_experts=X, top_k=K,
                        route=route, answer_len=M, min_iters=min_iters)
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
  for bad in (-1, 5, 1.5):
    with pytest.raises(ValueError, match=r"min_iters=.* must be an int in \[0, max_iters=4\]"):
      wide.WideConfig(max_iters=4, min_iters=bad)
  assert wide.WideConfig(max_iters=4, min_iters=4).min_iters == 4
  for bad in (-2, 0.5, True):
    with pytest.raises(ValueError, match="halt_warmup=.* must be an int >= 0"):
      wide.WideLossConfig(halt_warmup=bad)


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


@pytest.mark.parametrize("kind,route,m", [("wide", "gumbel_st", 0),
                                          ("lateralized_wide", "greedy", 0),
                                          ("wide", "gumbel_st", 2), ("wide", "hard", 1)])
def test_gate_halting_matches_while_loop_driver(kind, route, m):
  model, params, roll, unroll = _setup(kind, route, m)
  free = jax.jit(lambda p, k: wide.halting_iters(model, p, *_batch(), k, min_calls=0))
  seen, early = set(), 0
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
    # min_iters m: never OUTPUT before call m (the same gate unmasked halts earlier at times).
    assert it.min() >= m
    early += int(np.sum(np.asarray(free(params, key)) < m))
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
  assert m == 0 or early > 0, "the unmasked gate never halts before m: min_iters is untested"


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


@jax.jit
def _masked_routes(logits, key, may_halt_B):
  out, grads = {}, {}
  for m in ("soft", "gumbel", "straight_through", "gumbel_st", "hard", "greedy"):
    f = lambda l, m=m: wide.route(l, m, key, tau=0.5, may_halt=may_halt_B)
    out[m], out[m + "_free"] = f(logits), wide.route(logits, m, key, tau=0.5)
    grads[m] = jax.grad(lambda l: f(l).halt_w_B.sum() + f(l).logp_B.sum())(logits)
  return out, grads


def test_route_may_not_halt_before_min_calls():
  rng = np.random.default_rng(2)
  logits = (rng.normal(size=(64, 3)) * 2 + np.array([0, 0, 3.0])).astype(np.float32)
  may_B = np.arange(64) % 2 == 0
  out, grads = jax.tree.map(np.asarray, _masked_routes(logits, KEY(3), may_B))
  lp2 = np.asarray(jax.nn.log_softmax(logits[:, :2]))
  for mode in ("soft", "gumbel", "straight_through", "gumbel_st", "hard", "greedy"):
    r, free = out[mode], out[mode + "_free"]
    assert np.any(free.choice_B[~may_B] == OUTPUT)  # OUTPUT is likely: the mask matters
    assert np.all(r.choice_B[~may_B] != OUTPUT) and np.all(r.halt_w_B[~may_B] == 0)
    np.testing.assert_array_equal(r.choice_B[~may_B], r.lobe_B[~may_B])
    np.testing.assert_array_equal(r.probs_B3[~may_B, OUTPUT], 0.0)
    np.testing.assert_array_equal(r.choice_B[may_B], free.choice_B[may_B])  # the rest is as is
    np.testing.assert_allclose(r.halt_w_B[may_B], free.halt_w_B[may_B], rtol=1e-6)
    # The policy at a masked call is the gate's conditional over the two lobes.
    rows = np.flatnonzero(~may_B)
    np.testing.assert_allclose(r.logp_B[rows], lp2[rows, r.choice_B[rows]], rtol=1e-5,
                               atol=1e-6)
    assert np.all(np.isfinite(grads[mode])) and np.all(grads[mode][~may_B, OUTPUT] == 0)


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
  # The prior over the optional calls: shifted to start at min_calls m (traced or not).
  for m in (0, 2, 4):
    pm = np.asarray(jax.jit(lambda m: wide.geometric_prior(4, 0.3, m))(jnp.int32(m)))
    want = [0.0] * m + [0.3 * 0.7 ** k for k in range(4 - m)] + [0.7 ** (4 - m)]
    np.testing.assert_allclose(pm, want, rtol=1e-5, atol=1e-7)
  hm = np.concatenate([np.zeros((2, 5), np.float32), h[2:]])  # no OUTPUT before call 2
  kl_m, g = jax.jit(jax.value_and_grad(lambda hh: wide.ponder_kl(
      wide.halting_distribution(hh), wide.geometric_prior(4, 0.3, 2)).sum()))(hm)
  assert np.isfinite(float(kl_m)) and float(kl_m) > 0 and np.all(np.isfinite(np.asarray(g)))


@pytest.mark.parametrize("route", ["soft", "hard"])
def test_halt_warmup_makes_every_call_then_frees_the_gate(route):
  from slnjax.objectives import Context
  from slnjax.objectives import wide as wide_objectives
  cfg = wide.WideConfig(max_iters=N, min_iters=1, route=route, n_experts=2, answer_len=2)
  model = wide.build("wide", LM, cfg)
  params = wide.init(model, KEY(0))
  gate = params["left"]["gate"]  # a gate that wants to output at once
  params["left"]["gate"] = {**gate, "b_out": jnp.array([0.0, 0.0, 4.0])}
  ids, plen = _batch()
  batch = {"prompt_ids": ids, "prompt_len": plen, "target_len": jnp.array([2, 1, 2, 2]),
           "target_ids": jnp.asarray(np.random.default_rng(5).integers(4, 260, (B, 2)),
                                     jnp.int32)}
  hp = {"name": "wide", "halt_warmup": 5, "ponder_kl": 0.1, "reward": "neg_ce"}
  traces = []

  @jax.jit
  def run(p, step):
    traces.append(step)
    ctx = Context(model, hp, step, jnp.float32(1.0))
    (loss, m), g = jax.value_and_grad(
        lambda p: wide_objectives.WIDE.loss(ctx, p, {}, batch, None, KEY(1)), has_aux=True)(p)
    return loss, m, g

  norm = lambda t: float(jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(t))))
  for step in (0, 4):  # warm-up: every call made, q one-hot at N
    loss, m, g = run(params, jnp.int32(step))
    assert float(m["min_calls"]) == N and float(m["iters_hard"]) == N
    np.testing.assert_allclose(float(m["iters_expected"]), N, rtol=1e-6)
    assert np.isfinite(float(loss)) and norm(g["left"]["lobe"]) > 0
  loss, m, g = run(params, jnp.int32(5))  # then min_iters = 1, and this gate halts at once
  assert float(m["min_calls"]) == 1 and float(m["iters_hard"]) < N
  assert 1 <= float(m["iters_expected"]) < N and np.isfinite(float(loss))
  assert norm(g["left"]["gate"]) > 0
  assert len(traces) == 1, "the warm-up schedule retraced the loss"


def _fake_out(n_iters, batch, seed=0):
  """A WideOut with random halting weights and answer losses (no model: loss tests), as an
  unroll with min_calls=1 makes it: no halting at call 0."""
  rng = np.random.default_rng(seed)
  n, b, f = n_iters, batch, np.float32
  z = lambda *shape: jnp.zeros(shape, f)
  iters = rng.integers(1, n + 1, b)
  halt_w = rng.uniform(0.1, 0.9, (n, b)) * (np.arange(n) >= 1)[:, None]
  return wide.WideOut(
      halt_w_NB=jnp.asarray(halt_w, f),
      choice_NB=jnp.zeros((n, b), jnp.int32), logp_NB=z(n, b), probs_NB3=z(n, b, 3) + 1 / 3,
      lobe_w_NB2=z(n, b, 2) + 0.5, running_NB=jnp.asarray(np.arange(n)[:, None] <= iters),
      iters_B=jnp.asarray(iters, jnp.int32), probs_left_NBWX=z(n, b, 1, 2) + 0.5,
      index_left_NBWk=jnp.zeros((n, b, 1, 1), jnp.int32), probs_right_NBWX=z(n, b, 1, 2) + 0.5,
      index_right_NBWk=jnp.zeros((n, b, 1, 1), jnp.int32), score_logit_NB=z(n, b),
      ce_nB=jnp.asarray(rng.uniform(1, 5, (n + 1, b)), f),
      correct_nB=jnp.asarray(rng.uniform(size=(n + 1, b)) < 0.5), first_logits_nBV=None,
      ntok_B=jnp.full((b,), 2, jnp.int32))


@pytest.mark.parametrize("route", ["soft", "hard"])
def test_prior_floor_trains_the_answer_after_every_number_of_calls(route):
  out = _fake_out(3, 5)
  q = np.asarray(wide.halting_distribution(out.halt_w_NB))
  if route == "hard":
    q = np.eye(4)[np.asarray(out.iters_B)].T
  prior = np.asarray(wide.geometric_prior(3, 0.3, 1))
  ce = np.asarray(out.ce_nB)

  def loss_of(eps):
    cfg = wide.WideLossConfig(prior_floor=eps, balance=0.0, reward="neg_ce")
    f = lambda ce_nB: wide.wide_loss(out._replace(ce_nB=ce_nB), cfg, route, min_calls=1)
    return jax.jit(jax.value_and_grad(f, has_aux=True))(out.ce_nB)

  (_, m0), g0 = loss_of(0.0)
  (_, m), g = loss_of(0.25)
  # Metrics stay those of q; the gradient to each CE_n is (1 - eps) q_n + eps p_n (per token).
  np.testing.assert_allclose(float(m["answer_ce"]), float(m0["answer_ce"]), rtol=1e-6)
  np.testing.assert_allclose(float(m0["answer_ce"]), np.mean((q * ce).sum(0) / 2), rtol=1e-5)
  want = ((0.75 * q + 0.25 * prior[:, None]) / 2) / 5  # (the hard reward is stop-gradient)
  np.testing.assert_allclose(np.asarray(g), want, rtol=1e-5, atol=1e-7)
  assert np.all(np.asarray(g)[1:] > 0) and np.all(np.asarray(g)[0] == 0)  # p_0 = 0 with m = 1
  np.testing.assert_allclose(np.asarray(g0), (q / 2) / 5, rtol=1e-5, atol=1e-7)


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


# The experiments' :smoke configs train, evaluate (accuracy, iterations by difficulty, expert
# usage), checkpoint and resume through train.py: tests/test_wide_main.py.


def test_gate_options_reach_the_main_gate_from_a_config():
  """model.wide.gate_step_input / gate_linear (config file) -> WideConfig -> MainGate: with
  no step input the gate has no call-index embedding and its logits do not depend on t."""
  from experiments import common  # pylint: disable=import-outside-toplevel
  from slnjax import build, finalize  # pylint: disable=import-outside-toplevel
  c = finalize.finalize(common.experiment(
      "wide", "wide", smoke=True, model=dict(wide=dict(gate_step_input=False,
                                                       gate_linear=True))))
  model = build.build_model(c)
  assert not model.cfg.gate_step_input and model.cfg.gate_linear
  gate = model.gate_module()
  assert not gate.step_input and gate.linear
  params = wide.init(model, KEY(0))
  assert "step_emb" not in params["left"]["gate"]
  ctx = jax.random.normal(KEY(1), (2, 5, model.lm.d_model))
  lens = jnp.array([5, 3])
  out = [gate.apply({"params": params["left"]["gate"]}, ctx, lens, jnp.int32(t)) for t in (0, 2)]
  np.testing.assert_array_equal(out[0], out[1])
  default = sln.build("wide", LM, None, wide.WideConfig())
  assert default.gate_module().step_input and not default.gate_module().linear
