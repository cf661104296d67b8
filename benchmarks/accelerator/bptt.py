"""Soft-token BPTT through n tokens: slnjax against PyTorch + transformers, same device.

The CPU benchmark's protocol (benchmarks/bptt.py, benchmarks/peers.py): one lobe, a prompt,
n soft tokens (tau = 0.001: w = softmax(logits / tau), fed back as w @ E) in turns, loss =
sum of log p(target) over the last turn, gradient to every parameter, batch 1. slnjax:
`sln.unroll` in soft mode with the append-only reverse pass; the peer:
`peers.soft_bptt_step` (transformers' KV cache, `inputs_embeds`). Random weights on each
side (the times do not depend on them; tests/test_benchmarks.py checks on CPU that, given
the same weights, both sides compute the same loss).

Precision: in bfloat16 mode slnjax computes in bfloat16 with float32 parameters and torch
runs its float32 model under `torch.autocast(bfloat16)`: both keep float32 weights and
gradients and multiply in bfloat16. In float32 mode torch may use TF32 as XLA does
(`torch.set_float32_matmul_precision("high")`).
"""
from __future__ import annotations

import contextlib
import time

import numpy as np

from benchmarks import bptt as cpu_bptt
from benchmarks import peers
from benchmarks.accelerator import device, shapes
from slnjax import sln


def _cfg(sizes: shapes.Sizes, dtype: str):
  return shapes.lobe(sizes.bptt_lobe, dtype, "float32")


def _inputs(cfg, sizes):
  return cpu_bptt.inputs(cfg, batch=1, prompt=sizes.bptt_prompt, turn=sizes.bptt_turn)


def run_jax(sizes: shapes.Sizes, dtype: str, emit) -> None:
  """One row per token count, ascending (the process's peak grows with them); all compiled
  first, in parallel, with one set of weights."""
  import jax
  from benchmarks import harness
  cfg = _cfg(sizes, dtype)
  lowered = []
  for n in sizes.bptt_tokens:  # lowered from the parameters' shapes
    _, shapes_, step = cpu_bptt.build(cfg, n, turn=sizes.bptt_turn, tau=cpu_bptt.TAU,
                                      init=False)
    lowered.append((n, step.lower(shapes_, *_inputs(cfg, sizes))))
  params = sln.init(sln.build("single", cfg), jax.random.key(0))  # what build would draw
  compiled, t_compile = device.compile_all([low for _, low in lowered])
  args = jax.device_put((params,) + _inputs(cfg, sizes))
  for (n, _), exe in zip(lowered, compiled):
    row = {"side": "slnjax", "n_tokens": n, "lobe": sizes.bptt_lobe, "dtype": dtype,
           "impl": "appendonly", "compile_s": t_compile, "compiled_together": len(compiled),
           "memory_analysis": harness.compiled_memory(exe)}
    run = lambda: jax.block_until_ready(exe(*args))  # pylint: disable=cell-var-from-loop
    loss, _ = run()
    row["loss"] = float(loss)
    _timed(row, run, sizes.bptt_reps)
    row["peak_bytes"] = device.jax_peak_bytes()
    emit(row)


def run_torch(sizes: shapes.Sizes, dtype: str, emit) -> None:
  import torch
  from benchmarks import harness
  dev = device.torch_device()
  if dev.type == "cpu":
    harness.configure_torch()
  torch.set_float32_matmul_precision("high")
  cfg = _cfg(sizes, "float32")
  with dev:  # initialised on the device (a 410M model's CPU init takes seconds)
    model = peers.build(cfg).to(dev)
  ids, _, target = _inputs(cfg, sizes)
  ids_t, target_t = peers.as_torch(ids).to(dev), peers.as_torch(target).to(dev)
  amp = lambda: (torch.autocast(dev.type, dtype=torch.bfloat16) if dtype == "bfloat16"
                 else contextlib.nullcontext())
  for n in sizes.bptt_tokens:
    def run():
      with amp():
        loss = peers.soft_bptt_step(model, ids_t, target_t, n, sizes.bptt_turn, cpu_bptt.TAU,
                                    None)
      device.torch_sync()
      return loss
    row = {"side": "torch", "n_tokens": n, "lobe": sizes.bptt_lobe, "dtype": dtype,
           "device": str(dev), "attention": getattr(model.config, "_attn_implementation", None)}
    device.torch_reset_peak()
    row["loss"] = run()
    _timed(row, run, sizes.bptt_reps)
    row["peak_bytes"] = device.torch_peak_bytes()
    if row["peak_bytes"] is None:  # CPU: the process's peak RSS over its RSS before a step
      row["peak_rss_increase_bytes"] = harness.peak_increase(run)[1]
    model.zero_grad(set_to_none=True)
    emit(row)


def _timed(row, run, reps):
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    run()
    times.append(time.perf_counter() - t0)
  row.update(times_s=times, min_s=min(times), median_s=float(np.median(times)))
