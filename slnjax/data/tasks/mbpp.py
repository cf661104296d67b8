"""`mbpp`: Mostly Basic Python Problems, read from a local JSONL file.

Place the original `mbpp.jsonl` (objects with task_id, text, code, test_list,
test_setup_code) in the manual directory. Splits follow the MBPP paper's task-id ranges:
`prompt` 1-10, `test` 11-510, `validation` 511-600, `train` 601-974.
prompt = the description plus the asserts; target = the reference code.
difficulty = the number of non-empty lines of the reference code.
An answer (its first ``` fenced block, if it has one) is correct when setup code + answer +
asserts exit with status 0 in a subprocess within the timeout.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds

from slnjax.data.tasks import base, execution

FILE = "mbpp.jsonl"
HOW = "Copy mbpp.jsonl from the MBPP release (google-research/mbpp) into that directory."
SPLIT_IDS = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}


def make_example(record: Mapping[str, Any]) -> dict[str, Any]:
  """The example for one MBPP record."""
  tests = [t.replace("\r\n", "\n") for t in record["test_list"]]
  code = record["code"].replace("\r\n", "\n").strip("\n") + "\n"
  prompt = (record["text"].strip() + "\nYour code should pass these tests:\n"
            + "\n".join(tests) + "\n")
  return {
      "prompt": prompt, "target": code,
      "difficulty": sum(1 for line in code.split("\n") if line.strip()),
      "task_id": int(record["task_id"]), "tests": tests,
      "test_setup": (record.get("test_setup_code") or "").replace("\r\n", "\n"),
  }


def program(example: Mapping[str, Any], answer: str) -> str:
  """The program that checks `answer` (a ``` fence is unwrapped): setup, answer, asserts."""
  tests = base.as_text_list(example["tests"])
  code = execution.strip_code_fence(answer)
  return "\n".join([base.as_text(example["test_setup"]), code, *tests, ""])


def verify(example: Mapping[str, Any], answer: str,
           timeout_s: float = execution.DEFAULT_TIMEOUT_S) -> bool:
  """True iff the example's asserts pass against `answer` in a subprocess."""
  return execution.run_to_end(program(example, answer), timeout_s=timeout_s)


class Mbpp(base.TaskBuilder, skip_registration=True):
  """MBPP from `mbpp.jsonl` in the manual directory."""

  name = "mbpp"
  DESCRIPTION = __doc__
  MANUAL_FILES = (FILE,)
  MANUAL_DOWNLOAD_INSTRUCTIONS = HOW
  SPLITS = {split: None for split in SPLIT_IDS}
  _empty_hint = f"Expected the original {FILE} with task ids 1-974 (see SPLIT_IDS)."

  def _extra_features(self) -> dict[str, Any]:
    return {
        "task_id": np.int32,
        "tests": tfds.features.Sequence(tfds.features.Text()),
        "test_setup": tfds.features.Text(),
    }

  def _split_generators(self, dl_manager):
    self._manual = base.manual_dir_of(self.name, dl_manager, self.MANUAL_FILES, HOW)
    return {split: self._generate_examples(split) for split in SPLIT_IDS}

  def _examples(self, split: str) -> Iterator[dict[str, Any]]:
    lo, hi = SPLIT_IDS[split]
    for record in base.read_jsonl(f"{self._manual}/{FILE}"):
      if lo <= int(record["task_id"]) <= hi:
        yield make_example(record)
