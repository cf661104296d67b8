"""experiments/base_gate.py at smoke size: the single lobe trains by SFT on reversed addition,
is evaluated on the validation split during training and on the test split once at the end
(eval.final_split), and the report summarizes seeds into the JSON the docs cite."""
import importlib.util
import json
import os

import pytest

from slnjax import finalize
from slnjax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _gate():
  spec = importlib.util.spec_from_file_location(
      "base_gate", os.path.join(ROOT, "experiments", "base_gate.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _smoke(tmp_path, seed=0, final_split="test"):
  c = _gate().get_config("smoke")
  with c.unlocked():
    c.task.data_dir = str(tmp_path / "data")
    c.seed, c.eval.final_split = seed, final_split
  return finalize.finalize(c)


def test_full_config_is_the_gate():
  c = _gate().get_config()
  assert (c.model.kind, c.objective.name, c.task.config) == ("single", "sft", "reversed3")
  assert (c.task.eval_split, c.eval.final_split, c.eval.mode) == ("validation", "test", "greedy")
  assert c.model.loop.max_turns == 1 and c.eval.num_batches == -1
  assert c.optim.left.lr == 1e-3


def test_smoke_run_writes_validation_curve_and_final_test(tmp_path):
  workdir = tmp_path / "w"
  out = train.train(_smoke(tmp_path, seed=3), str(workdir))
  assert out["step"] == 4 and out["final/examples"] == 8  # one eval batch of 8
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert [r["step"] for r in rows if r["split"] == "eval"] == [2, 4]
  final = [r for r in rows if r["split"] == "final"]
  assert len(final) == 1 and final[0]["step"] == 4 and "acc_final/d1" in final[0]
  (workdir / "time.txt").write_text("12.5 20.0 1.0\n")
  gate = _gate()
  result = gate.summarize([str(workdir)], str(tmp_path / "data"))
  seed = result["seeds"][0]
  assert (seed["seed"], seed["steps"], seed["wall_s"], seed["cpu_s"]) == (3, 4, 12.5, 21.0)
  assert seed["test_exact_match_by_digits"] == {
      k.split("/d")[1]: v for k, v in final[0].items() if k.startswith("acc_final/d")}
  assert result["summary"]["by_digits"]["1"]["se"] == 0
  overlap = result["test_problems_also_in_train"]
  assert sum(v["problems"] for v in overlap.values()) == 16
  assert all(0 <= v["in_train"] <= v["problems"] for v in overlap.values())
  gate.plot(result, str(tmp_path / "curves.png"))
  assert (tmp_path / "curves.png").stat().st_size > 0


def test_unknown_final_split_is_one_error(tmp_path):
  with pytest.raises(ValueError, match="unknown split 'dev'"):
    train.train(_smoke(tmp_path, final_split="dev"), str(tmp_path / "w"))
