"""Shared base for the task builders: config, common features, seeding.

Every task is a `tfds.core.GeneratorBasedBuilder` written with the array_record file format.
Each example has at least `prompt` (text), `target` (text, the gold answer) and `difficulty`
(int32). A builder's config fields (seed, example counts, task parameters) are stored in the
dataset's metadata so that a directory built with other parameters is detected, not reused.
Bump a builder's VERSION whenever its generation code changes what it writes.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import os
import zlib
from typing import Any, Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds

VERSION = tfds.core.Version("1.0.0")
_BASE_FIELDS = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}


@dataclasses.dataclass(eq=False)
class TaskConfig(tfds.core.BuilderConfig):
  """Base config of a synthetic task: a seed and the number of examples per split."""

  seed: int = 0
  num_train: int = 20_000
  num_test: int = 1_000


def config_params(config: tfds.core.BuilderConfig | None) -> dict[str, Any]:
  """The task-specific fields of a config (name/version/description excluded), JSON-ready."""
  if config is None:
    return {}
  out = {}
  for f in dataclasses.fields(config):
    if f.name in _BASE_FIELDS:
      continue
    value = getattr(config, f.name)
    out[f.name] = list(value) if isinstance(value, tuple) else value
  return out


def split_rng(seed: int, split: str) -> np.random.Generator:
  """A generator that depends only on (seed, split name): stable across runs and machines."""
  return np.random.default_rng([int(seed), zlib.crc32(split.encode("utf-8"))])


def as_text(value: Any) -> str:
  """A record field as `str` (records read back from disk hold `bytes`)."""
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, np.ndarray) and value.dtype.kind in "SO" and value.ndim == 0:
    return as_text(value.item())
  return str(value)


def as_text_list(value: Any) -> list[str]:
  """A sequence-of-text field as a list of `str`."""
  return [as_text(v) for v in value]


class TaskBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base builder. Subclasses set `name`, `SPLITS`, and implement `_examples(split)`.

  `SPLITS` maps split name -> config field holding that split's example count (or None when
  the count comes from the data itself). Subclasses may add fields with `_extra_features`.
  Builders are not registered with TFDS by name (no global name clashes); use
  `slnjax.data.registry` to find them.
  """

  VERSION = VERSION
  SPLITS: Mapping[str, str | None] = {}
  DESCRIPTION = ""

  def _extra_features(self) -> dict[str, Any]:
    return {}

  def _info(self) -> tfds.core.DatasetInfo:
    features = {
        "prompt": tfds.features.Text(),
        "target": tfds.features.Text(),
        "difficulty": np.int32,
        **self._extra_features(),
    }
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict(features),
        metadata=tfds.core.MetadataDict(config=config_params(self.builder_config)),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in self.SPLITS}

  def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
    count = 0
    for count, example in enumerate(self._examples(split), 1):
      yield count - 1, example
    if count == 0:
      raise ValueError(f"{self.name}: split {split!r} would be empty. {self._empty_hint}")

  _empty_hint = "Check the config's example counts."

  def _examples(self, split: str) -> Iterator[dict[str, Any]]:
    raise NotImplementedError

  def _split_size(self, split: str) -> int:
    field = self.SPLITS[split]
    return int(getattr(self.builder_config, field))


class MissingDataError(FileNotFoundError):
  """Files a local-data builder needs are absent; the message names the place and files."""


def require_manual_files(task: str, manual_dir: Any, names: tuple[str, ...], how: str) -> None:
  """Raise `MissingDataError` unless every file in `names` exists in `manual_dir`."""
  missing = [n for n in names
             if manual_dir is None or not os.path.isfile(os.path.join(manual_dir, n))]
  if missing:
    raise MissingDataError(
        f"{task}: missing file(s) {', '.join(missing)} in manual directory {manual_dir}. "
        f"Expected: {', '.join(names)}. {how}"
    )


def manual_dir_of(task: str, dl_manager: Any, names: tuple[str, ...], how: str) -> str:
  """The builder's manual directory after checking that `names` are in it."""
  try:
    path = os.fspath(dl_manager.manual_dir)
  except AssertionError as e:  # TFDS: the directory does not exist or is empty
    raise MissingDataError(f"{task}: {e}\nExpected file(s): {', '.join(names)}. {how}") from e
  require_manual_files(task, path, names, how)
  return path


def read_jsonl(path: str) -> Iterator[dict[str, Any]]:
  """The JSON objects of a .jsonl (or .jsonl.gz) file; blank lines are skipped."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt", encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        yield json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno}: not valid JSON ({e})") from e
