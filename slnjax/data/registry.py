"""Task registry: name -> builder class and verifier; config resolution.

A verifier is `verify(example, answer) -> bool`: `example` is a record of the task's split
(a dict from the data source, text fields as bytes or str) and `answer` the model's decoded
answer text (without special tokens). It is the external reward and the accuracy metric.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from slnjax.data.tasks import addition, base, facts, gsm8k, humaneval, maze, mbpp, parity
from slnjax.data.tasks import tictactoe

Verifier = Callable[[Mapping[str, Any], str], bool]


@dataclasses.dataclass(frozen=True)
class Task:
  """A task: its builder, its verifier, whether it reads local files (`manual`) and whether
  its verifier runs model-written code (`executes_code`: sandboxed, see tasks/execution.py)."""

  name: str
  builder_cls: type[base.TaskBuilder]
  verify: Verifier
  manual: bool
  executes_code: bool = False

  @property
  def config_names(self) -> list[str]:
    return [c.name for c in self.builder_cls.BUILDER_CONFIGS]


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("addition", addition.Addition, addition.verify, manual=False),
        Task("parity", parity.Parity, parity.verify, manual=False),
        Task("maze", maze.Maze, maze.verify, manual=False),
        Task("tictactoe", tictactoe.TicTacToe, tictactoe.verify, manual=False),
        Task("facts", facts.Facts, facts.verify, manual=False),
        Task("gsm8k", gsm8k.Gsm8k, gsm8k.verify, manual=True),
        Task("mbpp", mbpp.Mbpp, mbpp.verify, manual=True, executes_code=True),
        Task("humaneval", humaneval.HumanEval, humaneval.verify, manual=True,
             executes_code=True),
    ]
}


def task_names() -> list[str]:
  """The valid task names."""
  return list(TASKS)


def get_task(name: str) -> Task:
  """The task called `name`; ValueError listing the valid names otherwise."""
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
  return TASKS[name]


def resolve_config(task: str | Task, config: str | tfds.core.BuilderConfig | None = None,
                   **overrides: Any) -> tfds.core.BuilderConfig | None:
  """The builder config for `task`.

  `config`: None (the task's default config), a config name, a config instance, or a
  mapping {"base": name or None, "name": ..., field: value, ...} (e.g. from an experiment
  config; `to_dict()` is called if present). With `overrides` (e.g. num_train=64), returns
  a copy with those fields replaced; give it a new `name=` so it gets its own directory (a
  copy under a built-in name is refused).
  """
  task = get_task(task) if isinstance(task, str) else task
  if hasattr(config, "to_dict"):
    config = config.to_dict()
  if isinstance(config, Mapping):
    fields = dict(config)
    return resolve_config(task, fields.pop("base", None), **fields, **overrides)
  configs = {c.name: c for c in task.builder_cls.BUILDER_CONFIGS}
  if config is None:
    if not configs:
      if overrides:
        raise ValueError(f"task {task.name!r} has no config fields to override")
      return None
    config = task.builder_cls.BUILDER_CONFIGS[0]
  elif isinstance(config, str):
    if config not in configs:
      valid = ", ".join(configs) or "(none: leave config unset)"
      raise ValueError(f"unknown config {config!r} for task {task.name!r}; valid: {valid}")
    config = configs[config]
  if overrides:
    config = dataclasses.replace(config, **overrides)
    if config.name in configs:
      raise ValueError(
          f"config {config.name!r} is a built-in name of task {task.name!r}; pass "
          f"name=... for a config with changed fields")
  return config


def verify_batch(task: str | Task, source: Any, index_b: np.ndarray, answers_b: Sequence[str],
                 valid_b: np.ndarray | None = None) -> np.ndarray:
  """correct_b [B] bool: verifier result per row (`source[index_b[i]]` is the record);
  rows with valid_b == 0 (batch padding) are False. Verifiers that run code run their
  programs concurrently, one per CPU core (each is a subprocess)."""
  task = get_task(task) if isinstance(task, str) else task
  out = np.zeros(len(answers_b), dtype=bool)
  rows = [(i, source[int(idx)], answer)
          for i, (idx, answer) in enumerate(zip(np.asarray(index_b), answers_b))
          if valid_b is None or valid_b[i]]
  workers = min(len(rows), os.cpu_count() or 1) if task.executes_code else 1
  if workers <= 1:
    for i, record, answer in rows:
      out[i] = bool(task.verify(record, answer))
    return out
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    results = pool.map(lambda row: task.verify(row[1], row[2]), rows)
    for (i, _, _), ok in zip(rows, results):
      out[i] = bool(ok)
  return out
