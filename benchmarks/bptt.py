"""Comparison 1 (soft-token BPTT, both sides) and comparison 4 (slnjax memory growth).

slnjax: `loop.unroll` in soft mode (tau = 0.001), loss = sum of log p(target) over the last
turn, jax.value_and_grad to every parameter; memory from the compiled executable
(arguments + outputs + temporaries), time per step after compile. The peer runs
peers.soft_bptt_step: the same computation with transformers' KV cache; peak RSS increase.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import harness, peers, roofline
from slnjax import lobes, sln
from slnjax.loop import LoopConfig

TAU = 0.001
PROMPT = 64
TURN = 32


def inputs(cfg, batch=1, prompt=PROMPT, turn=TURN, seed=1):
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, cfg.vocab_size, (batch, prompt)).astype(np.int32)
  target = rng.integers(0, cfg.vocab_size, (batch, turn)).astype(np.int32)
  return ids, np.full((batch,), prompt, np.int32), target


def build(cfg, n_tokens, depth=None, impl="appendonly", turn=TURN, critic=None, tau=TAU,
          init=True):
  """(model, params, jitted value_and_grad step(params, ids, plen, target)); with
  init=False the params are their shapes only (jax.ShapeDtypeStruct)."""
  if n_tokens % turn:
    raise ValueError(f"n_tokens={n_tokens} must be a multiple of the turn length {turn}.")
  loop_cfg = LoopConfig(turn_len=turn, max_turns=n_tokens // turn, mode="soft", threshold=None,
                        bptt_impl=impl, bptt_depth=depth)
  model = sln.build("lateralized" if critic else "single", cfg, critic, loop_cfg)
  params = sln.init(model, jax.random.key(0)) if init else jax.eval_shape(
      lambda: sln.init(model, jax.random.key(0)))

  def loss(p, ids, plen, target):
    d = sln.unroll(model, p, ids, plen, jax.random.key(3), tau, target)
    return d.left_logp_target_NBM[-1].sum()
  return model, params, jax.jit(jax.value_and_grad(loss))


def compile_step(cfg, n_tokens, depth=None, impl="appendonly", turn=TURN, critic=None,
                 tau=TAU, params=None):
  model, params0, step = build(cfg, n_tokens, depth, impl, turn, critic, tau)
  args = (params0 if params is None else params,) + inputs(cfg, turn=turn)
  t0 = time.perf_counter()
  compiled = step.lower(*args).compile()
  return compiled, args, time.perf_counter() - t0, lobes.param_count(args[0])


def run_case(cfg, n_tokens, depth, reps, turn=TURN, peer=None, critic=None, tau=TAU,
             params=None, rates=None):
  """One row: slnjax (and the peer model, if given), reps interleaved. params: the slnjax
  parameters (default: random). rates: roofline.measure() (default: measured here)."""
  compiled, args, t_compile, n_params = compile_step(cfg, n_tokens, depth, turn=turn,
                                                     critic=critic, tau=tau, params=params)
  row = {"n_tokens": n_tokens, "depth": depth, "turn_len": turn, "prompt": PROMPT,
         "lateralized": critic is not None, "params": n_params, "layers": layers(cfg),
         "decoded_scanned": lobes.decode_config(cfg).scan_layers}
  sl = {"compile_s": t_compile, **harness.compiled_memory(compiled), "times_s": [],
        "rss_increase_bytes": []}
  run_sl = lambda: jax.block_until_ready(compiled(*args))
  loss_sl = float(run_sl()[0])  # warm-up
  pt = None
  if peer is not None:
    import torch
    ids, _, target = args[1:]
    ids_t, target_t = peers.as_torch(ids), peers.as_torch(target)
    run_pt = lambda: peers.soft_bptt_step(peer, ids_t, target_t, n_tokens, turn, tau, depth)
    saved = peers.SavedBytes(peer)
    pt = {"loss": peers.soft_bptt_step(peer, ids_t, target_t, n_tokens, turn, tau, depth, saved),
          "times_s": [], "rss_increase_bytes": [], "grad_bytes": peers.grad_bytes(peer),
          "saved_bytes": saved.bytes}
  for _ in range(reps):  # interleaved, so that a change of machine load hits both sides
    t0 = time.perf_counter()
    _, inc = harness.peak_increase(run_sl)
    sl["times_s"].append(time.perf_counter() - t0)
    sl["rss_increase_bytes"].append(inc)
    if pt is not None:
      t0 = time.perf_counter()
      _, inc = harness.peak_increase(run_pt)
      pt["times_s"].append(time.perf_counter() - t0)
      pt["rss_increase_bytes"].append(inc)
      peer.zero_grad(set_to_none=True)
  sl.update(harness.summary(sl["times_s"]), loss=loss_sl)
  if depth is None and critic is None:  # the bound of full BPTT of one lobe
    row["bound"] = roofline.bptt_bound(cfg, n_tokens, rates or roofline.measure(cfg.d_model),
                                       PROMPT, len(args[1]))
    sl["of_bound"] = row["bound"]["s"] / sl["min_s"]
  row["slnjax"] = sl
  if pt is not None:
    pt.update(harness.summary(pt["times_s"]))
    pt["peak_increase_bytes"] = max(pt["rss_increase_bytes"])
    pt["activation_bytes"] = pt["peak_increase_bytes"] - pt["grad_bytes"]
    row["torch"] = pt
  del compiled
  return row


def layers(cfg) -> str:
  """How the lobe's blocks are laid out: "scanned" (nn.scan over stacked layer weights, the
  default: fast compiles; decoded as decode_layers says), "scanned_scan_decode" (the same,
  decoded with the layer scan too) or "unrolled" (one set of weights per block)."""
  if not cfg.scan_layers:
    return "unrolled"
  return "scanned_scan_decode" if lobes.decode_config(cfg).scan_layers else "scanned"


def main(quick: bool, cfg=None) -> dict:
  """Comparison 1: both sides at 32 / 128 / 256 soft tokens, full BPTT and k = 1, 2, 4; the
  32-token row also with unrolled layers (whose weight gradients the reverse pass adds into
  its accumulator in place; a layer scan's reverse stacks them in a buffer first)."""
  harness.configure_torch()
  cfg = cfg or lobes.pythia_70m()
  peer = peers.build(cfg)
  reps = 2 if quick else 3
  cases = [(32, None)] if quick else [(32, None), (128, None), (128, 1), (128, 2),
                                      (256, None), (256, 1), (256, 2), (256, 4)]
  rows = []
  load0 = harness.load()
  rates = roofline.measure(cfg.d_model)
  for n, k in cases:
    rows.append(run_case(cfg, n, k, reps, peer=peer, rates=rates))
    _log(rows[-1])
  rows.append(run_case(cfg.replace(scan_layers=False), 32, None, reps, peer=peer, rates=rates))
  _log(rows[-1])
  # the A/B of decode_layers: the default decodes (and recomputes) with unrolled layers on a
  # CPU; this row keeps the layer scan throughout (no peer: its time is the rows' above)
  rows.append(run_case(cfg.replace(decode_layers="scan"), 32, None, reps, rates=rates))
  _log(rows[-1])
  critic = cfg.replace(score_head=True, lm_head=False)
  for n in ([32] if quick else [32, 128]):
    rows.append(run_case(cfg, n, None, reps, critic=critic))
    _log(rows[-1])
  return {"rows": rows, "load_before": load0, "load_after": harness.load(), "tau": TAU,
          "rates": rates}


def memory_growth(quick: bool, cfg=None) -> dict:
  """Comparison 4: compiled memory of full BPTT vs generated tokens, per reverse scheme."""
  cfg = cfg or lobes.pythia_70m()
  sizes = [32, 256] if quick else [32, 64, 128, 256]
  rows = []
  runs = [(impl, cfg) for impl in ("appendonly", "scan", "scan_remat")]
  runs.append(("appendonly", cfg.replace(scan_layers=not cfg.scan_layers)))
  for impl, c in runs:
    for n in sizes:
      compiled, _, t_compile, _ = compile_step(c, n, None, impl)
      rows.append({"impl": impl, "layers": layers(c), "n_tokens": n, "compile_s": t_compile,
                   **harness.compiled_memory(compiled)})
      del compiled
      _log(rows[-1])
  return {"rows": rows}


def _log(row):
  import sys
  print({k: v for k, v in row.items() if not isinstance(v, dict)},
        {k: {kk: vv for kk, vv in v.items() if kk in ("min_s", "temp_bytes", "peak_increase_bytes")}
         for k, v in row.items() if isinstance(v, dict)}, file=sys.stderr, flush=True)
