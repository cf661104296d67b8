"""TensorBoard reads what metrics.Writer writes (the `tensorboard` extra, also in `test`);
Weights & Biases gets the same scalars when asked for (the `wandb` extra; a fake module here)."""
import os
import re
import sys

import pytest

from slnjax import metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tensorboard_is_an_extra_and_in_the_test_extra():
  with open(os.path.join(ROOT, "setup.py")) as f:
    setup = f.read()
  assert re.search(r'"tensorboard":\s*\["tensorboard', setup), "no 'tensorboard' extra"
  test_extra = re.search(r'"test":\s*\[([^\]]*)\]', setup).group(1)
  assert '"tensorboard' in test_extra


def test_tensorboard_reads_the_scalars_of_a_resumed_run(tmp_path):
  accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
  w = metrics.Writer(str(tmp_path), total_steps=4, stream=open(os.devnull, "w"))
  for step in (1, 2, 3):
    w.write(step, {"loss": 1.0 / step})
  w.write(3, {"accuracy": 0.25}, split="eval")
  w.close()
  # A restart from step 2's checkpoint: step 3 is written again and must replace the first.
  w = metrics.Writer(str(tmp_path), start_step=2, total_steps=4, stream=open(os.devnull, "w"))
  w.write(3, {"loss": 0.125})
  w.close()
  ea = accumulator.EventAccumulator(str(tmp_path / "tb"), purge_orphaned_data=True)
  ea.Reload()
  assert sorted(ea.Tags()["scalars"]) == ["eval/accuracy", "train/loss"]
  loss = [(e.step, round(e.value, 6)) for e in ea.Scalars("train/loss")]
  assert loss == [(1, 1.0), (2, 0.5), (3, 0.125)]


class _FakeRun:
  def __init__(self, **kw):
    self.init, self.logged, self.finished = kw, [], False

  def log(self, row, step):
    self.logged.append((step, row))

  def finish(self):
    self.finished = True


def test_wandb_gets_the_same_scalars_when_asked_for(tmp_path, monkeypatch):
  runs = []
  fake = type(sys)("wandb")
  fake.init = lambda **kw: runs.append(_FakeRun(**kw)) or runs[-1]
  monkeypatch.setitem(sys.modules, "wandb", fake)
  quiet = open(os.devnull, "w")
  metrics.Writer(str(tmp_path), stream=quiet).close()  # not asked for: no run
  assert not runs
  monkeypatch.setenv(metrics.WANDB_ENV, "sln")
  for start in (0, 2):  # a run and its resumption: the same W&B run id
    w = metrics.Writer(str(tmp_path), start_step=start, stream=quiet)
    w.write(start + 1, {"loss": 0.5, "bad": float("nan")})
    w.write(start + 1, {"accuracy": 0.25}, split="eval")
    w.close()
  assert [r.init["project"] for r in runs] == ["sln", "sln"] and runs[0].finished
  assert runs[0].init["id"] == runs[1].init["id"] and runs[0].init["resume"] == "allow"
  assert runs[1].logged == [(3, {"train/loss": 0.5}), (3, {"eval/accuracy": 0.25})]
  monkeypatch.setitem(sys.modules, "wandb", None)  # not installed
  with pytest.raises(ValueError, match=r"pip install -e '.\[wandb\]'"):
    metrics.Writer(str(tmp_path), stream=quiet)
