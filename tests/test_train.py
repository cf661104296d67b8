"""The train step and loop: golden metrics, loss decreases per procedure, NaN stop,
verifier rewards, logs."""
import json
import os
import re
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from slnjax import checkpoint, config as cfg, data, evaluate, loop, metrics, objectives, parallel
from experiments import common
from slnjax import build, finalize
from slnjax import train
from slnjax.objectives import base
from slnjax.objectives import sft as sft_lib

DATA_DIR = os.path.join(tempfile.gettempdir(), "slnjax_test_data")


def smoke(kind="lateralized", objective="sft", **kw):
  kw.setdefault("task", {})["data_dir"] = DATA_DIR
  return common.experiment(kind, objective, smoke=True, **kw)


# Test-only objectives (registered under names no config uses).
def _nan_after_3(ctx, params, frozen, batch, rollout, rng):
  loss, m = sft_lib.sft_loss(ctx, params, frozen, batch, rollout, rng)
  return loss + jnp.where(ctx.step >= 3, jnp.nan, 0.0), m


def _verifier_pg(ctx, params, frozen, batch, rollout, rng):
  """REINFORCE on the verifier reward (a private check of the host reward path)."""
  del frozen, rng
  d = base.dialogue(rollout)
  logp_NBM, _ = loop.replay_logp(ctx.model.spec, params["left"], rollout["prompt_ids"],
                                 rollout["prompt_len"], d)
  r_NB = rollout["reward_NB"]
  loss = -jnp.mean((r_NB - r_NB.mean())[..., None] * logp_NBM)
  return loss, {"reward": r_NB.sum() / jnp.maximum(d.active_NB.sum(), 1)}


def _sample(ctx, params, frozen, batch, rng):
  del frozen
  return base.sample(ctx, params, batch, rng)


for _obj in (objectives.Objective("_test_nan_after_3", _nan_after_3),
             objectives.Objective("_test_verifier_pg", _verifier_pg, rollout_fn=_sample,
                                  reward="verifier")):
  if _obj.name not in objectives.REGISTRY:
    objectives.register(_obj)


def first_batch(c, mesh):
  src = train.load_sources(c)[0]
  ds = data.make_dataset(src, data.ByteTokenizer(), batch_size=c.batch_size,
                         prompt_len=c.prompt_len, target_len=build.target_len(c), seed=c.seed)
  return data.global_batch(next(iter(ds)), mesh)


@pytest.fixture(scope="module")
def sft_step():
  c = smoke(optim=dict(left=dict(warmup_steps=0), right=dict(warmup_steps=0)))
  mesh = parallel.make_mesh()
  return c, train.make_train_step(c, mesh), first_batch(c, mesh)


# Two SFT steps on one batch of the smoke config from PRNGKey(0) (CPU, float32).
GOLDEN = [{"loss": 5.553130149841309, "grad_norm/left": 2.1819496154785156, "token_acc": 0.0,
           "grad_norm/right": 0.0, "lr/left": 0.003},
          {"loss": 5.449092388153076, "grad_norm/left": 2.1473562717437744,
           "token_acc": 0.1111111119389534, "lr/left": 0.0026045942213386297}]


def test_golden_two_step_metrics(sft_step):
  _, ts, batch = sft_step
  st = ts.init_fn(jax.random.PRNGKey(0))
  assert st["params"]["left"]["embedding"].sharding == \
      ts.state_shardings["params"]["left"]["embedding"]
  for golden in GOLDEN:
    st, m = ts.step_fn(st, batch)
    m = metrics.to_python(m)
    for k, v in golden.items():
      assert m[k] == pytest.approx(v, rel=1e-4, abs=1e-6), (k, m[k], v)
  assert int(st["step"]) == 2 and int(st["nonfinite"]) == -1
  again = ts.init_fn(jax.random.PRNGKey(0))  # same seed -> same state
  again, m2 = ts.step_fn(again, batch)
  assert metrics.to_python(m2)["loss"] == pytest.approx(GOLDEN[0]["loss"], rel=0, abs=0)


# The metric that must fall on a fixed batch, where "loss" is not a minimised quantity on its
# own (policy-gradient surrogates against a critic that is learning at the same time).
WATCH = {"ppo": "critic_loss", "ppo_verifier": "critic_loss", "actor_critic_td": "critic_loss"}
SOFT = ("bptt", "gan")  # objectives that differentiate through the soft tokens
FAST = ("sft", "bptt")  # in the default run; the others are marked slow (one compile each)


def procedure_names():
  """The dialogue procedures (the wide ones need a wide model: tests/test_wide_main.py)."""
  return sorted(n for n in finalize.load_objectives()
                if not n.startswith("_") and not n.startswith("wide"))


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in FAST else pytest.mark.slow)
                                  for n in procedure_names()])
def test_loss_decreases(name, sft_step):
  """12 updates on one batch (lr 1e-2, no warmup) lower the objective's loss."""
  mesh = parallel.make_mesh()
  if name == "sft":
    c, ts, batch = sft_step
  else:
    lr = dict(warmup_steps=0, lr=1e-2)
    c = smoke(objective=name, steps=12, optim=dict(left=lr, right=lr),
              model=dict(loop=dict(mode="soft" if name in SOFT else "hard")))
    ts, batch = train.make_train_step(c, mesh), first_batch(c, mesh)
  st = ts.init_fn(jax.random.PRNGKey(0))
  src = train.load_sources(c)[0] if ts.objective.reward == "verifier" else None
  seen = []
  for _ in range(12):
    if ts.rollout_fn is None:
      st, m = ts.step_fn(st, batch)
    else:
      r = ts.rollout_fn(st, batch)
      if src is not None:
        r = {**r, "reward_NB": evaluate.verifier_reward(r, batch, "addition", src,
                                                        data.ByteTokenizer(), mesh)}
      st, m = ts.step_fn(st, batch, r)
    seen.append(metrics.to_python(m)[WATCH.get(name, "loss")])
  assert np.all(np.isfinite(seen)), seen
  assert np.mean(seen[-3:]) < np.mean(seen[:3]), seen


def test_nan_stops_and_keeps_last_checkpoint(tmp_path):
  c = smoke(objective="_test_nan_after_3", steps=8, log_every=1, checkpoint_every=2)
  with pytest.raises(train.NonFiniteError, match=r"NaN/inf at step 4.*checkpoint \(step 2\)"):
    train.train(c, str(tmp_path))
  ck = checkpoint.Checkpointer(str(tmp_path))
  assert ck.all_steps() == [2]
  ts = train.make_train_step(c, parallel.make_mesh())
  st, _ = ck.restore(2, ts.abstract_state, None)
  assert all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(st["params"]))
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in rows] == [1, 2, 3]  # step 4 was never logged as a good step


def _params(directory, step):
  mngr = ocp.CheckpointManager(str(directory),
                               item_handlers={"state": ocp.PyTreeCheckpointHandler()})
  return mngr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore()))[
      "state"]["params"]


def _largest(params) -> float:  # nan if any is
  return max(float(np.abs(np.asarray(x)).max()) for x in jax.tree.leaves(params))


def test_nan_after_blown_up_weights_names_a_good_checkpoint(tmp_path):
  """lr 1e30 (after one warmup step at lr 0): the update of step 2 gives finite but huge
  weights, whose loss (step 3) is NaN/inf. The checkpoint of step 2 holds them: it is moved
  aside (not deleted), and the advice names step 1, whose weights are sane."""
  lr = dict(lr=1e30, warmup_steps=3)
  c = smoke(steps=8, log_every=1, checkpoint_every=1, optim=dict(left=lr, right=lr))
  with pytest.raises(train.NonFiniteError, match=r"at step 3 .*last good checkpoint \(step 1\)"
                                                 r".*step 2 .*moved to .*checkpoints_rejected/2"):
    train.train(c, str(tmp_path))
  assert checkpoint.Checkpointer(str(tmp_path)).all_steps() == [1]
  assert (tmp_path / "checkpoints_rejected" / "2" / "state").is_dir()
  good, bad = _params(tmp_path / "checkpoints", 1), _params(tmp_path / "checkpoints_rejected", 2)
  assert _largest(good) < 1e3 and _largest(bad) > 1e20 and np.isfinite(_largest(bad))


def test_an_update_to_nonfinite_parameters_is_dropped(sft_step):
  """Adam moments of 3e38 make the update of a finite loss and gradient overflow to inf: the
  step keeps the old parameters and records the step, so the loop never saves them."""
  _, ts, batch = sft_step
  st = ts.init_fn(jax.random.PRNGKey(0))
  huge = lambda path, x: (jnp.full_like(x, 3e38) if "mu" in jax.tree_util.keystr(path) else x)
  st = {**st, "opt": jax.tree_util.tree_map_with_path(huge, st["opt"])}
  before = jax.tree.map(np.asarray, st["params"])
  st, m = ts.step_fn(st, batch)
  assert np.isfinite(metrics.to_python(m)["loss"]) and int(st["nonfinite"]) == 0
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, st["params"]))


def test_progress_line_names_accuracies_and_shows_eta():
  line = metrics.progress_line(10, 110, {"steps_per_sec": 2.0, "token_acc": 0.5,
                                         "answer_acc": 0.25, "critic_acc": 0.75})
  assert "ETA 50s" in line and "token acc (teacher-forced) 0.5" in line
  assert "exact match (verifier, last turn) 0.25" in line
  assert "critic agrees with verifier 0.75" in line
  assert "ETA" not in metrics.progress_line(110, 110, {"steps_per_sec": 2.0})
  assert [metrics.duration(s) for s in (45, 725, 3725)] == ["45s", "12m05s", "1h02m"]


TRANSCRIPTS = """step 300

--- record 1 (difficulty 1) ---
prompt:  1+2=
target:  3
turn 1: left '3' | score 0.910 | correct
halted: threshold after 1 turn(s)

--- record 2 (difficulty 2) ---
prompt:  12+9=
target:  21
turn 1: left '20' | score 0.200 | wrong
turn 2: left '21' | score 0.800 | correct
halted: threshold after 2 turn(s)

--- record 3 (difficulty 3) ---
prompt:  512+9=
target:  521
turn 1: left '520' | score 0.100 | correct
turn 2: left '52' | score 0.300 | wrong
halted: idl_limit after 2 turn(s)
"""


def test_demo_shows_a_success_and_a_failure():
  from slnjax import demo  # pylint: disable=g-import-not-at-top
  (t1, right), (t2, wrong) = demo.pick_dialogues(TRANSCRIPTS)
  assert "ends right" in t1 and "record 2" in right  # the one that used the loop
  assert "ends wrong" in t2 and "record 3" in wrong
  only_right = TRANSCRIPTS.split("\n\n--- record 3")[0]
  assert [t for t, _ in demo.pick_dialogues(only_right)] == [t1]


@pytest.mark.slow
def test_verifier_reward_path(tmp_path):
  c = smoke(objective="_test_verifier_pg", steps=2, log_every=1)
  mesh = parallel.make_mesh()
  ts = train.make_train_step(c, mesh)
  assert ts.abstract_rollout["reward_NB"].shape == (2, 4)
  st = ts.init_fn(jax.random.PRNGKey(0))
  batch = first_batch(c, mesh)
  r = ts.rollout_fn(st, batch)
  src = train.load_sources(c)[0]
  reward = np.asarray(evaluate.verifier_reward(r, batch, "addition", src, data.ByteTokenizer(),
                                               mesh))
  # The same judgement by hand: a correct answer for row 0 gets 1.0 from the verifier.
  ids = np.asarray(r["left_ids_NBM"]).copy()
  answer = data.ByteTokenizer().encode(data.tasks.base.as_text(src[int(batch["index"][0])]["target"]))
  ids[0, 0, :len(answer)] = answer
  ids[0, 0, len(answer):] = 2  # eos
  fixed = {**r, "left_ids_NBM": jnp.asarray(ids), "left_valid_NBM": jnp.ones_like(r["left_valid_NBM"])}
  r2 = np.asarray(evaluate.verifier_reward(fixed, batch, "addition", src, data.ByteTokenizer(), mesh))
  assert r2[0, 0] == 1.0 and set(np.unique(reward)) <= {0.0, 1.0}
  out = train.train(c, str(tmp_path), train_step=ts)
  assert out["step"] == 2 and np.isfinite(out["loss"]) and "reward" in out


def test_event_file_and_jsonl_resume(tmp_path):
  w = metrics.Writer(str(tmp_path), total_steps=10)
  for s in (1, 2, 3):
    w.write(s, {"loss": float(s)})
  w.text(3, "transcripts", "turn 1: left '12'")
  w.close()
  w = metrics.Writer(str(tmp_path), start_step=2, total_steps=10)  # resumed at step 2
  w.write(3, {"loss": 30.0})
  w.close()
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 30.0)]
  files = sorted(os.listdir(tmp_path / "tb"))
  assert len(files) >= 1
  recs = [rec for f in files for rec in metrics.read_events(str(tmp_path / "tb" / f))]
  assert any(b"train/loss" in rec for rec in recs) and any(b"turn 1" in rec for rec in recs)
  assert metrics.crc32c(b"123456789") == 0xE3069283
