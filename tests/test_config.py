"""Config schema: defaults, validation, locking, and the command line's errors."""
import os
import subprocess
import sys

import pytest
from ml_collections import config_dict

from slnjax import config as cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_experiment_is_locked_and_complete():
  c = cfg.experiment("lateralized", "sft", smoke=True)
  assert c.is_locked
  with pytest.raises(AttributeError, match="lrr"):
    c.optim.left.lrr = 1.0
  assert c.objective.right_weight == 0.0  # the objective's defaults are filled in
  model = cfg.build_model(c)
  assert model.kind == "lateralized" and model.spec.loop.turn_len == 4
  assert cfg.target_len(c) == 4


def test_bptt_depth_minus_one_is_full():
  c = cfg.experiment("lateralized", "sft", smoke=True, model=dict(loop=dict(bptt_depth=-1)))
  assert cfg.loop_config(c).bptt_depth is None
  c = cfg.experiment("lateralized", "sft", smoke=True, model=dict(loop=dict(bptt_depth=2)))
  assert cfg.loop_config(c).bptt_depth == 2


@pytest.mark.parametrize("overrides, match", [
    (dict(model=dict(kind="talll")), r"model.kind='talll'.*valid kinds"),
    (dict(objective=dict(name="nope")), r"objective.name='nope'.*register"),
    (dict(optim=dict(left=dict(schedule="cosin"))), r"optim.left.schedule='cosin'"),
    (dict(model=dict(left=dict(family="gpt"))), r"model.left.*family='gpt'"),
    (dict(model=dict(loop=dict(mode="softish"))), r"model.loop.*softish"),
    (dict(task=dict(name="chess")), r"task.name='chess'"),
    (dict(batch_size=0), r"batch_size=0"),
    (dict(tau=dict(schedule="step")), r"tau.schedule='step'"),
])
def test_validation_names_the_field(overrides, match):
  c = cfg.base_config()
  cfg._merge(c, overrides)  # pylint: disable=protected-access
  with pytest.raises(ValueError, match=match):
    cfg.finalize(c)


def test_unknown_keys_are_errors():
  with pytest.raises(KeyError, match=r"config.optim.left.lrr"):
    cfg.experiment(optim=dict(left=dict(lrr=1.0)))
  c = cfg.base_config()
  c.objective = config_dict.ConfigDict(dict(name="sft", bogus=1))
  with pytest.raises(ValueError, match=r"\['bogus'\].*right_weight"):
    cfg.finalize(c)


def test_cli_misspelt_override_names_the_key(tmp_path):
  path = tmp_path / "exp.py"
  path.write_text("from slnjax import config\n"
                  "def get_config(arg=None):\n"
                  "  return config.experiment(smoke=True)\n")
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  r = subprocess.run([sys.executable, "-m", "slnjax.main", f"--config={path}",
                      f"--workdir={tmp_path / 'w'}", "--config.optim.left.lrr=0.1"],
                     capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
  assert r.returncode == 2, r.stderr[-2000:]
  assert "unknown config key config.optim.left.lrr" in r.stderr
  assert "did you mean 'lr'" in r.stderr
  assert not (tmp_path / "w").exists()


MINE = ["ablation_a_single", "ablation_b_self_reflection", "ablation_c_homogeneous",
        "ablation_d_tall", "ablation_f_lateralized", "sft", "critic_bce", "ppo",
        "actor_critic_td", "reinforce", "rloo", "bptt", "gan", "self_play", "spin",
        "tbptt_depth", "wide", "lateralized_wide", "facts_memory_loop", "base_gate"]


@pytest.mark.parametrize("name", MINE)
def test_experiment_configs_load(name):
  import importlib.util  # pylint: disable=g-import-not-at-top
  path = os.path.join(ROOT, "experiments", f"{name}.py")
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  assert module.__doc__.lstrip().startswith("python -m slnjax.")
  assert "EXPECTED" not in module.__doc__, "measure it and write the result"
  # A measured run time and result, or an explicit statement that none was measured.
  assert ("Result:" in module.__doc__) != ("Not measured yet:" in module.__doc__), name
  full, small = module.get_config(), module.get_config("smoke")
  assert full.is_locked and small.is_locked
  assert small.steps <= 8 and small.model.left.d_model <= 16 and small.init_from == ""
  assert full.objective.name == small.objective.name
  cfg.build_model(full)
