"""`parity`: the PonderNet parity protocol, as text.

A vector of n elements, `k` of them set to +1 or -1 at random positions, the rest 0;
the target is 1 if the number of +1 entries is odd, else 0. The prompt writes one character
per element ('+', '-', '0') and ends with '='; e.g. "0+-00+=" -> "0". difficulty = k; each
record also stores `length` (n) and `ones` (the number of +1 entries, what the answer counts).
n = `length`, or with `min_length` > 0, n ~ U[min_length, length] (k then at most n).
`balance="ones"`: every number of ones 0..max is equally frequent, each drawn from the
natural distribution (n, k uniform, signs fair) conditioned on it.
Configs: `interpolation` (length 64, k in 1..64 for train and test), `extrapolation`
(length 96, train k in 1..48, test k in 49..96) and `loop_test` (n in 16..32, k in 1..16,
balanced over the number of ones; as k <= n always, n stays uniform given the ones).
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds

from slnjax.data.tasks import base

_PROMPT_RE = re.compile(r"\s*([+\-0]+)=\s*")
BALANCES = ("none", "ones")


@dataclasses.dataclass(eq=False)
class ParityConfig(base.TaskConfig):
  """`train_nonzero`/`test_nonzero`: inclusive (min, max) number of non-zero elements;
  `min_length`, `balance`: see the module docstring."""

  length: int = 64
  train_nonzero: tuple[int, int] = (1, 64)
  test_nonzero: tuple[int, int] = (1, 64)
  min_length: int = 0
  balance: str = "none"


def vector(rng: np.random.Generator, length: int, nonzero: int, ones: int) -> str:
  """A prompt: `nonzero` non-zero entries at random positions, `ones` of them +1."""
  chars = np.full(length, "0")
  positions = rng.choice(length, size=nonzero, replace=False)
  chars[positions[:ones]] = "+"
  chars[positions[ones:]] = "-"
  return "".join(chars) + "="


def record(prompt: str, nonzero: int) -> dict[str, Any]:
  ones = prompt.count("+")
  return {"prompt": prompt, "target": str(ones % 2), "difficulty": nonzero,
          "length": len(prompt) - 1, "ones": ones}


def make_example(rng: np.random.Generator, length: int, nonzero: tuple[int, int]) -> dict[str, Any]:
  """One vector with k ~ U[nonzero] non-zero entries, each +1 or -1 with probability 1/2."""
  k = int(rng.integers(nonzero[0], nonzero[1] + 1))
  chars = np.full(length, "0")
  positions = rng.choice(length, size=k, replace=False)
  chars[positions] = np.where(rng.integers(0, 2, size=k) == 1, "+", "-")
  return record("".join(chars) + "=", k)


def shapes(lengths: tuple[int, int], nonzero: tuple[int, int]) -> dict[tuple[int, int], float]:
  """(n, k) -> probability: n ~ U[lengths], then k ~ U[nonzero[0], min(nonzero[1], n)]."""
  out = {}
  for n in range(lengths[0], lengths[1] + 1):
    hi = min(nonzero[1], n)
    for k in range(nonzero[0], hi + 1):
      out[(n, k)] = 1.0 / ((lengths[1] - lengths[0] + 1) * (hi - nonzero[0] + 1))
  return out


def ones_table(lengths: tuple[int, int], nonzero: tuple[int, int]) -> dict[int, dict]:
  """ones -> {(n, k): P(n, k | ones)} for every reachable number of ones."""
  table: dict[int, dict] = {}
  for (n, k), p in shapes(lengths, nonzero).items():
    for ones in range(k + 1):
      table.setdefault(ones, {})[(n, k)] = p * math.comb(k, ones) / 2.0 ** k
  return {o: {s: w / sum(t.values()) for s, w in t.items()} for o, t in sorted(table.items())}


def make_balanced_example(rng: np.random.Generator, table: dict[int, dict]) -> dict[str, Any]:
  """One vector whose number of +1 entries is uniform over the table's values."""
  ones = list(table)[int(rng.integers(0, len(table)))]
  options = list(table[ones])
  n, k = options[int(rng.choice(len(options), p=np.array([table[ones][s] for s in options])))]
  return record(vector(rng, n, k, ones), k)


def verify(example: Mapping[str, Any], answer: str) -> bool:
  """True iff `answer` is '1' for an odd number of '+' in the prompt, '0' for an even one."""
  m = _PROMPT_RE.fullmatch(base.as_text(example["prompt"]))
  if m is None:
    return False
  return answer.strip() == str(m.group(1).count("+") % 2)


class Parity(base.TaskBuilder, skip_registration=True):
  """Parity of +-1/0 vectors generated from a seed."""

  name = "parity"
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.1.0": "length and ones fields, min_length, balanced ones"}
  DESCRIPTION = __doc__
  BUILDER_CONFIGS = [
      ParityConfig(name="interpolation", description="length 64, 1-64 non-zero"),
      ParityConfig(
          name="extrapolation", length=96, train_nonzero=(1, 48), test_nonzero=(49, 96),
          description="length 96, train 1-48 non-zero, test 49-96",
      ),
      ParityConfig(
          name="loop_test", length=32, min_length=16, train_nonzero=(1, 16),
          test_nonzero=(1, 16), balance="ones", num_test=5_000,
          description="length 16-32, 1-16 non-zero, numbers of ones 0-16 equally often",
      ),
  ]
  SPLITS = {"train": "num_train", "test": "num_test"}

  def _extra_features(self) -> dict[str, Any]:
    return {"length": np.int32, "ones": np.int32}

  def _examples(self, split: str) -> Iterator[dict[str, Any]]:
    cfg = self.builder_config
    rng = base.split_rng(cfg.seed, split)
    nonzero = tuple(cfg.train_nonzero if split == "train" else cfg.test_nonzero)
    shortest = cfg.min_length or cfg.length
    if not 1 <= nonzero[0] <= nonzero[1] <= cfg.length or not 1 <= shortest <= cfg.length:
      raise ValueError(f"parity: bad non-zero range {nonzero} or lengths "
                       f"{shortest}..{cfg.length}")
    if nonzero[0] > shortest:
      raise ValueError(f"parity: min_length={shortest} cannot hold {nonzero[0]} non-zero "
                       f"entries; raise min_length or lower the non-zero range")
    if cfg.balance not in BALANCES:
      raise ValueError(f"parity: balance={cfg.balance!r}; valid: {BALANCES}")
    table = None
    if cfg.balance == "ones":
      table = ones_table((shortest, cfg.length), nonzero)
    for _ in range(self._split_size(split)):
      if table is not None:
        yield make_balanced_example(rng, table)
      elif cfg.min_length:
        n = int(rng.integers(shortest, cfg.length + 1))
        yield make_example(rng, n, (nonzero[0], min(nonzero[1], n)))
      else:
        yield make_example(rng, cfg.length, nonzero)
