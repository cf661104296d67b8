"""A training step on a code task (MBPP, verifier reward) runs every generated program in the
sandbox; without one, training a code task stops before anything runs."""
import json

import numpy as np
import pytest

from experiments import common
from slnjax import train
from slnjax.data import SandboxUnavailableError, default_manual_dir
from slnjax.data.tasks import execution, sandbox

# Tiny MBPP records, every split (prompt 1-10, test 11-510, validation 511-600, train 601+).
RECORDS = [{"task_id": tid, "text": "f", "code": "def f(): return 1",
            "test_list": ["assert f() == 1"], "test_setup_code": ""}
           for tid in (2, 11, 12, 511, 601, 602, 603, 604)]


def code_config(tmp_path, **kw):
  manual = tmp_path / "data" / "downloads" / "manual" / "mbpp"
  assert str(manual) == default_manual_dir("mbpp", str(tmp_path / "data"))
  manual.mkdir(parents=True)
  (manual / "mbpp.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
  return common.experiment(
      "single", "reinforce_verifier", smoke=True,
      task=dict(name="mbpp", config="", overrides={}, data_dir=str(tmp_path / "data"),
                eval_split="test", **kw),
      prompt_len=64, steps=1, log_every=1,
      model=dict(loop=dict(turn_len=24, max_turns=2)))


def test_a_code_task_training_step_runs_sandboxed(tmp_path, monkeypatch):
  if sandbox.probe() is not None:
    pytest.skip(f"no working sandbox here: {sandbox.probe()}")
  outcomes = []
  real = execution.execute

  def recording(*args, **kwargs):
    outcomes.append(real(*args, **kwargs))
    return outcomes[-1]

  monkeypatch.setattr(execution, "execute", recording)
  c = code_config(tmp_path)
  out = train.train(c, str(tmp_path / "run"))
  assert out["step"] == 1 and np.isfinite(out["loss"])
  # Every row's turn was judged by running a program (for the reward, again for the logged
  # accuracy), each in the sandbox, none timed out.
  assert len(outcomes) >= 2 * c.batch_size, len(outcomes)
  assert all(o.sandboxed and o.status != "timeout" for o in outcomes), outcomes


def test_a_code_task_without_sandbox_stops_before_training(tmp_path, monkeypatch):
  monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)
  monkeypatch.setitem(execution._policy, "allow_unsandboxed", False)
  sandbox.probe.cache_clear()
  try:
    with pytest.raises(SandboxUnavailableError, match="apt-get install bubblewrap"):
      train.train(code_config(tmp_path), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()  # nothing ran, nothing was written
  finally:
    sandbox.probe.cache_clear()
