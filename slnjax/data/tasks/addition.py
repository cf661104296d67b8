"""`addition`: multi-digit addition, e.g. prompt "123+4567=" -> target "4690".

difficulty = the number of digits of the longer operand. Splits: `train` and `test` draw the
digit count uniformly from `train_digits`; `test_longer` from `longer_digits` (extrapolation).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterator, Mapping

import numpy as np

from slnjax.data.tasks import base

_PROMPT_RE = re.compile(r"\s*(\d+)\+(\d+)=\s*")


@dataclasses.dataclass(eq=False)
class AdditionConfig(base.TaskConfig):
    """`train_digits`/`longer_digits`: inclusive (min, max) digit counts."""

    train_digits: tuple[int, int] = (1, 5)
    longer_digits: tuple[int, int] = (6, 10)
    num_test_longer: int = 1_000


def random_number(rng: np.random.Generator, digits: int) -> str:
    """A uniformly random number with exactly `digits` digits (0-9 for one digit)."""
    if digits == 1:
        return str(int(rng.integers(0, 10)))
    rest = rng.integers(0, 10, size=digits - 1)
    return str(int(rng.integers(1, 10))) + "".join(map(str, rest))


def make_example(rng: np.random.Generator, digit_range: tuple[int, int]) -> dict[str, Any]:
    """One example: the first operand has d digits, the second 1..d (order random)."""
    lo, hi = digit_range
    d = int(rng.integers(lo, hi + 1))
    a = random_number(rng, d)
    b = random_number(rng, int(rng.integers(1, d + 1)))
    if rng.integers(0, 2):
        a, b = b, a
    return {"prompt": f"{a}+{b}=", "target": str(int(a) + int(b)), "difficulty": d}


def verify(example: Mapping[str, Any], answer: str) -> bool:
    """True iff `answer` (stripped) is the sum of the prompt's operands in canonical decimal
    (no sign, no leading zeros)."""
    m = _PROMPT_RE.fullmatch(base.as_text(example["prompt"]))
    return m is not None and answer.strip() == str(int(m.group(1)) + int(m.group(2)))


class Addition(base.TaskBuilder, skip_registration=True):
    """Multi-digit addition generated from a seed."""

    name = "addition"
    DESCRIPTION = __doc__
    BUILDER_CONFIGS = [
        AdditionConfig(name="digits5", description="train/test 1-5 digits, longer 6-10"),
        AdditionConfig(
            name="digits10", train_digits=(1, 10), longer_digits=(11, 20),
            description="train/test 1-10 digits, longer 11-20",
        ),
    ]
    SPLITS = {"train": "num_train", "test": "num_test", "test_longer": "num_test_longer"}

    def _examples(self, split: str) -> Iterator[dict[str, Any]]:
        cfg = self.builder_config
        rng = base.split_rng(cfg.seed, split)
        digit_range = tuple(cfg.longer_digits if split == "test_longer" else cfg.train_digits)
        for _ in range(self._split_size(split)):
            yield make_example(rng, digit_range)
