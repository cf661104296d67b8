"""Interruptions and resumes: what the train loop does when a run stops and starts again.

  Interrupt         SIGTERM (preemption) and SIGINT (Ctrl-C) set a flag; the loop saves a
                    checkpoint after the step and stops (``python -m slnjax.main`` then exits
                    with checkpoint.PREEMPTED_EXIT_CODE). A second Ctrl-C stops at once.
  restore_latest    the newest checkpoint that restores; newer, damaged ones (a truncated
                    file, an empty step directory) are moved to <workdir>/checkpoints_damaged/.
  check_schedule    a resume whose learning-rate or tau schedule differs from the
                    checkpoint's over the steps still to run stops (ScheduleChangeError,
                    saying what would change) unless allowed (then it warns with the same).
  check_finite      stops after a NaN/inf loss, update or parameter; the checkpoint holding the
                    parameters that gave it is moved to <workdir>/checkpoints_rejected/.
Each says what it did in one line on process 0's stdout.
"""
from __future__ import annotations

import os
import signal
import sys

import jax
import numpy as np
from ml_collections import config_dict

from slnjax import checkpoint
from slnjax import state as state_lib


class NonFiniteError(FloatingPointError):
  """A loss, gradient or parameter became NaN or infinite."""


class ScheduleChangeError(ValueError):
  """A resumed run would follow another learning-rate or tau schedule than its checkpoint."""


class NoIntactCheckpointError(ValueError):
  """Every checkpoint of the workdir failed to restore (none was moved)."""


def say(msg: str) -> None:
  if jax.process_index() == 0:
    print(msg, flush=True)


def _scalar(x) -> int:
  return int(np.asarray(x.addressable_data(0) if isinstance(x, jax.Array) else x))


class Interrupt:
  """SIGTERM and SIGINT set ``signal`` (checked once per step); other processes learn of it
  through orbax's preemption sync point."""

  NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT (Ctrl-C)"}

  def __init__(self):
    self.signal, self._prev = None, {}
    for s in self.NAMES:
      try:
        self._prev[s] = signal.signal(s, self._handle)
      except ValueError:  # not the main thread: no handler
        pass

  def _handle(self, signum, frame):
    del frame
    if self.signal is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # the second Ctrl-C: stop now, without saving
    self.signal = signum
    if jax.process_index() == 0:  # os.write: print() is not reentrant
      again = " (Ctrl-C again: stop without saving)" if signum == signal.SIGINT else ""
      os.write(sys.stdout.fileno(), f"{self.NAMES[signum]}: saving a checkpoint after this "
                                    f"step, then exiting{again}\n".encode())

  @property
  def name(self) -> str:
    return self.NAMES.get(self.signal, "preemption")

  def reached(self, step: int, ckpt: checkpoint.Checkpointer) -> bool:
    if jax.process_count() > 1:
      return bool(ckpt.manager.reached_preemption(step)) or self.signal is not None
    return self.signal is not None

  def restore(self):
    for s, prev in self._prev.items():
      signal.signal(s, prev)


def _reason(e: Exception) -> str:
  return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"


def restore_latest(ckpt: checkpoint.Checkpointer, abstract_state, data_iter):
  """(step, state, data_iter, saved config dict) of the newest checkpoint that restores, or
  None when there is none. Newer ones that failed to restore are then moved aside (one line
  each): only once an older one restored, so a failure of the machine (memory, a missing
  filesystem) moves nothing. A ShapeMismatchError (the config's fault) stops at once."""
  failed = []
  for step in sorted(ckpt.all_steps(), reverse=True):
    try:
      state, data_iter = ckpt.restore(step, abstract_state, data_iter)
      saved = ckpt.saved_config(step)
    except checkpoint.ShapeMismatchError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      failed.append((step, e))
      continue
    for bad, e in failed:
      where = ckpt.set_aside(bad, "damaged")
      say(f"warning: checkpoint {ckpt.directory}/{bad} cannot be restored ({_reason(e)}); "
          f"moved it to {where}")
    return step, state, data_iter, saved
  if failed:
    raise NoIntactCheckpointError(
        f"none of the checkpoints in {ckpt.directory} could be restored ("
        + "; ".join(f"step {s}: {_reason(e)}" for s, e in failed) + "). Nothing was moved or "
        "deleted: fix or move them aside by hand, or use another --workdir.")
  return None


def _schedules(c, lobes, steps_t, updates_t):
  out = {}
  for n in lobes:
    out[f"learning rate of {n}"] = np.asarray(state_lib.lr_schedule(
        config_dict.ConfigDict(c["optim"][n]), int(c["steps"]))(updates_t), np.float64)
  out["tau"] = np.asarray(state_lib.tau_at(config_dict.ConfigDict(c["tau"]), int(c["steps"]),
                                           steps_t), np.float64)
  return out


def _changed_keys(old: dict, new: dict, lobes) -> list[str]:
  out = [] if old["steps"] == new["steps"] else [f"config.steps {old['steps']} -> {new['steps']}"]
  for where in [("optim", n) for n in lobes] + [("tau",)]:
    a, b = old, new
    for k in where:
      a, b = a[k], b[k]
    out += [f"config.{'.'.join(where)}.{k} {a.get(k)} -> {b.get(k)}"
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
  return out


def schedule_changes(saved: dict, config, step: int, lobes, updates_per_step: int = 1) -> str:
  """What changes, over the steps this run still makes (``step`` .. config.steps - 1, and the
  optimizer counts they may use), between the checkpoint's schedules and this config's:
  '' when nothing does."""
  new_steps = int(config.steps)
  if step >= new_steps:
    return ""
  new = {"steps": new_steps, "optim": {n: config.optim[n].to_dict() for n in lobes},
         "tau": config.tau.to_dict()}
  try:
    old = {"steps": int(saved["steps"]), "optim": {n: dict(saved["optim"][n]) for n in lobes},
           "tau": dict(saved["tau"])}
  except (KeyError, TypeError):  # not a config this version writes: nothing to compare
    return ""
  grid = lambda a, b: np.unique(np.linspace(a, b - 1, num=min(b - a, 4001)).astype(np.int64))
  steps_t, updates_t = grid(step, new_steps), grid(step, new_steps * max(updates_per_step, 1))
  a, b = _schedules(old, lobes, steps_t, updates_t), _schedules(new, lobes, steps_t, updates_t)
  parts = []
  for name in a:
    t = updates_t if name.startswith("learning") else steps_t
    diff = ~np.isclose(a[name], b[name], rtol=1e-6, atol=0)
    if diff.any():
      i = int(np.argmax(diff))
      parts.append(f"the {name} at step {t[i] + 1} goes {a[name][i]:.3g} -> {b[name][i]:.3g}, "
                   f"at step {t[-1] + 1} {a[name][-1]:.3g} -> {b[name][-1]:.3g}")
  if not parts:
    return ""
  return "; ".join(_changed_keys(old, new, lobes) + parts)


def check_schedule(saved: dict, config, step: int, lobes, *, allow: bool,
                   updates_per_step: int = 1) -> None:
  change = schedule_changes(saved, config, step, lobes, updates_per_step)
  if not change:
    return
  if allow:
    say(f"warning: resuming at step {step} with a changed schedule (allowed): {change}")
    return
  raise ScheduleChangeError(
      f"resuming at step {step} would change the schedule the checkpoint was trained with: "
      f"{change}. Rerun with the checkpoint's values (its config is in "
      f"checkpoints/{step}/config), use a new --workdir, or pass --allow_schedule_change to "
      f"continue with the new schedule.")


def check_schedule_early(ckpt: checkpoint.Checkpointer, check) -> None:
  """``check(saved, step=...)`` against the latest checkpoint's config, when it can be read
  (a damaged one is restore_latest's business): a refusal before the slow setup."""
  step = ckpt.latest_step()
  if step is None:
    return
  try:
    saved = ckpt.saved_config(step)
  except Exception:  # pylint: disable=broad-except
    return
  check(saved, step=step)


def check_finite(st, step: int, ckpt: checkpoint.Checkpointer) -> None:
  """NonFiniteError when the state recorded a NaN/inf loss, gradient or parameter; first
  moves aside the checkpoint(s) holding the parameters that led to it."""
  bad = _scalar(st["nonfinite"])
  if bad < 0:
    return
  ckpt.wait()
  moved = [ckpt.set_aside(s, "rejected") for s in ckpt.all_steps() if s >= bad]
  last = ckpt.latest_step()
  where = (f"the last good checkpoint (step {last}) in {ckpt.directory} is intact"
           if last is not None else "no good checkpoint had been written")
  aside = (f" The checkpoint of step {bad} (the parameters that step started from) was moved "
           f"to {', '.join(moved)}." if moved else "")
  raise NonFiniteError(
      f"Loss, gradient or parameters are NaN/inf at step {bad + 1} (seen at step {step}); "
      f"training stopped and nothing more was saved: {where}.{aside} Lower the learning rate "
      f"(config.optim.*.lr; resuming with it needs --allow_schedule_change), tighten "
      f"clip_norm, or raise tau.")
