"""Each benchmark row against the machine's physical limits.

A row is a list of passes (a prefill, one decoded token, a token's backward pass...); each
pass must move `bytes` through memory and do `flops`, so it takes at least
max(bytes / streaming bandwidth, flops / matmul rate), both measured on this machine
(`measure`). The row's bound is the sum over its passes; a row reports bound / its time.

What a pass must move: the weights it reads (every weight but the input embedding, which is
a row lookup, except where soft tokens multiply their weights over the vocabulary with it),
the KV cache its attention reads (the whole buffer: XLA reads it under a mask) and writes.
A token's backward pass reads the weights (for the input's cotangent) and the cache, and
reads and writes the cache's cotangent; the weights' gradient must be written once per step
(a token's outer products could be kept and added up once, so the accumulator's traffic per
token is not counted). FLOPs: slnjax.flops.lobe_forward_flops (matmuls and attention), 2x
that for a backward pass, plus a soft token's weights-times-embedding product.
This bounds the algorithm as it is (the BPTT step's forward, recompute and backward as
passes of their own), not any algorithm: a reverse pass that did not recompute would be
bounded lower.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from slnjax import lobes
from slnjax.flops import lobe_forward_flops


def _bytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def matmul_rate(n=1024, reps=5) -> float:
  """FLOP/s of a square float32 product on this machine (the better of XLA:CPU's kernels)."""
  from benchmarks.decoding import _best_dot_s  # noqa: PLC0415 (decoding imports this module)
  a = jax.random.normal(jax.random.key(0), (n, n))
  return 2 * n ** 3 / _best_dot_s(a, a, reps)


def measure(d_model=512) -> dict:
  """{"bytes_per_s": streaming bandwidth (a one-row product with a 256 MiB matrix),
  "flops_per_s": matmul rate}."""
  from benchmarks.decoding import stream_rate  # noqa: PLC0415
  return {"bytes_per_s": stream_rate(d_model), "flops_per_s": matmul_rate()}


def _sizes(cfg, batch, cache_len):
  params = jax.eval_shape(lambda: lobes.init(cfg, jax.random.key(0)))
  emb = 0 if cfg.tie_embeddings else _bytes(params["embedding"])
  cache = _bytes(jax.eval_shape(lambda: lobes.init_cache(cfg, batch, cache_len)))
  return _bytes(params), emb, cache


def chunk(cfg, batch, n_tokens, context, cache_len, *, logit_rows=None, soft=False,
          backward=False) -> dict:
  """One pass of `n_tokens` per example after `context` cached positions, in a cache of
  `cache_len` positions: {"bytes", "flops"}. soft: each token's emission multiplies its
  weights over the vocabulary with the embedding (read whole, 2 V D FLOPs a token)."""
  weights, emb, cache = _sizes(cfg, batch, cache_len)
  read = weights - (0 if soft else emb)
  flops = batch * lobe_forward_flops(cfg, n_tokens, context, logit_rows=logit_rows)
  if soft:
    flops += batch * n_tokens * 2 * cfg.vocab_size * cfg.d_model
  if backward:  # read the weights; read the cache, read and write its cotangent
    return {"bytes": read + 3 * cache, "flops": 2 * flops}
  return {"bytes": read + cache, "flops": flops}


def seconds(passes, rates) -> dict:
  """The bound of a list of passes: {"s", "memory_s", "compute_s", "by"} (by: which of the
  two dominates the sum)."""
  mem = comp = total = 0.0
  for p in passes:
    m, c = p["bytes"] / rates["bytes_per_s"], p["flops"] / rates["flops_per_s"]
    mem, comp, total = mem + m, comp + c, total + max(m, c)
  return {"s": total, "memory_s": mem, "compute_s": comp,
          "by": "memory" if mem >= comp else "compute"}


def decode_passes(cfg, batch, prompt, new) -> list[dict]:
  """A greedy rollout: the prefill (logits at the last prompt token), then `new` one-token
  passes, each reading the whole cache buffer."""
  S = prompt + new
  out = [chunk(cfg, batch, prompt, 0, S, logit_rows=1)]
  return out + [chunk(cfg, batch, 1, prompt + i, S) for i in range(new)]


def decode_bound(cfg, batch, prompt, new, rates) -> dict:
  return seconds(decode_passes(cfg, batch, prompt, new), rates)


def bptt_bound(cfg, n_tokens, rates, prompt=64, batch=1) -> dict:
  """A soft-token BPTT step (appendonly): forward (prefill + n soft tokens), recompute (the
  same again, turn by turn), backward (2x the FLOPs; the weights read per token, the
  gradient written once)."""
  S = prompt + n_tokens
  fwd = [chunk(cfg, batch, prompt, 0, S, logit_rows=1)] + [
      chunk(cfg, batch, 1, prompt + i, S, soft=True) for i in range(n_tokens)]
  bwd = [chunk(cfg, batch, prompt, 0, S, logit_rows=1, backward=True)] + [
      chunk(cfg, batch, 1, prompt + i, S, soft=True, backward=True) for i in range(n_tokens)]
  bwd.append({"bytes": _sizes(cfg, batch, S)[0], "flops": 0})  # the gradient, written once
  parts = {"forward": seconds(fwd, rates), "recompute": seconds(fwd, rates),
           "backward": seconds(bwd, rates)}
  total = sum(p["s"] for p in parts.values())
  by = max(parts["backward"]["memory_s"], parts["backward"]["compute_s"])
  return {"s": total, "passes": parts,
          "by": "memory" if by == parts["backward"]["memory_s"] else "compute"}


def lateralized_bound(cfg, batch, prompt, turn, turns, rates) -> dict:
  """The adaptive-compute rows: the writer's prefill and `turns` x `turn` greedy tokens; the
  critic (cfg with a score head, no LM head) reads the prompt once and each turn after it."""
  critic = cfg.replace(score_head=True, lm_head=False)
  S = prompt + turn * turns
  passes = [chunk(cfg, batch, prompt, 0, S, logit_rows=1),
            chunk(critic, batch, prompt, 0, prompt + turn)]
  for t in range(turns):
    passes += [chunk(cfg, batch, 1, prompt + t * turn + i, S) for i in range(turn)]
    passes.append(chunk(critic, batch, turn, prompt, prompt + turn))
  return seconds(passes, rates)
