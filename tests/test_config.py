"""Config schema: defaults, validation, locking, and the command line's errors."""
import os
import subprocess
import sys

import pytest
from ml_collections import config_dict

from slnjax import config as cfg
from experiments import common
from slnjax import build, finalize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_experiment_is_locked_and_complete():
  c = common.experiment("lateralized", "sft", smoke=True)
  assert c.is_locked
  with pytest.raises(AttributeError, match="lrr"):
    c.optim.left.lrr = 1.0
  assert c.objective.right_weight == 0.0  # the objective's defaults are filled in
  model = build.build_model(c)
  assert model.kind == "lateralized" and model.spec.loop.turn_len == 4
  assert build.target_len(c) == 4


def test_bptt_depth_minus_one_is_full():
  c = common.experiment("lateralized", "sft", smoke=True, model=dict(loop=dict(bptt_depth=-1)))
  assert build.loop_config(c).bptt_depth is None
  c = common.experiment("lateralized", "sft", smoke=True, model=dict(loop=dict(bptt_depth=2)))
  assert build.loop_config(c).bptt_depth == 2


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
  cfg.merge(c, overrides)  # pylint: disable=protected-access
  with pytest.raises(ValueError, match=match):
    finalize.finalize(c)


def test_unknown_keys_are_errors():
  with pytest.raises(KeyError, match=r"config.optim.left.lrr"):
    common.experiment(optim=dict(left=dict(lrr=1.0)))
  c = cfg.base_config()
  c.objective = config_dict.ConfigDict(dict(name="sft", bogus=1))
  with pytest.raises(ValueError, match=r"\['bogus'\].*right_weight"):
    finalize.finalize(c)


def test_cli_misspelt_override_names_the_key(tmp_path):
  path = tmp_path / "exp.py"
  path.write_text("from experiments import common\n"
                  "def get_config(arg=None):\n"
                  "  return common.experiment(smoke=True)\n")
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
  build.build_model(full)


def test_schema_matches_the_dataclasses():
  """The schema writes the model's sub-configs out (it imports no model code): each has the
  fields of its dataclass, with its defaults but where config.SCHEMA_DEFAULTS says."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  from slnjax import memory  # pylint: disable=import-outside-toplevel
  from slnjax.lobes.config import LobeConfig  # pylint: disable=import-outside-toplevel
  from slnjax.loop import LoopConfig  # pylint: disable=import-outside-toplevel
  from slnjax.wide.config import WideConfig  # pylint: disable=import-outside-toplevel
  model = cfg.base_config().model
  for key, cls, skip in [("left", LobeConfig, ()), ("loop", LoopConfig, ()),
                         ("wide", WideConfig, ("lateralized",)),
                         ("memory", memory.MemoryConfig, ())]:
    fields = {f.name: f.default for f in dataclasses.fields(cls) if f.name not in skip}
    assert sorted(model[key].keys()) == sorted(fields), key
    want = {**fields, **cfg.SCHEMA_DEFAULTS[key]}
    got = {k: model[key][k] for k in fields}
    assert got == {k: tuple(v) if isinstance(v, list) else v for k, v in want.items()}, key


def test_experiment_files_import_no_model_code():
  code = ("import sys\nimport experiments.sft, experiments.wide, experiments.facts_memory_loop\n"
          "heavy = sorted(m for m in ('jax', 'flax', 'tensorflow_datasets', 'slnjax.sln',\n"
          "               'slnjax.objectives', 'slnjax.data') if m in sys.modules)\n"
          "assert not heavy, heavy\n")
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                     timeout=120)
  assert r.returncode == 0, r.stderr[-2000:]


def test_task_overrides_are_checked_against_the_builder():
  c = common.experiment("lateralized", "sft", smoke=True)  # addition's smoke sizes
  with c.unlocked():
    c.task.name, c.task.config = "parity", ""
  with pytest.raises(ValueError, match=r"task.overrides sets \['longer_digits', .*"
                                       r"task 'parity'.*its fields: \[.*'length'"):
    finalize.finalize(c)
  with c.unlocked():
    c.task.name, c.task.config = "addition", "digits9"
  with pytest.raises(ValueError, match=r"task.config='digits9'.*valid: \['digits5'"):
    finalize.finalize(c)
  with c.unlocked():
    c.task.config = "digits5"
    c.task.overrides.name = "digits5"
  with pytest.raises(ValueError, match=r"set task.overrides.name to a new name"):
    finalize.finalize(c)
  # a preset for a task without smoke sizes leaves the task's fields alone
  other = common.experiment("lateralized", "sft", smoke=True, task=dict(name="parity"))
  assert not other.task.overrides.keys() and other.steps == 4
  finalize.finalize(other)


def test_smoke_with_another_task_is_one_error_line(tmp_path):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  r = subprocess.run([sys.executable, "-m", "slnjax.main", "--config=experiments/sft.py:smoke",
                      f"--workdir={tmp_path / 'w'}", "--config.task.name=parity",
                      "--config.task.config=interpolation"],
                     capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
  assert r.returncode == 1, r.stderr[-2000:]
  assert "Traceback" not in r.stderr, r.stderr[-2000:]
  lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
  assert lines and "config.task.overrides sets" in lines[0] and "'parity'" in lines[0]
