r"""AOT fit check: compile the train step for a TPU topology on a machine without TPUs.

    python -m slnjax.aot --config experiments/llama8b_tall.py --topology v5p-128 \
        [--step_time 12.5] [--layout hemispheres] [--json out.json] [--config.key=value ...]
    python -m slnjax.aot --list          # the topology table

The step compiled is train.make_train_step(config, mesh).step_fn — the one training runs —
on a mesh built from config.mesh over the topology's compile-only devices, from abstract
shapes (nothing is allocated). Printed: per-device argument / output / temporary bytes and
their peak, whether that fits the chip's HBM, FLOPs per step, and the model-FLOPs
utilization a given step time would mean. An over-sized step is reported as an HBM overflow
(exit code 3) rather than a stack trace. Needs libtpu: pip install 'jax[tpu]==0.10.2'.

FLOPs are counted from the step's jaxpr: every matmul (dot_general) of forward, backward and
rematerialised recomputation, with scan bodies multiplied by their lengths (XLA's own
cost_analysis counts a loop body once; it is printed too). A while_loop (rollouts, inner
updates) is counted once per entry: the report says how many it met.

Roofline (default; --noroofline skips it): the step is compiled again with every lobe cut
to 1 and to 2 unrolled layers; XLA's per-device FLOPs, HBM bytes accessed and collective
bytes, extrapolated to the real depth, give per TPU generation the compute time and HBM
time the step needs at least, which one bounds it, and the MFU that bound allows
(slnjax/roofline.py; docs/scaling.md, "Reading the roofline").
"""
from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import re
import sys
import time

from absl import app, flags

from slnjax import cli, roofline, topologies

_CONFIG = cli.config_flag("Experiment config file, optionally with :arg.")
_TOPOLOGY = flags.DEFINE_string("topology", None, "e.g. v5p-128, v5e-256, 2xv5e-256, v5e:2x2.")
_STEP_TIME = flags.DEFINE_float("step_time", None, "Seconds per step, for the MFU estimate.")
_LAYOUT = flags.DEFINE_enum("layout", "shared", ["shared", "hemispheres"],
                            "shared: both lobes on the whole mesh; hemispheres: each lobe's "
                            "parameters and optimizer state on one half (parallel.py).")
_JSON = flags.DEFINE_string("json", None, "Also write the result as JSON here.")
_LIST = flags.DEFINE_bool("list", False, "Print the topology table and exit.")
_ROOFLINE = flags.DEFINE_bool("roofline", True, "Also compile 1- and 2-layer variants for "
                              "per-device FLOPs / HBM / collective bytes and a roofline per "
                              "TPU generation (slnjax/roofline.py).")

GiB = topologies.GiB


class TpuUnavailable(RuntimeError):
  """libtpu is not installed (or cannot load): no TPU topology to compile for."""


def jaxpr_flops(jaxpr) -> tuple[float, int]:
  """(matmul FLOPs, while loops met) of a (Closed)Jaxpr; scan bodies x length."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  total, whiles = 0.0, 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      (contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in contract)
      continue
    subs = []
    for v in eqn.params.values():
      for s in (v if isinstance(v, (tuple, list)) else (v,)):
        if hasattr(s, "eqns") or hasattr(getattr(s, "jaxpr", None), "eqns"):
          subs.append(jaxpr_flops(s))
    if not subs:
      continue
    if name == "cond":
      f, w = max(subs)
    else:
      f, w = sum(s[0] for s in subs), sum(s[1] for s in subs)
    total += f * (eqn.params["length"] if name == "scan" else 1)
    whiles += w + (name == "while")
  return total, whiles


def _overflow(msg: str) -> dict:
  nums = re.findall(r"\(([\d.]+)([KMGT])\)", msg)
  scale = {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}
  vals = [float(v) * scale[u] for v, u in nums]
  out = {"message": msg.strip().splitlines()[0][:400]}
  if len(vals) >= 2:
    out.update(required_bytes=vals[0], available_bytes=vals[1])
  return out


def _devices(topo: topologies.Topology):
  """Compile-only devices of ``topo``; TpuUnavailable (one line for the user) when libtpu is
  absent or cannot make the topology. Decided by the condition (is libtpu importable, did
  the topology call fail), never by the wording of jax's message, which changes between
  versions."""
  install = "Install it with: pip install 'jax[tpu]==0.10.2' (the 'tpu' extra of slnjax)."
  if importlib.util.find_spec("libtpu") is None:
    raise TpuUnavailable(f"libtpu is not installed, so there is no TPU topology to compile "
                         f"for. {install}")
  try:
    return topo.devices()
  except (ImportError, RuntimeError) as e:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    raise TpuUnavailable(f"libtpu could not make the topology {topo.topology_name} "
                         f"({type(e).__name__}: {first}). {install} If another process holds "
                         "libtpu, set ALLOW_MULTIPLE_LIBTPU_LOAD=1.") from e


def _programs(config, mesh, layout: str) -> tuple:
  """(train step, [(name, jitted fn, abstract args)]) of config's train step (and rollout) on ``mesh``."""
  from slnjax import parallel, train  # pylint: disable=import-outside-toplevel
  ts = train.make_train_step(config, mesh)
  if layout == "hemispheres":
    ts = parallel.hemispheres_step(ts)
  progs = [("step", ts.step_fn, (ts.abstract_state, ts.abstract_batch)
            + ((ts.abstract_rollout,) if ts.rollout_fn is not None else ()))]
  if ts.rollout_fn is not None:
    progs.append(("rollout", ts.rollout_fn, (ts.abstract_state, ts.abstract_batch)))
  return ts, progs


def _lobe_names(config) -> list[str]:
  """The transformer lobes (config.model.left / right) the model uses."""
  from slnjax import build  # pylint: disable=import-outside-toplevel
  used = build.build_model(config).lobe_names
  return [n for n in ("left", "right") if n in used]


def _cut(config, n_layers: int):
  """config with every lobe cut to ``n_layers`` unrolled layers."""
  c = copy.deepcopy(config)
  with c.unlocked():
    for n in _lobe_names(c):
      c.model[n].n_layers, c.model[n].scan_layers = n_layers, False
  return c


def layer_costs(config, mesh, layout: str = "shared") -> dict:
  """Per-device XLA FLOPs, HBM bytes and collective bytes of the step (all programs) at the
  config's depth, extrapolated from compiles with 1 and 2 unrolled layers (roofline.py)."""
  depths = {int(config.model[n].n_layers) for n in _lobe_names(config)}
  if len(depths) != 1:
    raise ValueError(f"The roofline extrapolates over layers; the lobes have different depths "
                     f"{sorted(depths)}. Run with --noroofline.")
  costs = []
  for n in (1, 2):
    total = {"flops": 0.0, "hbm_bytes": 0.0, "collectives": dict.fromkeys(roofline.COLLECTIVES,
                                                                          0.0)}
    for _, fn, args in _programs(_cut(config, n), mesh, layout)[1]:
      compiled = fn.trace(*args).lower().compile()
      ca = compiled.cost_analysis() or {}
      total["flops"] += float(ca.get("flops", 0.0))
      total["hbm_bytes"] += float(ca.get("bytes accessed", 0.0))
      for k, v in roofline.collective_bytes(compiled.as_text()).items():
        total["collectives"][k] += v
    costs.append(total)
  n_layers = depths.pop()
  return {**roofline.extrapolate(costs[0], costs[1], n_layers), "n_layers": n_layers}


def fit_check(config, topology: str, step_time: float | None = None,
              layout: str = "shared", with_roofline: bool = True) -> dict:
  """Compiles config's train step for ``topology``; returns the figures (see module doc)."""
  import jax  # pylint: disable=import-outside-toplevel
  from slnjax import finalize, parallel  # pylint: disable=import-outside-toplevel
  topo = topologies.parse(topology)
  devices = _devices(topo)
  mesh = parallel.mesh_from_config(config.mesh, devices)
  config = finalize.finalize(config)
  ts, programs = _programs(config, mesh, layout)
  chip = topo.chip
  params = jax.eval_shape(parallel.from_hemispheres, ts.abstract_state)["params"]
  res = {"topology": topology, "topology_name": topo.topology_name, "slices": topo.num_slices,
         "devices": len(devices), "device_kind": devices[0].device_kind,
         "mesh": dict(mesh.shape), "layout": layout, "hbm_bytes": chip.hbm_bytes,
         "params": {n: int(sum(math.prod(x.shape) for x in jax.tree.leaves(p)))
                    for n, p in params.items()}}
  t0 = time.time()
  res["fits"], res["programs"] = True, {}
  for name, fn, args in programs:
    traced = fn.trace(*args)
    flops, whiles = jaxpr_flops(traced.jaxpr)
    out = {"flops": flops, "while_loops": whiles}
    res["programs"][name] = out
    try:
      compiled = traced.lower().compile()
    except jax.errors.JaxRuntimeError as e:
      if "RESOURCE_EXHAUSTED" not in str(e):
        raise
      out["overflow"] = _overflow(str(e))
      res["fits"] = False
      continue
    ma = compiled.memory_analysis()
    mem = {k: int(getattr(ma, f"{k}_size_in_bytes", 0))
           for k in ("argument", "output", "alias", "temp", "generated_code")}
    mem["peak"] = mem["argument"] + mem["output"] - mem["alias"] + mem["temp"] + mem[
        "generated_code"]
    out["memory"] = mem
    out["xla_flops_per_device"] = float((compiled.cost_analysis() or {}).get("flops", -1))
    res["fits"] &= mem["peak"] <= chip.hbm_bytes
  res["compile_s"] = round(time.time() - t0, 1)
  flops = sum(p["flops"] for p in res["programs"].values())
  peak = chip.peak_flops * topo.num_devices
  res["flops_per_step"] = flops
  res["step_time_at_100pct"] = flops / peak
  if step_time:
    res["step_time"] = step_time
    res["mfu"] = flops / (step_time * peak)
  if with_roofline and res["fits"]:
    t0 = time.time()
    rf = layer_costs(config, mesh, layout)
    per_device = flops / len(devices)
    rf.update(intensity=rf["flops"] / max(rf["hbm_bytes"], 1.0),
              flops_ratio=per_device / max(rf["flops"], 1.0),
              chips=roofline.roofline(rf["flops"], rf["hbm_bytes"], per_device),
              compile_s=round(time.time() - t0, 1))
    res["roofline"] = rf
  return res


def _gib(x) -> str:
  return f"{x / GiB:.2f} GiB" if x >= GiB / 10 else f"{x / 2 ** 20:.2f} MiB"


def _count(n) -> str:
  return f"{n / 1e9:.2f} B" if n >= 1e8 else f"{n / 1e6:.3f} M"


def report(res: dict) -> str:
  mesh = " ".join(f"{k}={v}" for k, v in res["mesh"].items())
  lines = [f"topology {res['topology']} = {res['topology_name']} x {res['slices']} slice(s): "
           f"{res['devices']} devices ({res['device_kind']}), {_gib(res['hbm_bytes'])} HBM each",
           f"mesh {mesh}, layout {res['layout']}; parameters "
           + ", ".join(f"{n} {_count(c)}" for n, c in res["params"].items())]
  for name, p in res["programs"].items():
    if "overflow" in p:
      o = p["overflow"]
      need = (f": needs {_gib(o['required_bytes'])} per device, {_gib(o['available_bytes'])} "
              "available" if "required_bytes" in o else "")
      lines.append(f"{name}: DOES NOT FIT — HBM overflow at compile time{need}.\n"
                   f"  compiler: {o['message']}\n  try: more fsdp/tensor ways (config.mesh.ici),"
                   " a smaller batch_size or prompt/turn lengths, model.*.remat='full', "
                   "bfloat16 params, or a bigger topology.")
      continue
    m = p["memory"]
    lines.append(f"{name} per device: arguments {_gib(m['argument'])}, outputs "
                 f"{_gib(m['output'])} (aliased {_gib(m['alias'])}), temporaries "
                 f"{_gib(m['temp'])}, code {_gib(m['generated_code'])} -> peak {_gib(m['peak'])}"
                 f" of {_gib(res['hbm_bytes'])}: "
                 + ("fits" if m["peak"] <= res["hbm_bytes"] else "DOES NOT FIT")
                 + f" ({100 * m['peak'] / res['hbm_bytes']:.0f}%)")
    lines.append(f"{name} FLOPs: {p['flops']:.3e} per step (jaxpr matmuls"
                 + (f"; {p['while_loops']} while loop(s) counted once" if p["while_loops"]
                    else "") + f"); XLA cost_analysis {p['xla_flops_per_device']:.3e}/device "
                 "(loop bodies once)")
  lines.append(f"step time at 100% of peak: {res['step_time_at_100pct']:.3g} s"
               + (f"; at {res['step_time']} s/step: MFU {100 * res['mfu']:.3g}%"
                  if "mfu" in res else " (give --step_time for an MFU estimate)"))
  if "roofline" in res:
    lines.extend(roofline.lines(res["roofline"]))
  lines.append(f"fit: {'YES' if res['fits'] else 'NO'} (compiled in {res['compile_s']} s"
               + (f", roofline compiles {res['roofline']['compile_s']} s" if "roofline" in res
                  else "") + ")")
  return "\n".join(lines)


def parse_flags(argv: list[str]) -> list[str]:
  """absl parsing; every mistake in the config or the flags is one error line (slnjax.cli)."""
  return cli.parse_flags(argv, _CONFIG)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _LIST.value:
    print("\n".join(topologies.table()))
    return
  if _CONFIG.value is None or not _TOPOLOGY.value:
    raise app.UsageError("--config and --topology are required (or --list).")
  try:
    res = fit_check(_CONFIG.value, _TOPOLOGY.value, _STEP_TIME.value, _LAYOUT.value,
                    _ROOFLINE.value)
  except (TpuUnavailable, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(report(res), flush=True)
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(res, f, indent=2)
  sys.exit(0 if res["fits"] else 3)


if __name__ == "__main__":
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the host backend; TPUs are compile-only
  app.run(main, flags_parser=parse_flags)
