"""Synthetic task builders: determinism, difficulty ranges, verifiers (gold accepted, corrupted
answers rejected), and task-specific correctness (ties in mazes, all optimal tic-tac-toe moves)."""
import hashlib
import itertools

import numpy as np
import pytest

from slnjax.data import ensure_built, get_task, load_source, resolve_config
from slnjax.data.tasks import addition, facts, maze, parity, tictactoe
from slnjax.data.tasks.base import as_text

TINY = {
    "addition": dict(num_train=60, num_validation=20, num_test=20, num_test_longer=20),
    "parity": dict(num_train=60, num_test=20),
    "maze": dict(num_train=40, num_test=20),
    "tictactoe": dict(num_train=80, num_test=40),
    "facts": dict(num_train=60, num_test=30, num_people=30),
}


def tiny(task, base_config=None, **extra):
  key = repr((base_config, sorted(extra.items()))).encode()
  name = "tiny_" + hashlib.md5(key).hexdigest()[:8]
  return resolve_config(task, base_config, name=name, **{**TINY[task], **extra})


def records(task, split, data_dir, config):
  source = load_source(task, split, data_dir, config)
  return [source[i] for i in range(len(source))]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("data")
  for task in TINY:
    ensure_built(task, str(d), tiny(task))
  return str(d)


@pytest.mark.parametrize("task", list(TINY))
def test_same_seed_same_examples_other_seed_differs(task, data_dir, tmp_path):
  ensure_built(task, str(tmp_path), tiny(task))
  ensure_built(task, str(tmp_path), tiny(task, seed=1))
  for split in ("train", "test"):
    a = records(task, split, data_dir, tiny(task))
    assert a == records(task, split, str(tmp_path), tiny(task))
    assert a != records(task, split, str(tmp_path), tiny(task, seed=1))


@pytest.mark.parametrize("task", list(TINY))
def test_verifier_accepts_gold_rejects_corrupted(task, data_dir):
  verify = get_task(task).verify
  for split in ("train", "test"):
    for ex in records(task, split, data_dir, tiny(task)):
      gold = as_text(ex["target"])
      assert verify(ex, gold), (ex, gold)
      assert verify(ex, f" {gold}\n")  # surrounding whitespace is ignored
      assert not verify(ex, "")
      assert not verify(ex, gold + gold[-1] if task != "facts" else gold + "x")


def test_addition_difficulty_ranges_and_corruption(data_dir):
  cfg = tiny("addition")
  for split, (lo, hi) in [("train", (1, 5)), ("test", (1, 5)), ("test_longer", (6, 10))]:
    exs = records("addition", split, data_dir, cfg)
    assert len(exs) == TINY["addition"][f"num_{split}"]
    d = np.array([ex["difficulty"] for ex in exs])
    assert d.min() >= lo and d.max() <= hi
    for ex in exs:
      a, b = as_text(ex["prompt"]).rstrip("=").split("+")
      assert max(len(a), len(b)) == ex["difficulty"]
      assert not addition.verify(ex, str(int(as_text(ex["target"])) + 1))
  assert not addition.verify({"prompt": "12+3="}, "1 5")
  assert not addition.verify({"prompt": "garbage"}, "15")


@pytest.mark.parametrize("base_config,length,train_range,test_range", [
    ("interpolation", 64, (1, 64), (1, 64)),
    ("extrapolation", 96, (1, 48), (49, 96)),
])
def test_parity_protocol(base_config, length, train_range, test_range, tmp_path):
  cfg = tiny("parity", base_config)
  ensure_built("parity", str(tmp_path), cfg)
  for split, (lo, hi) in [("train", train_range), ("test", test_range)]:
    for ex in records("parity", split, str(tmp_path), cfg):
      prompt = as_text(ex["prompt"])
      assert len(prompt) == length + 1 and prompt.endswith("=")
      assert lo <= ex["difficulty"] <= hi
      assert ex["difficulty"] == length - prompt.count("0")
      flipped = "1" if as_text(ex["target"]) == "0" else "0"
      assert not parity.verify(ex, flipped)


def test_maze_difficulty_is_shortest_path_and_ties_are_accepted(data_dir):
  for ex in records("maze", "train", data_dir, tiny("maze")):
    assert ex["difficulty"] == len(as_text(ex["target"])) >= 1
  open_grid = {"prompt": "S..\n...\n..G\n"}
  for order in set(itertools.permutations("DDRR")):
    assert maze.verify(open_grid, "".join(order))
  assert not maze.verify(open_grid, "DDRRL")  # too long
  assert not maze.verify(open_grid, "DDDR")   # leaves the grid
  walled = {"prompt": "S#.\n...\n..G\n"}
  assert maze.verify(walled, "DRDR") and maze.verify(walled, "DDRR")
  assert not maze.verify(walled, "RDDR")  # walks into the wall
  assert not maze.verify({"prompt": "S#G\n"}, "RR")  # unreachable goal


def test_maze_path_length_config(tmp_path):
  cfg = tiny("maze", path_len=(4, 6))
  ensure_built("maze", str(tmp_path), cfg)
  d = [ex["difficulty"] for ex in records("maze", "test", str(tmp_path), cfg)]
  assert min(d) >= 4 and max(d) <= 6


def test_tictactoe_accepts_every_optimal_move_only():
  two_wins = {"prompt": "XX.\nOO.\nX.O\nX to move\n"}  # only 3 wins; 6 merely blocks
  values = tictactoe.move_values("XX.OO.X.O", "X")
  optimal = {i + 1 for i, v in values.items() if v == max(values.values())}
  assert optimal == {3}
  assert tictactoe.verify(two_wins, "3") and not tictactoe.verify(two_wins, "6")
  assert not tictactoe.verify(two_wins, "1")  # occupied
  double = {"prompt": "XX.\nXO.\n.OO\nX to move\n"}  # wins at 3 and 7; else O wins
  assert tictactoe.verify(double, "3") and tictactoe.verify(double, "7")
  assert not tictactoe.verify(double, "6") and not tictactoe.verify(double, "10")
  # the empty board: every move draws, so every move is optimal
  empty = {"prompt": "...\n...\n...\nX to move\n"}
  assert all(tictactoe.verify(empty, str(i)) for i in range(1, 10))


def test_tictactoe_splits_disjoint_and_difficulty(data_dir):
  cfg = tiny("tictactoe")
  train = records("tictactoe", "train", data_dir, cfg)
  test = records("tictactoe", "test", data_dir, cfg)
  assert not {ex["prompt"] for ex in train} & {ex["prompt"] for ex in test}
  for ex in train + test:
    board = as_text(ex["prompt"]).split("\n")[:3]
    assert ex["difficulty"] == "".join(board).count(".")
    values = tictactoe.move_values("".join(board), as_text(ex["prompt"]).split("\n")[3][0])
    for cell, v in values.items():
      assert tictactoe.verify(ex, str(cell + 1)) == (v == max(values.values()))
  assert len(tictactoe.reachable_positions()) == 4520


def test_facts_relevant_facts_answer_the_question(data_dir):
  cfg = tiny("facts")
  train = records("facts", "train", data_dir, cfg)
  test = records("facts", "test", data_dir, cfg)
  assert not {ex["question"] for ex in train} & {ex["question"] for ex in test}
  assert {ex["difficulty"] for ex in train} == {1, 2}
  for ex in train:
    relevant = [as_text(f) for f in ex["relevant_facts"]]
    distractors = [as_text(f) for f in ex["distractor_facts"]]
    assert len(relevant) == ex["difficulty"]
    assert len(distractors) == cfg.num_distractors
    assert not set(relevant) & set(distractors)
    assert as_text(ex["target"]) in relevant[-1]
    prompt = as_text(ex["prompt"])
    assert all(f in prompt for f in relevant + distractors)
    assert prompt.endswith(f"Q: {as_text(ex['question'])}\n")
    assert facts.verify(ex, as_text(ex["target"]).upper() + ".")


def test_facts_closed_book_prompt_is_the_question(tmp_path):
  cfg = tiny("facts", "closed_book")
  ensure_built("facts", str(tmp_path), cfg)
  for ex in records("facts", "train", str(tmp_path), cfg):
    assert as_text(ex["prompt"]) == f"Q: {as_text(ex['question'])}\n"
    assert len(ex["relevant_facts"]) == ex["difficulty"]
