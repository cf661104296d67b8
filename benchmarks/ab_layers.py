"""A/B of LobeConfig.decode_layers (and of the few-rows kernel) on the benchmark lobe.

    nice -n 10 timeout 1800 python -m benchmarks.ab_layers

Measured 2026-12-05 on a 2-core Intel Xeon shared with other jobs (load 8-19): 30 min;
"auto" vs "scan": rollout 1.93x (batch 1) and 2.00x (batch 8) the tokens/s, the BPTT step
1.62x faster (19.4 s vs 31.5 s; temporaries 150.4 vs 114.5 MiB); the few-rows kernel 1.87x
at batch 8.

Pythia-70M shape, scanned params (the default): rollout (4 turns of 32, prompt 64) at batch
1 and 8 and the soft-token BPTT step at 32 tokens, with decode_layers "auto" (unrolled on a
CPU) against "scan", each pair compiled in one process and its repetitions interleaved, so a
change of the machine's load hits both; every time also as a fraction of its bound
(benchmarks/roofline.py). Measured figures: benchmarks/ANALYSIS.md ("decode_layers").
"""
from __future__ import annotations

import json
import sys
import time

from benchmarks import harness


def _bptt_pair(cfg, rates, reps):
  import jax  # noqa: PLC0415 (after harness.configure)
  from benchmarks import bptt, roofline  # noqa: PLC0415
  runs = {}
  for how in ("auto", "scan"):
    compiled, args, t_compile, _ = bptt.compile_step(cfg.replace(decode_layers=how), 32)
    jax.block_until_ready(compiled(*args))
    runs[how] = (compiled, args, {"compile_s": t_compile, "times_s": [],
                                  **harness.compiled_memory(compiled)})
  for _ in range(reps):
    for compiled, args, info in runs.values():
      t0 = time.perf_counter()
      jax.block_until_ready(compiled(*args))
      info["times_s"].append(time.perf_counter() - t0)
  bound = roofline.bptt_bound(cfg, 32, rates)
  out = {"bound": bound}
  for how, (_, _, info) in runs.items():
    info.update(harness.summary(info["times_s"]))
    info["of_bound"] = bound["s"] / info["min_s"]
    out[how] = info
  return out


def main():
  harness.configure()
  from benchmarks import decoding, roofline  # noqa: PLC0415
  from slnjax import lobes  # noqa: PLC0415
  cfg = lobes.pythia_70m()
  rates = roofline.measure(cfg.d_model)
  print("rates", rates, file=sys.stderr, flush=True)
  res = {"machine": harness.machine(), "load_before": harness.load(), "rates": rates}
  for batch in (1, 8):
    row = decoding.run_case(cfg, batch, [(32, 4)], 3, variants=decoding.VARIANTS)
    res[f"decode_b{batch}"] = {k: ({kk: v[kk] for kk in ("min_s", "median_s", "tokens_per_s",
                                                          "of_bound")} if "of_bound" in v
                                   else v) for k, v in row.items() if isinstance(v, dict)
                               and k != "roofline"}
    print(json.dumps(res[f"decode_b{batch}"]), file=sys.stderr, flush=True)
  res["bptt_32"] = _bptt_pair(cfg, rates, 3)
  res["load_after"] = harness.load()
  print(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
  main()
