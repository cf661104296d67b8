"""A memory bank of variable size: a fixed-capacity, padded and masked store per example.

    bank = empty(batch=B, capacity=C, dim=D, item_len=L)
    bank = append(bank, keys_BND, ids_BNL, len_BN, valid_BN, time=t, overflow="truncate")

Each slot holds one item: its key (an embedding used to score it against a query, [D]), its
token ids (what is prepended to a lobe's context when the item is selected, [L]), its length,
and its insertion time (for recency). ``mask_BC`` marks the slots that hold an item; padded
slots can never be selected (selection.py masks their scores to -inf).

When a bank is full, ``overflow`` decides: "truncate" evicts the oldest item (a growing list
truncated to its newest C items), "sample" keeps a uniform sample of every item ever offered
(reservoir sampling: the n-th item replaces a random slot with probability C / n).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

OVERFLOW = ("truncate", "sample")


class Bank(NamedTuple):
  keys_BCD: jax.Array
  ids_BCL: jax.Array  # int32 token ids, padded with 0
  len_BC: jax.Array  # int32 tokens per item
  mask_BC: jax.Array  # bool: the slot holds an item
  time_BC: jax.Array  # int32 insertion time (larger: more recent), e.g. the dialogue turn
  order_BC: jax.Array  # int32 insertion order (FIFO eviction)
  seen_B: jax.Array  # int32 items ever offered (reservoir sampling)

  @property
  def capacity(self) -> int:
    return self.mask_BC.shape[1]

  def count_B(self):
    return jnp.sum(self.mask_BC, axis=1).astype(jnp.int32)

  def age_BC(self):
    """Steps since insertion, relative to the newest item (0 for the newest)."""
    newest_B = jnp.max(jnp.where(self.mask_BC, self.time_BC, jnp.iinfo(jnp.int32).min), 1)
    return jnp.where(self.mask_BC, newest_B[:, None] - self.time_BC, 0)


def empty(batch: int, capacity: int, dim: int, item_len: int, dtype=jnp.float32) -> Bank:
  if capacity < 1 or item_len < 1:
    raise ValueError(f"Bank capacity={capacity} and item_len={item_len} must be >= 1.")
  return Bank(jnp.zeros((batch, capacity, dim), dtype), jnp.zeros((batch, capacity, item_len),
                                                                   jnp.int32),
              jnp.zeros((batch, capacity), jnp.int32), jnp.zeros((batch, capacity), bool),
              jnp.zeros((batch, capacity), jnp.int32), jnp.zeros((batch, capacity), jnp.int32),
              jnp.zeros((batch,), jnp.int32))


def from_arrays(keys_BCD, ids_BCL, len_BC, mask_BC, time_BC=None) -> Bank:
  """A bank holding given items (e.g. one example's facts); time defaults to slot order."""
  B, C = mask_BC.shape
  if keys_BCD.shape[:2] != (B, C) or ids_BCL.shape[:2] != (B, C) or len_BC.shape != (B, C):
    raise ValueError(f"Bank arrays disagree: keys {keys_BCD.shape}, ids {ids_BCL.shape}, "
                     f"len {len_BC.shape}, mask {mask_BC.shape}; expected [B,C,...] = {(B, C)}.")
  if time_BC is None:
    time_BC = jnp.broadcast_to(jnp.arange(C, dtype=jnp.int32), (B, C))
  mask_BC = mask_BC.astype(bool)
  order_BC = jnp.cumsum(mask_BC, axis=1).astype(jnp.int32) - 1
  return Bank(keys_BCD, ids_BCL.astype(jnp.int32), len_BC.astype(jnp.int32), mask_BC,
              time_BC.astype(jnp.int32), order_BC, jnp.sum(mask_BC, 1).astype(jnp.int32))


def with_keys(bank: Bank, keys_BCD) -> Bank:
  """The same items with new keys (e.g. re-encoded by a trained encoder)."""
  return bank._replace(keys_BCD=keys_BCD.astype(bank.keys_BCD.dtype))


def _insert_one(slot, item, overflow, key):
  """Insert one item into one example's bank (all arrays without the batch axis)."""
  keys, ids, lens, mask, time, order, seen = slot
  k_D, ids_L, len_, valid, t = item
  C = mask.shape[0]
  full = jnp.all(mask)
  first_free = jnp.argmin(mask)  # the first False slot
  if overflow == "truncate":
    victim = jnp.argmin(jnp.where(mask, order, jnp.iinfo(jnp.int32).max))
    target, take = jnp.where(full, victim, first_free), valid
  else:
    n = seen + 1
    k_keep, k_slot = jax.random.split(key)
    keep = jax.random.uniform(k_keep) < C / n.astype(jnp.float32)
    target = jnp.where(full, jax.random.randint(k_slot, (), 0, C), first_free)
    take = valid & (~full | keep)
  put = lambda a, v: jnp.where(take, a.at[target].set(v), a)
  return (put(keys, k_D.astype(keys.dtype)), put(ids, ids_L), put(lens, len_), put(mask, True),
          put(time, t), put(order, seen), seen + valid.astype(jnp.int32))


def append(bank: Bank, keys_BND, ids_BNL, len_BN, valid_BN, time=0, *, overflow="truncate",
           rng=None) -> Bank:
  """Inserts N items per example in order (invalid ones are skipped); see the module doc."""
  if overflow not in OVERFLOW:
    raise ValueError(f"overflow={overflow!r}; expected one of {OVERFLOW}.")
  if overflow == "sample" and rng is None:
    raise ValueError("overflow='sample' draws slots at random: pass an rng key.")
  B, N = valid_BN.shape
  L = bank.ids_BCL.shape[2]
  if ids_BNL.shape[2] != L:
    raise ValueError(f"Item ids have length {ids_BNL.shape[2]}; this bank stores {L}.")
  time_BN = jnp.broadcast_to(jnp.asarray(time, jnp.int32), (B,))[:, None] + jnp.zeros(
      (B, N), jnp.int32)
  keys = (jax.random.split(rng, (B, N)) if rng is not None
          else jnp.zeros((B, N), jnp.uint32))

  def per_example(slot, items, ks):
    def body(s, x):
      item, k = x
      return _insert_one(s, item, overflow, k), None
    s, _ = jax.lax.scan(body, slot, (items, ks))
    return s

  slots = (bank.keys_BCD, bank.ids_BCL, bank.len_BC, bank.mask_BC, bank.time_BC, bank.order_BC,
           bank.seen_B)
  items = (keys_BND, ids_BNL.astype(jnp.int32), len_BN.astype(jnp.int32),
           valid_BN.astype(bool), time_BN)
  return Bank(*jax.vmap(per_example)(slots, items, keys))
