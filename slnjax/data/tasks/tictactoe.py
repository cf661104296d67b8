"""`tictactoe`: pick a best move by exact minimax.

The prompt is the board (3 lines of 'X', 'O', '.') and the side to move ("X to move\n");
the target is one optimal move as a cell number 1-9 in reading order. Minimax values are
win/draw/loss only, so every move that keeps the best outcome is optimal and accepted.
difficulty = the number of empty cells. All reachable non-terminal positions (X moves first)
are enumerated and split disjointly between `train` and `test` by a seeded shuffle.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Iterator, Mapping

from slnjax.data.tasks import base

LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
_PROMPT_RE = re.compile(r"\s*([XO.]{3})\n([XO.]{3})\n([XO.]{3})\n([XO]) to move\s*")


@dataclasses.dataclass(eq=False)
class TicTacToeConfig(base.TaskConfig):
  """`test_fraction` of all positions go to `test`; counts are capped by what exists."""

  num_train: int = 100_000
  num_test: int = 100_000
  test_fraction: float = 0.2


def winner(board: str) -> str | None:
  """'X' or 'O' if that side has three in a row, else None."""
  for a, b, c in LINES:
    if board[a] != "." and board[a] == board[b] == board[c]:
      return board[a]
  return None


@functools.lru_cache(maxsize=None)
def value(board: str, player: str) -> int:
  """Game value for `player` to move: +1 win, 0 draw, -1 loss (exact minimax)."""
  if winner(board) is not None:
    return -1  # the previous player just won
  moves = [i for i, ch in enumerate(board) if ch == "."]
  if not moves:
    return 0
  other = "O" if player == "X" else "X"
  return max(-value(board[:i] + player + board[i + 1:], other) for i in moves)


def move_values(board: str, player: str) -> dict[int, int]:
  """Cell index (0-8) -> minimax value for `player` of playing there."""
  other = "O" if player == "X" else "X"
  return {
      i: -value(board[:i] + player + board[i + 1:], other)
      for i, ch in enumerate(board) if ch == "."
  }


def reachable_positions() -> list[tuple[str, str]]:
  """All (board, side to move) reachable from the empty board that are not over, sorted."""
  seen: set[tuple[str, str]] = set()
  stack = [("." * 9, "X")]
  while stack:
    board, player = stack.pop()
    if (board, player) in seen or winner(board) or "." not in board:
      continue
    seen.add((board, player))
    other = "O" if player == "X" else "X"
    stack.extend((board[:i] + player + board[i + 1:], other)
                 for i, ch in enumerate(board) if ch == ".")
  return sorted(seen)


def make_example(board: str, player: str) -> dict[str, Any]:
  """The example for one position; the gold move is the lowest-numbered optimal cell."""
  values = move_values(board, player)
  best = max(values.values())
  move = min(i for i, v in values.items() if v == best)
  prompt = "\n".join(board[r:r + 3] for r in (0, 3, 6)) + f"\n{player} to move\n"
  return {"prompt": prompt, "target": str(move + 1), "difficulty": board.count(".")}


def verify(example: Mapping[str, Any], answer: str) -> bool:
  """True iff `answer` names an empty cell (1-9) whose minimax value is the best available."""
  m = _PROMPT_RE.fullmatch(base.as_text(example["prompt"]))
  answer = answer.strip()
  if m is None or answer not in {str(i) for i in range(1, 10)}:
    return False
  board, player = "".join(m.groups()[:3]), m.group(4)
  values = move_values(board, player)
  cell = int(answer) - 1
  return cell in values and values[cell] == max(values.values())


class TicTacToe(base.TaskBuilder, skip_registration=True):
  """Tic-tac-toe positions with minimax-optimal moves."""

  name = "tictactoe"
  DESCRIPTION = __doc__
  BUILDER_CONFIGS = [TicTacToeConfig(name="all", description="all reachable positions, 80/20")]
  SPLITS = {"train": "num_train", "test": "num_test"}

  def _examples(self, split: str) -> Iterator[dict[str, Any]]:
    cfg = self.builder_config
    positions = reachable_positions()
    order = base.split_rng(cfg.seed, "partition").permutation(len(positions))
    n_test = int(round(cfg.test_fraction * len(positions)))
    chosen = order[:n_test] if split == "test" else order[n_test:]
    for i in chosen[: self._split_size(split)]:
      yield make_example(*positions[i])
