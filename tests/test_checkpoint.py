"""Checkpoints: SIGTERM -> save -> resume; SIGKILL -> resume -> the exact parameters of an
uninterrupted run; half-written checkpoints ignored; a shape mismatch stops cleanly."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from slnjax import checkpoint, config as cfg, train

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
  path.write_text("from slnjax import config\n"
                  "def get_config(arg=None):\n"
                  f"  return config.experiment(smoke=True, task=dict(data_dir={DATA_DIR!r}))\n")
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


def test_sigterm_saves_and_resumes(exp, tmp_path):
  w = str(tmp_path / "w")
  proc = start(exp, w, "--config.steps=100000", "--config.checkpoint_every=0",
               "--config.log_every=1")
  wait_for(lambda: os.path.exists(os.path.join(w, "metrics.jsonl"))
           and len(open(os.path.join(w, "metrics.jsonl")).readlines()) >= 3, proc)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-3000:]
  (s,) = committed_steps(w)
  assert s >= 3 and "done:" in out
  r = run(w and exp, w, f"--config.steps={s + 2}", "--config.checkpoint_every=0",
          "--config.log_every=1")
  assert f"step {s + 1}/{s + 2}" in r.stdout and f"step {s}/" not in r.stdout
  assert [row["step"] for row in rows(w)] == list(range(1, s + 3))


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
  small = cfg.experiment(smoke=True, task=dict(data_dir=DATA_DIR))
  _, state = _zeros_state(small)
  ck = checkpoint.Checkpointer(str(tmp_path))
  ck.save(2, state, None, small)
  ck.close()
  before = _snapshot(str(tmp_path))
  wide = cfg.experiment(smoke=True, task=dict(data_dir=DATA_DIR),
                        model=dict(left=dict(d_model=24)))
  with pytest.raises(checkpoint.ShapeMismatchError,
                     match=r"params/left/embedding: shape \(260, 16\) in the checkpoint, "
                           r"\(260, 24\) in this model"):
    train.train(wide, str(tmp_path))
  assert _snapshot(str(tmp_path)) == before


def test_half_written_checkpoint_is_never_restored(tmp_path):
  c = cfg.experiment(smoke=True, task=dict(data_dir=DATA_DIR))
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
