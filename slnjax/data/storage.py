"""Building, checking and opening the task datasets on disk (array_record, no TensorFlow).

Layout: `<data_dir>/<task>/<config>/<version>/` (TFDS). TFDS generates into a sibling
`incomplete.<random>_<version>` directory and renames it when done; a killed build leaves that
directory behind and no final one. A final directory is trusted only after `problems()` finds
every shard present with the record count that dataset_info.json promises and the stored
config fields equal to the requested ones.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from typing import Any, Iterator

import tensorflow_datasets as tfds
from array_record.python import array_record_module

from slnjax.data import registry
from slnjax.data.tasks import base, humaneval

log = logging.getLogger(__name__)
DEFAULT_DATA_DIR = os.environ.get("SLNJAX_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))
tfds.disable_progress_bar()
logging.getLogger("absl").addFilter(  # TFDS warns on every custom (test-sized) config
    lambda record: not str(record.msg).startswith("Using custom data configuration"))


class DatasetError(RuntimeError):
  """A dataset is not built, damaged, or was built with other config fields."""


def make_builder(task: str, data_dir: str | None = None, config: Any = None) -> base.TaskBuilder:
  """The TFDS builder of `task` (config: None, a name, or a BuilderConfig) in `data_dir`."""
  spec = registry.get_task(task)
  config = registry.resolve_config(spec, config)
  try:
    return spec.builder_cls(data_dir=os.fspath(data_dir or DEFAULT_DATA_DIR),
                            config=config, file_format="array_record")
  except Exception as e:  # pylint: disable=broad-except  (TFDS read a damaged info file)
    path = dataset_path(task, data_dir, config)
    if not os.path.isdir(path):
      raise
    raise DatasetError(f"dataset {task} at {path} has unreadable dataset info "
                       f"({type(e).__name__}: {e})") from e


def dataset_path(task: str, data_dir: str | None = None, config: Any = None) -> str:
  """`<data_dir>/<task>/<config name>/<version>`: where the dataset lives once built."""
  spec = registry.get_task(task)
  config = registry.resolve_config(spec, config)
  return os.path.join(os.fspath(data_dir or DEFAULT_DATA_DIR), spec.builder_cls.name,
                      config.name if config else "", str(spec.builder_cls.VERSION))


def default_manual_dir(task: str, data_dir: str | None = None) -> str:
  """Where a local-data task looks for its files: `<data_dir>/downloads/manual/<task>`."""
  return os.path.join(os.fspath(data_dir or DEFAULT_DATA_DIR), "downloads", "manual", task)


def stale_incomplete_dirs(path: str) -> list[str]:
  """Temporary directories left by interrupted builds of the dataset at `path`."""
  parent, version = os.path.split(os.fspath(path))
  if not os.path.isdir(parent):
    return []
  suffix = f"_{version}"
  return sorted(os.path.join(parent, n) for n in os.listdir(parent)
                if n.startswith("incomplete.") and n.endswith(suffix))


def problems(builder: base.TaskBuilder) -> list[str]:
  """What is wrong with the built dataset (empty list: complete and consistent)."""
  path = os.fspath(builder.data_path)
  if not os.path.isdir(path):
    return [f"not built: {path} does not exist"]
  if not os.path.isfile(os.path.join(path, "dataset_info.json")):
    return [f"{path} has no dataset_info.json"]
  try:
    info = builder.info  # read back from `path` when the builder was made
    stored = dict(info.metadata.get("config", {}))
  except Exception as e:  # pylint: disable=broad-except  (any unreadable info is damage)
    return [f"{path}: unreadable dataset info ({type(e).__name__}: {e})"]
  out = []
  want = base.config_params(builder.builder_config)
  if stored != want:
    out.append(f"built with config fields {stored}, requested {want}")
  expected_splits = set(builder.SPLITS)
  if set(info.splits) != expected_splits:
    out.append(f"splits {sorted(info.splits)} != expected {sorted(expected_splits)}")
  for name, split in info.splits.items():
    if sum(split.shard_lengths) != split.num_examples:
      out.append(f"split {name}: shard lengths do not add up to {split.num_examples}")
    for file, expected in zip(split.filepaths, split.shard_lengths):
      file = os.fspath(file)
      if not os.path.isfile(file):
        out.append(f"missing shard {file}")
        continue
      try:
        reader = array_record_module.ArrayRecordReader(file)
        found = reader.num_records()
        reader.close()
      except Exception as e:  # pylint: disable=broad-except
        out.append(f"unreadable shard {file} ({type(e).__name__}: {e})")
        continue
      if found != expected:
        out.append(f"shard {file} has {found} records, dataset_info says {expected}")
  return out


@contextlib.contextmanager
def _build_lock(path: str) -> Iterator[None]:
  """An exclusive file lock per dataset directory (processes on one machine / NFS)."""
  parent, version = os.path.split(path)
  os.makedirs(parent, exist_ok=True)
  with open(os.path.join(parent, f".{version}.lock"), "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _check_manual_files(task: str, manual_dir: str) -> None:
  spec = registry.get_task(task)
  if task == "humaneval":
    humaneval.find_source(manual_dir)
  elif spec.manual:
    cls = spec.builder_cls
    base.require_manual_files(task, manual_dir, cls.MANUAL_FILES,
                              cls.MANUAL_DOWNLOAD_INSTRUCTIONS)


def ensure_built(task: str, data_dir: str | None = None, config: Any = None, *,
                 manual_dir: str | None = None, rebuild: bool = False) -> base.TaskBuilder:
  """Build `task` unless a complete, matching copy exists; return its builder.

  A damaged or mismatched copy, and leftovers of interrupted builds, are deleted and the
  dataset rebuilt (logged as a warning). Local-data tasks read their files from
  `manual_dir` (default `default_manual_dir`) and raise `MissingDataError` naming the
  directory and files when they are absent. Concurrent calls on one machine are serialised
  by a file lock; on a shared filesystem without locks, call it on process 0 first.
  """
  path = dataset_path(task, data_dir, config)
  with _build_lock(path):
    try:
      builder = make_builder(task, data_dir, config)
      found = problems(builder)
    except DatasetError as e:
      builder, found = None, [str(e)]
    if os.path.isdir(path):
      found = ["rebuild requested"] if rebuild else found
      if not found:
        log.info("dataset %s found at %s", task, path)
        return builder
      log.warning("dataset %s at %s is unusable (%s); rebuilding", task, path,
                  "; ".join(found))
      shutil.rmtree(path)
    for stale in stale_incomplete_dirs(path):
      log.warning("removing leftover of an interrupted build: %s", stale)
      shutil.rmtree(stale)
    manual_dir = os.fspath(manual_dir or default_manual_dir(task, data_dir))
    _check_manual_files(task, manual_dir)
    builder = make_builder(task, data_dir, config)
    log.warning("building dataset %s (config %s) at %s", task,
                builder.builder_config.name if builder.builder_config else "-", path)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    builder = make_builder(task, data_dir, config)
    found = problems(builder)
    if found:
      raise DatasetError(f"dataset {task} at {path} fails its check after building: "
                         + "; ".join(found))
    log.warning("built dataset %s: %s", task, {
        name: s.num_examples for name, s in builder.info.splits.items()})
    return builder


def load_builder(task: str, data_dir: str | None = None, config: Any = None) -> base.TaskBuilder:
  """The builder of an already built, verified dataset; DatasetError otherwise."""
  builder = make_builder(task, data_dir, config)
  found = problems(builder)
  if found:
    stale = stale_incomplete_dirs(os.fspath(builder.data_path))
    hint = f" (an interrupted build left {stale[0]})" if stale else ""
    raise DatasetError(
        f"dataset {task} is not usable{hint}: {'; '.join(found)}. Build it with "
        f"`python -m slnjax.data --task {task} --data_dir {builder.data_dir_root}"
        f"{_config_flag(task, builder)}"
        f"{' --rebuild' if os.path.isdir(os.fspath(builder.data_path)) else ''}` "
        f"or slnjax.data.ensure_built(...)")
  return builder


def _config_flag(task: str, builder: base.TaskBuilder) -> str:
  name = builder.builder_config.name if builder.builder_config else None
  return f" --config {name}" if name in registry.get_task(task).config_names else ""


def load_source(task: str, split: str, data_dir: str | None = None, config: Any = None):
  """The random-access source (len, [i] -> record dict) of one split of a built dataset."""
  splits = registry.get_task(task).builder_cls.SPLITS
  if split not in splits:
    raise ValueError(f"unknown split {split!r} for task {task!r}; "
                     f"available: {', '.join(splits)}")
  builder = load_builder(task, data_dir, config)
  if split not in builder.info.splits:
    raise ValueError(f"unknown split {split!r} for task {task!r}; "
                     f"available: {', '.join(builder.info.splits)}")
  return builder.as_data_source(split)
