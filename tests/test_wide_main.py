"""The wide kinds (rows E, G) through slnjax.main / train.train: config validation, training,
evaluation (accuracy, iterations per difficulty, expert usage), checkpoints and resume."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from ml_collections import config_dict

from slnjax import config as cfg, evaluate_wide, metrics, parallel, sln, train, wide
from experiments import common
from slnjax import build, finalize
from test_checkpoint import ENV, ROOT, committed_steps, final_params, rows
from test_train import DATA_DIR, first_batch

EXPERIMENTS = ("wide", "lateralized_wide")


def experiment(name, arg="smoke", **fields):
  """experiments/<name>.py:<arg> with the test data dir and ``fields`` set (locked config)."""
  path = os.path.join(ROOT, "experiments", f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"exp_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(arg)
  c.task.data_dir = DATA_DIR
  for key, value in fields.items():
    c[key] = value
  return c


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_config_builds_the_wide_model(name):
  c = experiment(name)
  model = build.build_model(c)
  assert isinstance(model, wide.WideSLN) and model.kind == name
  assert model.cfg.lateralized == (name == "lateralized_wide")
  assert (model.cfg.max_iters, model.cfg.write_len, model.cfg.n_experts) == (2, 2, 2)
  assert model.cfg.route == "soft" and c.model.right is None
  full = build.build_model(experiment(name, arg=None))
  assert full.cfg.max_iters == 4 and full.cfg.n_experts == 4 and full.lm.d_model == 64
  assert build.target_len(c) == 6  # experiments set target_len; None falls back to answer_len
  plain = common.experiment("wide", "wide", smoke=True, target_len=None,
                         model=dict(wide=dict(answer_len=5, bptt_depth=-1)))
  assert build.target_len(plain) == 5 and build.wide_config(plain).bptt_depth is None
  # init and logical_axes (what state.init_state / state.shardings call) agree on the tree.
  shapes = jax.eval_shape(lambda r: sln.init(model, r), jax.random.key(0))
  axes = sln.logical_axes(model)
  assert jax.tree.structure(shapes) == jax.tree.structure(
      axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))


def test_bad_wide_config_names_the_key(tmp_path):
  c = experiment("wide")
  c.unlock()
  c.model.wide.max_iterz = 3
  with pytest.raises(ValueError, match=r"config.model.wide: Unknown wide config keys "
                                       r"\['max_iterz'\]; valid keys: \[.*'max_iters'"):
    finalize.finalize(c)
  with pytest.raises(KeyError, match=r"config.model.wide.bogus"):
    common.experiment("wide", "wide", model=dict(wide=dict(bogus=1)))
  fin = lambda *a, **kw: finalize.finalize(common.experiment(*a, **kw))
  with pytest.raises(ValueError, match=r"objective.name='sft' does not train kind 'wide': "
                                       r"wide kinds train with one of \('wide', 'wide_ppo'\)"):
    fin("wide", "sft")
  with pytest.raises(ValueError, match=r"objective.name='wide' does not train kind 'tall'"):
    fin("tall", "wide")
  with pytest.raises(ValueError, match=r"config.model.wide: k_in=2 \+ k_out=1 blocks exceed"):
    fin("wide", "wide", model=dict(wide=dict(k_in=2)))
  with pytest.raises(ValueError, match=r"config.model.wide: WideConfig.route='softish'"):
    fin("lateralized_wide", "wide", model=dict(wide=dict(route="softish")))
  with pytest.raises(ValueError, match=r"config.model.wide: WideConfig.min_iters=5 must be an "
                                       r"int in \[0, max_iters=4\]"):
    fin("wide", "wide", model=dict(wide=dict(max_iters=4, min_iters=5)))
  with pytest.raises(ValueError, match=r"config.objective: halt_warmup=-3 must be an int >= 0"):
    fin("wide", "wide_ppo", objective=dict(name="wide_ppo", halt_warmup=-3),
        model=dict(wide=dict(route="hard")))
  with pytest.raises(ValueError, match=r"'min_iters=two': min_iters takes an integer"):
    experiment("wide", arg="min_iters=two")
  with pytest.raises(ValueError, match=r"key in route, steps, seed, max_iters, min_iters, "
                                       r"halt_warmup, prior_floor"):
    experiment("wide", arg="warmup=3")
  with pytest.raises(ValueError, match=r"prior_floor=1.0 must lie in \[0, 1\)"):
    finalize.finalize(experiment("wide", arg="smoke,prior_floor=1"))
  fixed = experiment("wide", arg="smoke,min_iters=1,halt_warmup=3,prior_floor=0.25")
  assert fixed.model.wide.min_iters == 1 and fixed.objective.halt_warmup == 3
  assert fixed.objective.prior_floor == 0.25
  base = cfg.base_config()
  base.model.kind, base.objective.name = "wide", "wide"
  base.model.wide = None
  with pytest.raises(ValueError, match=r"config.model.wide"):
    finalize.finalize(base)
  r = subprocess.run([sys.executable, "-m", "slnjax.main", "--config",
                      "experiments/wide.py:smoke", "--workdir", str(tmp_path / "w"),
                      "--config.model.wide.max_iterz=3"],
                     capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
  assert r.returncode == 2, r.stderr[-2000:]
  assert "unknown config key config.model.wide.max_iterz" in r.stderr
  assert not (tmp_path / "w").exists()


def test_flat_metrics_of_a_summary():
  summary = {"examples": 3, "iters": 1.5, "gate_halted_frac": 0.5, "accuracy": 2 / 3,
             "accuracy_by_difficulty": {1: 1.0, 2: 0.5},
             "iters_by_difficulty": {1: {"mean": 1.0, "hist": [0, 1, 0], "n": 1},
                                     2: {"mean": 2.0, "hist": [0, 0, 2], "n": 2}},
             "choices": {"left": 3, "right": 1, "output": 0},
             "experts_left": [0.25, 0.75], "experts_right": [1.0, 0.0]}
  m = evaluate_wide.flat_metrics(summary)
  assert m == {"examples": 3.0, "iters": 1.5, "gate_halted_frac": 0.5, "accuracy": 2 / 3,
               "accuracy/d1": 1.0, "accuracy/d2": 0.5, "iters/d1": 1.0, "iters/d2": 2.0,
               "choices/left": 0.75, "choices/right": 0.25, "choices/output": 0.0,
               "experts_left/0": 0.25, "experts_left/1": 0.75, "experts_right/0": 1.0,
               "experts_right/1": 0.0}


@pytest.mark.parametrize("name", [EXPERIMENTS[0]] + [
    pytest.param(n, marks=pytest.mark.slow) for n in EXPERIMENTS[1:]])
def test_train_evaluate_checkpoint_and_resume(name, tmp_path, capsys):
  c = experiment(name, steps=4, log_every=1, eval_every=2, checkpoint_every=2)
  ts = train.make_train_step(c, parallel.make_mesh())
  w = str(tmp_path / "w")
  out = train.train(c, w, train_step=ts)
  assert out["step"] == 4 and np.isfinite(out["loss"]) and "grad_norm/right" in out
  if name == "lateralized_wide":
    assert "critic_bce" in out
  n = ts.model.cfg.n_experts
  assert 0.0 <= out["eval/accuracy"] <= 1.0 and out["eval/examples"] == 16  # the smoke test split
  by_d = sorted(k for k in out if k.startswith("eval/iters/d"))
  assert by_d and all(0 <= out[k] <= ts.model.cfg.max_iters for k in by_d)
  assert sum(out[f"eval/choices/{c_}"] for c_ in ("left", "right", "output")) == \
      pytest.approx(1.0)
  for lobe in ("left", "right"):
    usage = [out[f"eval/experts_{lobe}/{e}"] for e in range(n)]
    assert sum(usage) == pytest.approx(1.0 if out[f"eval/choices/{lobe}"] > 0 else 0.0, abs=1e-3)
  logged = rows(w)
  evals = [r for r in logged if r["split"] == "eval"]
  assert [r["step"] for r in evals] == [2, 4]
  assert {"accuracy", "iters", "experts_left/0", "experts_right/0"} <= set(evals[-1])
  assert [r["step"] for r in logged if r["split"] == "train"] == [1, 2, 3, 4]
  assert os.listdir(os.path.join(w, "tb"))
  summary = json.load(open(os.path.join(w, "eval_summary", "step_4.json")))
  assert sum(v["n"] for v in summary["iters_by_difficulty"].values()) == 16
  assert "gate:" in open(os.path.join(w, "transcripts", "step_4.txt")).read()
  assert committed_steps(w) == [2, 4]

  # Resume: drop the last checkpoint; the rerun restores step 2 and reaches the same state.
  ref = final_params(w, 4)
  shutil.rmtree(os.path.join(w, "checkpoints", "4"))
  capsys.readouterr()
  again = train.train(c, w, train_step=ts)
  assert f"resumed from step 2 (checkpoint {os.path.join(w, 'checkpoints')}/2)" in \
      capsys.readouterr().out
  jax.tree.map(np.testing.assert_array_equal, ref, final_params(w, 4))
  assert rows(w) == logged  # the same metrics, evaluation included, step by step
  assert again["eval/accuracy"] == out["eval/accuracy"]


def test_main_command_runs_the_experiment(tmp_path):
  w = tmp_path / "w"
  r = subprocess.run([sys.executable, "-m", "slnjax.main", "--config",
                      "experiments/wide.py:smoke", "--workdir", str(w),
                      f"--config.task.data_dir={DATA_DIR}"],
                     capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "done:" in r.stdout and "'eval/accuracy'" in r.stdout
  assert committed_steps(str(w)) == [2]  # the final step is always saved
  assert any(row["split"] == "eval" and "iters" in row for row in rows(str(w)))


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["wide", "wide_ppo"])
def test_wide_loss_decreases(objective):
  """12 updates on one batch (lr 1e-2, no warmup) lower the answer loss."""
  lr = config_dict.ConfigDict(dict(cfg.optim_dict(lr=1e-2, warmup_steps=0)))
  c = experiment("wide", steps=12)
  c.optim.left, c.optim.right = lr, lr
  if objective == "wide_ppo":
    c = common.experiment("wide", "wide_ppo", smoke=True, task=dict(data_dir=DATA_DIR),
                       steps=12, optim=dict(left=lr.to_dict(), right=lr.to_dict()),
                       model=dict(wide=dict(route="hard", n_experts=2, max_iters=2)))
  mesh = parallel.make_mesh()
  ts, batch = train.make_train_step(c, mesh), first_batch(c, mesh)
  st = ts.init_fn(jax.random.PRNGKey(0))
  seen = []
  for _ in range(12):
    r = ts.rollout_fn(st, batch) if ts.rollout_fn is not None else None
    st, m = ts.step_fn(st, batch, r) if r is not None else ts.step_fn(st, batch)
    seen.append(metrics.to_python(m)["answer_ce"])
  assert np.all(np.isfinite(seen)), seen
  assert np.mean(seen[-3:]) < np.mean(seen[:3]), seen
