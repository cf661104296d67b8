"""The dialogue loop's configuration: ``LoopConfig`` (turn length, IDL limit, sampling,
stopping rules, truncated-BPTT depth and reverse scheme), ``DialogueSpec`` (who talks) and
the halting codes."""
from __future__ import annotations

import dataclasses

from slnjax import soft_tokens
from slnjax.lobes.config import LobeConfig

HALT_NONE, HALT_LIMIT, HALT_THRESHOLD, HALT_AGREEMENT, HALT_STOP = 0, 1, 2, 3, 4
HALT_NAMES = {0: "running", 1: "idl_limit", 2: "threshold", 3: "agreement", 4: "stop_token"}


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  turn_len: int = 8  # m: tokens per turn
  max_turns: int = 4  # the IDL limit
  mode: str = "soft"  # soft_tokens.MODES
  temperature: float = 1.0  # sampling temperature (ids); tau is the relaxation temperature
  threshold: float | None = 0.5  # halt when the critic's score >= threshold
  stop_on_agreement: bool = False  # tall: both lobes wrote the same turn; else: a fixed point
  stop_token: int | None = None  # halt after a turn in which the left lobe wrote this id
  feed_score: bool = True  # the left lobe reads the score (needs LobeConfig.score_input)
  bptt_depth: int | None = None  # None: full BPTT; k: the last k turns; 0: no gradient
  bptt_impl: str = "appendonly"  # "appendonly" | "scan" | "scan_remat"

  def __post_init__(self):
    soft_tokens.check_mode(self.mode)
    if self.turn_len < 1 or self.max_turns < 1:
      raise ValueError("turn_len and max_turns must be >= 1.")
    if self.bptt_depth is not None and self.bptt_depth < 0:
      raise ValueError(f"bptt_depth={self.bptt_depth}: use None (full), 0 (none) or k > 0.")
    if self.bptt_impl not in ("appendonly", "scan", "scan_remat"):
      raise ValueError(f"bptt_impl={self.bptt_impl!r}; expected appendonly, scan, scan_remat.")


@dataclasses.dataclass(frozen=True)
class DialogueSpec:
  """Who talks: a left lobe, an optional right lobe, and whether the right lobe writes."""
  left: LobeConfig
  right: LobeConfig | None = None
  tall: bool = False  # True: the right lobe writes turns too; False: lateralized (scores)
  loop: LoopConfig = LoopConfig()

  def __post_init__(self):
    r = self.right
    if r is None and self.tall:
      raise ValueError("A tall SLN needs a right lobe.")
    if r is not None and not self.tall and not r.score_head:
      raise ValueError("A lateralized right lobe must have score_head=True.")
    if self.tall and not r.lm_head:
      raise ValueError("In a tall SLN the right lobe writes turns: it needs lm_head=True.")
    if not self.left.lm_head:
      raise ValueError("The left lobe writes turns: it needs lm_head=True.")

  @property
  def scored(self) -> bool:
    return self.right is not None and self.right.score_head

  @property
  def feeds_score(self) -> bool:
    return self.scored and self.loop.feed_score and self.left.score_input

  def cache_lengths(self, prompt_len: int, prefix_left: int = 0,
                    prefix_right: int = 0) -> tuple[int, int]:
    """(left, right) cache lengths; a lobe's memory prefix (memory/dialogue.py) comes first."""
    m, n = self.loop.turn_len, self.loop.max_turns
    per_turn = m + (m if self.tall else 0) + (1 if self.feeds_score else 0)
    right = prompt_len + (2 * m * n if self.tall else m)
    return prefix_left + prompt_len + n * per_turn, prefix_right + right
