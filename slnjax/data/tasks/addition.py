"""`addition`: multi-digit addition, e.g. prompt "123+4567=" -> target "4690".

Formats (config field `format`):
  plain     "123+4567=" -> "4690" (most-significant digit first, no padding)
  reversed  operands zero-padded to the split's widest operand W, the sum zero-padded to
            W + 1 digits and written least-significant digit first: with W = 4,
            "0123+4567=" -> "09640" (4690 -> "04690" -> reversed)
Every record also stores `carry_chain` (the longest run of consecutive carries of the sum,
carries.py) and its `format`. difficulty = the number of digits of the longer operand.

Operand lengths (`operands`): "one" draws d ~ U[digit range] for one operand and 1..d for
the other (order random); "both" draws each operand's length from the range independently.
`balance="carry_chain"`: every carry-chain length 0..max is equally frequent, each drawn
from the natural distribution (operand lengths as above, numbers uniform) conditioned on it.
Splits: `train`, `validation` and `test` draw from `train_digits`; `test_longer` from
`longer_digits` (extrapolation).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds

from slnjax.data.tasks import base, carries

_PROMPT_RE = re.compile(r"\s*(\d+)\+(\d+)=\s*")
FORMATS = ("plain", "reversed")
OPERANDS = ("one", "both")
BALANCES = ("none", "carry_chain")


@dataclasses.dataclass(eq=False)
class AdditionConfig(base.TaskConfig):
  """`train_digits`/`longer_digits`: inclusive (min, max) digit counts. `format`,
  `operands`, `balance`: see the module docstring."""

  train_digits: tuple[int, int] = (1, 5)
  longer_digits: tuple[int, int] = (6, 10)
  num_validation: int = 1_000
  num_test_longer: int = 1_000
  format: str = "plain"
  operands: str = "one"
  balance: str = "none"


def random_number(rng: np.random.Generator, digits: int) -> str:
  """A uniformly random number with exactly `digits` digits (0-9 for one digit)."""
  if digits == 1:
    return str(int(rng.integers(0, 10)))
  rest = rng.integers(0, 10, size=digits - 1)
  return str(int(rng.integers(1, 10))) + "".join(map(str, rest))


def length_pairs(digit_range: tuple[int, int], operands: str) -> dict[tuple[int, int], float]:
  """(digits of a, digits of b) -> probability, as `make_example` draws them."""
  lo, hi = digit_range
  out: dict[tuple[int, int], float] = {}
  for d in range(lo, hi + 1):
    others = range(1, d + 1) if operands == "one" else range(lo, hi + 1)
    for k in others:
      pairs = [(d, k), (k, d)] if operands == "one" else [(d, k)]
      for pair in pairs:
        out[pair] = out.get(pair, 0.0) + 1.0 / ((hi - lo + 1) * len(others) * len(pairs))
  return out


def format_example(a: int, b: int, fmt: str, width: int) -> dict[str, Any]:
  """The record of a + b in format `fmt` (width: the zero-padded operand width, reversed)."""
  if fmt == "plain":
    prompt, target = f"{a}+{b}=", str(a + b)
  else:
    prompt, target = f"{a:0{width}d}+{b:0{width}d}=", f"{a + b:0{width + 1}d}"[::-1]
  return {"prompt": prompt, "target": target, "difficulty": max(len(str(a)), len(str(b))),
          "carry_chain": carries.carry_chain(a, b), "format": fmt}


def make_example(rng: np.random.Generator, digit_range: tuple[int, int], fmt: str = "plain",
                 operands: str = "one") -> dict[str, Any]:
  """One example: operand lengths by `operands`, numbers uniform."""
  lo, hi = digit_range
  d = int(rng.integers(lo, hi + 1))
  a = random_number(rng, d)
  other = int(rng.integers(1, d + 1)) if operands == "one" else int(rng.integers(lo, hi + 1))
  b = random_number(rng, other)
  if operands == "one" and rng.integers(0, 2):
    a, b = b, a
  return format_example(int(a), int(b), fmt, hi)


def chain_table(digit_range: tuple[int, int], operands: str) -> dict[int, dict]:
  """chain -> {(da, db): P(da, db | chain)} for every reachable chain length."""
  table: dict[int, dict] = {}
  for (da, db), p in length_pairs(digit_range, operands).items():
    for chain in range(max(da, db) + 1):
      w = p * carries.count_with_chain(da, db, chain) / carries.count_all(da, db)
      if w > 0:
        table.setdefault(chain, {})[(da, db)] = w
  return {c: {k: w / sum(t.values()) for k, w in t.items()} for c, t in sorted(table.items())}


def make_balanced_example(rng: np.random.Generator, table: dict[int, dict], fmt: str,
                          width: int) -> dict[str, Any]:
  """One example whose carry-chain length is uniform over the table's chains."""
  chains = list(table)
  chain = chains[int(rng.integers(0, len(chains)))]
  pairs = list(table[chain])
  da, db = pairs[int(rng.choice(len(pairs), p=np.array([table[chain][k] for k in pairs])))]
  a, b = carries.sample_with_chain(rng, da, db, chain)
  return format_example(a, b, fmt, width)


def expected_answer(example: Mapping[str, Any]) -> str | None:
  """The right answer to the record's prompt in its format (None: unreadable prompt)."""
  m = _PROMPT_RE.fullmatch(base.as_text(example["prompt"]))
  if m is None:
    return None
  total = int(m.group(1)) + int(m.group(2))
  if base.as_text(example.get("format", "plain")) == "reversed":
    width = max(len(m.group(1)), len(m.group(2))) + 1
    return f"{total:0{width}d}"[::-1]
  return str(total)


def verify(example: Mapping[str, Any], answer: str) -> bool:
  """True iff `answer` (stripped) is the sum of the prompt's operands in the record's format:
  plain, canonical decimal (no sign, no leading zeros); reversed, the zero-padded sum of the
  operands' width + 1 digits, least-significant first (a record without `format`: plain)."""
  expected = expected_answer(example)
  return expected is not None and answer.strip() == expected


class Addition(base.TaskBuilder, skip_registration=True):
  """Multi-digit addition generated from a seed."""

  name = "addition"
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.1.0": "format, carry_chain, validation split, balanced carry chains"}
  DESCRIPTION = __doc__
  BUILDER_CONFIGS = [
      AdditionConfig(name="digits5", description="train/test 1-5 digits, longer 6-10"),
      AdditionConfig(
          name="digits10", train_digits=(1, 10), longer_digits=(11, 20),
          description="train/test 1-10 digits, longer 11-20",
      ),
      AdditionConfig(
          name="reversed3", train_digits=(1, 3), longer_digits=(4, 5), format="reversed",
          num_train=200_000, num_validation=2_000, num_test=2_000,
          description="reversed, zero-padded sums; 1-3 digits, longer 4-5 (the base gate)",
      ),
      AdditionConfig(
          name="loop_test", train_digits=(5, 6), longer_digits=(7, 8), operands="both",
          balance="carry_chain", num_validation=2_000, num_test=5_000,
          description="plain; both operands 5-6 digits; carry chains 0-6 equally often",
      ),
  ]
  SPLITS = {"train": "num_train", "validation": "num_validation", "test": "num_test",
            "test_longer": "num_test_longer"}

  def _extra_features(self) -> dict[str, Any]:
    return {"carry_chain": np.int32, "format": tfds.features.Text()}

  def _examples(self, split: str) -> Iterator[dict[str, Any]]:
    cfg = self.builder_config
    for field, valid in (("format", FORMATS), ("operands", OPERANDS), ("balance", BALANCES)):
      if getattr(cfg, field) not in valid:
        raise ValueError(f"addition: {field}={getattr(cfg, field)!r}; valid: {valid}")
    rng = base.split_rng(cfg.seed, split)
    digit_range = tuple(cfg.longer_digits if split == "test_longer" else cfg.train_digits)
    if not 1 <= digit_range[0] <= digit_range[1]:
      raise ValueError(f"addition: bad digit range {digit_range} (need 1 <= min <= max)")
    table = chain_table(digit_range, cfg.operands) if cfg.balance == "carry_chain" else None
    for _ in range(self._split_size(split)):
      if table is None:
        yield make_example(rng, digit_range, cfg.format, cfg.operands)
      else:
        yield make_balanced_example(rng, table, cfg.format, digit_range[1])
