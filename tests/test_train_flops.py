"""Training FLOPs (slnjax/train_flops.py): the per-step count, and the ledger's total across
a resume (lost steps not counted twice) and across the stages of a recipe (init_from)."""
import json
import os
import shutil
import tempfile

import pytest

from slnjax import config as cfg, flops, train, train_flops
from experiments import common
from slnjax import build, finalize

DATA_DIR = os.path.join(tempfile.gettempdir(), "slnjax_test_data")


def smoke(objective="sft", **kw):
  kw.setdefault("task", {})["data_dir"] = DATA_DIR
  return common.experiment("lateralized", objective, smoke=True, **kw)


def metric_rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(l) for l in f]


def test_sft_step_by_hand():
  c = smoke()
  left = build.build_model(c).spec.left
  P, M = c.prompt_len, build.target_len(c)
  # forward + backward = 3x the left lobe's forward over prompt + target, per batch row
  assert train_flops.step_flops(c) == 3 * c.batch_size * flops.lobe_forward_flops(left, P + M)
  remat = smoke(model=dict(left=dict(remat="full")))
  assert train_flops.step_flops(remat) == 4 / 3 * train_flops.step_flops(c)


def test_not_counted_is_none():
  assert train_flops.step_flops(common.experiment("wide", "wide", smoke=True)) is None
  assert set(train_flops.COUNTED) | {"wide", "wide_ppo"} >= set(
      n for n in finalize.load_objectives() if not n.startswith("_"))


@pytest.mark.parametrize("objective", ["bptt", "critic_bce", "actor_critic_td", "ppo",
                                       "reinforce", "rloo", "self_play", "spin", "gan"])
def test_every_dialogue_objective_is_counted(objective):
  mode = {"bptt": "soft", "gan": "straight_through"}.get(objective, "hard")
  c = smoke(objective, model=dict(loop=dict(mode=mode)))
  model = build.build_model(c)
  n = c.model.loop.max_turns
  rollout = c.batch_size * flops.dialogue_flops(model, n, c.prompt_len)[()]
  # at least the dialogue it runs (differentiated: x3 and more)
  assert train_flops.step_flops(c) > (3 * rollout if objective in ("bptt", "gan") else rollout)


def test_total_across_resume_and_stages(tmp_path):
  from slnjax import parallel  # pylint: disable=g-import-not-at-top
  c = smoke(steps=3, log_every=1, checkpoint_every=2, keep_checkpoints=5)
  ts = train.make_train_step(c, parallel.make_mesh())  # compiled once for the three runs
  per_step = train_flops.step_flops(c)
  w = str(tmp_path / "sft")
  train.train(c, w, train_step=ts)
  assert [r["train_flops"] for r in metric_rows(w)] == [per_step * s for s in (1, 2, 3)]
  # The run stops after step 3 but its checkpoint 3 is lost: resuming from 2 retrains step 3,
  # and the total counts 3 steps, not 4.
  shutil.rmtree(os.path.join(w, "checkpoints", "3"))
  out = train.train(c, w, train_step=ts)
  assert out["train_flops"] == 3 * per_step
  assert train_flops.run_total(w) == 3 * per_step
  with open(os.path.join(w, train_flops.FILENAME)) as f:
    assert json.load(f)["total"] == 3 * per_step
  # A second stage started from the first run's parameters adds to its total, and a third
  # from the second adds to both.
  w2, w3 = str(tmp_path / "stage2"), str(tmp_path / "stage3")
  out2 = train.train(smoke(steps=3, log_every=1, checkpoint_every=3, init_from=w), w2,
                     train_step=ts)
  assert out2["train_flops"] == 6 * per_step == train_flops.run_total(w2)
  train.train(smoke(steps=3, log_every=3, checkpoint_every=3, init_from=w2), w3, train_step=ts)
  assert train_flops.run_total(w3) == 9 * per_step
  assert train_flops.run_total(w3, step=1) == 7 * per_step


@pytest.mark.parametrize("objective", ["sft", pytest.param("critic_bce", marks=pytest.mark.slow)])
def test_step_matches_xla_cost_analysis(objective):
  """A train step without loops (unrolled layers, one turn of one token; a rollout's while
  loop then runs once): our count against XLA's count of the compiled step (and rollout).
  XLA also counts the optimizer and elementwise work, a few percent at batch 64."""
  from slnjax import parallel  # pylint: disable=g-import-not-at-top
  lobe = dict(d_model=256, d_ff=1024, scan_layers=False)
  c = smoke(objective, batch_size=64, model=dict(left=lobe, right=lobe,
                                                 loop=dict(turn_len=1, max_turns=1)))
  ts = train.make_train_step(c, parallel.make_mesh())
  args = (ts.abstract_state, ts.abstract_batch)
  xla = ts.step_fn.lower(*args + ((ts.abstract_rollout,) if ts.rollout_fn else ())).compile()
  total = xla.cost_analysis()["flops"]
  if ts.rollout_fn is not None:
    total += ts.rollout_fn.lower(*args).compile().cost_analysis()["flops"]
  assert 0.96 < train_flops.step_flops(c) / total <= 1.0


def test_segments_by_hand():
  rec = {"inherited": 5.0, "segments": [{"start": 0, "per_step": 2.0},
                                        {"start": 3, "per_step": 10.0}]}
  assert [train_flops._total(rec, s) for s in (0, 2, 3, 4, 6)] == [5, 9, 11, 21, 41]  # pylint: disable=protected-access
