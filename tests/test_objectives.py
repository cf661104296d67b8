"""Objectives against hand computations (float64) on a 2-example batch and tiny lobes.

The lobe's outputs are the primitives: the numpy re-derivations run each example's
sequence through the lobe on its own and redo the joining, masking, weighting and
reductions. For the score-function objectives the current log-probs come from
``loop.replay_logp`` (checked against the rollout's own log-probs by the PPO ratio test).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from slnjax import lobes, sln
from slnjax import objectives as O
from slnjax.loop import LoopConfig
from slnjax.objectives import critic_bce, gan, reinforce

LOBE = dict(vocab_size=12, d_model=16, n_layers=1, n_heads=2, d_ff=32, dtype="float64",
            param_dtype="float64")
sp = lambda x: np.logaddexp(0.0, x)  # softplus: -log sigmoid(-x)
sig = lambda x: 1.0 / (1.0 + np.exp(-x))


@pytest.fixture(scope="module", autouse=True)
def x64():
  old = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", old)


def make_batch():
  prompt = np.array([[1, 5, 6, 0], [1, 7, 8, 9]], np.int32)
  pl, tl = np.array([3, 4], np.int32), np.array([2, 3], np.int32)
  tgt = np.array([[4, 2, 0], [5, 6, 2]], np.int32)
  ids, lm = np.zeros((2, 7), np.int32), np.zeros((2, 7), np.int32)
  for b in range(2):
    ids[b, :pl[b]] = prompt[b, :pl[b]]
    ids[b, pl[b]:pl[b] + tl[b]] = tgt[b, :tl[b]]
    lm[b, pl[b]:pl[b] + tl[b]] = 1
  return dict(prompt_ids=prompt, prompt_len=pl, target_ids=tgt, target_len=tl, ids=ids,
              loss_mask=lm, valid=np.ones(2, np.int32))


def init(model, seed):
  """Random parameters without compiling an initializer (shapes from eval_shape)."""
  shapes = jax.eval_shape(lambda k: sln.init(model, k), jax.random.key(0))
  rs = np.random.RandomState(seed)
  return jax.tree.map(lambda s: jnp.asarray(rs.normal(0.0, 0.3, s.shape), s.dtype), shapes)


def ctx_for(model, cfg=None, inner=0):
  return O.Context(model, cfg, jnp.int32(0), jnp.float64(0.5), inner)


@functools.lru_cache(maxsize=None)
def jloss(name, model, cfg_items=(), grad=False):
  """jit of objective `name`'s loss: (params, frozen, batch, rollout, rng, inner) -> out."""
  obj = O.get(name)
  def f(p, frozen, batch, ro, rng, inner):
    return obj.loss(ctx_for(model, dict(cfg_items), inner), p, frozen, batch, ro, rng)
  return jax.jit(jax.value_and_grad(f, has_aux=True) if grad else f)


def run(name, model, params, ro=None, cfg=(), frozen=None, rng=None, inner=0, grad=False):
  """(loss, metrics) as floats. grad=True shares the compile of the optax-step tests."""
  f = jloss(name, model, tuple(sorted(dict(cfg).items())), grad)
  out = f(params, frozen, make_batch(), ro, jax.random.key(0) if rng is None else rng, inner)
  loss, metrics = out[0] if grad else out
  return float(loss), {k: float(v) for k, v in metrics.items()}


REPLAY = jax.jit(reinforce.replay, static_argnums=0)  # (model, params, rollout)


_FWD = {}
PAD = 8


def fwd(cfg, params, ids=None, embeds=None):
  """One example on its own (end-padded to PAD, which a causal lobe never reads; the score
  head reads the last real position): the lobe's outputs as numpy, [L,...]."""
  key = (cfg, ids is None)
  if key not in _FWD:
    _FWD[key] = jax.jit(lambda p, x, n: lobes.apply(
        cfg, p, lengths=n, **({"embeds": x} if ids is None else {"ids": x})))
  x = np.asarray(list(ids) if embeds is None else embeds)
  L = x.shape[0]
  x = np.pad(x, [(0, PAD - L)] + [(0, 0)] * (x.ndim - 1))[None]
  out = _FWD[key](params, jnp.asarray(x), jnp.asarray([L], jnp.int32))
  return {k: np.asarray(v)[0] if k == "score_logit_B" else np.asarray(v)[0][:L]
          for k, v in out.items()}


def critic_np(model, pr, ids):
  return float(fwd(model.spec.right, pr, ids)["score_logit_B"])


def seq_logp_np(cfg, p, ids, start):
  """Σ_{t >= start} log p(ids[t] | ids[<t])."""
  logits = fwd(cfg, p, ids)["logits_BTV"]
  lp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
  return sum(lp[t - 1, ids[t]] for t in range(start, len(ids)))


def true_ids(b, r):
  return list(b["ids"][r, :b["prompt_len"][r] + b["target_len"][r]])


def turn_ids(ro, n, r):
  v = int(ro["left_valid_NBM"][n, r].sum())
  pl = int(ro["prompt_len"][r])
  return list(ro["prompt_ids"][r, :pl]) + list(ro["left_ids_NBM"][n, r, :v])


@pytest.fixture(scope="module")
def lat():
  model = sln.build("lateralized", lobes.tiny(**LOBE), None,
                    LoopConfig(turn_len=3, max_turns=2, mode="hard", threshold=0.99))
  return model, init(model, 0)


@pytest.fixture(scope="module")
def rollout0(lat):
  """A genuine rollout of the lateralized model (rng key 1)."""
  model, params = lat
  ro = jax.jit(lambda p, k: O.sample(ctx_for(model), p, make_batch(), k))(params,
                                                                          jax.random.key(1))
  return {k: np.array(v) for k, v in ro.items()}


@pytest.fixture(scope="module")
def ragged(rollout0):
  """The rollout edited: row 0 halted after turn 0; row 1's turn 0 stopped after 2 tokens."""
  ro = {k: v.copy() for k, v in rollout0.items()}
  ro["turns_B"][0] = 1
  ro["active_NB"][1, 0] = False
  for k in ("left_ids_NBM", "left_valid_NBM", "left_logp_NBM", "score_NB", "score_logit_NB"):
    ro[k][1, 0] = 0
  ro["left_valid_NBM"][0, 1, 2] = False
  ro["final_score_B"][0] = ro["score_NB"][0, 0]
  return ro


@pytest.fixture(scope="module")
def replayed(lat, ragged):
  """Current log-probs / entropies of the ragged rollout's tokens (numpy)."""
  model, params = lat
  lp, ent = REPLAY(model, params, ragged)
  return np.asarray(lp), np.asarray(ent)


def mask_of(ro):
  return ro["active_NB"][..., None] & ro["left_valid_NBM"]


def critic_np_loss(model, pr, b, ro, negatives):
  out = 0.0
  for r in range(2):
    pos = sp(-critic_np(model, pr, true_ids(b, r)))
    negs = [sp(critic_np(model, pr, turn_ids(ro, n, r))) for n in range(int(ro["turns_B"][r]))]
    out += pos + (negs[-1] if negatives == "final" else np.mean(negs))
  return out / 2


# --- registry, hyper-parameters, errors ------------------------------------------------------


def test_registry_hparams_and_errors(lat, ragged):
  assert {"sft", "critic_bce", "ppo", "actor_critic_td", "reinforce", "rloo", "bptt", "gan",
          "self_play", "spin"} <= set(O.REGISTRY)
  assert O.get("ppo").frozen_copies == ("ref",) and O.get("spin").frozen_copies == ("prev",)
  assert O.get("actor_critic_td").reward == "verifier" and O.get("rloo").reward == "critic"
  hp = O.hparams(O.get("ppo"), {"name": "ppo", "clip_eps": 0.1})
  assert hp["clip_eps"] == 0.1 and hp["inner_steps"] == 4
  with pytest.raises(ValueError, match="Unknown hyper-parameters"):
    O.hparams(O.get("ppo"), {"clip_epsilon": 0.1})
  with pytest.raises(ValueError, match="Unknown objective"):
    O.get("dpo")
  model, params = lat
  b = make_batch()
  soft = sln.build("lateralized", lobes.tiny(**LOBE), None, LoopConfig(mode="soft"))
  with pytest.raises(ValueError, match="loop.mode"):
    O.get("ppo").rollout_fn(ctx_for(soft), params, None, b, jax.random.key(0))
  single = sln.build("single", lobes.tiny(**LOBE), None, LoopConfig(mode="hard"))
  with pytest.raises(ValueError, match="needs a critic"):
    O.get("ppo").loss(ctx_for(single), params, None, b, ragged, None)
  with pytest.raises(ValueError, match="reward_NB"):
    O.get("reinforce_verifier").loss(ctx_for(model), params, None, b, ragged, None)
  with pytest.raises(ValueError, match="tall SLN"):
    O.get("sft").loss(ctx_for(model, {"right_weight": 1.0}), params, None, b, None, None)
  with pytest.raises(ValueError, match="Packed"):
    O.get("sft").loss(ctx_for(model), params, None, dict(b, segment_ids=b["ids"]), None, None)


# --- supervised, critic, SPIN ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tall():
  lc = lobes.tiny(**LOBE)
  model = sln.build("tall", lc, lc, LoopConfig(turn_len=3, max_turns=2))
  return model, init(model, 3)


def test_sft_matches_hand(tall):
  model, params = tall
  b = make_batch()
  loss, _ = run("sft", model, params, cfg={"right_weight": 0.5}, grad=True)
  nll = lambda cfg, p: -sum(seq_logp_np(cfg, p, true_ids(b, r), b["prompt_len"][r])
                            for r in range(2)) / b["target_len"].sum()
  want = nll(model.spec.left, params["left"]) + 0.5 * nll(model.spec.right, params["right"])
  np.testing.assert_allclose(loss, want, rtol=1e-10)


@pytest.mark.parametrize("negatives", ["final", "all"])
def test_critic_bce_matches_hand(lat, ragged, negatives):
  model, params = lat
  loss, m = run("critic_bce", model, params, ragged, {"negatives": negatives}, grad=True)
  want = critic_np_loss(model, params["right"], make_batch(), ragged, negatives)
  np.testing.assert_allclose(loss, want, rtol=1e-10)


def test_pgd_weights_and_loss(lat, ragged):
  c0, lam = 0.8, 0.3
  dt = np.arange(6.0)
  np.testing.assert_allclose(np.asarray(critic_bce.pgd_weight(jnp.asarray(dt), c0, lam)),
                             c0 * np.exp(-lam * dt), rtol=1e-15, atol=0)
  model, params = lat
  b, pr = make_batch(), params["right"]
  # The prefix scores of one causal pass equal the critic on each prefix.
  s_BT = jax.jit(lambda p: critic_bce.prefix_logits(model, p, jnp.asarray(b["ids"])))(pr)
  for r in range(2):
    for t in range(7):
      np.testing.assert_allclose(s_BT[r, t], critic_np(model, pr, b["ids"][r, :t + 1]),
                                 rtol=1e-10)
  loss, _ = run("critic_bce", model, params, ragged, {"pgd": True, "c0": c0, "lam": lam})
  want = 0.0
  for r in range(2):
    pl, tl, T = int(b["prompt_len"][r]), int(b["target_len"][r]), int(ragged["turns_B"][r])
    want += sum(c0 * np.exp(-lam * (tl - k)) * sp(-critic_np(model, pr, b["ids"][r, :pl + k]))
                for k in range(1, tl + 1)) / tl
    want += sum((1 - c0 * np.exp(-lam * (T - 1 - n))) *
                sp(critic_np(model, pr, turn_ids(ragged, n, r))) for n in range(T)) / T
  np.testing.assert_allclose(loss, want / 2, rtol=1e-10)


def test_spin_log2_at_prev_and_hand(lat, ragged):
  model, params = lat
  b = make_batch()
  cfg = {"critic_weight": 0.0, "lam": 0.7}
  loss, _ = run("spin", model, params, ragged, cfg, frozen={"prev": params})
  np.testing.assert_allclose(loss, np.log(2.0), rtol=1e-12)
  prev = {"left": jax.tree.map(lambda x: x * 1.1, params["left"]), "right": params["right"]}
  loss, _ = run("spin", model, params, ragged, cfg, frozen={"prev": prev})
  lc, terms = model.spec.left, []
  for r in range(2):
    pl = int(b["prompt_len"][r])
    ratio = lambda ids: (seq_logp_np(lc, params["left"], ids, pl)
                         - seq_logp_np(lc, prev["left"], ids, pl))
    real = ratio(true_ids(b, r))
    terms += [sp(-0.7 * (real - ratio(turn_ids(ragged, n, r))))
              for n in range(int(ragged["turns_B"][r]))]
  np.testing.assert_allclose(loss, np.mean(terms), rtol=1e-10)
  # The critic term is eq. 7 over every turn; negatives come from the previous iterate.
  loss_c, _ = run("spin", model, params, ragged, {"lam": 0.7}, frozen={"prev": prev})
  np.testing.assert_allclose(loss_c - loss, critic_np_loss(model, params["right"], b, ragged,
                                                           "all"), rtol=1e-10)


# --- score-function objectives ---------------------------------------------------------------


def test_ppo_ratio_one_then_clipped(lat, rollout0):
  model, params = lat
  f = jloss("ppo", model, (("critic_weight", 0.0),), True)
  b = make_batch()
  mask = mask_of(rollout0)
  adv = rollout0["score_NB"][..., None] * mask  # baseline "none": A = the critic's score
  def go(shift):
    ro = dict(rollout0, left_logp_NBM=rollout0["left_logp_NBM"] - shift)
    (loss, m), g = f(params, None, b, ro, jax.random.key(0), 0)
    gnorm = float(sum(jnp.abs(x).sum() for x in jax.tree.leaves(g["left"])))
    return float(loss), m, gnorm
  loss, m, gnorm = go(0.0)  # first epoch: replay == behaviour
  np.testing.assert_allclose([float(m["ratio_mean"]), float(m["ratio_max"])], 1.0, atol=1e-12)
  assert float(m["clip_frac"]) == 0.0 and gnorm > 0
  np.testing.assert_allclose(loss, -adv.sum() / mask.sum(), rtol=1e-10)
  loss, m, gnorm = go(0.5)  # ratio e^0.5 > 1 + eps, A > 0: clipped, no gradient
  assert float(m["clip_frac"]) == 1.0 and gnorm == 0.0
  np.testing.assert_allclose(loss, -1.2 * adv.sum() / mask.sum(), rtol=1e-10)
  loss, m, gnorm = go(-0.5)  # ratio e^-0.5 < 1 - eps, A > 0: min keeps the unclipped term
  assert gnorm > 0
  np.testing.assert_allclose(loss, -np.exp(-0.5) * adv.sum() / mask.sum(), rtol=1e-10)


def test_ppo_kl_and_options_match_hand(lat, ragged, replayed):
  model, params = lat
  b = make_batch()
  cfg = {"kl_coef": 0.1, "ent_coef": 0.01, "baseline": "mean", "reward_turns": "final"}
  _, m0 = run("ppo", model, params, ragged, cfg, frozen={"ref": params}, inner=1)
  assert m0["kl"] == 0.0  # params == ref
  ref = {"left": jax.tree.map(lambda x: x * 0.9, params["left"]), "right": params["right"]}
  loss1, m1 = run("ppo", model, params, ragged, cfg, frozen={"ref": ref}, inner=1)
  loss0, _ = run("ppo", model, params, ragged, cfg, frozen={"ref": ref}, inner=0)
  lp, ent = replayed
  lp_ref = np.asarray(REPLAY(model, ref, ragged)[0])
  mask, act, T = mask_of(ragged), ragged["active_NB"], ragged["turns_B"]
  fin = np.array([ragged["score_NB"][T[r] - 1, r] for r in range(2)])
  r_NB = np.where(act, fin[None, :], 0.0)
  adv = np.where(act, r_NB - r_NB[act].mean(), 0.0)[..., None]
  ratio = np.exp(lp - ragged["left_logp_NBM"])
  surr = np.minimum(ratio * adv, np.clip(ratio, 0.8, 1.2) * adv)
  d = lp_ref - lp
  kl = (mask * (np.exp(d) - d - 1)).sum() / mask.sum()
  want = -(mask * surr).sum() / mask.sum() + 0.1 * kl - 0.01 * (mask * ent).sum() / mask.sum()
  assert kl > 0
  np.testing.assert_allclose([m1["kl"], loss1], [kl, want], rtol=1e-10)
  # The critic's eq. 7 is added on the first epoch only.
  np.testing.assert_allclose(loss0 - loss1,
                             critic_np_loss(model, params["right"], b, ragged, "final"),
                             rtol=1e-10)


def test_reinforce_matches_hand(lat, ragged, replayed):
  model, params = lat
  loss, _ = run("reinforce", model, params, ragged, {"critic_weight": 0.0})
  lp = (mask_of(ragged) * replayed[0]).sum((0, 2))
  R = np.array([ragged["score_NB"][ragged["turns_B"][r] - 1, r] for r in range(2)])
  np.testing.assert_allclose(loss, -np.mean((R - R.mean()) * lp), rtol=1e-10)


def test_rloo_baseline_excludes_sample(lat):
  R = jnp.asarray([[1.0, 2.0, 3.0, 6.0]])
  np.testing.assert_allclose(reinforce.rloo_baseline(R), [[11 / 3, 10 / 3, 3.0, 2.0]])
  R2 = R.at[0, 0].set(100.0)  # a sample's own return never enters its baseline
  assert float(reinforce.rloo_baseline(R2)[0, 0]) == float(reinforce.rloo_baseline(R)[0, 0])
  model, params = lat
  b = make_batch()
  obj = O.get("rloo_verifier")
  ro = jax.jit(lambda p, k: obj.rollout_fn(ctx_for(model, {"samples": 2}), p, None, b, k))(
      params, jax.random.key(3))
  ro = {k: np.asarray(v) for k, v in ro.items()}
  np.testing.assert_array_equal(ro["batch_row"], [0, 0, 1, 1])
  ro["reward_NB"] = np.array([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 0.0, 1.0]]) * ro["active_NB"]
  loss, _ = run("rloo_verifier", model, params, ro, {"samples": 2, "critic_weight": 0.0})
  lp_NRM, _ = REPLAY(model, params, ro)
  lp = (mask_of(ro) * np.asarray(lp_NRM)).sum((0, 2))
  R = np.array([ro["reward_NB"][ro["turns_B"][r] - 1, r] for r in range(4)])
  base = np.array([R[1], R[0], R[3], R[2]])  # the other sample of the same prompt
  np.testing.assert_allclose(loss, -np.mean((R - base) * lp), rtol=1e-10)


def test_actor_critic_td_matches_hand(lat, ragged, replayed):
  model, params = lat
  b, pr = make_batch(), params["right"]
  ro = dict(ragged, reward_NB=np.array([[1.0, 0.0], [0.0, 1.0]]))
  loss, m = run("actor_critic_td", model, params, ro, {"gamma": 0.9})
  mask, act = mask_of(ro), ro["active_NB"]
  y_true = np.array([sig(critic_np(model, pr, true_ids(b, r))) for r in range(2)])
  y = np.zeros((2, 2))
  for r in range(2):
    for n in range(int(ro["turns_B"][r])):
      y[n, r] = sig(critic_np(model, pr, turn_ids(ro, n, r)))
  delta = np.where(act, ro["reward_NB"] * act + 0.9 * y_true[None, :] - y, 0.0)
  actor = -(mask * delta[..., None] * replayed[0]).sum() / mask.sum()
  td = -(act * delta * y).sum() / act.sum()
  want = actor + td + critic_np_loss(model, pr, b, ro, "all")
  np.testing.assert_allclose([m["td_error"], loss], [delta[act].mean(), want], rtol=1e-10)


def test_self_play_matches_hand_and_stops(lat, rollout0):
  model, params = lat
  rng = jax.random.key(1)  # the loss samples afresh: the same key gives rollout0
  loss0, m = run("self_play", model, params, rng=rng, inner=0)
  loss1, _ = run("self_play", model, params, rng=rng, inner=1)
  lp, _ = REPLAY(model, params, rollout0)
  mask = mask_of(rollout0)
  pg = -(mask * rollout0["score_NB"][..., None] * np.asarray(lp)).sum() / mask.sum()
  np.testing.assert_allclose(loss1, pg, rtol=1e-10)
  np.testing.assert_allclose(loss0 - loss1, critic_np_loss(
      model, params["right"], make_batch(), rollout0, "final"), rtol=1e-10)
  assert m["satisfied"] == float(rollout0["final_score_B"].mean() >= 0.99)
  done = O.get("self_play").inner_done
  jdone = jax.jit(done)  # the train loop evaluates it inside the jitted step
  assert jdone({"satisfied": np.float32(1.0)}) and not jdone({"satisfied": np.float32(0.0)})


# --- through soft tokens: GAN, BPTT ----------------------------------------------------------


@pytest.fixture(scope="module")
def soft_model():
  model = sln.build("lateralized", lobes.tiny(**LOBE), None,
                    LoopConfig(turn_len=3, max_turns=2, mode="soft", threshold=0.99))
  return model, init(model, 5)


@pytest.fixture(scope="module")
def soft_rollout(soft_model):
  """What the unroll computes forward (rng key 2, with the targets)."""
  model, params = soft_model
  b = make_batch()
  return jax.jit(lambda p: sln.rollout(model, p, jnp.asarray(b["prompt_ids"]),
                                       jnp.asarray(b["prompt_len"]), jax.random.key(2), 0.5,
                                       jnp.asarray(b["target_ids"])))(params)


@pytest.mark.slow
def test_gan_stop_gradients(soft_model):
  model, params = soft_model
  b, rng = make_batch(), jax.random.key(2)
  terms = lambda p: gan.gan_terms(ctx_for(model), p, b, rng)
  g_d, g_g = jax.jit(lambda p: (jax.grad(lambda q: terms(q)[0])(p),
                                jax.grad(lambda q: terms(q)[1])(p)))(params)
  norm = lambda t: float(sum(jnp.abs(x).sum() for x in jax.tree.leaves(t)))
  assert norm(g_d["left"]) == 0.0 and norm(g_g["right"]) == 0.0
  assert norm(g_d["right"]) > 0.0 and norm(g_g["left"]) > 0.0


def test_gan_matches_hand(soft_model, soft_rollout):
  model, params = soft_model
  b, d = make_batch(), soft_rollout
  d_term, g_term, _ = jax.jit(lambda p: gan.gan_terms(ctx_for(model), p, b,
                                                      jax.random.key(2)))(params)
  # D on the true answer and on the final turn's soft embedding, row by row.
  pr, rc = params["right"], model.spec.right
  E = np.asarray(pr["embedding"])
  want_d = want_g = 0.0
  for r in range(2):
    pl, n = int(b["prompt_len"][r]), int(d.turns_B[r]) - 1
    v = int(d.left_valid_NBM[n, r].sum())
    x = np.concatenate([E[b["prompt_ids"][r, :pl]], np.asarray(d.left_emb_NBMR[n, r, :v])])
    fake = float(fwd(rc, pr, embeds=x)["score_logit_B"])
    want_d += sp(-critic_np(model, pr, true_ids(b, r))) + sp(fake)
    want_g += -sp(fake)  # log(1 - D(G(x)))
  np.testing.assert_allclose([float(d_term), float(g_term)], [want_d / 2, want_g / 2],
                             rtol=1e-9)


def test_bptt_matches_hand(soft_model, soft_rollout):
  model, params = soft_model
  b, rng, d = make_batch(), jax.random.key(2), soft_rollout
  loss, _ = run("bptt", model, params, rng=rng)
  lp = np.asarray(d.left_logp_target_NBM)
  tot = sum(lp[int(d.turns_B[r]) - 1, r, :b["target_len"][r]].sum() for r in range(2))
  np.testing.assert_allclose(loss, -tot / b["target_len"].sum(), rtol=1e-10)
  with pytest.raises(ValueError, match="turn_len"):
    O.get("bptt").loss(ctx_for(model), params, None,
                       dict(b, target_ids=np.zeros((2, 5), np.int32)), None, rng)


# --- a few plain optax steps -----------------------------------------------------------------


ADAM = optax.adam(3e-2)


@jax.jit
def adam_step(params, state, g):
  updates, state = ADAM.update(g, state, params)
  return optax.apply_updates(params, updates), state


@pytest.mark.parametrize("name", ["sft", "critic_bce",
                                  pytest.param("bptt", marks=pytest.mark.slow)])
def test_loss_decreases(name, tall, lat, soft_model, rollout0):
  model, params = {"sft": tall, "critic_bce": lat, "bptt": soft_model}[name]
  ro = rollout0 if name == "critic_bce" else None
  cfg = {"sft": (("right_weight", 0.5),), "critic_bce": (("negatives", "final"),)}.get(name, ())
  f = jloss(name, model, cfg, True)
  b = make_batch()
  state = ADAM.init(params)
  losses = []
  for _ in range(6):
    (loss, _), g = f(params, None, b, ro, jax.random.key(4), 0)
    params, state = adam_step(params, state, g)
    losses.append(float(loss))
  assert losses[-1] < 0.9 * losses[0], losses

