"""Per-device step costs from compiled programs, and a roofline per TPU generation.

XLA's cost analysis of a compiled program (FLOPs, HBM bytes accessed) is per device but
counts a loop body once, whatever its trip count; so is a count of the collectives in its
HLO. The layers of a lobe are such a loop (scan_layers=True), so ``slnjax.aot`` compiles the
same step with every lobe cut to 1 and to 2 unrolled layers (no layer loop) and extrapolates
linearly to the real depth (``extrapolate``): cost(L) = cost(1) + (L - 1) (cost(2) - cost(1)).
What other loops remain (a while loop over turns or tokens) is still counted once; comparing
the extrapolated FLOPs with the jaxpr count (which multiplies scans by their lengths) shows
whether anything large is missing.

The roofline of one chip generation: a step needs at least FLOPs / peak seconds of compute
(the larger of XLA's and the model's count)
and bytes / HBM-bandwidth seconds of memory traffic; whichever is larger bounds the step
time (compute-bound or HBM-bound), assuming perfect overlap and no time on the interconnect.
The MFU estimate is the model FLOPs (jaxpr) per device over peak, divided by that bound: an
upper bound on the MFU a real run can reach.
"""
from __future__ import annotations

import re

from slnjax import topologies

COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "bf16": 2, "f16": 2,
                "s16": 2, "u16": 2, "f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8,
                "c64": 8, "c128": 16}
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%\S+\s*=\s*(.*?)\s+([a-z][a-z0-9\-]*)\(")
_ARRAY = re.compile(r"\b([a-z]+[0-9]*(?:e[0-9]m[0-9][a-z]*)?)\[([0-9,]*)\]")


def shape_bytes(type_text: str) -> float:
  """Bytes of an HLO result type: 'bf16[64,4096]{1,0}' or a tuple of arrays."""
  total = 0.0
  for dtype, dims in _ARRAY.findall(type_text):
    size = _DTYPE_BYTES.get(dtype, 1 if dtype.startswith("f8") else 4)
    n = 1
    for d in filter(None, dims.split(",")):
      n *= int(d)
    total += size * n
  return total


def collective_bytes(hlo_text: str) -> dict[str, float]:
  """{kind: result bytes} of the collectives in a compiled (per-device) HLO module, each
  instruction once (async ops at their -done). A reduce-scatter that the TPU compiler writes
  as an all-reduce and a slice counts as that all-reduce."""
  out = {k: 0.0 for k in COLLECTIVES}
  for line in hlo_text.splitlines():
    m = _INSTR.match(line)
    if not m:
      continue
    op = m.group(2)
    kind = op[:-5] if op.endswith("-done") else op
    if kind in out:
      out[kind] += shape_bytes(m.group(1))
  return out


def extrapolate(one: dict, two: dict, n_layers: int) -> dict:
  """cost(1) + (L - 1) * (cost(2) - cost(1)) for every number in the (nested) dicts."""
  if isinstance(one, dict):
    return {k: extrapolate(one[k], two[k], n_layers) for k in one}
  return one + (n_layers - 1) * (two - one)


def roofline(flops: float, hbm_bytes: float, model_flops: float, chips=None) -> dict:
  """{generation: bound} for per-device ``flops`` (compiled), ``hbm_bytes`` and
  ``model_flops`` (the model's own count per device), on each chip of ``chips``."""
  out = {}
  for name, chip in (chips or topologies.CHIPS).items():
    # XLA's count may miss iterations of a loop left in the program: take the larger
    t_compute = max(flops, model_flops) / chip.peak_flops
    t_hbm = hbm_bytes / chip.hbm_bandwidth
    bound = max(t_compute, t_hbm)
    out[name] = {"peak_flops": chip.peak_flops, "hbm_bandwidth": chip.hbm_bandwidth,
                 "ridge": chip.peak_flops / chip.hbm_bandwidth,
                 "t_compute": t_compute, "t_hbm": t_hbm, "step_time_bound": bound,
                 "bound": "compute" if t_compute >= t_hbm else "HBM",
                 "mfu_bound": (model_flops / chip.peak_flops) / bound if bound > 0 else 0.0}
  return out


def lines(rf: dict) -> list[str]:
  """The report's roofline table (see ``roofline``)."""
  head = (f"per device: {rf['flops']:.3e} FLOPs (XLA), {rf['hbm_bytes'] / 2 ** 30:.2f} GiB HBM"
          f" traffic, intensity {rf['intensity']:.0f} FLOP/byte; collectives "
          + ", ".join(f"{k} {v / 2 ** 30:.2f} GiB" for k, v in rf["collectives"].items() if v)
          + f" (from 1- and 2-layer compiles, x{rf['n_layers']} layers; jaxpr/XLA FLOPs "
          f"{rf['flops_ratio']:.2f})")
  out = [head, "roofline  ridge FLOP/B  compute s  HBM s     bound    MFU at bound"]
  for gen, r in rf["chips"].items():
    out.append(f"  {gen:<6}  {r['ridge']:>10.0f}  {r['t_compute']:>9.3g}  {r['t_hbm']:>8.3g}  "
               f"{r['bound']:<7}  {100 * r['mfu_bound']:.0f}%")
  return out
