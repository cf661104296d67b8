"""experiments/facts_memory.py: the configured split sizes exist, the oracle reads exactly
the relevant facts, every mode runs end to end at smoke size and reports its metrics, and
``--set`` overrides config fields (and rejects unknown ones)."""
import importlib.util
import json
import os
import tempfile

import jax.numpy as jnp
import numpy as np
import pytest

from slnjax import data
from slnjax.data.tasks import facts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(tempfile.gettempdir(), "slnjax_test_data")


def _module():
  path = os.path.join(ROOT, "experiments", "facts_memory.py")
  spec = importlib.util.spec_from_file_location("facts_memory", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


fm = _module()


def _smoke(**kw):
  c = fm.get_config(":smoke")
  c.task.data_dir = DATA_DIR
  c.update(kw)
  return c


def test_docstring_states_a_result_or_none():
  doc = fm.__doc__
  assert doc.lstrip().startswith("python experiments/facts_memory.py")
  assert ("Result:" in doc) != ("Not measured yet:" in doc)


def test_full_config_has_the_train_examples_it_asks_for():
  # The facts pool is people x 3 attributes x 2 hop counts, split test_fraction / rest; a
  # split larger than its share of the pool silently comes out smaller.
  o = fm.get_config().task.overrides
  pool = o["num_people"] * len(facts.ATTRIBUTES) * 2
  n_test = int(round(facts.FactsConfig.test_fraction * pool))
  assert pool - n_test >= o["num_train"]
  assert n_test >= o["num_test"]


def test_oracle_selection_fills_slots_with_the_relevant_facts():
  rel = jnp.array([[False, True, False, True], [False, False, True, False]])
  sel = fm.oracle_selection(rel, 2)
  np.testing.assert_array_equal(sel.index_BJ[:, 0], [1, 2])
  np.testing.assert_array_equal(sel.index_BJ[0], [1, 3])
  np.testing.assert_array_equal(sel.valid_BJ, [[True, True], [True, False]])
  assert float(sel.weights_BJC[1, 1].sum()) == 0.0  # an unfilled slot prepends zeros


def test_split_arrays_and_the_answer_fact_is_in_the_bank():
  c = _smoke()
  test = fm.load_split(c, "test")
  tok = data.ByteTokenizer()
  n = len(test["q"])
  assert n == c.task.overrides["num_test"]
  for i in range(n):
    assert 1 <= test["rel"][i].sum() == test["difficulty"][i]
    t = test["t"][i, :test["t_len"][i]]
    assert t[-1] == tok.eos_id
    answer = tok.decode(t[:-1].tolist())
    shown = [tok.decode(test["ids"][i, j, :test["len"][i, j]].tolist())
             for j in range(test["ids"].shape[1]) if test["rel"][i, j]]
    assert any(f" {answer}" in f for f in shown), (answer, shown)  # the answer fact is relevant
    assert test["q"][i, -1] != tok.pad_id  # left-padded: the question ends at the last place


# ~40 s a mode on a 2-core CPU (compiles): the oracle and the pre-trained mode (pre-training,
# REINFORCE and distillation) run by default, the others with `make test-all`.
FAST = ("oracle", "pretrained")


@pytest.mark.parametrize("mode", [m if m in FAST else pytest.param(m, marks=pytest.mark.slow)
                                  for m in fm.MODES])
def test_every_mode_runs_and_reports(mode, tmp_path):
  res = fm.run(_smoke(), mode, str(tmp_path), log=lambda *_: None)
  saved = json.loads((tmp_path / f"{mode}.json").read_text())
  assert saved["mode"] == mode and saved["test_examples"] == 32
  for key in ("accuracy", "token_accuracy", "accuracy_d1", "accuracy_d2"):
    assert 0.0 <= res[key] <= 1.0
  if mode == "none":
    assert "precision_top1" not in res
  else:
    assert 0.0 <= res["precision_top1"] <= 1.0 and 0.0 <= res["recall_at_2"] <= 1.0
  if mode == "oracle":
    assert res["precision_top1"] == 1.0 and res["recall_at_2"] == 1.0


def test_set_overrides_fields_and_rejects_unknown_ones(tmp_path, monkeypatch):
  seen = []
  monkeypatch.setattr(fm, "run", lambda c, mode, out: seen.append((c, mode, out)))
  fm.main(["--mode=none", "--config_arg=:smoke", "--set", "lr=0.01", "--set",
           "lobe.d_model=24", "--set", "memory.residual=false", "--out", str(tmp_path)])
  (c, mode, _), = seen
  assert mode == "none" and c.lr == 0.01 and c.lobe.d_model == 24
  assert c.memory.residual is False
  with pytest.raises(KeyError):
    fm.main(["--config_arg=:smoke", "--set", "lrr=0.01"])
