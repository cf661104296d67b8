"""Checkpoints: SIGTERM / SIGINT -> save -> exit 75 -> resume; SIGKILL -> resume -> the exact
parameters of an uninterrupted run; half-written checkpoints ignored; a damaged latest one
moved aside for the previous one; a shape mismatch or an unwritable workdir stops cleanly."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from slnjax import checkpoint, config as cfg, resume, train
from experiments import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(tempfile.gettempdir(), "slnjax_test_data")
CACHE_DIR = os.path.join(tempfile.gettempdir(), "slnjax_test_jax_cache")
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": CACHE_DIR,
       "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
       "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
       "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}  # conftest's compile flags


@pytest.fixture(scope="module")
def exp(tmp_path_factory):
  path = tmp_path_factory.mktemp("exp") / "exp.py"
  path.write_text("from experiments import common\n"
                  "def get_config(arg=None):\n"
                  f"  return common.experiment(smoke=True, task=dict(data_dir={DATA_DIR!r}))\n")
  return str(path)


def command(exp, workdir, *overrides):
  return [sys.executable, "-m", "slnjax.main", f"--config={exp}", f"--workdir={workdir}",
          *overrides]


def run(exp, workdir, *overrides, timeout=300):
  r = subprocess.run(command(exp, workdir, *overrides), capture_output=True, text=True,
                     env=ENV, cwd=ROOT, timeout=timeout)
  assert r.returncode == 0, r.stderr[-3000:]
  return r


def start(exp, workdir, *overrides):
  return subprocess.Popen(command(exp, workdir, *overrides), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)


def wait_for(cond, proc, timeout=240):
  t0 = time.time()
  while not cond():
    if proc.poll() is not None:
      raise AssertionError(f"process ended early: {proc.stderr.read()[-3000:]}")
    if time.time() - t0 > timeout:
      proc.kill()
      raise AssertionError("timed out")
    time.sleep(0.02)


def committed_steps(workdir):
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    out = [json.loads(l) for l in f]
  return [{k: v for k, v in r.items() if not k.endswith("_per_sec")} for r in out]


def final_params(workdir, step):
  mngr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"),
                               item_handlers={"state": ocp.PyTreeCheckpointHandler()})
  state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore()))["state"]
  return state["params"], state["opt"]


def test_sigkill_resume_gives_identical_parameters(exp, tmp_path):
  args = ("--config.steps=40", "--config.checkpoint_every=2", "--config.log_every=1")
  ref = str(tmp_path / "ref")
  run(exp, ref, *args)
  killed = str(tmp_path / "killed")
  proc = start(exp, killed, *args)
  wait_for(lambda: any(s >= 6 for s in committed_steps(killed)), proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  at_kill = max(committed_steps(killed))
  assert at_kill < 40, "the run finished before it was killed"
  r = run(exp, killed, *args)
  assert f"step {at_kill}/40" not in r.stdout and "step 40/40" in r.stdout
  a, b = final_params(ref, 40), final_params(killed, 40)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert rows(ref) == rows(killed)  # identical metrics, step by step


def _interrupt(exp, w, sig, min_rows, *overrides):
  """Starts a run, sends ``sig`` once metrics.jsonl has min_rows rows; (stdout, stderr)."""
  proc = start(exp, w, "--config.checkpoint_every=0", "--config.log_every=1", *overrides)
  path = os.path.join(w, "metrics.jsonl")
  wait_for(lambda: os.path.exists(path) and len(open(path).readlines()) >= min_rows, proc)
  proc.send_signal(sig)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == checkpoint.PREEMPTED_EXIT_CODE == 75, err[-3000:]
  assert "Traceback" not in err and "preempted:" in out
  return out, err


def test_signals_save_exit_for_requeue_and_resume(exp, tmp_path):
  """SIGTERM (preemption), then SIGINT (Ctrl-C) of the resumed run: each saves and exits
  with PREEMPTED_EXIT_CODE. In between, a resume whose --config.steps changes the (cosine)
  learning-rate schedule is refused with one error line, writing nothing; with
  --allow_schedule_change it says what changes and where it resumed from."""
  w = str(tmp_path / "w")
  cosine = ("--config.optim.left.warmup_steps=0", "--config.optim.right.warmup_steps=0")
  out, _ = _interrupt(exp, w, signal.SIGTERM, 3, "--config.steps=100000", *cosine)
  (s,) = committed_steps(w)
  assert s >= 3 and "SIGTERM: saving" in out and f"saved a checkpoint at step {s}" in out
  before = open(os.path.join(w, "metrics.jsonl")).read()
  r = subprocess.run(command(exp, w, "--config.steps=1000", *cosine), capture_output=True,
                     text=True, env=ENV, cwd=ROOT, timeout=300)
  errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
  assert r.returncode == 1 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
  assert "config.steps 100000 -> 1000" in errors[0] and "learning rate of left" in errors[0]
  assert "--allow_schedule_change" in errors[0]
  assert open(os.path.join(w, "metrics.jsonl")).read() == before  # nothing written
  out, _ = _interrupt(exp, w, signal.SIGINT, s + 3, "--config.steps=200000",
                      "--allow_schedule_change", *cosine)
  assert f"warning: resuming at step {s} with a changed schedule" in out
  assert f"resumed from step {s} (checkpoint {w}/checkpoints/{s})" in out
  assert "SIGINT (Ctrl-C): saving" in out and f"step {s}/" not in out
  s2 = max(committed_steps(w))
  assert s2 > s + 2 and f"saved a checkpoint at step {s2}" in out
  assert [row["step"] for row in rows(w)] == list(range(1, s2 + 1))


def _zeros_state(config):
  ts = train.make_train_step(config, __import__("slnjax.parallel").parallel.make_mesh())
  return ts, jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), ts.abstract_state)


def _snapshot(root):
  out = {}
  for d, _, files in os.walk(root):
    for f in files:
      p = os.path.join(d, f)
      st = os.stat(p)
      out[p] = (st.st_size, st.st_mtime_ns)
  return out


def test_shape_mismatch_stops_and_writes_nothing(tmp_path):
  small = common.experiment(smoke=True, task=dict(data_dir=DATA_DIR))
  _, state = _zeros_state(small)
  ck = checkpoint.Checkpointer(str(tmp_path))
  ck.save(2, state, None, small)
  ck.close()
  before = _snapshot(str(tmp_path))
  wide = common.experiment(smoke=True, task=dict(data_dir=DATA_DIR),
                        model=dict(left=dict(d_model=24)))
  with pytest.raises(checkpoint.ShapeMismatchError,
                     match=r"params/left/embedding: shape \(260, 16\) in the checkpoint, "
                           r"\(260, 24\) in this model"):
    train.train(wide, str(tmp_path))
  assert _snapshot(str(tmp_path)) == before


def test_half_written_checkpoint_is_never_restored(tmp_path):
  c = common.experiment(smoke=True, task=dict(data_dir=DATA_DIR))
  ts, state = _zeros_state(c)
  ck = checkpoint.Checkpointer(str(tmp_path))
  ck.save(2, state, None, c)
  ck.close()
  junk = tmp_path / "checkpoints" / "4.orbax-checkpoint-tmp-1234567"
  (junk / "state").mkdir(parents=True)
  (junk / "state" / "garbage").write_bytes(b"\0" * 10)
  ck = checkpoint.Checkpointer(str(tmp_path))
  assert ck.latest_step() == 2
  restored, _ = ck.restore(2, ts.abstract_state, None)
  assert int(restored["step"]) == 0


def _train_quiet(config, workdir, ts, capsys):
  out = train.train(config, workdir, train_step=ts)
  return out, capsys.readouterr().out


def test_damaged_latest_checkpoint_falls_back_to_an_intact_one(tmp_path, capsys):
  """A truncated file in the latest checkpoint, then an empty step directory: each is moved
  to checkpoints_damaged/ (one line), the run resumes from the newest intact one; with
  none intact, an error that moves nothing."""
  c = common.experiment(smoke=True, task=dict(data_dir=DATA_DIR), steps=4, log_every=1,
                     checkpoint_every=2)
  ts = train.make_train_step(c, __import__("slnjax.parallel").parallel.make_mesh())
  w, ckdir = str(tmp_path), tmp_path / "checkpoints"
  _, text = _train_quiet(c, w, ts, capsys)
  assert "compiling the train step" in text and "compiled the train step and ran step 1 in" in text
  assert "token acc (teacher-forced)" in text  # which accuracy the log shows
  assert committed_steps(w) == [2, 4]
  ref = final_params(w, 4)
  data_files = [p for p in (ckdir / "4" / "state").rglob("*") if p.is_file() and "/d/" in str(p)]
  biggest = max(data_files, key=lambda p: p.stat().st_size)
  with open(biggest, "r+b") as f:
    f.truncate(biggest.stat().st_size // 2)
  out, text = _train_quiet(c, w, ts, capsys)
  assert f"warning: checkpoint {ckdir}/4 cannot be restored" in text
  assert f"moved it to {tmp_path}/checkpoints_damaged/4" in text
  assert f"resumed from step 2 (checkpoint {ckdir}/2)" in text and out["step"] == 4
  assert committed_steps(w) == [2, 4]
  assert (tmp_path / "checkpoints_damaged" / "4" / "state").is_dir()  # kept, not deleted
  jax.tree.map(np.testing.assert_array_equal, ref, final_params(w, 4))  # retrained exactly
  (ckdir / "6").mkdir()  # an empty step directory
  out, text = _train_quiet(c, w, ts, capsys)
  assert f"warning: checkpoint {ckdir}/6 cannot be restored" in text
  assert f"resumed from step 4 (checkpoint {ckdir}/4)" in text and out["step"] == 4
  assert sorted(os.listdir(tmp_path / "checkpoints_damaged")) == ["4", "6"]
  for step in committed_steps(w):  # every checkpoint damaged: an error, nothing moved
    shutil.rmtree(ckdir / str(step) / "state")
  with pytest.raises(resume.NoIntactCheckpointError, match=r"none of the checkpoints .*step 4: "
                                                          r".*step 2: .*Nothing was moved"):
    train.train(c, w, train_step=ts)
  assert committed_steps(w) == [2, 4]
  assert sorted(os.listdir(tmp_path / "checkpoints_damaged")) == ["4", "6"]


def test_unwritable_workdir_is_one_error_line_before_any_work(exp, tmp_path):
  (tmp_path / "file").write_text("")
  workdir = str(tmp_path / "file" / "run")  # a directory inside a file: never creatable
  r = subprocess.run(command(exp, workdir), capture_output=True, text=True, env=ENV, cwd=ROOT,
                     timeout=120)
  assert r.returncode == 2 and r.stdout == "", r.stderr[-3000:]
  assert r.stderr.strip().splitlines() == [
      f"error: --workdir={workdir} cannot be written to (Not a directory: {workdir}); choose a "
      f"directory you can write to."]


def test_second_ctrl_c_stops_at_once():
  prev = signal.getsignal(signal.SIGINT)
  interrupt = resume.Interrupt()
  try:
    interrupt._handle(signal.SIGINT, None)  # pylint: disable=protected-access
    assert interrupt.name == "SIGINT (Ctrl-C)"
    with pytest.raises(KeyboardInterrupt):
      interrupt._handle(signal.SIGINT, None)  # pylint: disable=protected-access
  finally:
    interrupt.restore()
  assert signal.getsignal(signal.SIGINT) is prev
