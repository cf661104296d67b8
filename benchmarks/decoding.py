"""Comparison 2: dialogue decoding (the while_loop driver) against transformers' generate.

slnjax: `sln.rollout` of a single lobe in greedy mode, 128 new tokens as 4 turns of 32 (and
1 turn of 128), after a 64-token prompt. The peer: `generate(greedy, max_new_tokens=128)`.
New tokens per second, prefill included on both sides.

slnjax runs in four set-ups (VARIANTS): the lobe as configured (scanned layers, decoded as
`LobeConfig.decode_layers="auto"` resolves: unrolled on a CPU, the params relaid out once per
call by `lobes.prepare_decoding`), the same decoded with the layer scan
(`decode_layers="scan"`), compiled with XLA:CPU's dot products through Eigen instead of
YNNPACK (`EIGEN_DOTS`, passed to `.compile(compiler_options=...)`, so only this executable
is affected), and that with the decoded tokens' products on the few-rows CPU kernel
(`decode_kernel="cpu_few_rows"`, slnjax/kernels/few_rows.cc). XLA's kernels for a few rows
(batch 8 x d_model 512 into 50304 logits) read the weights at 5-8 GB/s here; see
ANALYSIS.md. Each runner reports its fraction of the row's bound (benchmarks/roofline.py).
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import harness, peers, roofline as bounds
from slnjax import lobes, sln
from slnjax.kernels import few_rows
from slnjax.loop import LoopConfig

PROMPT = 64
NEW = 128
REPS = 5  # interleaved; the machine's memory bandwidth varies from minute to minute
# XLA:CPU compiler option: no YNNPACK fusions, so dot products go through Eigen.
EIGEN_DOTS = {"xla_cpu_experimental_ynn_fusion_type": ""}
# runner suffix -> (decode_layers: None keeps the config's, compiler options, decode_kernel)
VARIANTS = {"": (None, None, "xla"), "_scan": ("scan", None, "xla"),
            "_eigen": (None, EIGEN_DOTS, "xla"),
            "_few_rows": (None, EIGEN_DOTS, "cpu_few_rows")}


def step_bytes(cfg, batch, cache_len) -> dict:
  """Bytes one decoded token must read at least: every weight except the input embedding (a
  row lookup; a tied one is the LM head and counted once), and each layer's keys and values
  over the whole cache (the attention reads every cached position, masked ones included)."""
  params = jax.eval_shape(lambda: lobes.init(cfg, jax.random.key(0)))
  nbytes = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
  weights = nbytes(params)
  if not cfg.tie_embeddings:
    weights -= nbytes(params["embedding"])
  cache = nbytes(jax.eval_shape(lambda: lobes.init_cache(cfg, batch, cache_len)))
  return {"weights": weights, "cache": cache, "total": weights + cache}


def _best_dot_s(x, w, reps):
  """Min wall time of x @ w, the better of YNNPACK and Eigen."""
  best = float("inf")
  for options in (None, EIGEN_DOTS):
    dot = jax.jit(lambda x, w: x @ w).lower(x, w).compile(compiler_options=options)
    best = min([best] + harness.timed(lambda: jax.block_until_ready(dot(x, w)), reps))
  return best


def stream_rate(d_model=512, mib=256, reps=5) -> float:
  """Bytes/s at which this machine streams weights from memory: a one-row product with a
  matrix too big for the caches (a matrix-vector product does little else)."""
  w_DN = jax.random.normal(jax.random.key(0), (d_model, mib * 2**20 // (4 * d_model)))
  return w_DN.nbytes / _best_dot_s(jnp.ones((1, d_model)), w_DN, reps)


def head_seconds(cfg, batch, reps=5) -> float:
  """The LM head's product alone at `batch` rows ([B,D] x [D,V]), the better kernel."""
  w_DV = jax.random.normal(jax.random.key(0), (cfg.d_model, cfg.vocab_size))
  return _best_dot_s(jnp.ones((batch, cfg.d_model)), w_DV, reps)


def kernel_head_seconds(cfg, batch, reps=5) -> float | None:
  """The LM head's product on the few-rows kernel (weights packed beforehand); None where
  the kernel does not run (not here, a batch outside 2-8 rows, a vocab not a multiple of 8)."""
  if (few_rows.why_unavailable() is not None or cfg.vocab_size % few_rows.TILE
      or not few_rows.MIN_ROWS <= batch <= few_rows.MAX_ROWS):
    return None
  w_DV = jax.random.normal(jax.random.key(0), (cfg.d_model, cfg.vocab_size))
  w_TK8, x = jax.block_until_ready(few_rows.pack(w_DV)), jnp.ones((batch, cfg.d_model))
  fn = jax.jit(few_rows.packed_matmul)
  return min(harness.timed(lambda: jax.block_until_ready(fn(x, w_TK8)), reps))


def roofline(cfg, batch, new=NEW, prompt=PROMPT, rate=None) -> dict:
  """The memory-bandwidth ceiling on new tokens/s: one token step reads step_bytes at the
  cache's final length (prompt + new) at `rate` bytes/s; the prefill is left out (an upper
  bound)."""
  b = step_bytes(cfg, batch, prompt + new)
  rate = stream_rate(cfg.d_model) if rate is None else rate
  return {"step_bytes": b, "stream_bytes_per_s": rate, "tokens_per_s": batch * rate / b["total"]}


def prompt_ids(cfg, batch, prompt=PROMPT):
  return np.random.default_rng(batch).integers(0, cfg.vocab_size, (batch, prompt)).astype(
      np.int32)


def lower(cfg, batch, turn_len, max_turns, prompt=PROMPT, params=None):
  """(the rollout lowered for these shapes, its arguments); params as in `build`."""
  model = sln.build("single", cfg, None, LoopConfig(turn_len=turn_len, max_turns=max_turns,
                                                    mode="greedy", threshold=None))
  params = sln.init(model, jax.random.key(0)) if params is None else {
      k: lobes.with_layer_layout(v, cfg.scan_layers) for k, v in params.items()}
  ids = prompt_ids(cfg, batch, prompt)
  plen = np.full((batch,), prompt, np.int32)
  fn = jax.jit(lambda p, i, l: sln.rollout(model, p, i, l, jax.random.key(0)).left_ids_NBM)
  return fn.lower(params, ids, plen), (params, ids, plen)


def build(cfg, batch, turn_len, max_turns, prompt=PROMPT, params=None, compiler_options=None):
  """params: the SLN's (default: random); relaid out to cfg.scan_layers when they differ."""
  lowered, args = lower(cfg, batch, turn_len, max_turns, prompt, params)
  t0 = time.perf_counter()
  compiled = lowered.compile(compiler_options=compiler_options)
  return compiled, args, time.perf_counter() - t0


def run_case(cfg, batch, shapes, reps, peer=None, new=NEW, prompt=PROMPT, params=None,
             variants=VARIANTS):
  """shapes: [(turn_len, max_turns)] with turn_len * max_turns = new. params: slnjax's
  (default random); when they are the peer's weights, row["same_tokens"] says whether both
  sides wrote the same greedy tokens (in every variant)."""
  row = {"batch": batch, "new_tokens": new, "prompt": prompt}
  runs = {}
  for m, n in shapes:
    if m * n != new:
      raise ValueError(f"{n} turns of {m} tokens is not {new} new tokens.")
    for suffix, (how, options, kernel) in variants.items():
      if kernel == "cpu_few_rows" and few_rows.why_unavailable() is not None:
        row[f"skipped{suffix}"] = few_rows.why_unavailable()
        continue
      c = cfg.replace(decode_layers=how or cfg.decode_layers, decode_kernel=kernel)
      compiled, args, t_compile = build(c, batch, m, n, prompt, params, options)
      runs[f"slnjax_{n}x{m}{suffix}"] = (
          lambda c=compiled, a=args: jax.block_until_ready(c(*a)),
          {"compile_s": t_compile, "scan_layers": c.scan_layers,
           "decoded_scanned": lobes.decode_config(c).scan_layers,
           "compiler_options": dict(options or {}), "decode_kernel": kernel})
  if peer is not None:
    ids_t = peers.as_torch(prompt_ids(cfg, batch, prompt))
    runs["torch_generate"] = (lambda: peers.generate(peer, ids_t, new), {})
  outs = {name: fn() for name, (fn, _) in runs.items()}  # warm-up
  if peer is not None and params is not None:
    theirs = outs["torch_generate"].numpy()
    row["same_tokens"] = all(
        np.array_equal(np.concatenate(list(np.asarray(o)), axis=1), theirs)
        for k, o in outs.items() if k.startswith("slnjax"))
  for name, (fn, info) in runs.items():
    info["times_s"] = []
  rates = [stream_rate(cfg.d_model)]
  for _ in range(reps):  # interleaved
    for name, (fn, info) in runs.items():
      t0 = time.perf_counter()
      fn()
      info["times_s"].append(time.perf_counter() - t0)
  rates.append(stream_rate(cfg.d_model))
  row["roofline"] = {**roofline(cfg, batch, new, prompt, max(rates)), "stream_rates": rates,
                     "head_s": head_seconds(cfg, batch),
                     "head_kernel_s": kernel_head_seconds(cfg, batch),
                     "head_bytes": 4 * cfg.d_model * cfg.vocab_size}
  rates = {"bytes_per_s": max(rates), "flops_per_s": bounds.matmul_rate()}
  row["bound"] = {**bounds.decode_bound(cfg, batch, prompt, new, rates), "rates": rates}
  for name, (fn, info) in runs.items():
    info.update(harness.summary(info["times_s"]))
    info["tokens_per_s"] = batch * new / info["min_s"]
    info["of_bound"] = row["bound"]["s"] / info["min_s"]
    row[name] = info
  return row


def main(quick: bool, cfg=None) -> dict:
  harness.configure_torch()
  cfg = cfg or lobes.pythia_70m()
  peer = peers.build(cfg)
  shapes = [(32, 4)] if quick else [(32, 4), (128, 1)]
  load0 = harness.load()
  rows = []
  for batch in (1, 8):
    rows.append(run_case(cfg, batch, shapes, REPS, peer=peer))
    import sys
    print({k: (v.get("tokens_per_s") if isinstance(v, dict) else v) for k, v in rows[-1].items()},
          file=sys.stderr, flush=True)
  return {"rows": rows, "load_before": load0, "load_after": harness.load()}
