"""`python -m slnjax.data --task NAME [--data_dir DIR] [--config NAME] [--manual_dir DIR]
[--rebuild] [--check]`: build a task's dataset if missing (or damaged) and report it.

--check only reports (exit status 1 if the dataset is missing or damaged); --list prints the
tasks and their configs.
"""
from __future__ import annotations

import argparse
import logging
import sys

import numpy as np

from slnjax.data import registry, storage
from slnjax.data.tasks import base

SAMPLE_LIMIT = 5_000  # records scanned for the difficulty range and the histograms
AXES = ("carry_chain", "ones", "length")  # difficulty axes some tasks store besides difficulty


def report(builder: base.TaskBuilder) -> str:
  """Path, config fields, and per split: examples, difficulty range, one example."""
  lines = [f"{builder.name} ({builder.builder_config.name if builder.builder_config else '-'})"
           f" at {builder.data_path}"]
  params = base.config_params(builder.builder_config)
  if params:
    lines.append(f"  config: {params}")
  for split, info in builder.info.splits.items():
    source = builder.as_data_source(split)
    n = min(len(source), SAMPLE_LIMIT)
    diffs = np.array([source[i]["difficulty"] for i in range(n)], dtype=np.int64)
    span = f"difficulty {diffs.min()}..{diffs.max()}" if n else "empty"
    scanned = "" if n == len(source) else f" (first {n})"
    lines.append(f"  {split}: {info.num_examples} examples, {span}{scanned}")
    for axis in [a for a in AXES if n and a in source[0]]:
      values, counts = np.unique([int(source[i][axis]) for i in range(n)], return_counts=True)
      lines.append(f"    {axis}: " + " ".join(f"{v}:{c}" for v, c in zip(values, counts)))
    if n:
      ex = source[0]
      lines.append(f"    e.g. prompt={base.as_text(ex['prompt'])[:120]!r} "
                   f"target={base.as_text(ex['target'])[:60]!r}")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m slnjax.data", description=__doc__)
  parser.add_argument("--task", help=f"one of: {', '.join(registry.task_names())}")
  parser.add_argument("--data_dir", default=storage.DEFAULT_DATA_DIR)
  parser.add_argument("--config", default=None, help="config name (default: the first)")
  parser.add_argument("--manual_dir", default=None,
                      help="files of local-data tasks (default DATA_DIR/downloads/manual/TASK)")
  parser.add_argument("--rebuild", action="store_true", help="delete and build again")
  parser.add_argument("--check", action="store_true", help="report only, never build")
  parser.add_argument("--list", action="store_true", help="list tasks and configs")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  if args.list:
    for name, task in registry.TASKS.items():
      kind = "local files" if task.manual else "synthetic"
      print(f"{name:10s} {kind:11s} configs: {', '.join(task.config_names) or '-'}")
    return 0
  if not args.task:
    parser.error("--task is required (or --list)")
  try:
    if args.check:
      builder = storage.load_builder(args.task, args.data_dir, args.config)
    else:
      builder = storage.ensure_built(args.task, args.data_dir, args.config,
                                     manual_dir=args.manual_dir, rebuild=args.rebuild)
  except (ValueError, storage.DatasetError, base.MissingDataError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(report(builder))
  return 0


if __name__ == "__main__":
  sys.exit(main())
