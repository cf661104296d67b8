"""TensorBoard reads what metrics.Writer writes (the `tensorboard` extra, also in `test`)."""
import os
import re

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
