"""Checkpoints: an async orbax CheckpointManager over <workdir>/checkpoints.

Layout of one checkpoint, <workdir>/checkpoints/<step>/:
  state/    the train state pytree (StandardSave: params, optimizer states, step, rng, ...)
  data/     the grain iterator state, one JSON per process (grain's handler)
  config/   the experiment config (JsonSave), for reading and for resuming by hand
orbax writes each step into a temporary directory and renames it when complete, so a
half-written checkpoint (a kill during a save) is never listed or restored. Every process
takes part in saves; restoring checks every array's shape against the model first and
writes nothing if one differs.
"""
from __future__ import annotations

import json
import logging
import os

import grain.checkpoint as grain_ckpt
import jax
import orbax.checkpoint as ocp


# EX_TEMPFAIL of sysexits.h ("temporary failure; the user is invited to retry"): distinct from
# 0 (finished), 1 (an error), 2 (a usage error) and 128+N (killed by signal N).
PREEMPTED_EXIT_CODE = 75


class ShapeMismatchError(ValueError):
  """A checkpoint's arrays do not fit the model the config describes."""


def _path_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))
                  for k in path)


def load_params(source: str, abstract_params: dict, step: int | None = None) -> dict:
  """The parameters of another run (``config.init_from``: its workdir or checkpoints dir),
  restored onto ``abstract_params``' shardings; lobes absent there are left out of the
  result. Shapes are checked first (ShapeMismatchError)."""
  directory = os.path.abspath(source)
  if not os.path.basename(directory.rstrip("/")) == "checkpoints":
    directory = os.path.join(directory, "checkpoints")
  manager = ocp.CheckpointManager(directory, item_handlers={
      "state": ocp.PyTreeCheckpointHandler(), "data": grain_ckpt.CheckpointHandler(),
      "config": ocp.JsonCheckpointHandler()},
      options=ocp.CheckpointManagerOptions(create=False, read_only=True,
                                          save_interval_steps=0, max_to_keep=None))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"config.init_from={source!r}: no checkpoint in {directory}.")
  stored = manager.item_metadata(step)["state"]
  stored = getattr(stored, "tree", stored)["params"]
  target = {"params": {n: p for n, p in abstract_params.items() if n in stored}}
  have = {"params": {n: stored[n] for n in target["params"]}}
  _compare(have, target, f"{directory}/{step} (config.init_from)")
  out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=True)))
  manager.close()
  return out["state"]["params"]


def _compare(stored, abstract, where: str) -> None:
  have = {_path_str(p): m for p, m in jax.tree_util.tree_flatten_with_path(stored)[0]}
  want = {_path_str(p): a for p, a in jax.tree_util.tree_flatten_with_path(abstract)[0]}
  problems = []
  order = lambda n: (not n.startswith("params/"), n)  # parameters first
  for name in sorted(set(have) | set(want), key=order):
    if name not in want:
      problems.append(f"{name}: in the checkpoint but not in this model")
    elif name not in have:
      problems.append(f"{name}: in this model but not in the checkpoint")
    elif tuple(have[name].shape) != tuple(want[name].shape):
      problems.append(f"{name}: shape {tuple(have[name].shape)} in the checkpoint, "
                      f"{tuple(want[name].shape)} in this model")
    elif str(have[name].dtype) != str(want[name].dtype):
      problems.append(f"{name}: dtype {have[name].dtype} in the checkpoint, "
                      f"{want[name].dtype} in this model")
  if problems:
    shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more"
                                          if len(problems) > 20 else "")
    raise ShapeMismatchError(
        f"The checkpoint at {where} does not fit the model of this config "
        f"({len(problems)} arrays differ):\n  {shown}\nNothing was restored or written. "
        f"Use a new --workdir, or the config the checkpoint was made with "
        f"(saved next to it, in config/).")


class Checkpointer:

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep or None, enable_async_checkpointing=async_save, create=True)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": grain_ckpt.CheckpointHandler(),
                       "config": ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def check_shapes(self, step: int, abstract_state) -> None:
    """ShapeMismatchError naming every differing array (and missing/extra ones)."""
    stored = self.manager.item_metadata(step)["state"]
    _compare(getattr(stored, "tree", stored), abstract_state, f"{self.directory}/{step}")

  def restore(self, step: int, abstract_state, data_iter):
    """(state, data_iter) restored onto the shardings in ``abstract_state``."""
    self.check_shapes(step, abstract_state)
    args = {"state": ocp.args.StandardRestore(abstract_state)}
    mine = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    same_procs = os.path.exists(os.path.join(self.directory, str(step), "data", mine))
    if data_iter is not None and not same_procs:
      logging.warning("Checkpoint %s/%d was written by a different number of processes: the "
                      "train state is restored, the data iterator starts afresh.",
                      self.directory, step)
    if data_iter is not None and same_procs:
      args["data"] = grain_ckpt.CheckpointRestore(data_iter)
    out = self.manager.restore(step, args=ocp.args.Composite(**args))
    return out["state"], out.get("data", data_iter) if data_iter is not None else None

  def saved_config(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore()))["config"]

  def save(self, step: int, state, data_iter, config) -> None:
    """Starts an async save (arrays are copied before this returns)."""
    args = {"state": ocp.args.StandardSave(state),
            "config": ocp.args.JsonSave(json.loads(config.to_json_best_effort()))}
    if data_iter is not None:
      args["data"] = grain_ckpt.CheckpointSave(data_iter)
    self.manager.save(step, args=ocp.args.Composite(**args), force=True)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
