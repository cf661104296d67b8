r"""Train a Strange-Loop Network.

    python -m slnjax.main --config experiments/NAME.py[:arg] --workdir DIR [--config.key=value ...]

The config is locked: an override of a key that does not exist stops with an error naming
it. The run resumes from DIR/checkpoints when there are any; SIGTERM saves a checkpoint and
exits cleanly (exit code 0). Multi-host: jax.distributed is initialized when
slnjax.distributed detects a multi-process environment (TPU pod, SLURM, or
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID as launch/local.sh sets them),
never otherwise.
"""
from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from slnjax import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, optionally with :arg (e.g. :smoke).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and transcripts go.")
flags.mark_flags_as_required(["config", "workdir"])


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with config errors turned into one readable line (slnjax.cli)."""
  return cli.parse_flags(argv, _CONFIG)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from slnjax import distributed  # pylint: disable=g-import-not-at-top
  distributed.initialize()
  import jax  # pylint: disable=g-import-not-at-top
  from slnjax import train  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  try:
    out = train.train(_CONFIG.value, _WORKDIR.value)
  except (train.NonFiniteError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  if jax.process_index() == 0:
    shown = {k: round(v, 4) for k, v in out.items() if "/d" not in k}
    print(f"done: {shown}", flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
