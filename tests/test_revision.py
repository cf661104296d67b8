"""verifier_critic, revision_sft, revision_rl (slnjax/objectives/{verifier_critic,revision}.py):
every position of a built revision dialogue, the losses against hand computations (float64,
tiny lobes), the replay's alignment with the loop itself, a few optimizer steps, and the
train loop end to end on real data (the verifier's label of the true answer)."""
import functools
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import common
from slnjax import build, data, evaluate, lobes, loop, parallel, sln, train, train_flops
from slnjax import objectives as O
from slnjax.loop import LoopConfig
from slnjax.objectives import reinforce, revision

LOBE = dict(vocab_size=12, d_model=16, n_layers=1, n_heads=2, d_ff=32, dtype="float64",
            param_dtype="float64")
DATA_DIR = os.path.join(tempfile.gettempdir(), "slnjax_test_data")
sp = lambda x: np.logaddexp(0.0, x)


@pytest.fixture(scope="module", autouse=True)
def x64():
  old = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", old)


def make_batch(B=2):
  prompt = np.array([[1, 5, 6, 0], [1, 7, 8, 9]] * (B // 2), np.int32)
  pl = np.array([3, 4] * (B // 2), np.int32)
  tgt = np.array([[4, 2, 0], [5, 6, 2]] * (B // 2), np.int32)
  tl = np.array([2, 3] * (B // 2), np.int32)
  ids = np.zeros((B, 7), np.int32)
  for b in range(B):
    ids[b, :pl[b]], ids[b, pl[b]:pl[b] + tl[b]] = prompt[b, :pl[b]], tgt[b, :tl[b]]
  return dict(prompt_ids=prompt, prompt_len=pl, target_ids=tgt, target_len=tl, ids=ids,
              loss_mask=np.zeros_like(ids), valid=np.ones(B, np.int32))


@pytest.fixture(scope="module")
def lat():
  model = sln.build("lateralized", lobes.tiny(**LOBE), None,
                    LoopConfig(turn_len=3, max_turns=3, mode="hard", threshold=0.99))
  shapes = jax.eval_shape(lambda k: sln.init(model, k), jax.random.key(0))
  rs = np.random.RandomState(0)
  params = jax.tree.map(lambda s: jnp.asarray(rs.normal(0.0, 0.3, s.shape), s.dtype), shapes)
  return model, params


def ctx_for(model, cfg_items=()):
  return O.Context(model, dict(cfg_items), jnp.int32(0), jnp.float64(1.0))


@functools.lru_cache(maxsize=None)
def jloss(name, model, cfg_items=(), grad=False):
  obj = O.get(name)
  f = lambda p, frozen, b, ro, rng: obj.loss(ctx_for(model, cfg_items), p, frozen, b, ro, rng)
  return jax.jit(jax.value_and_grad(f, has_aux=True) if grad else f)


_SAMPLED = {}


def sampled(model, params, repeat=1, threshold=True):
  """A genuine rollout (key 1) of the tiny model; a fresh numpy copy each call (cached)."""
  key = (model, repeat, threshold)
  if key not in _SAMPLED:
    m = model if threshold else revision.without_threshold(model)
    ro = jax.jit(lambda p, k: O.sample(ctx_for(m), p, make_batch(), k, repeat))(
        params, jax.random.key(1))
    _SAMPLED[key] = {k: np.array(v) for k, v in ro.items()}
  return {k: v.copy() for k, v in _SAMPLED[key].items()}


# --- the dialogue builder, position by position (no model) ------------------------------------

def hand_rollout():
  """3 rows, 3 turns of 4 tokens; row 0 right at turn 1, row 1 wrong, right, wrong, row 2
  always wrong."""
  N, R, m = 3, 3, 4
  ids = (np.arange(N * R * m).reshape(N, R, m) % 9 + 3).astype(np.int32)
  return {"left_ids_NBM": ids, "left_valid_NBM": np.ones((N, R, m), bool),
          "left_logp_NBM": -np.ones((N, R, m)), "left_logp_target_NBM": np.zeros((N, R, m)),
          "left_emb_NBMR": np.ones((N, R, m, 2)), "right_ids_NBM": np.zeros((N, R, m), np.int32),
          "score_NB": np.array([[.9, .2, .3], [.8, .4, .1], [.7, .6, .05]]),
          "score_logit_NB": np.ones((N, R)), "active_NB": np.ones((N, R), bool),
          "turns_B": np.full(R, 3, np.int32), "halt_reason_B": np.ones(R, np.int32),
          "final_score_B": np.zeros(R), "prompt_ids": np.ones((R, 2), np.int32),
          "prompt_len": np.full(R, 2, np.int32), "batch_row": np.arange(R, dtype=np.int32),
          "reward_NB": np.array([[1., 0, 0], [0, 1, 0], [0, 0, 0]], np.float32)}


def test_choose_wrong_caps():
  ro = hand_rollout()
  r, a = jnp.asarray(ro["reward_NB"]), jnp.asarray(ro["active_NB"])
  k = lambda u, mw=3: np.asarray(revision.choose_wrong(r, a, jnp.asarray(u), mw)).tolist()
  # caps: row 0 right first -> 0; row 1 one leading wrong -> 1; row 2 -> N - 1 = 2
  assert k([.99, .99, .99]) == [0, 1, 2]
  assert k([0., 0., 0.]) == [0, 0, 0]
  assert k([.5, .49, .5]) == [0, 0, 1]
  assert k([.99, .99, .99], mw=1) == [0, 1, 1]
  # an inactive turn is not a wrong attempt: row 2 halted after turn 1
  a2 = a.at[1:, 2].set(False)
  assert np.asarray(revision.choose_wrong(r, a2, jnp.full(3, .99), 3)).tolist() == [0, 1, 1]


def test_revision_dialogue_every_position():
  ro = hand_rollout()
  tgt = np.array([[7, 8, 2], [5, 2, 0], [6, 6, 6]], np.int32)  # 3 wide, turn_len 4
  tl = np.array([3, 2, 1], np.int32)
  k = np.array([0, 1, 2], np.int32)
  d, mask = revision.revision_dialogue({k_: jnp.asarray(v) for k_, v in ro.items()},
                                       jnp.asarray(tgt), jnp.asarray(tl), jnp.asarray(k))
  ids, valid = np.asarray(d.left_ids_NBM), np.asarray(d.left_valid_NBM)
  mask = np.asarray(mask)
  w = ro["left_ids_NBM"]
  # row 0: the correct answer at turn 1, nothing after
  np.testing.assert_array_equal(ids[:, 0], [[7, 8, 2, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(mask[:, 0], [[1, 1, 1, 0], [0] * 4, [0] * 4])
  # row 1: its own turn 1 as written, then the answer at turn 2
  np.testing.assert_array_equal(ids[:, 1], [w[0, 1], [5, 2, 0, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(mask[:, 1], [[0] * 4, [1, 1, 0, 0], [0] * 4])
  # row 2: turns 1-2 as written, the answer at turn 3
  np.testing.assert_array_equal(ids[:, 2], [w[0, 2], w[1, 2], [6, 0, 0, 0]])
  np.testing.assert_array_equal(mask[:, 2], [[0] * 4, [0] * 4, [1, 0, 0, 0]])
  np.testing.assert_array_equal(valid[:, 2], [[1] * 4, [1] * 4, [1, 0, 0, 0]])
  np.testing.assert_array_equal(np.asarray(d.active_NB),
                                [[1, 1, 1], [0, 1, 1], [0, 0, 1]])
  np.testing.assert_array_equal(np.asarray(d.turns_B), [1, 2, 3])
  # scores the left lobe read: the rollout's, after each kept wrong attempt only
  np.testing.assert_allclose(np.asarray(d.score_NB), [[0, .2, .3], [0, 0, .1], [0, 0, 0]])
  with pytest.raises(ValueError, match="turn_len"):
    revision.revision_dialogue({k_: jnp.asarray(v) for k_, v in ro.items()},
                               jnp.zeros((3, 5), jnp.int32), jnp.asarray(tl), jnp.asarray(k))


# --- the losses by hand -------------------------------------------------------------------------

def lobe_logp_np(cfg_l, pl, x_SD, positions, ids):
  """Σ log p(ids[i] | x[<positions[i]]) from one causal pass over the embeddings x."""
  logits = np.asarray(lobes.apply(cfg_l, pl, embeds=jnp.asarray(x_SD)[None])["logits_BTV"])[0]
  lp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
  return sum(lp[p - 1, t] for p, t in zip(positions, ids))


def test_replay_of_a_built_dialogue_is_the_loop_itself(lat):
  """Keep turns 1..N-1 and put the rollout's own turn N as the 'answer': the replay's
  log-probs of that turn equal the ones the loop recorded while writing it (temperature 1),
  so the built dialogue sits at exactly the positions the loop writes."""
  model, params = lat
  ro = sampled(model, params, threshold=False)
  N = ro["active_NB"].shape[0]
  assert ro["active_NB"].all()
  k = jnp.full((2,), N - 1, jnp.int32)
  d, mask = revision.revision_dialogue({k_: jnp.asarray(v) for k_, v in ro.items()},
                                       jnp.asarray(ro["left_ids_NBM"][N - 1]),
                                       jnp.full((2,), 3, jnp.int32), k)
  pl, _ = sln.roles(model, params)
  lp, _ = loop.replay_logp(model.spec, pl, jnp.asarray(ro["prompt_ids"]),
                           jnp.asarray(ro["prompt_len"]), d)
  np.testing.assert_allclose(np.asarray(lp)[N - 1], ro["left_logp_NBM"][N - 1], atol=1e-9)
  assert np.asarray(mask)[:N - 1].sum() == 0


def test_revision_sft_matches_hand(lat):
  model, params = lat
  ro = sampled(model, params, threshold=False)
  ro["reward_NB"] = np.array([[1., 0], [0, 0], [1, 0]])  # row 0 right first; row 1 all wrong
  rng = jax.random.key(3)
  loss, m = jloss("revision_sft", model, (("max_wrong", 3),))(params, None, make_batch(), ro, rng)
  k1 = min(int(np.floor(float(jax.random.uniform(rng, (2,))[1]) * 3)), 2)
  b, cl, pl = make_batch(), model.spec.left, sln.roles(model, params)[0]
  E = lambda ids: np.asarray(lobes.embed_ids(cl, pl, jnp.asarray(ids)[None]))[0]
  total, count = 0.0, 0
  for r, k in ((0, 0), (1, k1)):  # prompt, k wrong turns each followed by its score, answer
    n_p = int(b["prompt_len"][r])
    x = [E(b["prompt_ids"][r, :n_p])]
    for n in range(k):
      x.append(E(ro["left_ids_NBM"][n, r]))
      x.append(np.asarray(lobes.embed_score(cl, pl, jnp.asarray([ro["score_NB"][n, r]]))))
    start = sum(len(a) for a in x)
    tl = int(b["target_len"][r])
    x.append(E(np.pad(b["target_ids"][r], (0, 3 - b["target_ids"].shape[1]))))
    total += lobe_logp_np(cl, pl, np.concatenate(x), range(start, start + tl),
                          b["target_ids"][r, :tl])
    count += tl
  np.testing.assert_allclose(float(loss), -total / count, rtol=1e-9)
  assert m["right_first"] == 0.5 and m["wrong_kept"] == k1 / 2
  assert m["revised_in_rollout"] == 0.0


def test_verifier_critic_matches_hand(lat):
  model, params = lat
  ro = sampled(model, params)
  N = ro["active_NB"].shape[0]
  ro["active_NB"][1:, 0] = False  # row 0 halted after turn 1
  ro["turns_B"][0] = 1
  ro["reward_NB"] = np.zeros((N, 2))
  ro["reward_NB"][0, 0] = ro["reward_NB"][1, 1] = 1.0
  loss, m = jloss("verifier_critic", model)(params, None, make_batch(), ro, jax.random.key(0))
  _, pr = sln.roles(model, params)
  terms = []
  for r in range(2):
    for n in range(int(ro["turns_B"][r])):
      n_p = int(ro["prompt_len"][r])
      ids = list(ro["prompt_ids"][r, :n_p]) + list(ro["left_ids_NBM"][n, r])
      s = float(lobes.apply(model.spec.right, pr, ids=jnp.asarray([ids]))["score_logit_B"][0])
      y = ro["reward_NB"][n, r]
      terms.append(y * sp(-s) + (1 - y) * sp(s))
  np.testing.assert_allclose(float(loss), np.mean(terms), rtol=1e-9)
  assert m["right_share"] == pytest.approx(2 / len(terms))


def test_revision_rl_matches_hand(lat):
  model, params = lat
  ro = sampled(model, params, repeat=2)  # R = 4: prompts 0, 0, 1, 1
  N = ro["active_NB"].shape[0]
  ro["reward_NB"] = np.zeros((N, 4))
  ro["reward_NB"][0, 1] = 1.0  # row 1 right at turn 1
  last = ro["turns_B"] - 1
  ro["reward_NB"][last[2], 2] = 1.0  # row 2 right at its last turn
  ro["reward_NB"] *= ro["active_NB"]
  pert = jax.tree.map(lambda x: x * 1.05, params)  # the reference differs from theta
  alpha, beta = 10.0, 0.3
  loss, m = jloss("revision_rl", model, (("alpha", alpha), ("beta", beta), ("samples", 2)))(
      params, {"ref": pert}, make_batch(), ro, jax.random.key(0))
  r1 = ro["reward_NB"][0]
  rT = ro["reward_NB"][last, np.arange(4)]
  R = r1 + rT + alpha * (rT - r1)
  base = np.array([R[1], R[0], R[3], R[2]])
  mask = ro["active_NB"][..., None] & ro["left_valid_NBM"]
  lp = np.asarray(reinforce.replay(model, params, {k: jnp.asarray(v) for k, v in ro.items()})[0])
  lp_ref = np.asarray(reinforce.replay(model, pert, {k: jnp.asarray(v) for k, v in ro.items()})[0])
  pg = -np.mean((R - base) * (mask * lp).sum((0, 2)))
  dd = (lp_ref - lp)[0]
  kl = (mask[0] * (np.exp(dd) - dd - 1)).sum() / mask[0].sum()
  np.testing.assert_allclose(float(loss), pg + beta * kl, rtol=1e-8)
  assert m["kl_turn1"] > 0 and m["reward_turn1"] == 0.25


# --- a few steps ----------------------------------------------------------------------------------

ADAM = optax.adam(3e-2)


@pytest.mark.parametrize("name,frozen", [("revision_sft", None), ("verifier_critic", None),
                                         ("revision_rl", "ref")])
def test_loss_goes_down(lat, name, frozen):
  model, params = lat
  ro = sampled(model, params, repeat=2 if name == "revision_rl" else 1,
               threshold=name != "revision_sft")
  N, R = ro["active_NB"].shape
  ro["reward_NB"] = (np.arange(N * R).reshape(N, R) % 3 == 0) * ro["active_NB"] * 1.0
  items = (("samples", 2),) if name == "revision_rl" else ()
  f = jloss(name, model, items, True)
  b, state, p = make_batch(), ADAM.init(params), params
  first = None
  for _ in range(6):
    (loss, met), g = f(p, None if frozen is None else {"ref": params}, b, ro, jax.random.key(2))
    first = float(loss) if first is None else first
    upd, state = ADAM.update(g, state, p)
    p = optax.apply_updates(p, upd)
  if name == "revision_rl":  # the policy gradient: the return-weighted log-prob moves
    assert float(met["pg_loss"]) < float(first)
  else:
    assert float(loss) < 0.9 * first


# --- the train loop on real data ------------------------------------------------------------------

def smoke(name, **kw):
  return common.experiment("lateralized", name, smoke=True, task=dict(data_dir=DATA_DIR), **kw)


def test_true_answers_are_judged_right_and_placed_at_turn_1():
  """On the smoke task's real batches: a turn 1 holding the batch's target_ids (garbage
  after them, as the loop writes) is judged right by the verifier for every row, so
  right_first counts right answers; the built dialogue keeps those tokens at turn 1."""
  c = smoke("revision_sft")
  mesh = parallel.make_mesh()
  src = train.load_sources(c)[0]
  tok = data.ByteTokenizer()
  ds = data.make_dataset(src, tok, batch_size=c.batch_size, prompt_len=c.prompt_len,
                         target_len=build.target_len(c), seed=c.seed)
  batch = data.global_batch(next(iter(ds)), mesh)
  N, B, m = c.model.loop.max_turns, c.batch_size, c.model.loop.turn_len
  tgt, tl = np.asarray(batch["target_ids"]), np.asarray(batch["target_len"])
  ids = np.full((N, B, m), ord("7"), np.int32)  # turn 2: "7777", wrong
  ids[0, :, :tgt.shape[1]] = tgt
  for b in range(B):
    ids[0, b, tl[b]:] = ord("9")  # after eos: garbage
  ro = {"left_ids_NBM": jnp.asarray(ids), "left_valid_NBM": jnp.ones((N, B, m), bool),
        "active_NB": jnp.ones((N, B), bool), "batch_row": jnp.arange(B, dtype=jnp.int32)}
  rew = np.asarray(evaluate.verifier_reward(ro, batch, c.task.name, src, tok, mesh))
  assert rew.tolist() == [[1.0] * B, [0.0] * B]
  for b in range(B):  # the answer's digits, then eos
    assert tok.decode([int(t) for t in tgt[b, :tl[b] - 1]]).strip().isdigit()
    assert tgt[b, tl[b] - 1] == tok.eos_id
  d, mask = revision.revision_dialogue(
      {**{k: jnp.zeros((N, B) + (m,) * k.endswith("M"), jnp.float32)
          for k in ("left_logp_NBM", "left_logp_target_NBM", "score_NB", "score_logit_NB")},
       "left_emb_NBMR": jnp.zeros((N, B, m, 1)), "right_ids_NBM": jnp.zeros((N, B, m), jnp.int32),
       "turns_B": jnp.full((B,), N), "halt_reason_B": jnp.ones((B,), jnp.int32),
       "final_score_B": jnp.zeros((B,)), **ro},
      jnp.asarray(tgt), jnp.asarray(tl), jnp.zeros((B,), jnp.int32))
  got = np.asarray(d.left_ids_NBM)[0]
  for b in range(B):
    np.testing.assert_array_equal(got[b], list(tgt[b, :tl[b]]) + [0] * (m - tl[b]))
  np.testing.assert_array_equal(np.asarray(mask)[0].sum(1), tl)
  assert np.asarray(mask)[1:].sum() == 0


@pytest.mark.slow
def test_train_loop_three_stages(tmp_path):
  """revision_sft, then verifier_critic and revision_rl from it, through train.train, with
  the FLOP ledger adding up across the stages."""
  jax.config.update("jax_enable_x64", False)
  try:
    c = smoke("revision_sft", steps=2, log_every=1, checkpoint_every=2)
    work = str(tmp_path / "sft")
    out = train.train(c, work)
    assert out["step"] == 2 and np.isfinite(out["loss"]) and 0 <= out["right_first"] <= 1
    assert train_flops.run_total(work) == 2 * train_flops.step_flops(c) > 0
    for name in ("verifier_critic", "revision_rl"):
      c2 = smoke(name, steps=1, log_every=1, init_from=work)
      out2 = train.train(c2, str(tmp_path / name))
      assert np.isfinite(out2["loss"]) and train_flops.step_flops(c2) > 0
  finally:
    jax.config.update("jax_enable_x64", True)


def test_loop_verdict_stage_configs(tmp_path):
  """experiments/loop_verdict.py: every stage's config at every size finalizes, chains
  init_from stage to stage, and the stages after the critic halt at the given τ."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiments",
                      "loop_verdict.py")
  spec = importlib.util.spec_from_file_location("loop_verdict", path)
  lv = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(lv)
  assert lv.__doc__.lstrip().startswith("python experiments/loop_verdict.py")
  for size in lv.SIZES:
    for i, stage in enumerate(lv.STAGES):
      c = lv.stage_config(stage, size, 1, str(tmp_path), 0.8)
      assert c.objective.name == stage and c.seed == 1 and c.model.loop.threshold == 0.8
      assert c.init_from == (str(tmp_path / lv.STAGES[i - 1]) if i else "")
      assert c.task.config == "loop_test" and c.checkpoint_every == c.steps
      assert train_flops.step_flops(c) > 0
  with pytest.raises(SystemExit, match="error: unknown stage"):
    lv.main(["--workdir", str(tmp_path), "--stages", "sft,critic"])
  # Several seeds' summaries: mean and standard error per stage and figure.
  def summary(seed, acc1, auc):
    b = {"acc_by_turn": [acc1, 0.0], "turns_mean": 2.0, "best_of_T": None,
         "pass_at_k": {"1": acc1}, "critic": {"auc": auc}, "mcnemar_p": {"loop_vs_turn1": 0.5}}
    return {"seed": seed, "num": 4, "sft": b}
  agg = lv.aggregate([summary(0, 0.2, 0.6), summary(1, 0.4, 0.8), summary(2, 0.6, None)])
  assert list(agg) == ["seeds", "num", "sft"] and agg["seeds"] == [0, 1, 2]
  assert agg["sft"]["acc turn 1"]["mean"] == pytest.approx(0.4)
  assert agg["sft"]["acc turn 1"]["se"] == pytest.approx(0.2 / 3 ** 0.5)
  assert agg["sft"]["critic AUC"]["mean"] == pytest.approx(0.7)  # a missing value is skipped
  assert agg["sft"]["acc turn 3"]["mean"] is None and agg["sft"]["best-of-T"]["mean"] is None
  assert "| acc turn 1 | 0.400 ± 0.115 |" in lv.table(agg)
  with pytest.raises(SystemExit, match="error: no summary file"):
    lv.main(["--workdir", str(tmp_path), "--aggregate", str(tmp_path / "none.json")])


def test_step_flops_by_hand():
  """A rollout forward, then the gradient passes (3x forward) the objective differentiates."""
  from slnjax import flops  # pylint: disable=g-import-not-at-top
  c = smoke("revision_sft")
  model = build.build_model(c)
  spec, N, P, m = model.spec, c.model.loop.max_turns, c.prompt_len, c.model.loop.turn_len
  dialogue = float(flops.dialogue_flops(model, N, P)[()])
  replay = flops.lobe_forward_flops(spec.left, spec.cache_lengths(P)[0], 0)
  B = c.batch_size
  assert train_flops.step_flops(c) == pytest.approx(B * (dialogue + 3 * replay))
  rl = smoke("revision_rl", objective=dict(samples=2, beta=0.1))
  assert train_flops.step_flops(rl) == pytest.approx(B * (2 * dialogue + 3 * 2 * replay
                                                          + 2 * replay))
  vc = smoke("verifier_critic")
  crit = flops.lobe_forward_flops(spec.right, P + m, 0, logit_rows=0)
  assert train_flops.step_flops(vc) == pytest.approx(B * (dialogue + 3 * N * crit))
