"""Runs a dialogue checkpoint for the evaluation (slnjax/eval_report.py counts the results).

Three ways over the same problems, each through ``evaluate.Evaluator`` (so memory banks,
sharding and multi-process gathering work as in the train loop):

- the loop: T turns in the evaluation mode (config.eval.mode, else the training mode; a
  sampling mode becomes ``greedy``, so turn 1 is the greedy answer);
- sampled first turns: ``max_turns=1`` at temperature 1 (``hard`` mode), one pass per sample
  with its own key (best-of-T, majority vote, pass@k);
- retry without feedback: the loop with the critic's score fed back replaced by a neutral
  0.5 (the left lobe's score input made constant; the critic still decides when to halt).
"""
from __future__ import annotations

import copy
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from slnjax import data, evaluate

SAMPLING_MODES = ("hard", "straight_through", "gumbel", "gumbel_st")
NEUTRAL_SCORE = 0.5


@dataclasses.dataclass
class Run:
  """One pass over the problems; per example (B) and turn (N), in problem order."""
  texts_NB: list  # N lists of B decoded left-lobe turns ("" where not taken)
  correct_NB: np.ndarray  # bool: the verifier on each turn (False where not taken)
  active_NB: np.ndarray  # bool: turn taken
  score_NB: np.ndarray | None  # the critic's score of each turn (None without a critic)
  turns_B: np.ndarray  # turns taken
  index_B: np.ndarray  # record index in the split
  difficulty_B: np.ndarray
  prompt_len_B: np.ndarray
  carry_chain_B: np.ndarray | None  # from the records, where they have it


def loop_mode(config, model) -> str:
  mode = config.eval.mode or model.spec.loop.mode
  return "greedy" if mode in SAMPLING_MODES else mode


def with_loop(model, **changes):
  """The model with its LoopConfig fields replaced (a new jit static argument)."""
  spec = dataclasses.replace(model.spec, loop=dataclasses.replace(model.spec.loop, **changes))
  return dataclasses.replace(model, spec=spec)


def neutral_feedback(model, params: dict, value: float = NEUTRAL_SCORE) -> dict:
  """Parameters whose left lobe reads ``value`` whatever the critic said: its score input
  embedding s * w + b becomes the constant value * w + b."""
  left = dict(params["left"])
  w, b = left["score_in_w"], left["score_in_b"]
  left["score_in_b"] = (b + value * w).astype(b.dtype)
  left["score_in_w"] = jnp.zeros_like(w)
  del model  # a shared lobe (self_reflection) reads no score input in its critic role
  return {**params, "left": left}


def _num_batches(config, num: int | None) -> int:
  from slnjax import config as cfg  # pylint: disable=g-import-not-at-top
  _, batch_size = cfg.eval_config(config)
  return -1 if num is None else max(1, math.ceil(num / batch_size))


class Runner:
  """The evaluators of one checkpoint's model: the loop at T turns and single sampled
  turns. ``num``: the first num problems of the split (None: all)."""

  def __init__(self, config, model, mesh, rules, tokenizer, source, workdir: str, turns: int,
               num: int | None = None):
    self.num, self.turns, self.tokenizer = num, turns, tokenizer
    self.task, self.seed = config.task.name, config.seed
    self.model = model
    base = copy.deepcopy(config)
    base.eval.num_batches = _num_batches(config, num)
    self.mode = loop_mode(config, model)
    loop_cfg = copy.deepcopy(base)
    loop_cfg.eval.mode = self.mode
    sample_cfg = copy.deepcopy(base)
    sample_cfg.eval.mode = "hard"
    make = lambda c, m: evaluate.Evaluator(c, m, mesh, rules, tokenizer, source, workdir)
    self.loop = make(loop_cfg, with_loop(model, max_turns=turns, mode=self.mode))
    self.sample = make(sample_cfg, with_loop(model, max_turns=1, mode="hard", temperature=1.0))

  @property
  def scored(self) -> bool:
    return self.model.spec.scored

  @property
  def feeds_score(self) -> bool:
    return self.model.spec.feeds_score

  def _collect(self, evaluator, params, step, tau, key=None, source=None) -> Run:
    rows = {k: [] for k in ("correct", "active", "score", "turns", "index", "difficulty",
                            "prompt_len")}
    texts = []
    src = evaluator.source if source is None else source
    for host, glob in evaluator.results(params, step, tau, key=key, source=source):
      ids, valid, active = host["left_ids_NBM"], host["left_valid_NBM"], host["active_NB"]
      N = active.shape[0]
      for b in np.nonzero(glob["valid"])[0]:
        if self.num is not None and len(texts) >= self.num:
          break
        t_N = [evaluate.turn_text(self.tokenizer, ids[n, b], valid[n, b]) if active[n, b]
               else "" for n in range(N)]
        ok = data.verify_batch(self.task, src, np.full(N, glob["index"][b]), t_N,
                               active[:, b])
        texts.append(t_N)
        rows["correct"].append(ok & active[:, b].astype(bool))
        rows["active"].append(active[:, b].astype(bool))
        rows["score"].append(host["score_NB"][:, b])
        for k, v in (("turns", host["turns_B"]), ("index", glob["index"]),
                     ("difficulty", glob["difficulty"]), ("prompt_len", glob["prompt_len"])):
          rows[k].append(v[b])
    if not texts:
      raise ValueError("the split gave no problems to evaluate (is it empty, or --num 0?).")
    index_B = np.asarray(rows["index"], np.int64)
    chain = [src[int(i)].get("carry_chain") for i in index_B]
    chain_B = None if any(c is None for c in chain) else np.asarray(chain, np.int64)
    return Run(texts_NB=[list(t) for t in zip(*texts)],
               correct_NB=np.stack(rows["correct"], 1), active_NB=np.stack(rows["active"], 1),
               score_NB=np.stack(rows["score"], 1).astype(np.float64) if self.scored else None,
               turns_B=np.asarray(rows["turns"], np.int64), index_B=index_B,
               difficulty_B=np.asarray(rows["difficulty"], np.int64),
               prompt_len_B=np.asarray(rows["prompt_len"], np.int64), carry_chain_B=chain_B)

  def loop_run(self, params, step, tau, source=None) -> Run:
    return self._collect(self.loop, params, step, tau, source=source)

  def retry_run(self, params, step, tau) -> Run | None:
    """The loop with the score fed back made neutral; None when the left lobe reads no score."""
    if not self.feeds_score:
      return None
    return self._collect(self.loop, neutral_feedback(self.model, params), step, tau)

  def sample_runs(self, params, step, tau, n: int) -> list[Run]:
    """n independent first turns per problem (temperature 1), each with its own key."""
    key = jax.random.fold_in(jax.random.PRNGKey(self.seed + 2), step)
    return [self._collect(self.sample, params, step, tau, key=jax.random.fold_in(key, k))
            for k in range(n)]
