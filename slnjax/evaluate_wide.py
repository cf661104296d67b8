"""Evaluation of wide SLNs (rows E, G) in the train loop (what evaluate.Evaluator is for the
dialogue kinds).

The gate follows the while_loop driver (``slnjax.wide.rollout``; ``config.eval.mode`` "" is
greedy, else a route whose hard version is used), the output lobe decodes up to
``target_len`` answer tokens, and the task's verifier judges the decoded answer. Reported
(flat floats, logged as eval/...): ``accuracy`` and ``accuracy/d<k>``; the lobe calls used,
``iters`` and ``iters/d<k>`` (adaptive compute per difficulty); ``gate_halted_frac`` (the
gate chose OUTPUT before max_iters); ``choices/<left|right|output>`` (fractions of the gate's
calls); ``experts_<left|right>/<e>`` (each expert's share of the routed slots of the calls
that lobe made). The whole summary (with the histogram of iterations per difficulty) goes to
<workdir>/eval_summary/step_<N>.json, a few examples to <workdir>/transcripts/step_<N>.txt.
"""
from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import numpy as np

from slnjax import data, evaluate, wide
from slnjax.wide.report import UsageAccumulator


def answer_texts(tokenizer, answer_ids_BM) -> list[str]:
  """The decoded answers, cut at eos / stop-of-turn / pad."""
  ids = np.asarray(answer_ids_BM)
  return [evaluate.turn_text(tokenizer, row, np.ones_like(row)) for row in ids]


def judge(task, source, tokenizer, answer_ids_BM, index_B, valid_B) -> np.ndarray:
  """correct_B: the task's verifier on each decoded answer (False on padding rows)."""
  answers = answer_texts(tokenizer, answer_ids_BM)
  return data.verify_batch(task, source, np.asarray(index_B), answers, np.asarray(valid_B))


def flat_metrics(summary: dict) -> dict:
  """A UsageAccumulator summary as the scalar metrics the writer logs."""
  out = {"examples": float(summary["examples"]), "iters": summary["iters"],
         "gate_halted_frac": float(summary["gate_halted_frac"])}
  if "accuracy" in summary:
    out["accuracy"] = summary["accuracy"]
    out.update({f"accuracy/d{d}": a for d, a in summary["accuracy_by_difficulty"].items()})
  out.update({f"iters/d{d}": v["mean"] for d, v in summary["iters_by_difficulty"].items()})
  calls = max(sum(summary["choices"].values()), 1)
  out.update({f"choices/{name}": n / calls for name, n in summary["choices"].items()})
  for lobe in ("left", "right"):
    out.update({f"experts_{lobe}/{e}": float(f) for e, f in enumerate(summary[f"experts_{lobe}"])})
  return {k: float(v) for k, v in out.items()}


class WideEvaluator:
  """Periodic evaluation of a wide SLN on a split of its task (deterministic: fixed rng)."""

  def __init__(self, config, model: wide.WideSLN, mesh, rules, tokenizer, source, workdir: str):
    from slnjax import build  # pylint: disable=g-import-not-at-top
    if not isinstance(model, wide.WideSLN):
      raise TypeError(f"WideEvaluator evaluates wide SLNs; got kind {model.kind!r} "
                      "(use evaluate.Evaluator).")
    self.config, self.model, self.mesh = config, model, mesh
    self.tokenizer, self.source, self.workdir = tokenizer, source, workdir
    self.task = config.task.name
    mode = config.eval.mode or "greedy"
    answer_len = build.target_len(config)
    abstract_mesh = mesh.abstract_mesh

    def run(params, prompt_ids, prompt_len, key, tau):
      with jax.sharding.use_abstract_mesh(abstract_mesh), nn.logical_axis_rules(list(rules)):
        return wide.rollout(model, params, prompt_ids, prompt_len, key, tau, mode=mode,
                            answer_len=answer_len)

    self._rollout = jax.jit(run)

  def __call__(self, params, step: int, tau) -> tuple[dict, str]:
    """(metrics, transcript text). Process 0 also writes the summary and transcript files."""
    usage = UsageAccumulator(self.model.cfg.n_experts, self.model.cfg.max_iters)
    key = jax.random.fold_in(jax.random.PRNGKey(self.config.seed + 1), step)
    transcripts = []
    for i, local in enumerate(evaluate.eval_batches(self.config, self.source, self.tokenizer)):
      batch = data.global_batch({k: local[k] for k in ("prompt_ids", "prompt_len")}, self.mesh)
      tr = self._rollout(params, batch["prompt_ids"], batch["prompt_len"],
                         jax.random.fold_in(key, i), tau)
      host = wide.WideTrace(*(evaluate.host_array(x) for x in tr))
      glob = {k: evaluate.host_array(data.global_batch({k: local[k]}, self.mesh)[k])
              for k in ("index", "valid", "difficulty", "prompt_ids", "target_ids")}
      correct_B = judge(self.task, self.source, self.tokenizer, host.answer_ids_BM,
                        glob["index"], glob["valid"])
      usage.add(host, glob["difficulty"], glob["valid"], correct_B)
      for b in np.flatnonzero(glob["valid"]):
        if len(transcripts) < self.config.eval.transcripts:
          transcripts.append(self._transcript(host, glob, correct_B, b))
    if usage.count == 0:
      return {}, ""
    summary = usage.summary()
    text = f"step {step}\n\n" + "\n".join(transcripts)
    if jax.process_index() == 0:
      self._write("eval_summary", f"step_{step}.json", json.dumps(summary, indent=1))
      if transcripts:
        self._write("transcripts", f"step_{step}.txt", text)
    return flat_metrics(summary), text

  def _write(self, folder: str, name: str, text: str) -> None:
    out = os.path.join(self.workdir, folder)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, name), "w") as f:
      f.write(text)

  def _transcript(self, host: wide.WideTrace, glob: dict, correct_B, b: int) -> str:
    tok = self.tokenizer
    dec = lambda ids: tok.decode(data.tokenizers.truncate_at(ids, {tok.eos_id, tok.pad_id}))
    calls = [int(c) for c in host.choice_NB[:, b] if c >= 0]
    route = " ".join(wide.CHOICE_NAMES[c] for c in calls) or "-"
    if self.model.cfg.lateralized:
      scores = [f"{float(s):.3f}" for c, s in zip(host.choice_NB[:, b], host.score_NB[:, b])
                if c == wide.RIGHT]
      route += f" | scores {' '.join(scores) or '-'}"
    return "\n".join([
        f"--- record {int(glob['index'][b])} (difficulty {int(glob['difficulty'][b])}) ---",
        f"prompt:  {dec(glob['prompt_ids'][b][1:])}",
        f"target:  {dec(glob['target_ids'][b])}",
        f"answer:  {answer_texts(tok, host.answer_ids_BM[b:b + 1])[0]!r} | "
        + ("correct" if correct_B[b] else "wrong"),
        f"gate:    {route} ({int(host.iters_B[b])} lobe call(s)"
        + (", gate halted)" if host.gate_halted_B[b] else ", max_iters)") + "\n"])
