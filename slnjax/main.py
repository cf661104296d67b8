r"""Train a Strange-Loop Network.

    python -m slnjax.main --config experiments/NAME.py[:arg] --workdir DIR [--config.key=value ...]

The config is locked: an override of a key that does not exist stops with an error naming
it. The run resumes from the newest intact checkpoint in DIR/checkpoints, if any (a damaged
one is moved aside); a resume that would change the learning-rate or tau schedule stops
unless --allow_schedule_change. SIGTERM (preemption) and SIGINT (Ctrl-C) save a checkpoint
and exit with code 75 (checkpoint.PREEMPTED_EXIT_CODE: requeue, or run the same command to
resume); a finished run exits 0, an error 1 (2: bad flags or workdir), a second Ctrl-C
130. Multi-host: jax.distributed is initialized when
slnjax.distributed detects a multi-process environment (TPU pod, SLURM, or
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID as launch/local.sh sets them),
never otherwise.
"""
from __future__ import annotations

import os
import sys
import tempfile

from absl import app, flags, logging

from slnjax import cli

_CONFIG = cli.config_flag("Experiment config file, optionally with :arg (e.g. :smoke).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and transcripts go.")
flags.mark_flags_as_required(["config", "workdir"])
_ALLOW_SCHEDULE_CHANGE = flags.DEFINE_bool(
    "allow_schedule_change", False, "Resume even if the config's learning-rate or tau schedule "
    "differs from the checkpoint's over the steps still to run (e.g. a changed "
    "--config.steps stretches a decaying schedule).")


def check_workdir(workdir: str) -> str | None:
  """Why ``workdir`` cannot be created or written to, or None (remote paths: not checked)."""
  if "://" in workdir:
    return None
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir, prefix=".slnjax_write_check_"):
      pass
  except OSError as e:
    return (f"--workdir={workdir} cannot be written to ({e.strerror or e}"
            f"{': ' + e.filename if e.filename else ''}); choose a directory you can write to.")
  return None


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with config errors turned into one readable line (slnjax.cli)."""
  return cli.parse_flags(argv, _CONFIG)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  problem = check_workdir(_WORKDIR.value)  # before any JAX work
  if problem:
    print(f"error: {problem}", file=sys.stderr)
    sys.exit(2)
  from slnjax import distributed  # pylint: disable=g-import-not-at-top
  distributed.initialize()
  import jax  # pylint: disable=g-import-not-at-top
  from slnjax import checkpoint, train  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  try:
    out = train.train(_CONFIG.value, _WORKDIR.value,
                      allow_schedule_change=_ALLOW_SCHEDULE_CHANGE.value)
  except KeyboardInterrupt:  # a second Ctrl-C
    print("interrupted again: stopped without waiting for a new checkpoint.", file=sys.stderr)
    sys.exit(130)
  except (train.NonFiniteError, ValueError, train.data.SandboxUnavailableError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  if jax.process_index() == 0:
    shown = {k: round(v, 4) for k, v in out.items() if "/d" not in k}
    print(f"{'preempted' if out.get('preempted') else 'done'}: {shown}", flush=True)
  if out.get("preempted"):
    code = checkpoint.PREEMPTED_EXIT_CODE
    print(f"exiting with code {code} (preempted: requeue, or run the same command again to "
          f"resume from step {out['step']}).", file=sys.stderr, flush=True)
    sys.exit(code)


if __name__ == "__main__":
  try:
    app.run(main, flags_parser=parse_flags)
  except KeyboardInterrupt:  # Ctrl-C while starting up (before training's own handler)
    print("interrupted while starting: nothing new to save.", file=sys.stderr)
    sys.exit(130)
