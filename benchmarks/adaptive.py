"""Comparison 3: adaptive compute. A lateralized batch whose critic approves after turn 1
(its score bias forced to +20, threshold 0.5) against the same batch run to the IDL limit
(threshold None) and against a single turn alone (max_turns = 1). `sln.rollout` (the
while_loop driver), greedy turns; wall-time ratios and mean turns used.
"""
from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import harness, roofline
from slnjax import lobes, sln
from slnjax.loop import LoopConfig

PROMPT = 64
TURN = 32
MAX_TURNS = 4


def build(cfg, batch, max_turns, threshold, approve, turn=TURN, prompt=PROMPT):
  critic = cfg.replace(score_head=True, lm_head=False)
  model = sln.build("lateralized", cfg, critic, LoopConfig(
      turn_len=turn, max_turns=max_turns, mode="greedy", threshold=threshold))
  params = sln.init(model, jax.random.key(0))
  if approve:  # every score = sigmoid(~20) ~ 1: the critic approves the first turn
    params["right"]["score_b"] = jnp.full_like(params["right"]["score_b"], 20.0)
  rng = np.random.default_rng(batch)
  ids = rng.integers(0, cfg.vocab_size, (batch, prompt)).astype(np.int32)
  plen = np.full((batch,), prompt, np.int32)
  fn = jax.jit(lambda p, i, l: sln.rollout(model, p, i, l, jax.random.key(0)).turns_B)
  t0 = time.perf_counter()
  compiled = fn.lower(params, ids, plen).compile()
  return compiled, (params, ids, plen), time.perf_counter() - t0


def run(cfg, batch, reps, max_turns=MAX_TURNS, turn=TURN, prompt=PROMPT) -> dict:
  variants = {"approve_after_turn_1": (max_turns, 0.5, True),
              "idl_limit": (max_turns, None, False),
              "single_turn": (1, None, False)}
  runs = {}
  for name, (n, thr, approve) in variants.items():
    compiled, args, t_compile = build(cfg, batch, n, thr, approve, turn, prompt)
    turns = np.asarray(compiled(*args))  # warm-up
    runs[name] = (lambda c=compiled, a=args: jax.block_until_ready(c(*a)),
                  {"compile_s": t_compile, "max_turns": n, "threshold": thr,
                   "mean_turns": float(turns.mean()), "times_s": []})
  for _ in range(reps):  # interleaved
    for fn, info in runs.values():
      t0 = time.perf_counter()
      fn()
      info["times_s"].append(time.perf_counter() - t0)
  out = {"batch": batch, "turn_len": turn, "prompt": prompt}
  rates = roofline.measure(cfg.d_model)
  for name, (_, info) in runs.items():
    info.update(harness.summary(info["times_s"]))
    info["bound"] = roofline.lateralized_bound(cfg, batch, prompt, turn,
                                               round(info["mean_turns"]), rates)
    info["of_bound"] = info["bound"]["s"] / info["min_s"]
    out[name] = info
  a, lim, one = (out[k]["min_s"] for k in ("approve_after_turn_1", "idl_limit", "single_turn"))
  out["ratio_approve_vs_limit"] = a / lim
  out["ratio_approve_vs_single_turn"] = a / one
  return out


def main(quick: bool, cfg=None) -> dict:
  cfg = cfg or lobes.pythia_70m()
  load0 = harness.load()
  row = run(cfg, 8, 3 if quick else 5)
  print({k: v for k, v in row.items() if not isinstance(v, dict)}, file=sys.stderr, flush=True)
  return {"rows": [row], "load_before": load0, "load_after": harness.load()}
