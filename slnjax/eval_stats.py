"""The evaluation's counting, as pure numpy functions of per-example arrays.

Shapes: ``N`` turns (or samples), ``B`` problems. A dialogue's answer after turn t is the
answer of the last turn it took up to t (an example that halted keeps its answer), so
acc@t of the final turn is the loop's accuracy.

Tested on hand-built transcripts in tests/test_eval_stats.py.
"""
from __future__ import annotations

import math

import numpy as np


def mean_se(x) -> tuple[float | None, float | None]:
  """(mean, standard error of the mean); None where undefined (no examples / one example)."""
  x = np.asarray(x, np.float64)
  if x.size == 0:
    return None, None
  if x.size == 1:
    return float(x[0]), None
  return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))


def answers_by_turn(correct_NB, turns_B, T: int) -> np.ndarray:
  """acc_TB [T,B] bool: whether the answer held after turn t (1..T) is right. turns_B: turns
  each example took (>= 1); after it halted its last answer stands."""
  correct_NB = np.asarray(correct_NB, bool)
  turns_B = np.asarray(turns_B, np.int64)
  N, B = correct_NB.shape
  t_TB = np.minimum(np.arange(T)[:, None], np.clip(turns_B, 1, N)[None, :] - 1)
  t_TB = np.minimum(t_TB, N - 1)
  return correct_NB[t_TB, np.arange(B)[None, :]]


def levenshtein(a: str, b: str) -> int:
  """Edit distance (insertions, deletions, substitutions of one character each)."""
  if len(a) < len(b):
    a, b = b, a
  prev = list(range(len(b) + 1))
  for i, ca in enumerate(a, 1):
    cur = [i]
    for j, cb in enumerate(b, 1):
      cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
    prev = cur
  return prev[-1]


def flips(correct_NB, texts_NB, turns_B) -> dict:
  """Per transition t -> t+1 (t = 1..N-1), over the examples that took turn t+1:
  wrong_to_right / right_to_wrong as shares of all B problems (so acc@(t+1) - acc@t is their
  difference); changed_when_wrong, the share of wrong turn-t answers whose turn t+1 text
  differs (a revision that copies its draft scores 0 here; None when no wrong answer went
  on); edit_distance, the mean character edit distance between turn t and turn t+1."""
  correct_NB = np.asarray(correct_NB, bool)
  turns_B = np.asarray(turns_B, np.int64)
  N, B = correct_NB.shape
  out = {k: [] for k in ("wrong_to_right", "right_to_wrong", "changed_when_wrong",
                         "edit_distance", "continued", "wrong_continued")}
  for t in range(N - 1):
    went_B = turns_B > t + 1
    before, after = correct_NB[t], correct_NB[t + 1]
    wrong_went = went_B & ~before
    changed = np.array([texts_NB[t][b] != texts_NB[t + 1][b] for b in range(B)], bool)
    dist = [levenshtein(texts_NB[t][b], texts_NB[t + 1][b]) for b in np.nonzero(went_B)[0]]
    out["wrong_to_right"].append(float((wrong_went & after).sum() / max(B, 1)))
    out["right_to_wrong"].append(float((went_B & before & ~after).sum() / max(B, 1)))
    out["changed_when_wrong"].append(
        float((wrong_went & changed).sum() / wrong_went.sum()) if wrong_went.any() else None)
    out["edit_distance"].append(float(np.mean(dist)) if dist else None)
    out["continued"].append(int(went_B.sum()))
    out["wrong_continued"].append(int(wrong_went.sum()))
  return out


def best_of(scores_KB, correct_KB) -> np.ndarray:
  """correct_B of the sample with the highest score (the first one on ties)."""
  scores_KB = np.asarray(scores_KB, np.float64)
  pick_B = np.argmax(scores_KB, axis=0)
  return np.asarray(correct_KB, bool)[pick_B, np.arange(scores_KB.shape[1])]


def majority(texts_KB, correct_KB) -> np.ndarray:
  """correct_B of the most frequent answer text among K samples (ties: the tied answer that
  appears first in sample order)."""
  correct_KB = np.asarray(correct_KB, bool)
  K, B = correct_KB.shape
  out = np.zeros(B, bool)
  for b in range(B):
    counts, first = {}, {}
    for k in range(K):
      a = texts_KB[k][b]
      counts[a] = counts.get(a, 0) + 1
      first.setdefault(a, k)
    top = max(counts.values())
    winner = min((first[a], a) for a, c in counts.items() if c == top)[1]
    out[b] = correct_KB[first[winner], b]
  return out


def pass_at_k(n: int, c_B, k: int) -> np.ndarray:
  """Unbiased pass@k per problem from n samples of which c are right: 1 - C(n-c,k)/C(n,k)."""
  if not 1 <= k <= n:
    raise ValueError(f"pass@k needs 1 <= k <= n (k={k}, n={n}).")
  c_B = np.asarray(c_B, np.int64)
  return np.array([1.0 - math.comb(n - c, k) / math.comb(n, k) for c in c_B], np.float64)


def binom_two_sided(b: int, c: int) -> float:
  """Exact two-sided sign-test p-value for b successes against c (p = 1/2)."""
  n, m = b + c, min(b, c)
  if n == 0:
    return 1.0
  log_half = n * math.log(0.5)
  tail = sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                      + log_half) for i in range(m + 1))
  return float(min(1.0, 2.0 * tail))


def mcnemar(a_B, b_B, exact_below: int = 50) -> dict:
  """Paired comparison of two systems on the same problems. b: a right where b is wrong;
  c: the reverse. p: the exact binomial test when b + c < exact_below, else the chi-square
  test with continuity correction (1 degree of freedom)."""
  a_B, b_B = np.asarray(a_B, bool), np.asarray(b_B, bool)
  b, c = int((a_B & ~b_B).sum()), int((~a_B & b_B).sum())
  if b + c < exact_below:
    return {"b": b, "c": c, "p": binom_two_sided(b, c), "method": "exact"}
  stat = (abs(b - c) - 1) ** 2 / (b + c)
  return {"b": b, "c": c, "p": float(math.erfc(math.sqrt(stat / 2))), "method": "chi2_cc"}


def auc(scores, labels) -> float | None:
  """Area under the ROC curve (the Mann-Whitney statistic, ties counted half); None when
  one class is absent."""
  s, y = np.asarray(scores, np.float64), np.asarray(labels, bool)
  pos, neg = s[y], s[~y]
  if pos.size == 0 or neg.size == 0:
    return None
  greater = (pos[:, None] > neg[None, :]).sum()
  ties = (pos[:, None] == neg[None, :]).sum()
  return float((greater + 0.5 * ties) / (pos.size * neg.size))


def precision_recall(scores, labels, threshold: float) -> tuple[float | None, float | None]:
  """Of the predictions score >= threshold against labels: (precision, recall)."""
  s, y = np.asarray(scores, np.float64), np.asarray(labels, bool)
  pred = s >= threshold
  precision = float((pred & y).sum() / pred.sum()) if pred.any() else None
  recall = float((pred & y).sum() / y.sum()) if y.any() else None
  return precision, recall


def threshold_for_precision(scores, labels, target: float = 0.99) -> float | None:
  """The lowest threshold (one of the scores) at which precision >= target; None if none."""
  s, y = np.asarray(scores, np.float64), np.asarray(labels, bool)
  for t in np.unique(s):
    p, _ = precision_recall(s, y, t)
    if p is not None and p >= target:
      return float(t)
  return None


def buckets(values_B) -> dict:
  """{bucket value: boolean mask} over the distinct values (sorted)."""
  v = np.asarray(values_B)
  return {int(x): v == x for x in np.unique(v)}
