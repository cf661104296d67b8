"""`parity`: the PonderNet parity protocol, as text.

A vector of `length` elements, `k` of them set to +1 or -1 at random positions, the rest 0;
the target is 1 if the number of +1 entries is odd, else 0. The prompt writes one character
per element ('+', '-', '0') and ends with '='; e.g. "0+-00+=" -> "0". difficulty = k.
Configs: `interpolation` (length 64, k in 1..64 for train and test) and `extrapolation`
(length 96, train k in 1..48, test k in 49..96).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterator, Mapping

import numpy as np

from slnjax.data.tasks import base

_PROMPT_RE = re.compile(r"\s*([+\-0]+)=\s*")


@dataclasses.dataclass(eq=False)
class ParityConfig(base.TaskConfig):
    """`train_nonzero`/`test_nonzero`: inclusive (min, max) number of non-zero elements."""

    length: int = 64
    train_nonzero: tuple[int, int] = (1, 64)
    test_nonzero: tuple[int, int] = (1, 64)


def make_example(rng: np.random.Generator, length: int, nonzero: tuple[int, int]) -> dict[str, Any]:
    """One vector with k ~ U[nonzero] non-zero entries, each +1 or -1 with probability 1/2."""
    k = int(rng.integers(nonzero[0], nonzero[1] + 1))
    chars = np.full(length, "0")
    positions = rng.choice(length, size=k, replace=False)
    chars[positions] = np.where(rng.integers(0, 2, size=k) == 1, "+", "-")
    prompt = "".join(chars) + "="
    return {"prompt": prompt, "target": str(prompt.count("+") % 2), "difficulty": k}


def verify(example: Mapping[str, Any], answer: str) -> bool:
    """True iff `answer` is '1' for an odd number of '+' in the prompt, '0' for an even one."""
    m = _PROMPT_RE.fullmatch(base.as_text(example["prompt"]))
    if m is None:
        return False
    return answer.strip() == str(m.group(1).count("+") % 2)


class Parity(base.TaskBuilder, skip_registration=True):
    """Parity of +-1/0 vectors generated from a seed."""

    name = "parity"
    DESCRIPTION = __doc__
    BUILDER_CONFIGS = [
        ParityConfig(name="interpolation", description="length 64, 1-64 non-zero"),
        ParityConfig(
            name="extrapolation", length=96, train_nonzero=(1, 48), test_nonzero=(49, 96),
            description="length 96, train 1-48 non-zero, test 49-96",
        ),
    ]
    SPLITS = {"train": "num_train", "test": "num_test"}

    def _examples(self, split: str) -> Iterator[dict[str, Any]]:
        cfg = self.builder_config
        rng = base.split_rng(cfg.seed, split)
        nonzero = tuple(cfg.train_nonzero if split == "train" else cfg.test_nonzero)
        if not 1 <= nonzero[0] <= nonzero[1] <= cfg.length:
            raise ValueError(f"parity: bad non-zero range {nonzero} for length {cfg.length}")
        for _ in range(self._split_size(split)):
            yield make_example(rng, cfg.length, nonzero)
