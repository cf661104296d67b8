"""Memory banks from task records: the fact strings a record carries, as padded token ids.

A task gives a bank when its records have the fields in ``FIELDS`` (``facts``: the
``relevant_facts`` that answer the question and the ``distractor_facts``). Each record's
bank is its relevant facts, then distractors until ``capacity`` items, in an order shuffled
by (seed, record index): the same record always gets the same bank, whatever the batch or
the process. A record with more relevant facts than ``capacity``, or a fact longer than
``item_len`` tokens, is an error (no silent truncation). Unfilled slots are masked.

Batch keys (make_dataset(..., bank=(capacity, item_len))):

  memory_ids      [B, C, L]  item token ids (no bos/eos), padded with pad
  memory_len      [B, C]     tokens per item
  memory_mask     [B, C]     1 where the slot holds an item
  memory_relevant [B, C]     1 for the record's relevant facts (reports, pre-training)
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from slnjax.data.tasks import base
from slnjax.data.tokenizers import Tokenizer

FIELDS = ("relevant_facts", "distractor_facts")
TASKS_WITH_BANK = ("facts",)
KEYS = ("memory_ids", "memory_len", "memory_mask", "memory_relevant")


def check_shape(capacity: int, item_len: int) -> None:
  if capacity < 1 or item_len < 1:
    raise ValueError(f"A memory bank needs capacity >= 1 and item_len >= 1; got "
                     f"capacity={capacity}, item_len={item_len}.")


def encode_bank(record: Mapping[str, Any], index: int, tokenizer: Tokenizer, *, capacity: int,
                item_len: int, seed: int = 0) -> dict[str, np.ndarray]:
  """One record's bank (the batch keys above without the leading B axis)."""
  check_shape(capacity, item_len)
  missing = [f for f in FIELDS if f not in record]
  if missing:
    raise ValueError(f"record {index} has no {missing}: this task gives no memory bank "
                     f"(tasks that do: {TASKS_WITH_BANK}).")
  relevant = base.as_text_list(record["relevant_facts"])
  distractors = base.as_text_list(record["distractor_facts"])
  if len(relevant) > capacity:
    raise ValueError(f"record {index} has {len(relevant)} relevant facts but the memory bank "
                     f"holds {capacity}: raise the bank capacity.")
  items = [(f, 1) for f in relevant] + [(f, 0) for f in distractors]
  items = items[:capacity]
  rng = np.random.default_rng([int(seed), int(index)])
  out = {"memory_ids": np.full((capacity, item_len), tokenizer.pad_id, np.int32),
         "memory_len": np.zeros(capacity, np.int32),
         "memory_mask": np.zeros(capacity, np.int32),
         "memory_relevant": np.zeros(capacity, np.int32)}
  for slot, j in enumerate(rng.permutation(len(items))):
    text, rel = items[j]
    ids = tokenizer.encode(text)
    if len(ids) > item_len:
      raise ValueError(f"record {index}: the fact {text!r} is {len(ids)} tokens, longer "
                       f"than the memory items ({item_len}): raise item_len.")
    out["memory_ids"][slot, :len(ids)] = ids
    out["memory_len"][slot] = len(ids)
    out["memory_mask"][slot] = 1
    out["memory_relevant"][slot] = rel
  return out
