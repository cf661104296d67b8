"""`gsm8k`: grade-school math word problems, read from local JSONL files.

Place the official `train.jsonl` and `test.jsonl` (objects with "question" and "answer") in
the manual directory. prompt = the question; target = the full worked answer, which ends
with "#### N". difficulty = the number of non-empty reasoning lines before "####".
An answer is correct when the number after its last "####" equals the gold number.
"""
from __future__ import annotations

import fractions
import re
from typing import Any, Iterator, Mapping

import tensorflow_datasets as tfds

from slnjax.data.tasks import base

FILES = {"train": "train.jsonl", "test": "test.jsonl"}
HOW = ("Copy train.jsonl and test.jsonl from the GSM8K release "
       "(grade_school_math/data/) into that directory.")
_FINAL_RE = re.compile(r"####\s*([^\n]*)")


def final_answer(text: str) -> str | None:
  """The text after the last '####' (first line only, stripped), or None if there is none."""
  found = _FINAL_RE.findall(text)
  return found[-1].strip() if found else None


def parse_number(text: str) -> fractions.Fraction | None:
  """'1,234', '$5', '-3.50', '7.' -> an exact number; None if `text` is not one number."""
  text = text.strip().replace(",", "").replace("$", "").rstrip(".").strip()
  try:
    return fractions.Fraction(text)
  except (ValueError, ZeroDivisionError):
    return None


def make_example(record: Mapping[str, Any]) -> dict[str, Any]:
  """The example for one GSM8K record."""
  answer = record["answer"].replace("\r\n", "\n").strip()
  gold = final_answer(answer)
  if gold is None:
    raise ValueError(f"gsm8k: answer without '####': {answer[:80]!r}")
  reasoning = answer[: answer.rfind("####")]
  return {
      "prompt": record["question"].strip(), "target": answer,
      "difficulty": sum(1 for line in reasoning.split("\n") if line.strip()),
      "answer_number": gold,
  }


def verify(example: Mapping[str, Any], answer: str) -> bool:
  """True iff the number after the last '####' in `answer` equals `answer_number`."""
  found = final_answer(answer)
  gold = base.as_text(example["answer_number"])
  if found is None:
    return False
  got, want = parse_number(found), parse_number(gold)
  if want is None:
    return found.strip() == gold.strip()
  return got is not None and got == want


class Gsm8k(base.TaskBuilder, skip_registration=True):
  """GSM8K from `train.jsonl` / `test.jsonl` in the manual directory."""

  name = "gsm8k"
  DESCRIPTION = __doc__
  MANUAL_FILES = tuple(FILES.values())
  MANUAL_DOWNLOAD_INSTRUCTIONS = HOW
  SPLITS = {"train": None, "test": None}
  _empty_hint = "Its JSONL file in the manual directory has no records."

  def _extra_features(self) -> dict[str, Any]:
    return {"answer_number": tfds.features.Text()}

  def _split_generators(self, dl_manager):
    self._manual = base.manual_dir_of(self.name, dl_manager, self.MANUAL_FILES, HOW)
    return {split: self._generate_examples(split) for split in FILES}

  def _examples(self, split: str) -> Iterator[dict[str, Any]]:
    for record in base.read_jsonl(f"{self._manual}/{FILES[split]}"):
      yield make_example(record)
