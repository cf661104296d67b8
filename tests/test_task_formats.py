"""Addition formats (plain / reversed), carry chains and the carry-balanced builder config;
parity's length / ones fields and its balanced config. Hand-checked records, brute-force
counts, and the balance of the histograms."""
import collections
import itertools

import numpy as np
import pytest

from slnjax.data import ensure_built, load_source, resolve_config
from slnjax.data.tasks import addition, carries, parity
from slnjax.data.tasks.base import as_text


def _records(task, split, data_dir, cfg):
  source = load_source(task, split, data_dir, cfg)
  return [source[i] for i in range(len(source))]


@pytest.mark.parametrize("a,b,chain", [
    (0, 0, 0), (123, 456, 0), (5, 5, 1), (19, 90, 1), (45, 55, 2), (18, 83, 2),
    (909, 191, 3), (999, 1, 3), (99999, 1, 5), (1909, 91, 3), (5050, 5050, 1),
    (595, 405, 3), (191, 9, 2),
])
def test_carry_chain_hand_checked(a, b, chain):
  assert carries.carry_chain(a, b) == chain == carries.carry_chain(b, a)


def test_chain_counts_match_brute_force():
  first = lambda d: 0 if d == 1 else 10 ** (d - 1)
  for da, db in [(1, 1), (2, 1), (1, 3), (2, 2), (3, 2)]:
    found = collections.Counter(carries.carry_chain(a, b)
                                for a in range(first(da), 10 ** da)
                                for b in range(first(db), 10 ** db))
    for chain in range(max(da, db) + 2):
      assert carries.count_with_chain(da, db, chain) == found.get(chain, 0), (da, db, chain)
    assert sum(found.values()) == carries.count_all(da, db)


def test_sample_with_chain_is_exact_and_uniform():
  rng = np.random.default_rng(0)
  for da, db, chain in [(3, 3, 3), (2, 3, 0), (3, 1, 2)]:
    for _ in range(200):
      a, b = carries.sample_with_chain(rng, da, db, chain)
      assert len(str(a)) == da and len(str(b)) == db and carries.carry_chain(a, b) == chain
  # 1-digit pairs with one carry: 45 of them, each drawn ~100 times in 4500.
  counts = collections.Counter(carries.sample_with_chain(rng, 1, 1, 1) for _ in range(4500))
  assert len(counts) == 45 and 50 < min(counts.values()) and max(counts.values()) < 160
  with pytest.raises(ValueError, match="no 2-digit"):
    carries.sample_with_chain(rng, 2, 2, 3)


def test_formats_hand_checked():
  rev = addition.format_example(12, 345, "reversed", 3)
  assert (rev["prompt"], rev["target"], rev["difficulty"], rev["carry_chain"]) == (
      "012+345=", "7530", 3, 0)
  assert addition.format_example(999, 1, "reversed", 4)["target"] == "00010"
  assert addition.format_example(999, 1, "reversed", 4)["prompt"] == "0999+0001="
  plain = addition.format_example(12, 345, "plain", 3)
  assert (plain["prompt"], plain["target"]) == ("12+345=", "357")
  assert addition.verify(rev, "7530") and addition.verify(rev, " 7530\n")
  for wrong in ("357", "753", "0357", "75300", "7531", ""):
    assert not addition.verify(rev, wrong), wrong
  assert addition.verify(plain, "357") and not addition.verify(plain, "7530")
  assert addition.verify({"prompt": b"5+7=", "format": b"reversed"}, "21")
  assert addition.verify({"prompt": "5+7="}, "12")  # no format field: plain


def test_reversed_builder_records(tmp_path):
  cfg = resolve_config("addition", "reversed3", name="tiny_rev", num_train=50,
                       num_validation=10, num_test=10, num_test_longer=10)
  ensure_built("addition", str(tmp_path), cfg)
  for split, width in [("train", 3), ("validation", 3), ("test", 3), ("test_longer", 5)]:
    for ex in _records("addition", split, str(tmp_path), cfg):
      a, b = as_text(ex["prompt"]).rstrip("=").split("+")
      assert len(a) == len(b) == width and as_text(ex["format"]) == "reversed"
      target = as_text(ex["target"])
      assert len(target) == width + 1 and int(target[::-1]) == int(a) + int(b)
      assert ex["carry_chain"] == carries.carry_chain(int(a), int(b))
      assert ex["difficulty"] == max(len(str(int(a))), len(str(int(b))))
      assert addition.verify(ex, target) and not addition.verify(ex, str(int(a) + int(b)))


def test_loop_test_config_is_balanced_over_carry_chains(tmp_path):
  cfg = resolve_config("addition", "loop_test", name="tiny_loop", num_train=700,
                       num_validation=10, num_test=10, num_test_longer=10)
  ensure_built("addition", str(tmp_path), cfg)
  exs = _records("addition", "train", str(tmp_path), cfg)
  hist = collections.Counter(int(ex["carry_chain"]) for ex in exs)
  assert sorted(hist) == list(range(7))
  assert all(60 <= n <= 140 for n in hist.values()), hist  # 100 each expected (s.d. ~9)
  for ex in exs:
    a, b = as_text(ex["prompt"]).rstrip("=").split("+")
    assert 5 <= len(a) <= 6 and 5 <= len(b) <= 6 and as_text(ex["format"]) == "plain"
    assert ex["carry_chain"] == carries.carry_chain(int(a), int(b))
    assert addition.verify(ex, as_text(ex["target"]))
  # Within a chain length the operand lengths follow the natural distribution: a 6-digit
  # chain needs a 6-digit operand, and chain 0 is likelier with two 5-digit operands.
  table = addition.chain_table((5, 6), "both")
  assert set(table[6]) == {(6, 5), (5, 6), (6, 6)} and abs(sum(table[0].values()) - 1) < 1e-12


def test_length_pairs_are_distributions():
  for operands in addition.OPERANDS:
    pairs = addition.length_pairs((1, 3), operands)
    assert abs(sum(pairs.values()) - 1) < 1e-12
  assert addition.length_pairs((1, 2), "one") == pytest.approx(
      {(1, 1): 0.5, (2, 1): 0.125, (1, 2): 0.125, (2, 2): 0.25})


def test_bad_addition_fields_are_refused(tmp_path):
  cfg = resolve_config("addition", None, name="bad_fmt", format="backwards", num_train=4)
  with pytest.raises(ValueError, match="format='backwards'"):
    ensure_built("addition", str(tmp_path), cfg)


def test_parity_fields_and_balance(tmp_path):
  cfg = resolve_config("parity", "loop_test", name="tiny_par", num_train=660, num_test=10)
  ensure_built("parity", str(tmp_path), cfg)
  exs = _records("parity", "train", str(tmp_path), cfg)
  hist = collections.Counter(int(ex["ones"]) for ex in exs)
  assert sorted(hist) == list(range(17))
  assert all(15 <= n <= 65 for n in hist.values()), hist  # ~39 each expected (s.d. ~6)
  for ex in exs:
    prompt = as_text(ex["prompt"])
    assert ex["length"] == len(prompt) - 1 and 16 <= ex["length"] <= 32
    assert ex["ones"] == prompt.count("+") and ex["difficulty"] == ex["length"] - prompt.count("0")
    assert as_text(ex["target"]) == str(ex["ones"] % 2) and parity.verify(ex, str(ex["ones"] % 2))
  rec = parity.record("0+-00+=", 3)
  assert (rec["target"], rec["ones"], rec["length"], rec["difficulty"]) == ("0", 2, 6, 3)
  table = parity.ones_table((2, 3), (1, 3))
  assert set(table) == {0, 1, 2, 3} and set(table[3]) == {(3, 3)}
  for n, k in itertools.chain.from_iterable(t.keys() for t in table.values()):
    assert 1 <= k <= n
