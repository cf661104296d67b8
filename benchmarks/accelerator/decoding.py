"""Rollout decoding tokens/s: slnjax's dialogue loop against transformers' `generate`.

The CPU benchmark's protocol (benchmarks/decoding.py): greedy, a prompt of random ids,
`new` tokens written as turns of `turn` tokens by one lobe (`sln.rollout`, kind "single",
the while_loop driver) against `generate(max_new_tokens=min_new_tokens=new, greedy)`; new
tokens per second with the prefill included, best of reps. Both sides hold their weights
in the compute dtype (bfloat16 on a GPU: an inference setting) and random weights.

The ceiling: each decoded token reads every weight but the input embedding and the whole
KV cache (decoding.step_bytes, at the final cache length), so tokens/s <= batch x memory
bandwidth / those bytes. It is stated against the datasheet and measured HBM bandwidths.
"""
from __future__ import annotations

import time

import numpy as np

from benchmarks import decoding as cpu_decoding
from benchmarks import peers
from benchmarks.accelerator import device, shapes


def _cfg(sizes: shapes.Sizes, dtype: str):
  return shapes.lobe(sizes.decode_lobe, dtype, dtype)


def run_jax(sizes: shapes.Sizes, dtype: str, emit) -> None:
  """One row per batch, ascending (the process's peak grows with them); all compiled first,
  in parallel, with one set of weights."""
  import jax
  from benchmarks import harness
  cfg = _cfg(sizes, dtype)
  turns = sizes.decode_new // sizes.decode_turn
  lowered, params = [], None
  for batch in sizes.decode_batches:
    low, args = cpu_decoding.lower(cfg, batch, sizes.decode_turn, turns, sizes.decode_prompt,
                                   params)
    params = args[0]  # the same weights for every batch
    lowered.append((batch, low, jax.device_put(args)))
  compiled, t_compile = device.compile_all([low for _, low, _ in lowered])
  for (batch, _, args), exe in zip(lowered, compiled):
    run = lambda: jax.block_until_ready(exe(*args))  # pylint: disable=cell-var-from-loop
    ids = np.asarray(run())
    row = {"side": "slnjax", "batch": batch, "lobe": sizes.decode_lobe, "dtype": dtype,
           "new_tokens": sizes.decode_new, "turns": f"{turns}x{sizes.decode_turn}",
           "prompt": sizes.decode_prompt, "compile_s": t_compile,
           "compiled_together": len(compiled), "memory_analysis": harness.compiled_memory(exe),
           "new_ids_shape": list(ids.shape),
           "step_bytes": cpu_decoding.step_bytes(cfg, batch, sizes.decode_prompt
                                                 + sizes.decode_new)}
    _timed(row, run, sizes.decode_reps, batch * sizes.decode_new)
    row["peak_bytes"] = device.jax_peak_bytes()
    emit(row)


def run_torch(sizes: shapes.Sizes, dtype: str, emit) -> None:
  import torch
  from benchmarks import harness
  dev = device.torch_device()
  if dev.type == "cpu":
    harness.configure_torch()
  torch.set_float32_matmul_precision("high")
  tdtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
  cfg = _cfg(sizes, "float32")
  with dev:  # initialised on the device (a 410M model's CPU init takes seconds)
    model = peers.build(cfg).to(device=dev, dtype=tdtype)
  for batch in sizes.decode_batches:
    ids_t = peers.as_torch(cpu_decoding.prompt_ids(cfg, batch, sizes.decode_prompt)).to(dev)

    def run():
      out = peers.generate(model, ids_t, sizes.decode_new)
      device.torch_sync()
      return out
    row = {"side": "torch_generate", "batch": batch, "lobe": sizes.decode_lobe, "dtype": dtype,
           "new_tokens": sizes.decode_new, "prompt": sizes.decode_prompt, "device": str(dev),
           "attention": getattr(model.config, "_attn_implementation", None)}
    device.torch_reset_peak()
    run()
    _timed(row, run, sizes.decode_reps, batch * sizes.decode_new)
    row["peak_bytes"] = device.torch_peak_bytes()
    if row["peak_bytes"] is None:
      row["peak_rss_increase_bytes"] = harness.peak_increase(run)[1]
    emit(row)


def _timed(row, run, reps, tokens):
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    run()
    times.append(time.perf_counter() - t0)
  row.update(times_s=times, min_s=min(times), median_s=float(np.median(times)),
             tokens_per_s=tokens / min(times))
