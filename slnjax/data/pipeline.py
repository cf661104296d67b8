"""The per-process grain input pipeline: shard, seeded shuffle, tokenize, pad or pack, batch.

Each process reads only its shard of a split (`ShardOptions`; default `ShardByJaxProcess`):
contiguous ranges of record indices, the remainder spread over the first shards (or dropped
with `drop_remainder=True`). Batches are dicts of int32 numpy arrays, B = per-process batch:

  prompt_ids  [B, P]  bos + prompt tokens, right-padded with pad
  prompt_len  [B]     tokens in prompt_ids (incl. bos)
  target_ids  [B, M]  target tokens + eos, right-padded
  target_len  [B]     tokens in target_ids (incl. eos)
  ids         [B, T]  prompt then target, right-padded (T = seq_len, default P + M)
  prompt_mask [B, T]  1 on prompt tokens of ids
  loss_mask   [B, T]  1 on target tokens of ids incl. eos (logits at t-1 predict ids[t])
  difficulty  [B]     the record's difficulty
  index       [B]     record index in the split's source: `source[index]` -> raw record
  valid       [B]     1 for real rows, 0 for rows that only pad the final eval batch
  memory_*            with bank=(capacity, item_len): the record's memory bank (bank.py)

Packed batches (`pack=True`, SFT) carry only ids, prompt_mask, loss_mask, segment_ids
(1, 2, ... per packed example, 0 on padding) and positions, all [B, T].
Iterators are grain `DatasetIterator`s: `get_state()` / `set_state()` resume exactly.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import grain
import jax
import numpy as np

from slnjax.data import bank as bank_lib
from slnjax.data import storage
from slnjax.data.tasks import base
from slnjax.data.tokenizers import ByteTokenizer, Tokenizer

OVERFLOW_MODES = ("error", "truncate")


def shard_range(num_records: int, shard: grain.sharding.ShardOptions) -> tuple[int, int]:
  """[start, end) of the records that shard `shard.shard_index` of `shard.shard_count` reads."""
  per_shard, remainder = divmod(num_records, shard.shard_count)
  start, end = per_shard * shard.shard_index, per_shard * (shard.shard_index + 1)
  if not shard.drop_remainder:
    start += min(shard.shard_index, remainder)
    end += min(shard.shard_index + 1, remainder)
  return start, end


def _fit(prompt: list[int], target: list[int], p: int, m: int, t: int, overflow: str,
         where: str) -> tuple[list[int], list[int]]:
  """Apply the length limits: raise, or keep bos + the prompt's tail and the target's head."""
  if len(prompt) <= p and len(target) <= m and len(prompt) + len(target) <= t:
    return prompt, target
  if overflow == "error":
    raise ValueError(
        f"{where}: prompt {len(prompt)} tokens (limit {p}), target {len(target)} (limit {m}), "
        f"together {len(prompt) + len(target)} (limit {t}); raise the lengths or use "
        f"overflow='truncate'")
  prompt = prompt[:1] + prompt[1:][len(prompt) - p:] if len(prompt) > p else prompt
  return prompt, target[: min(m, t - len(prompt))]


def encode_record(record: Mapping[str, Any], index: int, tokenizer: Tokenizer, *,
                  prompt_len: int, target_len: int, seq_len: int,
                  overflow: str = "error", valid: bool = True) -> dict[str, np.ndarray]:
  """One unbatched example: the batch keys above without the leading B axis."""
  prompt = [tokenizer.bos_id] + tokenizer.encode(base.as_text(record["prompt"]))
  target = tokenizer.encode(base.as_text(record["target"])) + [tokenizer.eos_id]
  prompt, target = _fit(prompt, target, prompt_len, target_len, seq_len, overflow,
                        f"record {index}")
  pl, tl = len(prompt), len(target)
  out = {
      "prompt_ids": np.full(prompt_len, tokenizer.pad_id, np.int32),
      "target_ids": np.full(target_len, tokenizer.pad_id, np.int32),
      "ids": np.full(seq_len, tokenizer.pad_id, np.int32),
      "prompt_mask": np.zeros(seq_len, np.int32),
      "loss_mask": np.zeros(seq_len, np.int32),
  }
  out["prompt_ids"][:pl] = prompt
  out["target_ids"][:tl] = target
  out["ids"][: pl + tl] = prompt + target
  out["prompt_mask"][:pl] = 1
  out["loss_mask"][pl: pl + tl] = 1
  out["prompt_len"] = np.int32(pl)
  out["target_len"] = np.int32(tl)
  out["difficulty"] = np.int32(record["difficulty"])
  out["index"] = np.int32(index)
  out["valid"] = np.int32(valid)
  return out


def _unpadded(example: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  n = int(example["prompt_len"] + example["target_len"])
  return {k: example[k][:n] for k in ("ids", "prompt_mask", "loss_mask")}


def _rename_packed(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  return {"ids": batch["ids"], "prompt_mask": batch["prompt_mask"],
          "loss_mask": batch["loss_mask"], "segment_ids": batch["ids_segment_ids"],
          "positions": batch["ids_positions"]}


def make_dataset(source: Sequence[Mapping[str, Any]], tokenizer: Tokenizer | None = None, *,
                 batch_size: int, prompt_len: int, target_len: int, seq_len: int | None = None,
                 seed: int = 0, shuffle: bool = True, num_epochs: int | None = None,
                 shard: grain.sharding.ShardOptions | None = None,
                 drop_remainder: bool = True, pad_final_batch: bool = False,
                 pack: bool = False, overflow: str = "error",
                 num_threads: int = 4, prefetch: int = 64,
                 bank: tuple[int, int] | None = None) -> grain.IterDataset:
  """A grain IterDataset of per-process batches of `source` (a split's record source).

  batch_size: per-process rows (see `per_process_batch_size`). num_epochs None repeats
  forever, each epoch shuffled anew from `seed`. shard: this process's share (default
  `ShardByJaxProcess()`). pad_final_batch (finite epochs, no packing): the last batch is
  filled with valid=0 rows, and every shard yields the same number of batches, as
  `jax.make_array_from_process_local_data` needs. overflow: "error" or "truncate" for
  examples longer than the lengths. bank: (capacity, item_len) adds each record's memory
  bank (bank.py; its order is seeded by `seed` and the record index).
  """
  tokenizer = tokenizer or ByteTokenizer()
  seq_len = seq_len or prompt_len + target_len
  if overflow not in OVERFLOW_MODES:
    raise ValueError(f"overflow must be one of {OVERFLOW_MODES}, got {overflow!r}")
  if bank is not None:
    if pack:
      raise ValueError("A memory bank is per example: it cannot be packed (pack=False).")
    bank_lib.check_shape(*bank)
  if pad_final_batch and (num_epochs is None or pack):
    raise ValueError("pad_final_batch needs a finite num_epochs and pack=False")
  shard = shard or grain.sharding.ShardByJaxProcess()
  start, end = shard_range(len(source), shard)
  if end == start and not pad_final_batch:
    raise ValueError(f"shard {shard.shard_index} of {shard.shard_count} has no records "
                     f"(the split has {len(source)})")
  indices = np.arange(start, end, dtype=np.int64)
  ds = grain.MapDataset.source(indices)
  if shuffle:
    ds = ds.shuffle(seed=seed)
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)
  lengths = dict(prompt_len=prompt_len, target_len=target_len, seq_len=seq_len,
                 overflow=overflow)

  def with_bank(ex: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    if bank is None:
      return ex
    return {**ex, **bank_lib.encode_bank(source[i], i, tokenizer, capacity=bank[0],
                                         item_len=bank[1], seed=seed)}

  def load(i: int) -> dict[str, np.ndarray]:
    return with_bank(encode_record(source[int(i)], int(i), tokenizer, **lengths), int(i))

  if pad_final_batch:
    largest = math.ceil(len(source) / shard.shard_count) if not shard.drop_remainder \
        else len(source) // shard.shard_count
    total = math.ceil(largest * num_epochs / batch_size) * batch_size
    real, filler = ds, (start if end > start else 0)

    def load_or_fill(i: int) -> dict[str, np.ndarray]:
      if i < len(real):
        return load(real[i])
      return with_bank(encode_record(source[filler], filler, tokenizer, valid=False,
                                     **lengths), filler)

    ds = grain.MapDataset.range(total).map(load_or_fill)
  else:
    ds = ds.map(load)
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                            prefetch_buffer_size=prefetch))
  if pack:
    it = grain.experimental.FirstFitPackIterDataset(
        it.map(_unpadded),
        length_struct={k: seq_len for k in ("ids", "prompt_mask", "loss_mask")},
        num_packing_bins=batch_size, seed=seed, shuffle_bins=shuffle)
    return it.batch(batch_size, drop_remainder=drop_remainder).map(_rename_packed)
  return it.batch(batch_size, drop_remainder=drop_remainder and not pad_final_batch)


def make_task_dataset(task: str, split: str, *, data_dir: str | None = None, config: Any = None,
                      tokenizer: Tokenizer | None = None, **kwargs: Any):
  """(dataset, source) for a built split: `make_dataset(load_source(...), **kwargs)`."""
  source = storage.load_source(task, split, data_dir, config)
  return make_dataset(source, tokenizer, **kwargs), source


def per_process_batch_size(global_batch_size: int, process_count: int | None = None) -> int:
  """global_batch_size / process_count; ValueError unless it divides evenly."""
  count = jax.process_count() if process_count is None else process_count
  if global_batch_size % count:
    raise ValueError(f"global batch {global_batch_size} does not split over {count} processes")
  return global_batch_size // count


def global_batch(batch: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh,
                 batch_axes: Sequence[str] = ("data", "fsdp")) -> dict[str, jax.Array]:
  """Assemble per-process batches into global arrays, dim 0 sharded over `batch_axes`.

  Axes in `batch_axes` that the mesh lacks are ignored; other dims are replicated. The
  global batch is the per-process batch times `jax.process_count()`.
  """
  axes = tuple(a for a in batch_axes if a in mesh.axis_names)
  spec = jax.sharding.PartitionSpec(axes if axes else None)
  sharding = jax.sharding.NamedSharding(mesh, spec)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}
