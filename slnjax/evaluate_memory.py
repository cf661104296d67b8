"""The memory part of evaluation (evaluate.Evaluator, for a model with a ``MemoryConfig``).

Each eval batch carries its examples' banks (``make_dataset(..., bank=config.task.bank)``,
batch keys ``memory_*``). The selection is deterministic: the modes that sample in training
(``gumbel_st``, ``sample``) select the top-k of the selector's scores (``greedy``); ``soft``
keeps its soft read-out (no randomness; its hard top-k is what is reported). The selection is
read once per dialogue (query: the prompt) and given to the rollout, as in training.

Reported besides the dialogue metrics, per example and then averaged (overall and per
difficulty): ``memory_precision``, the share of the filled selection slots that hold a
relevant fact, and ``memory_recall``, the share of the example's relevant facts selected.
Transcripts list the selected facts (relevant or not) and the relevant facts missed.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from slnjax import memory, sln
from slnjax.data import bank as bank_lib
from slnjax.objectives import base as objectives_base

EVAL_MODES = {"soft": "soft", "gumbel_st": "greedy", "sample": "greedy", "greedy": "greedy"}
BANK_KEYS = bank_lib.KEYS
METRICS = ("memory_precision", "memory_recall")


def eval_model(model: sln.SLN) -> sln.SLN:
  """The model with its memory selection made deterministic (EVAL_MODES); unchanged
  without memory."""
  if model.memory is None:
    return model
  if model.memory.mode not in EVAL_MODES:
    raise ValueError(f"Selection mode {model.memory.mode!r} has no deterministic evaluation "
                     f"counterpart: add it to evaluate_memory.EVAL_MODES ({EVAL_MODES}).")
  mcfg = dataclasses.replace(model.memory, mode=EVAL_MODES[model.memory.mode])
  return dataclasses.replace(model, memory=mcfg)


def check(model: sln.SLN, bank_shape) -> None:
  """A model with memory needs eval batches with banks, and one without none."""
  if model.memory is not None and bank_shape is None:
    raise ValueError("This model reads a memory bank (model.memory), but the config gives the "
                     "eval batches none: set config.model.memory.lobes and config.task.bank.")
  if model.memory is None and bank_shape is not None:
    raise ValueError(f"The config gives eval batches a memory bank {bank_shape} but the model "
                     "has no memory: build it from the same config (build.build_model).")
  if model.memory is not None and bank_shape[0] < model.memory.k:
    raise ValueError(f"The eval banks hold {bank_shape[0]} items, fewer than the "
                     f"model.memory.k={model.memory.k} it selects: raise config.task.bank.capacity.")


def input_keys(model: sln.SLN) -> tuple[str, ...]:
  """The eval batch keys the jitted rollout reads."""
  return ("prompt_ids", "prompt_len") + (BANK_KEYS if model.memory is not None else ())


def read(model: sln.SLN, params, batch, key, tau):
  """(the memory read for the rollout, its reports as arrays) — (None, {}) without memory.
  Traceable: called inside the evaluator's jitted rollout."""
  if model.memory is None:
    return None, {}
  missing = [k for k in BANK_KEYS if k not in batch]
  if missing:
    raise ValueError(f"The eval batch has no {missing}: build it with "
                     "make_dataset(..., bank=(capacity, item_len)) (evaluate.eval_batches does "
                     "with config.task.bank).")
  r = sln.read_memory(model, params, batch["prompt_ids"], batch["prompt_len"],
                      objectives_base.batch_bank(batch),
                      jax.random.fold_in(key, objectives_base.MEMORY_STREAM), tau)
  rel = batch["memory_relevant"]
  return r, {"memory_index_BJ": r.sel.index_BJ, "memory_valid_BJ": r.sel.valid_BJ,
             "memory_precision_B": memory.precision_at_k(r.sel, rel),
             "memory_recall_B": memory.recall_at_k(r.sel, rel)}


def add_rows(rows: dict, host: dict, b: int) -> None:
  """Appends example b's precision and recall to the evaluator's rows (if it has memory)."""
  if "memory_precision_B" in host:
    rows["memory_precision"].append(host["memory_precision_B"][b])
    rows["memory_recall"].append(host["memory_recall_B"][b])


def summary(r: dict, difficulties) -> dict:
  """Means of the memory rows, overall and per difficulty (``r``: numpy arrays of rows)."""
  out = {}
  for name in METRICS:
    if name not in r:
      continue
    out[name] = r[name].mean()
    for dif in difficulties:
      out[f"{name}/d{dif}"] = r[name][r["difficulty"] == dif].mean()
  return out


def transcript_lines(tokenizer, host: dict, glob: dict, b: int) -> list[str]:
  """Example b's selected facts (slot order), each marked relevant or distractor, then the
  relevant facts that were not selected; nothing without memory."""
  if "memory_index_BJ" not in host:
    return []
  ids, lens = glob["memory_ids"][b], glob["memory_len"][b]
  rel = glob["memory_relevant"][b].astype(bool)
  fact = lambda c: tokenizer.decode([int(t) for t in ids[c, :int(lens[c])]])
  chosen = [int(c) for c, v in zip(host["memory_index_BJ"][b], host["memory_valid_BJ"][b]) if v]
  lines = [f"memory:  {'relevant' if rel[c] else 'distractor'} {fact(c)!r} (slot {c})"
           for c in chosen]
  lines += [f"missed:  relevant {fact(c)!r} (slot {c})"
            for c in np.nonzero(rel)[0] if int(c) not in chosen]
  p, q = float(host["memory_precision_B"][b]), float(host["memory_recall_B"][b])
  lines.append(f"memory precision {p:.2f}, recall {q:.2f}")
  return lines
