"""Multi-process runs: environment detection, and the real entry point (python -m slnjax.main)
started by launch/local.sh as 2 processes x 4 CPU devices on 127.0.0.1, against one process
with 8 devices; then the 2-process checkpoint restored by a 1-process run.

The config is a tall SLN smoke config trained with SFT on both lobes (a cheap step to
compile three times). Its train split is exactly one global batch (8 records): the data
pipeline gives each process a contiguous shard, so only then do both layouts see the same
global batches (the same 8 records every step, in another row order)."""
import json
import os
import re
import subprocess
import sys
import tempfile

import jax
import pytest

from slnjax import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(tempfile.gettempdir(), "slnjax_test_data")
SMOKE = """
from experiments import common


def get_config(arg=None):
  c = common.experiment(
      "tall", "sft", smoke=True, batch_size=8, steps=20, log_every=5, checkpoint_every=20,
      mesh=dict(ici=(1, -1, 1)),
      task=dict(data_dir=arg, overrides=dict(name="mh8", num_train=8, num_test=8,
                                             num_test_longer=8, train_digits=(1, 2),
                                             longer_digits=(3, 3))))
  with c.unlocked():
    c.objective.right_weight = 1.0  # both lobes (and both optimizers) learn
  return c
"""
RTOL = 1e-5  # losses, 2 processes vs 1: float32 sums in another order (measured 9e-8)

SLURM = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2",
         "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}


@pytest.mark.parametrize("env,kind", [
    ({}, "single"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"},
     "explicit"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "1", "JAX_PROCESS_ID": "0"},
     "single"),
    (SLURM, "slurm"),
    ({**SLURM, "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}, "single"),
    ({"TPU_WORKER_HOSTNAMES": "a,b,c,d"}, "tpu"),
    ({"TPU_WORKER_HOSTNAMES": "a"}, "single"),
    ({"MEGASCALE_NUM_SLICES": "2"}, "tpu"),
])
def test_detect(env, kind):
  found = distributed.detect(env)
  assert found.kind == kind
  if kind in ("explicit", "slurm"):
    assert (found.num_processes, found.process_id) == (2, 1)


def test_partial_or_bad_explicit_variables_are_clear_errors():
  with pytest.raises(ValueError, match="JAX_NUM_PROCESSES"):
    distributed.detect({"JAX_COORDINATOR_ADDRESS": "h:1"})
  with pytest.raises(ValueError, match="must be in"):
    distributed.detect({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2",
                        "JAX_PROCESS_ID": "2"})
  with pytest.raises(ValueError, match="integer"):
    distributed.detect({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "two",
                        "JAX_PROCESS_ID": "0"})


def test_single_process_is_not_initialized():
  assert distributed.initialize({}).kind == "single"
  assert not jax.distributed.is_initialized()


def _env(devices):
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_", "TPU_"))}
  return {**env, "JAX_PLATFORMS": "cpu", "PJRT_NPROC": "16", "PYTHONPATH": ROOT,
          # conftest's compile flags, then the device count
          "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "")
                        + f" --xla_force_host_platform_device_count={devices}").strip()}


def _run(cmd, devices, timeout):
  proc = subprocess.run(["timeout", "-s", "KILL", str(timeout), *cmd], cwd=ROOT,
                        env=_env(devices), capture_output=True, text=True, check=False)
  assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
  return proc.stdout + proc.stderr


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """(1-process workdir, 2-process workdir, 2-process log dir, training arguments)."""
  base = tmp_path_factory.mktemp("multihost")
  (base / "smoke.py").write_text(SMOKE)
  args = [f"--config={base / 'smoke.py'}:{DATA_DIR}"]
  one, two, logs = base / "one", base / "two", base / "logs"
  _run([sys.executable, "-m", "slnjax.main", *args, f"--workdir={one}"], 8, 300)
  _run([os.path.join(ROOT, "launch", "local.sh"), "-n", "2", "-d", "4", "--logdir", str(logs),
        "--", *args, f"--workdir={two}"], 4, 400)
  return one, two, logs, args


def test_two_processes_match_one_process(runs):
  one, two, logs, _ = runs
  a, b = _losses(one), _losses(two)
  assert sorted(a) == sorted(b) == [5, 10, 15, 20]
  for step in a:
    assert abs(a[step] - b[step]) <= RTOL * abs(a[step]), (step, a[step], b[step])
  assert a[20] < a[5]  # it learns the 8 records
  p0, p1 = (open(logs / f"process_{i}.log").read() for i in range(2))
  progress = re.compile(r"^step \d+/20", re.M)
  assert progress.search(p0) and not progress.search(p1)  # only process 0 logs
  ckpt = two / "checkpoints" / "20"
  assert {"process_0-of-2.json", "process_1-of-2.json"} <= set(os.listdir(ckpt / "data"))
  assert {"ocdbt.process_0", "ocdbt.process_1"} <= set(os.listdir(ckpt / "state"))


@pytest.mark.slow
def test_two_process_checkpoint_restores_in_one_process(runs):
  _, two, _, args = runs
  out = _run([sys.executable, "-m", "slnjax.main", *args, "--config.steps=21",
              "--allow_schedule_change", f"--workdir={two}"], 8, 300)  # 20 -> 21 steps
  assert "step 21/21" in out
  losses = _losses(two)
  assert sorted(losses) == [5, 10, 15, 20, 21]  # resumed at 20, not from scratch
  assert abs(losses[21] - losses[20]) < 0.05 * losses[20]
