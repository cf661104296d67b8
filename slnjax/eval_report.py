"""The evaluation report of a dialogue checkpoint: eval.json, eval.md and plots.

``evaluate_checkpoint`` runs the loop, the baselines and the critic (slnjax/eval_runs.py),
counts them (slnjax/eval_stats.py) and writes, in the workdir (``eval`` for the test split,
``eval_<split>`` for another one):

  eval.json   acc_by_turn (+ _se), flips{wrong_to_right, right_to_wrong, changed_when_wrong,
              edit_distance}, turns_mean, best_of_T, majority_T, retry_no_feedback,
              pass_at_k, critic{precision, recall, auc, threshold, ...}, mcnemar_p,
              by_bucket{difficulty, carry_chain}, inference_flops_per_example, train_flops
  eval.md     the same as Markdown tables
  eval.png    accuracy after each turn, the baselines as lines (and eval_flops.png:
              accuracy against inference FLOPs per example, when FLOPs can be counted)

It is what ``python -m slnjax.evaluate`` runs and what the train loop calls at its final
step when config.eval.report is set.
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np

from slnjax import data, eval_runs
from slnjax import eval_stats as st
from slnjax import state as state_lib

PASS_K = (1, 2, 4, 8)


def _acc(x_B):
  m, se = st.mean_se(x_B)
  return {"acc": m, "se": se}


def summary(loop, samples, retry, T: int, sel=None) -> dict:
  """The loop and its baselines on the problems selected by the mask ``sel`` (all: None)."""
  sel = np.ones(len(loop.turns_B), bool) if sel is None else sel
  idx = np.nonzero(sel)[0]
  pick = lambda a: a[..., idx]
  correct_NB, turns_B = pick(loop.correct_NB), pick(loop.turns_B)
  texts = [[row[b] for b in idx] for row in loop.texts_NB]
  acc_TB = st.answers_by_turn(correct_NB, turns_B, T)
  by_turn = [st.mean_se(a) for a in acc_TB]
  out = {"n": int(len(idx)), "acc_by_turn": [m for m, _ in by_turn],
         "acc_by_turn_se": [s for _, s in by_turn], "turns_mean": st.mean_se(turns_B)[0],
         "flips": st.flips(correct_NB, texts, turns_B)}
  scores_KB = None if samples[0].score_NB is None else np.stack(
      [pick(r.score_NB[0]) for r in samples[:T]])
  correct_KB = np.stack([pick(r.correct_NB[0]) for r in samples])
  out["sampled_turn1"] = _acc(correct_KB[0])
  out["best_of_T"] = None if scores_KB is None else _acc(st.best_of(scores_KB, correct_KB[:T]))
  texts_KB = [[r.texts_NB[0][b] for b in idx] for r in samples[:T]]
  out["majority_T"] = _acc(st.majority(texts_KB, correct_KB[:T]))
  n = len(samples)
  out["pass_at_k"] = {str(k): _acc(st.pass_at_k(n, correct_KB.sum(0), k))
                      for k in PASS_K if k <= n}
  if retry is None:
    out["retry_no_feedback"] = None
  else:
    r_TB = st.answers_by_turn(pick(retry.correct_NB), pick(retry.turns_B), T)
    final = lambda run: [run.texts_NB[min(t, len(run.texts_NB)) - 1][b]
                         for b, t in zip(idx, run.turns_B[idx])]
    same = np.array([a == b for a, b in zip(final(loop), final(retry))], bool)
    out["retry_no_feedback"] = {**_acc(r_TB[-1]), "acc_by_turn": [float(a.mean()) for a in r_TB],
                                "turns_mean": st.mean_se(pick(retry.turns_B))[0],
                                "same_final_answer_as_loop": st.mean_se(same)[0]}
  return out


def critic(loop, threshold: float, val_loop=None) -> dict | None:
  """The critic as a classifier of the turns it scored, against the verifier. ``threshold``:
  the loop's halting threshold; ``threshold_p99``: the lowest threshold with precision >= 0.99
  on ``val_loop``'s turns (a validation split), else on these turns (threshold_split says
  which)."""
  if loop.score_NB is None:
    return None
  s, y = loop.score_NB[loop.active_NB], loop.correct_NB[loop.active_NB]
  p, r = st.precision_recall(s, y, threshold)
  out = {"turns": int(s.size), "positives": int(y.sum()), "threshold": threshold,
         "precision": p, "recall": r, "auc": st.auc(s, y)}
  ref = val_loop if val_loop is not None else loop
  t99 = st.threshold_for_precision(ref.score_NB[ref.active_NB], ref.correct_NB[ref.active_NB])
  p99, r99 = (None, None) if t99 is None else st.precision_recall(s, y, t99)
  out.update(threshold_p99=t99, precision_at_p99=p99, recall_at_p99=r99)
  return out


def inference_flops(model, loop, retry, T: int) -> dict | None:
  """Mean inference FLOPs per example of the loop and each baseline (both lobes, the turns
  each example took; loop_by_turn: the loop stopped after turn t = 1..T), from slnjax.flops.dialogue_flops(model, turns_B, prompt_len_B); None
  where that module is absent. A best-of-T / majority answer costs T one-turn dialogues (the
  critic's score of each included). A memory prefix is not counted."""
  try:
    from slnjax import flops  # pylint: disable=g-import-not-at-top
    count = flops.dialogue_flops
  except (ImportError, AttributeError):
    return None
  one_B = count(model, np.ones_like(loop.turns_B), loop.prompt_len_B)
  out = {"loop": count(model, loop.turns_B, loop.prompt_len_B), "turn1": one_B,
         "best_of_T": T * one_B, "majority_T": T * one_B}
  if retry is not None:
    out["retry_no_feedback"] = count(model, retry.turns_B, retry.prompt_len_B)
  out = {k: float(np.mean(v)) for k, v in out.items()}
  out["loop_by_turn"] = [float(np.mean(count(model, np.minimum(loop.turns_B, t),
                                             loop.prompt_len_B))) for t in range(1, T + 1)]
  return out


def train_flops(workdir: str, step: int) -> float | None:
  """The training FLOPs spent to reach the checkpoint at ``step`` (across resumes and
  init_from stages), from slnjax.train_flops.run_total; None without that module or its
  ledger in the workdir."""
  try:
    from slnjax import train_flops as ledger  # pylint: disable=g-import-not-at-top
    total = ledger.run_total
  except (ImportError, AttributeError):
    return None
  return total(workdir, step)


def build(loop, samples, retry, T: int, threshold: float, val_loop=None, meta=None) -> dict:
  """eval.json's content from the runs (numbers are Python floats / ints / None)."""
  report = {**(meta or {}), "T": T, "samples": len(samples),
            **summary(loop, samples, retry, T)}
  report["acc_turn1"] = report["acc_by_turn"][0]
  report["acc_loop"] = report["acc_by_turn"][-1]
  final_B = st.answers_by_turn(loop.correct_NB, loop.turns_B, T)[-1]
  tests = {"loop_vs_turn1": st.mcnemar(final_B, loop.correct_NB[0])}
  if loop.score_NB is not None:
    scores_KB = np.stack([r.score_NB[0] for r in samples[:T]])
    correct_KB = np.stack([r.correct_NB[0] for r in samples[:T]])
    tests["loop_vs_best_of_T"] = st.mcnemar(final_B, st.best_of(scores_KB, correct_KB))
  report["mcnemar"] = tests
  report["mcnemar_p"] = {k: v["p"] for k, v in tests.items()}
  report["critic"] = critic(loop, threshold, val_loop)
  if report["critic"] is not None:
    report["critic"]["threshold_split"] = (meta or {}).get(
        "validation_split" if val_loop is not None else "split")
  axes = {"difficulty": loop.difficulty_B}
  if loop.carry_chain_B is not None:
    axes["carry_chain"] = loop.carry_chain_B
  report["by_bucket"] = {
      axis: {str(v): summary(loop, samples, retry, T, sel) for v, sel in st.buckets(vals).items()}
      for axis, vals in axes.items()}
  return report


def evaluate_checkpoint(config, model, params, mesh, rules, tokenizer, workdir: str, step: int,
                        split: str | None = None, turns: int | None = None,
                        num: int | None = None, sources: dict | None = None) -> dict:
  """Runs and writes the full evaluation of ``params`` (a checkpoint at ``step``); returns
  the report. ``sources``: {split: data source} already loaded (others are loaded here)."""
  from slnjax import config as cfg, train  # pylint: disable=g-import-not-at-top
  split = split or cfg.eval_config(config)[0]
  turns = turns or model.spec.loop.max_turns
  sources = dict(sources or {})
  load = lambda s: data.load_source(config.task.name, s, config.task.data_dir or None,
                                    train.task_config(config))
  if split not in sources:
    sources[split] = load(split)
  val_split = next((s for s in ("validation", "valid", "val")
                    if s in data.get_task(config.task.name).builder_cls.SPLITS), None)
  runner = eval_runs.Runner(config, model, mesh, rules, tokenizer, sources[split], workdir,
                            turns, num)
  tau = state_lib.tau_at(config.tau, config.steps, max(step - 1, 0))
  loop = runner.loop_run(params, step, tau)
  samples = runner.sample_runs(params, step, tau, max(turns, max(PASS_K)))
  retry = runner.retry_run(params, step, tau)
  val_loop = None
  if runner.scored and val_split is not None and val_split != split:
    val_loop = runner.loop_run(params, step, tau, source=sources.get(val_split) or load(val_split))
  thr = model.spec.loop.threshold
  meta = {"workdir": os.path.abspath(workdir), "step": int(step), "split": split,
          "validation_split": val_split if val_loop is not None else None,
          "kind": model.kind, "loop_mode": runner.mode,
          "neutral_score": eval_runs.NEUTRAL_SCORE if retry is not None else None}
  report = build(loop, samples, retry, turns, 0.5 if thr is None else float(thr), val_loop, meta)
  report["inference_flops_per_example"] = inference_flops(model, loop, retry, turns)
  report["train_flops"] = train_flops(workdir, step)
  if jax.process_index() == 0:
    from slnjax import eval_write  # pylint: disable=g-import-not-at-top
    eval_write.write_all(report, workdir, "eval" if split == "test" else f"eval_{split}")
  return report
