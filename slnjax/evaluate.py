"""Evaluation with the task verifiers, and the host side of verifier rewards.

    python -m slnjax.evaluate --workdir W [--split test] [--step N] [--turns T] [--num N]

evaluates any dialogue checkpoint in full (slnjax/eval_cli.py: the loop, its baselines and
the critic, into W/eval.json, eval.md, eval.png). This module is the train loop's periodic
evaluation:

Accuracy is measured on the left lobe's turns, decoded with the tokenizer (cut at eos /
stop-of-turn) and checked by the task's verifier: after the first turn, and after the loop
(the last turn each example took). Also per difficulty, with the mean number of turns used
(adaptive compute). A few dialogues are written as readable text to
<workdir>/transcripts/step_<N>.txt. A model with memory reads each example's bank, selects
deterministically and also reports the selector's precision and recall (evaluate_memory.py).
"""
from __future__ import annotations

import collections
import dataclasses
import os

import jax
import numpy as np
from jax.experimental import multihost_utils

from slnjax import data, evaluate_memory, loop, sln


def host_array(x) -> np.ndarray:
  """The global value of a (possibly sharded, multi-process) array on every process."""
  if jax.process_count() == 1 or not isinstance(x, jax.Array) or x.is_fully_addressable:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def turn_text(tokenizer, ids_M, valid_M) -> str:
  ids = [int(i) for i, v in zip(ids_M, valid_M) if v]
  stops = {tokenizer.eos_id, tokenizer.stop_of_turn_id, tokenizer.pad_id}
  return tokenizer.decode(data.tokenizers.truncate_at(ids, stops))


def verify_turns(task, source, tokenizer, d: dict, index_B, valid_B) -> np.ndarray:
  """correct_NB: the verifier on each turn's decoded left text (False where not taken)."""
  ids, valid, active = d["left_ids_NBM"], d["left_valid_NBM"], d["active_NB"]
  N, B = active.shape
  out = np.zeros((N, B), bool)
  for n in range(N):
    answers = [turn_text(tokenizer, ids[n, b], valid[n, b]) for b in range(B)]
    ok_B = data.verify_batch(task, source, index_B, answers, valid_B)
    out[n] = ok_B & active[n].astype(bool)
  return out


def verifier_reward(rollout: dict, batch, task, source, tokenizer, mesh) -> jax.Array:
  """rollout["reward_NB"] [N,R]: 1.0 where the verifier accepts row r's turn n, judged
  against the record of batch row ``rollout["batch_row"][r]`` (objectives/base.py); a
  global array whose row axis is sharded like the batch."""
  need = ("left_ids_NBM", "left_valid_NBM", "active_NB", "batch_row")
  missing = [k for k in need if k not in rollout]
  if missing:
    raise TypeError(f"A verifier-rewarded rollout must be a dict with {need} "
                    f"(objectives.base.make_rollout); {missing} are missing.")
  host = {k: host_array(rollout[k]) for k in need}
  row_R = host["batch_row"].astype(np.int64)
  reward_NB = verify_turns(task, source, tokenizer, host, host_array(batch["index"])[row_R],
                           host_array(batch["valid"])[row_R]).astype(np.float32)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, ("data", "fsdp")))
  return jax.make_array_from_callback(reward_NB.shape, sharding, lambda idx: reward_NB[idx])


def dialogue_metrics(model: sln.SLN, host: dict, correct_NB: np.ndarray, valid_B) -> dict:
  """Mean turns used; the verifier's accuracy on the final turns; with a critic, how often
  its decision (score >= threshold, or 0.5) agrees with the verifier on the turns taken."""
  turns_B, active_NB = host["turns_B"], host["active_NB"].astype(bool)
  sel_B = np.asarray(valid_B).astype(bool) & (turns_B > 0)
  if not sel_B.any():
    return {}
  last_B = np.clip(turns_B - 1, 0, correct_NB.shape[0] - 1)
  final_B = correct_NB[last_B, np.arange(len(turns_B))]
  out = {"turns": float(turns_B[sel_B].mean()), "answer_acc": float(final_B[sel_B].mean())}
  if model.spec.scored:
    thr = model.spec.loop.threshold if model.spec.loop.threshold is not None else 0.5
    use_NB = active_NB & sel_B[None, :]
    agree_NB = (host["score_NB"] >= thr) == correct_NB
    out["critic_acc"] = float(agree_NB[use_NB].mean())
  return out


def rollout_metrics(model, rollout: dict, batch, task, source, tokenizer) -> dict:
  """dialogue_metrics of a training rollout (computed on the host, only when logging)."""
  need = ("left_ids_NBM", "left_valid_NBM", "active_NB", "turns_B", "score_NB", "batch_row")
  if any(k not in rollout for k in need):
    return {}
  host = {k: host_array(rollout[k]) for k in need}
  row_R = host["batch_row"].astype(np.int64)
  valid_R = host_array(batch["valid"])[row_R]
  if "reward_NB" in rollout:
    correct_NB = host_array(rollout["reward_NB"]) > 0.5
  else:
    correct_NB = verify_turns(task, source, tokenizer, host, host_array(batch["index"])[row_R],
                              valid_R)
  return dialogue_metrics(model, host, correct_NB, valid_R)


def eval_batches(config, source, tokenizer):
  """The evaluation split in order, once (the last batch padded: ``valid`` marks real rows),
  at most config.eval.num_batches batches (-1: all); per-process batches, with the examples'
  memory banks when the config has a memory (config.task.bank)."""
  from slnjax import build, config as cfg  # pylint: disable=g-import-not-at-top
  _, batch_size = cfg.eval_config(config)
  ds = data.make_dataset(
      source, tokenizer, batch_size=data.per_process_batch_size(batch_size),
      prompt_len=config.prompt_len, target_len=build.target_len(config), shuffle=False,
      num_epochs=1, pad_final_batch=True, overflow="truncate", seed=config.seed,
      bank=build.bank_shape(config))
  limit = config.eval.num_batches
  for i, batch in enumerate(ds):
    if 0 <= limit <= i:
      break
    yield batch


class Evaluator:
  """Periodic evaluation of a model on a split of its task (deterministic: fixed rng)."""

  def __init__(self, config, model: sln.SLN, mesh, rules, tokenizer, source, workdir: str):
    from slnjax import build  # pylint: disable=g-import-not-at-top
    evaluate_memory.check(model, build.bank_shape(config))
    self.config, self.mesh, self.rules = config, mesh, rules
    self.tokenizer, self.source, self.workdir = tokenizer, source, workdir
    self.task = config.task.name
    if config.eval.mode:
      spec = dataclasses.replace(model.spec,
                                 loop=dataclasses.replace(model.spec.loop, mode=config.eval.mode))
      model = dataclasses.replace(model, spec=spec)
    self.model = model = evaluate_memory.eval_model(model)
    self._inputs = evaluate_memory.input_keys(model)
    abstract_mesh = mesh.abstract_mesh

    def run(params, inputs, key, tau):
      import flax.linen as nn  # pylint: disable=g-import-not-at-top
      with jax.sharding.use_abstract_mesh(abstract_mesh), nn.logical_axis_rules(list(rules)):
        mem, reports = evaluate_memory.read(model, params, inputs, key, tau)
        d = sln.rollout(model, params, inputs["prompt_ids"], inputs["prompt_len"], key, tau,
                        memory=mem)
        return {**d._asdict(), **reports}

    self._rollout = jax.jit(run)

  def results(self, params, step: int, tau, key=None, source=None):
    """Per eval batch: (host, glob), the rollout's outputs (with the memory selection and
    its per-example precision / recall when the model has memory) and the batch's fields,
    as global numpy arrays. The rng is fixed by (config.seed, step) unless ``key`` is
    given; ``source``: another split than the evaluator's (e.g. validation)."""
    if key is None:
      key = jax.random.fold_in(jax.random.PRNGKey(self.config.seed + 1), step)
    fields = ("index", "valid", "difficulty", "prompt_ids", "prompt_len", "target_ids")
    if self.model.memory is not None:
      fields += evaluate_memory.BANK_KEYS
    source = self.source if source is None else source
    for i, local in enumerate(eval_batches(self.config, source, self.tokenizer)):
      inputs = data.global_batch({k: local[k] for k in self._inputs}, self.mesh)
      out = self._rollout(params, inputs, jax.random.fold_in(key, i), tau)
      host = {k: host_array(v) for k, v in out.items()}
      glob = {k: host_array(data.global_batch({k: local[k]}, self.mesh)[k]) for k in fields}
      yield host, glob

  def __call__(self, params, step: int, tau) -> tuple[dict, str]:
    """(metrics, transcript text). Process 0 also writes the transcripts file."""
    rows = collections.defaultdict(list)
    transcripts = []
    for host, glob in self.results(params, step, tau):
      correct_NB = verify_turns(self.task, self.source, self.tokenizer, host, glob["index"],
                                glob["valid"])
      turns_B = host["turns_B"]
      last_B = np.clip(turns_B - 1, 0, correct_NB.shape[0] - 1)
      final_B = correct_NB[last_B, np.arange(len(turns_B))]
      dm = dialogue_metrics(self.model, host, correct_NB, glob["valid"])
      if "critic_acc" in dm:
        rows["critic_acc"].append(dm["critic_acc"])
      for b in np.nonzero(glob["valid"])[0]:
        rows["turn1"].append(correct_NB[0, b])
        rows["final"].append(final_B[b])
        rows["turns"].append(turns_B[b])
        rows["difficulty"].append(glob["difficulty"][b])
        evaluate_memory.add_rows(rows, host, b)
        if len(transcripts) < self.config.eval.transcripts:
          transcripts.append(self._transcript(host, glob, correct_NB, b))
    r = {k: np.asarray(v, np.float64) for k, v in rows.items()}
    if not rows:
      return {}, ""
    m = {"acc_turn1": r["turn1"].mean(), "acc_final": r["final"].mean(),
         "turns": r["turns"].mean(), "examples": float(len(r["turns"]))}
    if "critic_acc" in r:  # mean over batches of the per-batch agreement
      m["critic_acc"] = r["critic_acc"].mean()
    difficulties = sorted(set(r["difficulty"].astype(int)))
    for dif in difficulties:
      sel = r["difficulty"] == dif
      m[f"acc_turn1/d{dif}"] = r["turn1"][sel].mean()
      m[f"acc_final/d{dif}"] = r["final"][sel].mean()
      m[f"turns/d{dif}"] = r["turns"][sel].mean()
    m.update(evaluate_memory.summary(r, difficulties))
    text = f"step {step}\n\n" + "\n".join(transcripts)
    if jax.process_index() == 0 and transcripts:
      out = os.path.join(self.workdir, "transcripts")
      os.makedirs(out, exist_ok=True)
      with open(os.path.join(out, f"step_{step}.txt"), "w") as f:
        f.write(text)
    return {k: float(v) for k, v in m.items()}, text

  def _transcript(self, host, glob, correct_NB, b) -> str:
    tok = self.tokenizer
    dec = lambda ids: tok.decode(data.tokenizers.truncate_at(ids, {tok.eos_id, tok.pad_id}))
    lines = [f"--- record {int(glob['index'][b])} (difficulty {int(glob['difficulty'][b])}) ---",
             f"prompt:  {dec(glob['prompt_ids'][b][1:])}",
             f"target:  {dec(glob['target_ids'][b])}"]
    lines += evaluate_memory.transcript_lines(tok, host, glob, b)
    turns = int(host["turns_B"][b])
    for n in range(turns):
      left = turn_text(tok, host["left_ids_NBM"][n, b], host["left_valid_NBM"][n, b])
      line = f"turn {n + 1}: left {left!r}"
      if self.model.spec.tall:
        right = turn_text(tok, host["right_ids_NBM"][n, b], np.ones_like(host["right_ids_NBM"][n, b]))
        line += f" | right {right!r}"
      if self.model.spec.scored:
        line += f" | score {float(host['score_NB'][n, b]):.3f}"
      line += " | correct" if correct_NB[n, b] else " | wrong"
      lines.append(line)
    reason = loop.HALT_NAMES.get(int(host["halt_reason_B"][b]), "?")
    lines.append(f"halted: {reason} after {turns} turn(s)\n")
    return "\n".join(lines)


if __name__ == "__main__":
  from slnjax import eval_cli  # pylint: disable=g-import-not-at-top
  eval_cli.main()
