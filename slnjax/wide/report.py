"""Evaluation summaries of wide-SLN rollouts (host side, numpy): iterations per difficulty,
the gate's choices and each lobe's expert usage."""
from __future__ import annotations

import collections

import numpy as np

from slnjax.wide.gate import LEFT, OUTPUT, RIGHT


class UsageAccumulator:
  """Add rollouts batch by batch (`add`), then `summary()`."""

  def __init__(self, n_experts: int, max_iters: int):
    self.n_experts, self.max_iters = n_experts, max_iters
    self.iters = collections.defaultdict(list)
    self.correct = collections.defaultdict(list)
    self.choices = np.zeros(3, np.int64)
    self.experts = {"left": np.zeros(n_experts, np.int64), "right": np.zeros(n_experts, np.int64)}
    self.gate_halted = 0
    self.count = 0

  def add(self, trace, difficulty_B, valid_B=None, correct_B=None):
    choice_NB = np.asarray(trace.choice_NB)
    iters_B = np.asarray(trace.iters_B)
    B = iters_B.shape[0]
    valid_B = np.ones(B, bool) if valid_B is None else np.asarray(valid_B).astype(bool)
    difficulty_B = np.asarray(difficulty_B)
    for b in np.flatnonzero(valid_B):
      self.iters[int(difficulty_B[b])].append(int(iters_B[b]))
      if correct_B is not None:
        self.correct[int(difficulty_B[b])].append(bool(np.asarray(correct_B)[b]))
    ch = choice_NB[:, valid_B]
    for c in (LEFT, RIGHT, OUTPUT):
      self.choices[c] += int(np.sum(ch == c))
    for name, c, idx in (("left", LEFT, trace.index_left_NBWk),
                         ("right", RIGHT, trace.index_right_NBWk)):
      idx = np.asarray(idx)[:, valid_B]  # [N, b, W, k]
      used = (ch == c)[..., None, None] & np.ones(idx.shape, bool)
      self.experts[name] += np.bincount(idx[used].reshape(-1), minlength=self.n_experts)
    self.gate_halted += int(np.sum(np.asarray(trace.gate_halted_B)[valid_B]))
    self.count += int(valid_B.sum())

  def summary(self) -> dict:
    out = {"examples": self.count,
           "gate_halted_frac": self.gate_halted / max(self.count, 1),
           "choices": dict(zip(("left", "right", "output"), self.choices.tolist()))}
    every = [i for v in self.iters.values() for i in v]
    out["iters"] = float(np.mean(every)) if every else 0.0
    out["iters_by_difficulty"] = {
        d: {"mean": float(np.mean(v)), "hist": np.bincount(v, minlength=self.max_iters + 1)
            .tolist(), "n": len(v)} for d, v in sorted(self.iters.items())}
    if self.correct:
      out["accuracy"] = float(np.mean([c for v in self.correct.values() for c in v]))
      out["accuracy_by_difficulty"] = {d: float(np.mean(v)) for d, v in sorted(self.correct.items())}
    for name, counts in self.experts.items():
      tot = max(int(counts.sum()), 1)
      out[f"experts_{name}"] = (counts / tot).round(4).tolist()
    return out


def usage_report(trace, difficulty_B, n_experts: int, max_iters: int, valid_B=None,
                 correct_B=None) -> dict:
  """One batch's summary (see UsageAccumulator)."""
  acc = UsageAccumulator(n_experts, max_iters)
  acc.add(trace, difficulty_B, valid_B, correct_B)
  return acc.summary()
