"""Carry chains of decimal addition, and sampling operands with a given carry-chain length.

The carry-chain length of a + b is the longest run of consecutive digit positions whose
column (a_i + b_i + carry in) reaches 10, counting the carry out of the top digit: 45 + 55
carries at positions 0 and 1 (chain 2); 909 + 191 carries at 0, 1, 2 (chain 3); 19 + 90
carries only at position 1 (chain 1). It is what a left-to-right (most-significant first)
writer must resolve before its first digit.

`sample_with_chain` draws (a, b) uniformly among the pairs with given digit counts whose
chain is exactly L: a dynamic programme counts, for each position, carry in and current run,
the completions whose longest run is exactly L; the carry pattern is drawn position by
position in proportion to those counts, then each column's digits uniformly among the pairs
that give its (carry in, carry out).
"""
from __future__ import annotations

import functools

import numpy as np


def carry_chain(a: int, b: int) -> int:
  """The longest run of consecutive carries in the decimal sum a + b (a, b >= 0)."""
  if a < 0 or b < 0:
    raise ValueError(f"carry_chain needs non-negative operands, got {a}, {b}")
  best = run = carry = 0
  while a or b or carry:
    carry = int(a % 10 + b % 10 + carry >= 10)
    run = run + 1 if carry else 0
    best = max(best, run)
    a, b = a // 10, b // 10
  return best


def digit_choices(num_digits: int, position: int) -> range:
  """The digits a number with exactly `num_digits` digits may have at `position` (0 = units):
  no leading zero, except for the one-digit numbers 0-9; 0 beyond its length."""
  if position >= num_digits:
    return range(0, 1)
  if position == num_digits - 1 and num_digits > 1:
    return range(1, 10)
  return range(0, 10)


@functools.lru_cache(maxsize=None)
def _column_pairs(da: int, db: int, position: int) -> dict[tuple[int, int], tuple]:
  """(carry in, carry out) -> the digit pairs (x, y) of this column that produce it."""
  out = {(cin, cout): [] for cin in (0, 1) for cout in (0, 1)}
  for x in digit_choices(da, position):
    for y in digit_choices(db, position):
      for cin in (0, 1):
        out[(cin, int(x + y + cin >= 10))].append((x, y))
  return {k: tuple(v) for k, v in out.items()}


@functools.lru_cache(maxsize=None)
def _completions(da: int, db: int, chain: int, position: int, cin: int, run: int,
                 hit: bool) -> int:
  """Digit choices for positions >= `position` whose runs stay <= `chain` and reach it
  (unless `hit` already). A carry out of the top column ends the number (its run counts)."""
  width = max(da, db)
  if position == width:
    return int(hit)
  total = 0
  for cout in (0, 1):
    n = len(_column_pairs(da, db, position)[(cin, cout)])
    new_run = run + 1 if cout else 0
    if n == 0 or new_run > chain:
      continue
    total += n * _completions(da, db, chain, position + 1, cout, new_run,
                              hit or new_run == chain)
  return total


def count_with_chain(da: int, db: int, chain: int) -> int:
  """How many pairs (a with da digits, b with db digits) have carry-chain length `chain`."""
  if chain < 0:
    return 0
  return _completions(da, db, chain, 0, 0, 0, chain == 0)


def count_all(da: int, db: int) -> int:
  """How many pairs (a with da digits, b with db digits) there are."""
  size = lambda d: 10 if d == 1 else 9 * 10 ** (d - 1)
  return size(da) * size(db)


def sample_with_chain(rng: np.random.Generator, da: int, db: int, chain: int) -> tuple[int, int]:
  """(a, b), uniform among the pairs with da and db digits whose carry chain is `chain`."""
  if count_with_chain(da, db, chain) == 0:
    raise ValueError(f"no {da}-digit + {db}-digit sum has a carry chain of {chain}")
  a = b = cin = run = 0
  hit = chain == 0
  for position in range(max(da, db)):
    pairs = _column_pairs(da, db, position)
    weights = []
    for cout in (0, 1):
      new_run = run + 1 if cout else 0
      ok = new_run <= chain and pairs[(cin, cout)]
      weights.append(len(pairs[(cin, cout)]) * _completions(
          da, db, chain, position + 1, cout, new_run, hit or new_run == chain) if ok else 0)
    cout = int(rng.random() * (weights[0] + weights[1]) >= weights[0])  # floats: any size
    x, y = pairs[(cin, cout)][int(rng.integers(0, len(pairs[(cin, cout)])))]
    a, b = a + x * 10 ** position, b + y * 10 ** position
    run = run + 1 if cout else 0
    hit, cin = hit or run == chain, cout
  return a, b
