"""Embedding memory items and queries (token id sequences) as key vectors.

- ``NgramEncoder``: a learned bag of hashed byte n-grams (mean of table rows), a cheap
  retriever-style encoder that can match names character by character.
- ``lobe_encode``: a lobe's own representation, its final hidden states mean-pooled over the
  item's tokens (frozen or trainable, as the caller's gradient says).
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from slnjax import lobes

_MULT = (0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F, 0x165667B1, 0xD3A2646C)


def ngram_hashes(ids_NL, len_N, n: int, buckets: int):
  """Hashed n-gram ids [N, L] (position i: tokens i-n+1..i) and their validity mask."""
  N, L = ids_NL.shape
  if not 1 <= n <= len(_MULT):
    raise ValueError(f"n-gram order {n} not in 1..{len(_MULT)}.")
  h = jnp.full((N, L), n, jnp.uint32)
  for j in range(n):  # uint32 arithmetic wraps: a multiplicative hash of the n tokens
    shifted = jnp.pad(ids_NL, ((0, 0), (j, 0)))[:, :L].astype(jnp.uint32)
    h = (h ^ (shifted + jnp.uint32(1))) * jnp.uint32(_MULT[j])
    h = h ^ (h >> 15)
  pos = jnp.arange(L)[None, :]
  valid = (pos >= n - 1) & (pos < len_N[:, None])
  return (h % jnp.uint32(buckets)).astype(jnp.int32), valid


class NgramEncoder(nn.Module):
  """keys [..., D] = mean over the item's n-grams (n in `orders`) of a learned table."""
  dim: int
  buckets: int = 4096
  orders: tuple[int, ...] = (2, 3, 4)

  @nn.compact
  def __call__(self, ids_NL, len_N):
    lead = ids_NL.shape[:-1]
    ids = ids_NL.reshape(-1, ids_NL.shape[-1])
    lens = len_N.reshape(-1)
    table = self.param("table", nn.with_logical_partitioning(
        nn.initializers.normal(1.0), (None, "embed")), (self.buckets, self.dim))
    total = jnp.zeros((ids.shape[0], self.dim), table.dtype)
    count = jnp.zeros((ids.shape[0], 1), table.dtype)
    for n in self.orders:
      h, valid = ngram_hashes(ids, lens, n, self.buckets)
      total = total + jnp.sum(jnp.take(table, h, axis=0) * valid[..., None], axis=1)
      count = count + jnp.sum(valid, axis=1, keepdims=True)
    return (total / jnp.maximum(count, 1.0)).reshape(lead + (self.dim,))


def lobe_encode(cfg: lobes.LobeConfig, lobe_params, ids_NL, len_N):
  """Mean-pooled final hidden states of a lobe over each sequence's tokens [..., D]."""
  lead = ids_NL.shape[:-1]
  ids = ids_NL.reshape(-1, ids_NL.shape[-1])
  lens = len_N.reshape(-1)
  h = lobes.apply(cfg, lobe_params, ids=ids)["hidden_BTD"]
  m = (jnp.arange(ids.shape[1])[None, :] < lens[:, None]).astype(h.dtype)
  out = jnp.sum(h * m[..., None], 1) / jnp.maximum(jnp.sum(m, 1, keepdims=True), 1.0)
  return out.reshape(lead + (h.shape[-1],))
