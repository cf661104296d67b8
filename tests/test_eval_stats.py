"""The evaluation's counting (slnjax/eval_stats.py, eval_report.py) on hand-built transcripts."""
import math
import os

import numpy as np
import pytest

from slnjax import eval_report, eval_runs, eval_write
from slnjax import eval_stats as st

# Four problems (target "12"), three turns. Columns are problems, rows turns; "" not taken.
#   p0: wrong, revised to right, halts after turn 2 (keeps "12")
#   p1: right at turn 1, halts
#   p2: wrong, copies its wrong draft, then changes to another wrong answer
#   p3: right, then breaks it, then stays wrong (copies)
TEXTS = [["13", "12", "11", "12"],
         ["12", "", "11", "10"],
         ["", "", "14", "10"]]
TURNS = np.array([2, 1, 3, 3])
CORRECT = np.array([[t == "12" for t in row] for row in TEXTS])


def test_answers_by_turn_keeps_a_halted_answer():
  acc = st.answers_by_turn(CORRECT, TURNS, 3)
  np.testing.assert_array_equal(acc, [[0, 1, 0, 1], [1, 1, 0, 0], [1, 1, 0, 0]])


def test_flip_counts():
  f = st.flips(CORRECT, TEXTS, TURNS)
  # 1->2: p0, p2, p3 go on; p0 wrong->right, p3 right->wrong; wrong ones going on: p0, p2;
  # changed: p0 ("13"->"12"), not p2 ("11"->"11").
  assert f["wrong_to_right"][0] == 1 / 4 and f["right_to_wrong"][0] == 1 / 4
  assert f["changed_when_wrong"][0] == 1 / 2 and f["wrong_continued"][0] == 2
  assert f["edit_distance"][0] == pytest.approx((1 + 0 + 1) / 3)  # 13->12, 11->11, 12->10
  # 2->3: p2, p3 go on, both wrong before and after; p2 changes ("11"->"14"), p3 copies.
  assert f["wrong_to_right"][1] == 0 and f["right_to_wrong"][1] == 0
  assert f["changed_when_wrong"][1] == 1 / 2 and f["continued"][1] == 2
  # acc@(t+1) - acc@t is wrong_to_right - right_to_wrong
  acc = st.answers_by_turn(CORRECT, TURNS, 3).mean(1)
  np.testing.assert_allclose(np.diff(acc), np.array(f["wrong_to_right"])
                             - np.array(f["right_to_wrong"]))


def test_levenshtein():
  assert st.levenshtein("kitten", "sitting") == 3
  assert st.levenshtein("", "abc") == 3 and st.levenshtein("abc", "abc") == 0


def test_best_of_picks_the_highest_score():
  scores = np.array([[0.2, 0.9, 0.5], [0.7, 0.1, 0.5], [0.3, 0.3, 0.4]])
  correct = np.array([[1, 0, 0], [0, 1, 1], [1, 1, 0]], bool)
  # problem 0 picks sample 1 (wrong); 1 picks sample 0 (wrong); 2: tie 0.5/0.5 -> sample 0
  np.testing.assert_array_equal(st.best_of(scores, correct), [False, False, False])
  # reversed order: p2's tie now goes to the old sample 1 (right)
  np.testing.assert_array_equal(st.best_of(scores[::-1], correct[::-1]), [False, False, True])


def test_majority_vote():
  texts = [["12", "7", "a"], ["13", "8", "b"], ["12", "8", "c"], ["9", "7", "b"]]
  correct = np.array([[t in ("12", "8", "c") for t in row] for row in texts])
  # p0: "12" x2 -> right; p1: "7" x2 vs "8" x2, "7" appears first -> wrong;
  # p2: "b" x2 -> wrong
  np.testing.assert_array_equal(st.majority(texts, correct), [True, False, False])


def test_pass_at_k():
  np.testing.assert_allclose(st.pass_at_k(4, [0, 1, 2, 4], 1), [0, 0.25, 0.5, 1])
  np.testing.assert_allclose(st.pass_at_k(4, [1, 2], 2), [1 - 3 / 6, 1 - 1 / 6])
  np.testing.assert_allclose(st.pass_at_k(8, [1], 8), [1.0])
  with pytest.raises(ValueError):
    st.pass_at_k(4, [1], 8)


def test_mcnemar_by_hand():
  # b = 1 (a right, b wrong), c = 6: exact two-sided p = 2 * (C(7,0) + C(7,1)) / 2^7 = 0.125
  a = np.array([1, 0, 0, 0, 0, 0, 0, 1, 1, 0], bool)
  b = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 0], bool)
  m = st.mcnemar(a, b)
  assert (m["b"], m["c"], m["method"]) == (1, 6, "exact")
  assert m["p"] == pytest.approx(0.125)
  assert st.mcnemar(a, a)["p"] == 1.0
  # many discordant pairs: chi-square with continuity correction, (|40-20|-1)^2/60
  big_a = np.r_[np.ones(40), np.zeros(20)].astype(bool)
  m = st.mcnemar(big_a, ~big_a)
  assert m["method"] == "chi2_cc"
  assert m["p"] == pytest.approx(math.erfc(math.sqrt(19 ** 2 / 60 / 2)))
  assert st.binom_two_sided(0, 10) == pytest.approx(2 / 1024)


def test_auc_precision_recall_threshold():
  s, y = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
  assert st.auc(s, y) == pytest.approx(0.75)
  assert st.auc([0.5, 0.5], [0, 1]) == 0.5 and st.auc([0.1], [1]) is None
  assert st.precision_recall(s, y, 0.35) == (pytest.approx(2 / 3), 1.0)
  assert st.precision_recall(s, y, 0.9) == (None, 0.0)
  assert st.threshold_for_precision(s, y, 0.99) == 0.8
  assert st.threshold_for_precision([0.9, 0.8], [0, 1], 0.99) is None


def test_mean_se():
  assert st.mean_se([1, 0, 1, 0]) == (0.5, pytest.approx(math.sqrt(1 / 3 / 4)))
  assert st.mean_se([]) == (None, None) and st.mean_se([1]) == (1.0, None)


def _run(texts, correct, turns, scores=None, difficulty=None):
  correct = np.asarray(correct, bool)
  N, B = correct.shape
  active = np.arange(N)[:, None] < np.asarray(turns)[None, :]
  return eval_runs.Run(texts, correct, active, None if scores is None else np.asarray(scores),
                       np.asarray(turns), np.arange(B), np.asarray(difficulty or [1] * B),
                       np.full(B, 4), None)


def test_report_on_a_hand_built_transcript(tmp_path):
  loop = _run(TEXTS, CORRECT, TURNS, scores=[[0.2, 0.9, 0.1, 0.8], [0.9, 0, 0.2, 0.3],
                                             [0, 0, 0.3, 0.4]], difficulty=[1, 1, 2, 2])
  # three sampled first turns per problem
  samples = [_run([t], [[x == "12" for x in t]], [1] * 4, scores=[sc])
             for t, sc in ((["12", "12", "5", "9"], [0.1, 0.9, 0.5, 0.2]),
                           (["7", "12", "5", "12"], [0.9, 0.8, 0.4, 0.1]),
                           (["7", "3", "12", "12"], [0.2, 0.7, 0.3, 0.3]))]
  r = eval_report.build(loop, samples, None, 3, 0.5)
  np.testing.assert_allclose(r["acc_by_turn"], [0.5, 0.5, 0.5])
  # best-of-3 picks samples 1, 0, 0, 2: "7", "12", "5", "12" -> 2 of 4
  assert r["best_of_T"]["acc"] == 0.5
  # majority: "7" (x2), "12" (x2), "5" (x2), "12" (x2) -> 2 of 4
  assert r["majority_T"]["acc"] == 0.5
  # pass@1 = mean c/n over (1/3, 2/3, 1/3, 2/3); pass@2 = 1 - C(n-c,2)/C(3,2)
  assert r["pass_at_k"]["1"]["acc"] == pytest.approx(0.5)
  assert r["pass_at_k"]["2"]["acc"] == pytest.approx(np.mean([2 / 3, 1, 2 / 3, 1]))
  assert "4" not in r["pass_at_k"] and r["retry_no_feedback"] is None
  # loop right at the end: p0, p1; turn 1 right: p1, p3 -> b = 1, c = 1
  assert (r["mcnemar"]["loop_vs_turn1"]["b"], r["mcnemar"]["loop_vs_turn1"]["c"]) == (1, 1)
  assert r["mcnemar_p"]["loop_vs_turn1"] == 1.0
  c = r["critic"]  # 9 turns taken; right ones: (0,1) 0.9, (1,0) 0.9, (0,3) 0.8
  assert c["turns"] == 9 and c["positives"] == 3
  assert c["precision"] == 1.0 and c["recall"] == 1.0 and c["auc"] == 1.0
  assert c["threshold_p99"] == pytest.approx(0.8)
  d = r["by_bucket"]["difficulty"]
  assert d["1"]["n"] == 2 and d["1"]["acc_by_turn"] == [0.5, 1.0, 1.0]
  assert d["2"]["acc_by_turn"] == [0.5, 0.0, 0.0]
  # retry without feedback: p0 keeps its wrong draft ("13") -> 1 of 4 right, 3 of 4 the same
  retry_texts = [["13", "12", "11", "12"], ["13", "", "11", "10"], ["", "", "14", "10"]]
  retry = _run(retry_texts, [[t == "12" for t in row] for row in retry_texts], TURNS)
  full = eval_report.build(loop, samples, retry, 3, 0.5, meta=dict(step=5, split="test",
                                                                   kind="lateralized",
                                                                   loop_mode="greedy"))
  rr = full["retry_no_feedback"]
  assert rr["acc"] == 0.25 and rr["same_final_answer_as_loop"] == 0.75
  # the files, with FLOPs as slnjax.flops would give them
  full["inference_flops_per_example"] = {"loop": 2e6, "turn1": 1e6, "best_of_T": 3e6,
                                         "majority_T": 3e6, "retry_no_feedback": 2e6,
                                         "loop_by_turn": [1e6, 1.8e6, 2e6]}
  full["train_flops"] = 1e12
  paths = eval_write.write_all(full, str(tmp_path), "eval")
  assert [os.path.basename(p) for p in paths] == ["eval.json", "eval.md", "eval.png",
                                                  "eval_flops.png"]
  md = open(paths[1]).read()
  assert "| all | 4 | 2.25 | 50.0 | 50.0 | 50.0 | 50.0 ± 28.9 |" in md
  assert "| loop_vs_turn1 | 1 | 1 | 1 | exact |" in md and "training FLOPs: 1e+12" in md


def test_neutral_feedback_reads_one_half_whatever_the_score():
  import jax
  import jax.numpy as jnp
  from slnjax import lobes, loop, sln
  model = sln.build("lateralized", lobes.tiny(), None, loop.LoopConfig(turn_len=2, max_turns=2))
  params = sln.init(model, jax.random.PRNGKey(0))
  neutral = eval_runs.neutral_feedback(model, params)
  cfg = model.spec.left
  s = jnp.array([0.0, 0.3, 1.0])
  want = lobes.embed_score(cfg, params["left"], jnp.full(3, 0.5))
  np.testing.assert_allclose(lobes.embed_score(cfg, neutral["left"], s), want, atol=1e-6)
  assert not np.allclose(lobes.embed_score(cfg, params["left"], s), want)
  assert jax.tree.structure(neutral) == jax.tree.structure(params)
