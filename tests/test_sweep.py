"""The ablation runner: any config field from the command line, seeds with standard errors,
step times with their spread; SIGTERM stops the sweep (requeue exit code) and a rerun resumes
it, reading finished runs back from their workdirs."""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from slnjax import checkpoint, config as cfg, sweep, sweep_report
from experiments import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(tempfile.gettempdir(), "slnjax_test_data")
ENV = {**os.environ, "JAX_PLATFORMS": "cpu",
       "JAX_COMPILATION_CACHE_DIR": os.path.join(tempfile.gettempdir(), "slnjax_test_jax_cache"),
       "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
       "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
       "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}  # conftest's compile flags
STEPS = 30


def _exp(tmp_path, sweep_fn=""):
  path = tmp_path / "exp.py"
  path.write_text(  # checkpoint_every=0 (smoke): the sweep must checkpoint anyway
      "from experiments import common\n"
      "def get_config(arg=None):\n"
      f"  return common.experiment(smoke=True, task=dict(data_dir={DATA_DIR!r}), steps={STEPS},\n"
      f"                           log_every=1, eval_every={STEPS})\n" + sweep_fn)
  return str(path)


def _command(exp, out, *extra):
  return [sys.executable, "-m", "slnjax.sweep", f"--config={exp}", f"--workdir={out}", *extra]


def _run(exp, out, *extra):
  return subprocess.run(_command(exp, out, *extra), capture_output=True, text=True, env=ENV,
                        cwd=ROOT, timeout=600)


def _lines(path):
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _snapshot(root):
  """{path: contents} of every metrics.jsonl, and the checkpoint step dirs, under root."""
  out = {}
  for d, dirs, files in os.walk(root):
    if os.path.basename(d) == "checkpoints":
      out[d] = sorted(dirs)
    if "metrics.jsonl" in files:
      with open(os.path.join(d, "metrics.jsonl")) as f:
        out[d] = f.read()
  return out


def _segment(stdout, start, end=None):
  """The output of one run: from its "[i/n]" line to the next one."""
  text = stdout.split(start, 1)[1]
  return text.split(end, 1)[0] if end else text


def test_preempted_sweep_stops_resumes_and_reads_back(tmp_path):
  exp, out = _exp(tmp_path), tmp_path / "out"
  args = ("--sweep", "model.loop.max_turns=1,2", "--seeds=2")
  third = out / "max_turns=2" / "seed=0"
  proc = subprocess.Popen(_command(exp, out, *args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
  t0 = time.time()
  while len(_lines(third / "metrics.jsonl")) < 2:  # run [3/4] is training
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    assert time.time() - t0 < 400, "timed out"
    time.sleep(0.02)
  proc.send_signal(signal.SIGTERM)
  stdout, stderr = proc.communicate(timeout=300)
  assert proc.returncode == checkpoint.PREEMPTED_EXIT_CODE, stderr[-3000:]
  assert "preempted" in stderr and "[4/4]" not in stdout  # stopped: no next run
  assert not (out / "sweep.md").exists()  # nothing reported for a run cut short
  saved = max(int(n) for n in os.listdir(third / "checkpoints") if n.isdigit())
  assert saved < STEPS

  r = _run(exp, out, *args)  # resumes: runs 1-2 read back, run 3 continues, run 4 trains
  assert r.returncode == 0, r.stderr[-3000:]
  assert "[1/4] max_turns=1 seed=0: finished, read back" in r.stdout
  assert "[2/4] max_turns=1 seed=1: finished, read back" in r.stdout
  resumed = _segment(r.stdout, "[3/4] max_turns=2 seed=0\n", "[4/4]")
  assert f"step {saved + 1}/{STEPS} " in resumed and f"step 1/{STEPS} " not in resumed
  assert f"step 1/{STEPS} " in _segment(r.stdout, "[4/4] max_turns=2 seed=1\n")
  assert "±" in (out / "sweep.md").read_text()
  assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  first = (out / "sweep.json").read_text()
  rows = json.loads(first)
  assert [row["values"] for row in rows] == [{"model.loop.max_turns": 1},
                                             {"model.loop.max_turns": 2}]
  for row in rows:
    assert row["seeds"] == [0, 1] and len(row["runs"]) == 2
    losses = [run["loss"] for run in row["runs"]]
    assert row["loss"] == pytest.approx(sum(losses) / 2)
    assert row["loss_se"] == pytest.approx(abs(losses[0] - losses[1]) / 2) and row["loss_se"] > 0
    assert row["memory_bytes"] > 0
    assert 0 < row["step_ms_q25"] <= row["step_ms"] <= row["step_ms_q75"]
    assert row["step_ms_intervals"] >= 10  # many logging intervals, not the last one only
  assert rows[0]["turns"] == 1.0 and rows[0]["turns_se"] == 0.0  # one turn allowed
  # every run checkpointed although the config says checkpoint_every=0
  assert all((out / f"max_turns={t}" / f"seed={s}" / "checkpoints" / str(STEPS)).is_dir()
             for t in (1, 2) for s in (0, 1))

  before = _snapshot(out)
  again = _run(exp, out, *args)  # a finished sweep: everything read back, the same numbers
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count("finished, read back") == 4
  assert not any(line.startswith("step ") for line in again.stdout.splitlines())
  assert (out / "sweep.json").read_text() == first
  assert _snapshot(out) == before  # no run touched: same metrics, same checkpoints


def test_sweep_file_and_errors(tmp_path):
  exp = _exp(tmp_path, "def get_sweep(arg=None):\n"
             "  return {'key': 'model.loop.max_turns', 'values': [1, 2], 'labels': ['a', 'b']}\n")
  base = common.experiment(smoke=True, task=dict(data_dir=DATA_DIR))
  settings = sweep.plan(base, None, exp)
  assert [s.name for s in settings] == ["max_turns=a", "max_turns=b"]
  assert [s.config.model.loop.max_turns for s in settings] == [1, 2]
  assert all(s.config.checkpoint_every > 0 for s in settings)  # a sweep always checkpoints
  grid = sweep.plan(base, ["model.loop.mode=soft,hard", "optim.left.lr=1e-3,3e-3"], exp)
  assert [s.name for s in grid][:2] == ["mode=soft,lr=0.001", "mode=soft,lr=0.003"]
  by_seed = sweep.plan(base, ["seed=3,4"], exp)  # a sweep over the seed keeps its values
  assert [sweep.seeded(s, s.config.seed).seed for s in by_seed] == [3, 4]
  assert sweep.parse_values("1,2,4,-1") == [1, 2, 4, -1]
  assert sweep.parse_values("(1, 2),(3, 4)") == [(1, 2), (3, 4)]
  with pytest.raises(sweep.SweepError, match="did you mean 'model.loop.bptt_depth'"):
    sweep.plan(base, ["model.loop.bptt_dept=1,2"], exp)
  with pytest.raises(sweep.SweepError, match="model.loop.max_turns='x'"):
    sweep.plan(base, ["model.loop.max_turns=1,x"], exp)
  with pytest.raises(sweep.SweepError, match="setting mode=nope"):
    sweep.plan(base, ["model.loop.mode=nope"], exp)
  # a run dir made with another config is an error, not a silently mixed table
  rundir = tmp_path / "w"
  rundir.mkdir()
  (rundir / "config.json").write_text(settings[0].config.to_json_best_effort())
  sweep.check_rundir(str(rundir), settings[0].config)
  with pytest.raises(sweep.SweepError, match="model.loop.max_turns: 1 there, 2 now"):
    sweep.check_rundir(str(rundir), settings[1].config)
  (tmp_path / "a_file").write_text("")
  with pytest.raises(sweep.SweepError, match="cannot be written to"):
    sweep._check_writable(str(tmp_path / "a_file" / "sweep"))  # pylint: disable=protected-access
  # the shipped sweep checkpoints (a rerun resumes instead of retraining everything)
  tbptt = os.path.join(ROOT, "experiments", "tbptt_depth.py")
  spec = importlib.util.spec_from_file_location("tbptt_depth", tbptt)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  assert module.get_config().checkpoint_every > 0
  assert [s.name for s in sweep.plan(base, None, tbptt)] == [
      "bptt_depth=1", "bptt_depth=2", "bptt_depth=4", "bptt_depth=full"]
  r = _run(exp, tmp_path / "bad", "--sweep", "model.loop.bptt_dept=1,2")
  assert r.returncode == 2
  errors = [line for line in r.stderr.splitlines() if line.strip()]
  assert errors == ["error: 'model.loop.bptt_dept' is not a config field; did you mean "
                    "'model.loop.bptt_depth'?"], r.stderr[-2000:]


def test_step_time_leaves_out_intervals_with_eval_or_save(tmp_path):
  lines = [{"step": 1, "split": "train", "loss": 2.0}]
  for step, ms in ((2, 10), (3, 50), (4, 11), (5, 60), (6, 12)):
    lines.append({"step": step, "split": "train", "loss": 1.0, "steps_per_sec": 1e3 / ms})
  lines.insert(3, {"step": 2, "split": "eval", "acc_final": 0.5})  # after the log at step 2
  lines.append({"step": 6, "split": "eval", "acc_final": 0.75, "turns": 2.0})
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
  got = sweep_report.read_run(str(tmp_path), 6, True, save_every=4)  # a save after step 4
  assert got["step_ms"] == pytest.approx([10, 11, 12])
  assert got["acc_final"] == 0.75 and got["loss"] == 1.0 and got["turns"] == 2.0
  assert sweep_report.read_run(str(tmp_path), 7, True) is None  # not finished


def test_signal_outside_training_stops_before_the_next_run(tmp_path, monkeypatch):
  """A SIGTERM that arrives while no run's own handler is installed (setup, compilation)
  still stops the sweep before it starts another run."""
  from slnjax import train
  base = common.experiment(smoke=True, task=dict(data_dir=DATA_DIR), eval_every=0)
  settings = sweep.plan(base, ["model.loop.max_turns=1,2"], "")
  started = []

  def fake_train(c, rundir, mesh=None, **kw):
    del mesh, kw
    started.append(rundir)
    os.makedirs(rundir, exist_ok=True)
    with open(os.path.join(rundir, "metrics.jsonl"), "w") as f:
      f.write(json.dumps({"step": c.steps, "split": "train", "loss": 1.0}) + "\n")
    os.kill(os.getpid(), signal.SIGTERM)  # caught by the sweep's handler
    return {"step": c.steps}

  monkeypatch.setattr(train, "train", fake_train)
  monkeypatch.setattr(train, "make_train_step", lambda c, mesh: None)
  monkeypatch.setattr(sweep, "_memory", lambda d, make: {"total": 1})
  before = signal.getsignal(signal.SIGTERM)
  with pytest.raises(sweep.Preempted, match="SIGTERM during"):
    sweep.run(settings, [0], str(tmp_path))
  assert len(started) == 1
  assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back


def test_a_run_stopped_on_nan_is_a_result_not_retrained(tmp_path, monkeypatch):
  from slnjax import train
  base = common.experiment(smoke=True, task=dict(data_dir=DATA_DIR), eval_every=0)
  settings = sweep.plan(base, ["optim.left.lr=0.001,1e30"], "")
  calls = []

  def fake_train(c, rundir, mesh=None, **kw):
    del mesh, kw
    calls.append(rundir)
    if c.optim.left.lr > 1:
      raise train.NonFiniteError("Loss or gradient is NaN/inf at step 3")
    os.makedirs(rundir, exist_ok=True)
    with open(os.path.join(rundir, "metrics.jsonl"), "w") as f:
      f.write(json.dumps({"step": c.steps, "split": "train", "loss": 1.0 + c.seed}) + "\n")
    return {"step": c.steps}

  monkeypatch.setattr(train, "train", fake_train)
  monkeypatch.setattr(train, "make_train_step", lambda c, mesh: None)
  monkeypatch.setattr(sweep, "_memory", lambda d, make: {"total": 1, "temp": 1, "argument": 0,
                                                         "output": 0})
  rows = sweep.run(settings, [0, 1], str(tmp_path))  # the sweep goes on past the NaN
  assert len(calls) == 4 and rows[0]["loss"] == 1.5 and rows[0]["diverged"] == 0
  assert rows[1]["diverged"] == 2 and rows[1]["loss"] != rows[1]["loss"]  # NaN: no finite run
  table = sweep_report.write_table(rows, ["optim.left.lr"], str(tmp_path / "t.md"))
  assert "| 1e+30 | - |" in table and "| 2 of 2 |" in table
  again = sweep.run(settings, [0, 1], str(tmp_path))  # read back, NaN run included
  assert json.dumps(again) == json.dumps(rows) and len(calls) == 4
