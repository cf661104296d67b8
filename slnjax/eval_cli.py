r"""Evaluate a dialogue checkpoint: the loop, its baselines, the critic (slnjax/eval_report.py).

    python -m slnjax.evaluate --workdir W [--split test|validation|...] [--step N] [--turns T]
                              [--num N]

Restores the checkpoint at step N (default: the latest) of W/checkpoints with the config saved
next to it, and writes W/eval.json, W/eval.md and W/eval.png (W/eval_<split>.* for a split
other than test). --turns: T, the loop's turn limit and the samples of best-of-T / majority
vote (default: the model's max_turns); --num: the first N problems of the split (default:
all). Runs at any step, also the final one of a finished run. A user's mistake (no
checkpoint, unknown split or step) is one ``error:`` line and exit code 2.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys

from ml_collections import config_dict


class UserError(ValueError):
  """Bad input from the command line: printed as one ``error:`` line."""


class _Parser(argparse.ArgumentParser):

  def error(self, message):
    print(f"error: {message} (usage: python -m slnjax.evaluate --workdir W [--split S] "
          "[--step N] [--turns T] [--num N])", file=sys.stderr)
    sys.exit(2)


def _tuples(x):
  if isinstance(x, dict):
    return {k: _tuples(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(_tuples(v) for v in x)
  return x


def config_from_saved(saved: dict) -> config_dict.ConfigDict:
  """The finalized, locked config of a run from the JSON training saved with a checkpoint
  (JSON lists become the tuples the schema holds)."""
  from slnjax import finalize  # pylint: disable=g-import-not-at-top
  return finalize.from_dict(_tuples(copy.deepcopy(saved)))


def _manager(workdir: str):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not os.path.isdir(directory):
    raise UserError(f"no checkpoint in {workdir} ({directory} does not exist): pass the "
                    "--workdir of a training run that saved checkpoints "
                    "(config.checkpoint_every > 0).")
  return ocp.CheckpointManager(directory, item_handlers={"config": ocp.JsonCheckpointHandler()},
                               options=ocp.CheckpointManagerOptions(
                                   create=False, read_only=True, save_interval_steps=0,
                                   max_to_keep=None))


def load_run(workdir: str, step: int | None):
  """(config, step) of the checkpoint at ``step`` (None: the latest)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  manager = _manager(workdir)
  steps = sorted(manager.all_steps())
  if not steps:
    raise UserError(f"no checkpoint in {manager.directory}: pass the --workdir of a training "
                    "run that saved checkpoints (config.checkpoint_every > 0).")
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise UserError(f"--step {step}: no checkpoint at that step in {manager.directory}; "
                    f"saved steps: {', '.join(map(str, steps))}.")
  try:
    saved = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
  except (FileNotFoundError, KeyError, ValueError) as e:
    raise UserError(f"the checkpoint at step {step} in {manager.directory} has no readable "
                    f"config ({type(e).__name__}); pass another --step.") from e
  manager.close()
  return config_from_saved(dict(saved["config"])), step


def check_split(config, split: str) -> None:
  from slnjax import data  # pylint: disable=g-import-not-at-top
  splits = data.get_task(config.task.name).builder_cls.SPLITS
  if split not in splits:
    raise UserError(f"--split {split}: task {config.task.name!r} has no such split; "
                    f"choose one of {', '.join(splits)}.")


def run(workdir: str, split: str | None = None, step: int | None = None,
        turns: int | None = None, num: int | None = None) -> dict:
  """Restores the checkpoint and writes the report (eval_report.evaluate_checkpoint)."""
  from slnjax import build, config as cfg  # pylint: disable=g-import-not-at-top
  if turns is not None and turns < 1:
    raise UserError(f"--turns {turns}: the loop needs at least one turn.")
  if num is not None and num < 1:
    raise UserError(f"--num {num}: evaluate at least one problem.")
  config, step = load_run(workdir, step)
  if build.is_wide(config):
    raise UserError(f"{workdir} holds a wide SLN (kind {config.model.kind!r}); this command "
                    "evaluates dialogue kinds. The train loop evaluates wide kinds "
                    "(evaluate_wide.py).")
  split = split or cfg.eval_config(config)[0]
  check_split(config, split)
  import jax  # pylint: disable=g-import-not-at-top
  from slnjax import checkpoint, data, eval_report, parallel, train  # pylint: disable=g-import-not-at-top
  mesh = parallel.make_mesh(tuple(config.mesh.ici), tuple(config.mesh.dcn))
  ts = train.make_train_step(config, mesh)
  try:
    params = checkpoint.load_params(workdir, ts.abstract_state["params"], step)
  except checkpoint.ShapeMismatchError:
    raise
  except (OSError, KeyError, ValueError, RuntimeError) as e:  # a damaged checkpoint
    raise UserError(f"the checkpoint at step {step} in {workdir} cannot be read "
                    f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
                    "pass another --step.") from e
  if jax.process_index() == 0:
    data.ensure_built(config.task.name, config.task.data_dir or None, train.task_config(config))
  tokenizer = data.load_tokenizer(config.task.tokenizer or None)
  return eval_report.evaluate_checkpoint(config, ts.model, params, mesh, ts.rules, tokenizer,
                                         workdir, step, split, turns, num)


def _line(r: dict) -> str:
  pct = lambda d: "-" if d is None else f"{100 * d['acc']:.1f}%"
  acc = " ".join(f"{100 * a:.1f}%" for a in r["acc_by_turn"])
  p = ", ".join(f"{k} p={v:.3g}" for k, v in r["mcnemar_p"].items())
  return (f"step {r['step']} {r['split']} (n={r['n']}): acc@1..{r['T']} {acc} | "
          f"best-of-{r['T']} {pct(r['best_of_T'])} | majority {pct(r['majority_T'])} | "
          f"retry without feedback {pct(r['retry_no_feedback'])} | {p}")


def main(argv=None) -> None:
  parser = _Parser(prog="python -m slnjax.evaluate", description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="a training run's workdir")
  parser.add_argument("--split", default=None, help="default: the config's eval split")
  parser.add_argument("--step", type=int, default=None, help="default: the latest checkpoint")
  parser.add_argument("--turns", type=int, default=None, help="default: model.loop.max_turns")
  parser.add_argument("--num", type=int, default=None, help="default: the whole split")
  a = parser.parse_args(argv)
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.ERROR)  # orbax's notes on opening checkpoints read-only
  from slnjax import distributed  # pylint: disable=g-import-not-at-top
  distributed.initialize()
  try:
    r = run(a.workdir, a.split, a.step, a.turns, a.num)
  except (UserError, ValueError, KeyError) as e:  # ValueError: a saved config or a
    # checkpoint that does not fit this code (finalize.validate, ShapeMismatchError)
    print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
    sys.exit(2)
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:
    stem = "eval" if r["split"] == "test" else f"eval_{r['split']}"
    print(_line(r))
    print(f"wrote {os.path.join(a.workdir, stem)}.json / .md / .png", flush=True)
