"""`maze`: shortest paths in grid worlds with walls.

The prompt is the grid, one row per line ('#' wall, '.' free, 'S' start, 'G' goal) followed
by a newline; the target is a shortest action sequence over U/D/L/R (e.g. "RRDL").
difficulty = the shortest-path length. Leaving the grid or entering a wall is invalid; the
verifier accepts any valid path that reaches G in the shortest number of moves.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Any, Iterator, Mapping

import numpy as np

from slnjax.data.tasks import base

MOVES = {"U": (-1, 0), "D": (1, 0), "L": (0, -1), "R": (0, 1)}


@dataclasses.dataclass(eq=False)
class MazeConfig(base.TaskConfig):
  """Grid size, wall probability, and the accepted (min, max) shortest-path length."""

  height: int = 7
  width: int = 7
  wall_prob: float = 0.3
  path_len: tuple[int, int] = (1, 1_000)


def shortest_path(grid: list[str]) -> str | None:
  """A shortest S->G action string (BFS, moves tried in U, D, L, R order); None if unreachable."""
  cells = {(r, c): ch for r, row in enumerate(grid) for c, ch in enumerate(row)}
  start = next(p for p, ch in cells.items() if ch == "S")
  parent: dict[tuple[int, int], tuple[tuple[int, int], str] | None] = {start: None}
  queue = collections.deque([start])
  while queue:
    pos = queue.popleft()
    if cells[pos] == "G":
      path = []
      while parent[pos] is not None:
        pos, move = parent[pos]
        path.append(move)
      return "".join(reversed(path))
    for move, (dr, dc) in MOVES.items():
      nxt = (pos[0] + dr, pos[1] + dc)
      if cells.get(nxt, "#") != "#" and nxt not in parent:
        parent[nxt] = (pos, move)
        queue.append(nxt)
  return None


def make_example(rng: np.random.Generator, cfg: MazeConfig) -> dict[str, Any]:
  """Sample grids until S and G are connected with a path length inside `cfg.path_len`."""
  lo, hi = cfg.path_len
  while True:
    walls = rng.random((cfg.height, cfg.width)) < cfg.wall_prob
    free = np.flatnonzero(~walls)
    if free.size < 2:
      continue
    s, g = rng.choice(free, size=2, replace=False)
    chars = np.where(walls, "#", ".")
    chars.flat[s], chars.flat[g] = "S", "G"
    grid = ["".join(row) for row in chars]
    path = shortest_path(grid)
    if path is not None and lo <= len(path) <= hi:
      return {"prompt": "\n".join(grid) + "\n", "target": path, "difficulty": len(path)}


def parse_grid(prompt: str) -> list[str] | None:
  """The grid rows of a prompt, or None if it is not a well-formed maze."""
  rows = prompt.strip().split("\n")
  text = "".join(rows)
  if not rows or len({len(r) for r in rows}) != 1 or set(text) - set("#.SG"):
    return None
  if text.count("S") != 1 or text.count("G") != 1:
    return None
  return rows


def verify(example: Mapping[str, Any], answer: str) -> bool:
  """True iff simulating `answer` from S stays on free cells and ends on G in the fewest moves."""
  grid = parse_grid(base.as_text(example["prompt"]))
  if grid is None:
    return False
  best = shortest_path(grid)
  moves = answer.strip()
  if best is None or len(moves) != len(best) or set(moves) - set(MOVES):
    return False
  r, c = next((r, row.index("S")) for r, row in enumerate(grid) if "S" in row)
  for move in moves:
    r, c = r + MOVES[move][0], c + MOVES[move][1]
    if not (0 <= r < len(grid) and 0 <= c < len(grid[0])) or grid[r][c] == "#":
      return False
  return grid[r][c] == "G"


class Maze(base.TaskBuilder, skip_registration=True):
  """Grid mazes with walls generated from a seed."""

  name = "maze"
  DESCRIPTION = __doc__
  BUILDER_CONFIGS = [
      MazeConfig(name="7x7", description="7x7 grids, 30% walls"),
      MazeConfig(name="12x12", height=12, width=12, description="12x12 grids, 30% walls"),
  ]
  SPLITS = {"train": "num_train", "test": "num_test"}

  def _examples(self, split: str) -> Iterator[dict[str, Any]]:
    cfg = self.builder_config
    rng = base.split_rng(cfg.seed, split)
    for _ in range(self._split_size(split)):
      yield make_example(rng, cfg)
