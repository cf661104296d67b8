"""python -m slnjax.evaluate on a checkpoint of a tiny training run; the train loop's
evaluation at (and again after) its final step; bad input is one error line."""
import json
import os
import subprocess
import sys
import tempfile

import pytest

from slnjax import config as cfg, eval_cli, train
from experiments import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(tempfile.gettempdir(), "slnjax_test_data")
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}
KEYS = ("acc_by_turn", "acc_by_turn_se", "flips", "turns_mean", "best_of_T", "majority_T",
        "retry_no_feedback", "pass_at_k", "critic", "mcnemar_p", "by_bucket",
        "inference_flops_per_example", "train_flops")


def tiny(**eval_kw):
  return common.experiment("lateralized", "sft", smoke=True, steps=2, checkpoint_every=2,
                        eval_every=2, task=dict(data_dir=DATA_DIR),
                        model=dict(loop=dict(max_turns=2)),
                        eval=dict(batch_size=16, num_batches=1, **eval_kw))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  w = str(tmp_path_factory.mktemp("eval_run"))
  out = train.train(tiny(), w)
  assert out["step"] == 2 and "eval/acc_final" in out
  return w


def test_saved_config_round_trips(workdir):
  with open(os.path.join(workdir, "config.json")) as f:
    assert eval_cli.config_from_saved(json.load(f)).to_dict() == tiny().to_dict()


def test_command_writes_the_report(workdir):
  r = subprocess.run([sys.executable, "-m", "slnjax.evaluate", f"--workdir={workdir}",
                      "--num=6"], capture_output=True, text=True, env=ENV, cwd=ROOT,
                     timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "step 2 test (n=6)" in r.stdout
  with open(os.path.join(workdir, "eval.json")) as f:
    rep = json.load(f)
  assert all(k in rep for k in KEYS), sorted(set(KEYS) - set(rep))
  assert set(rep["flips"]) >= {"wrong_to_right", "right_to_wrong", "changed_when_wrong"}
  assert set(rep["critic"]) >= {"precision", "recall", "auc", "threshold", "threshold_p99"}
  assert rep["n"] == 6 and rep["T"] == 2 and len(rep["acc_by_turn"]) == 2
  assert set(rep["pass_at_k"]) == {"1", "2", "4", "8"} and rep["samples"] == 8
  assert rep["retry_no_feedback"] is not None and rep["neutral_score"] == 0.5
  assert sum(b["n"] for b in rep["by_bucket"]["difficulty"].values()) == 6
  for ext in (".md", ".png"):
    assert os.path.getsize(os.path.join(workdir, "eval" + ext)) > 0


def test_again_at_the_final_step_evaluates(workdir):
  """A finished run started again evaluates (the periodic evaluation, and the full report
  with eval.report) instead of doing nothing."""
  report = os.path.join(workdir, "eval.json")
  if os.path.exists(report):
    os.remove(report)
  out = train.train(tiny(report=True), workdir)
  assert out["step"] == 2 and "eval/acc_final" in out
  with open(report) as f:
    rep = json.load(f)
  assert rep["step"] == 2 and rep["n"] == 32  # the whole test split


@pytest.mark.parametrize("args,says", [
    (["--split=nope"], "--split nope: task 'addition' has no such split; choose one of"),
    (["--step=7"], "--step 7: no checkpoint at that step"),
    (["--turns=0"], "--turns 0"),
])
def test_bad_input_is_one_error_line(workdir, capsys, args, says):
  with pytest.raises(SystemExit) as e:
    eval_cli.main([f"--workdir={workdir}", *args])
  err = capsys.readouterr().err.strip().splitlines()
  assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: ")
  assert says in err[0], err


def test_no_checkpoint_is_one_error_line(tmp_path, capsys):
  for argv, says in (([f"--workdir={tmp_path}"], "no checkpoint in"),
                     (["--split=test"], "--workdir")):  # a missing flag, too
    with pytest.raises(SystemExit) as e:
      eval_cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert says in err[0], err
