"""Evaluation of a dialogue SLN that reads a memory bank (slnjax/evaluate_memory.py): the
eval split is read with banks, the selection is deterministic and never picks a padded slot,
precision / recall are reported (overall, per difficulty) and shown in the transcripts, and
train.train evaluates with memory."""
import os
import tempfile

import jax
import numpy as np
import pytest

from slnjax import config as cfg, data, evaluate, parallel, sln, train
from experiments import common
from slnjax import build, finalize

DATA_DIR = os.path.join(tempfile.gettempdir(), "slnjax_test_data")
K = 2


def _config(mode="gumbel_st", **kw):
  # 3 distractors + 1-2 relevant facts in 8 slots: every bank has padded slots. 6 test
  # records in batches of 4: the second batch is padded with 2 filler rows.
  return common.experiment(
      "lateralized", "bptt", smoke=True, prompt_len=72,
      task=dict(name="facts", config="closed_book", data_dir=DATA_DIR,
                overrides=dict(name="evalmem_smoke", num_people=20, num_train=32, num_test=6,
                               num_distractors=3),
                bank=dict(capacity=8, item_len=72)),
      model=dict(loop=dict(turn_len=8, max_turns=2, mode="soft"),
                 memory=dict(lobes=("left", "right"), mode=mode, key_dim=8, buckets=64,
                             hidden=8, heads=2, k=K)),
      eval=dict(num_batches=-1, transcripts=6), **kw)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  c = finalize.finalize(_config())
  model = build.build_model(c)
  params = sln.init(model, jax.random.key(0))
  _, source = train.load_sources(c)
  ev = evaluate.Evaluator(c, model, parallel.make_mesh(), parallel.rules_from_config(None),
                          data.ByteTokenizer(), source, str(tmp_path_factory.mktemp("evalmem")))
  return c, ev, params


def test_eval_reports_precision_and_recall_of_the_selection(setup):
  _, ev, params = setup
  m, text = ev(params, 1, 1.0)
  assert m["examples"] == 6
  # The numbers are the means over the real rows of what the selection picked.
  prec, rec, dif = [], [], []
  for host, glob in ev.results(params, 1, 1.0):
    for b in np.nonzero(glob["valid"])[0]:
      pick = host["memory_index_BJ"][b][host["memory_valid_BJ"][b]]
      rel = glob["memory_relevant"][b].astype(bool)
      prec.append(rel[pick].mean())
      rec.append(rel[pick].sum() / rel.sum())
      dif.append(glob["difficulty"][b])
  prec, rec, dif = map(np.asarray, (prec, rec, dif))
  np.testing.assert_allclose(m["memory_precision"], prec.mean(), atol=1e-6)
  np.testing.assert_allclose(m["memory_recall"], rec.mean(), atol=1e-6)
  assert set(np.unique(dif)) == {1, 2}  # both difficulties are in the split
  for d in (1, 2):
    np.testing.assert_allclose(m[f"memory_precision/d{d}"], prec[dif == d].mean(), atol=1e-6)
    np.testing.assert_allclose(m[f"memory_recall/d{d}"], rec[dif == d].mean(), atol=1e-6)
  for k, v in m.items():
    if k.startswith("memory_"):
      assert 0.0 <= v <= 1.0, (k, v)
  for k in ("acc_turn1", "acc_final", "turns", "acc_final/d1", "turns/d2"):
    assert k in m
  # Transcripts name the selected facts: K per dialogue, each a fact of the bank.
  assert text.count("memory:  ") == K * 6 and "memory precision" in text
  host, glob = next(ev.results(params, 1, 1.0))
  c0 = int(host["memory_index_BJ"][0, 0])
  fact0 = data.ByteTokenizer().decode(
      glob["memory_ids"][0, c0, :glob["memory_len"][0, c0]].tolist())
  assert fact0.endswith(".")  # a fact sentence, not padding
  assert repr(fact0) in text.split("--- record")[1]


def test_eval_selection_is_deterministic_and_skips_padded_slots(setup):
  _, ev, params = setup
  a, ta = ev(params, 3, 1.0)
  b, tb = ev(params, 3, 1.0)
  assert a == b and ta == tb
  # Greedy at eval: the choice does not depend on the step's rng (the training mode samples).
  assert ev.model.memory.mode == "greedy"
  first = [h["memory_index_BJ"] for h, _ in ev.results(params, 1, 1.0)]
  again = [h["memory_index_BJ"] for h, _ in ev.results(params, 2, 1.0)]
  for x, y in zip(first, again):
    np.testing.assert_array_equal(x, y)
  padded_seen = False
  for host, glob in ev.results(params, 1, 1.0):
    mask = glob["memory_mask"].astype(bool)
    padded_seen |= bool((~mask[glob["valid"].astype(bool)]).any())
    idx, valid = host["memory_index_BJ"], host["memory_valid_BJ"]
    np.testing.assert_array_equal(valid.sum(1), np.minimum(K, mask.sum(1)))
    rows = np.nonzero(valid)[0]
    assert mask[rows, idx[valid]].all(), "a padded bank slot was selected"
    assert (np.sort(idx, 1)[:, 1:] != np.sort(idx, 1)[:, :-1]).all()  # distinct facts
  assert padded_seen


def test_soft_selection_stays_soft_at_eval():
  c = finalize.finalize(_config(mode="soft"))
  model = build.build_model(c)
  from slnjax import evaluate_memory, memory  # pylint: disable=g-import-not-at-top
  assert evaluate_memory.eval_model(model).memory.mode == "soft"
  # Every selection mode has a counterpart that draws nothing at random.
  assert set(evaluate_memory.EVAL_MODES) == set(memory.MODES)
  assert set(evaluate_memory.EVAL_MODES.values()) <= {"soft", "greedy"}
  assert evaluate_memory.eval_model(build.build_model(finalize.finalize(_config(mode="sample")))
                                    ).memory.mode == "greedy"


def test_bad_eval_input_is_a_clear_error(setup):
  c, ev, params = setup
  mesh, rules, tok = parallel.make_mesh(), parallel.rules_from_config(None), data.ByteTokenizer()
  plain = finalize.finalize(common.experiment("lateralized", "sft", smoke=True))
  with pytest.raises(ValueError, match="eval batches none"):
    evaluate.Evaluator(plain, ev.model, mesh, rules, tok, ev.source, "/tmp")
  with pytest.raises(ValueError, match="model has no memory"):
    evaluate.Evaluator(c, build.build_model(plain), mesh, rules, tok, ev.source, "/tmp")
  from slnjax import evaluate_memory  # pylint: disable=g-import-not-at-top
  local = next(evaluate.eval_batches(c, ev.source, tok))
  no_bank = {k: local[k] for k in ("prompt_ids", "prompt_len")}
  with pytest.raises(ValueError, match="memory_ids"):
    evaluate_memory.read(ev.model, params, no_bank, jax.random.key(0), 1.0)


def test_train_with_memory_evaluates(tmp_path):
  c = _config(steps=2, log_every=1, eval_every=1)
  out = train.train(c, str(tmp_path))
  assert out["step"] == 2 and np.isfinite(out["loss"])
  for k in ("eval/memory_precision", "eval/memory_recall", "eval/memory_recall/d1",
            "eval/acc_final"):
    assert 0.0 <= out[k] <= 1.0, k
  with open(tmp_path / "transcripts" / "step_2.txt") as f:
    assert "memory:  " in f.read()
  assert os.path.exists(tmp_path / "transcripts" / "step_1.txt")
