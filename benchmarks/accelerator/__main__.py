"""One command on one accelerator: train-step MFU, soft-token BPTT and rollout decoding of
slnjax against PyTorch + transformers, with peak device memory; Markdown + JSON into --out.

    python -m benchmarks.accelerator --out DIR [--tiny] [--sections device,train,bptt,decoding]
        [--budgets train=240,bptt=90] [--dtype auto] [--peak-tflops F --hbm-tbps B]

Sections (benchmarks/accelerator/*.py): device (matmul and copy probes), train (a lateralized
SLN's train step, Pythia-410M- and 1B-shaped lobes, with and without remat), bptt (32 and
128 soft tokens against transformers), decoding (batch 1, 8, 64 against `generate`).
Each measurement runs in its own process (jax's peak memory cannot be reset; jax and torch
must not share the device), under its section's time budget (seconds; a process past it
is killed, its error recorded, and the rest goes on); results.json and RESULTS.md are
rewritten after each. Logs: DIR/logs/. --tiny: tiny lobes (CPU, or a first check on a GPU).
--dtype auto: bfloat16 on an accelerator, float32 on a CPU. --in-process: no child
processes (faster on a CPU; peaks then accumulate). Synthetic inputs and random weights
only: no dataset, no network.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import traceback

from benchmarks.accelerator import device, report, shapes

# Seconds per section (caps: a process past its share is killed): 7.3 minutes at most.
BUDGETS = {"device": 20, "train": 200, "bptt": 120, "decoding": 100}
TINY_BUDGETS = {"device": 120, "train": 300, "bptt": 300, "decoding": 300}
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def children(section: str, sizes: shapes.Sizes) -> list[str]:
  if section == "train":
    return [f"train:{lobe}:{remat}" for lobe in sizes.train_lobes for remat in ("none", "full")]
  return ["device"] if section == "device" else [f"{section}:jax", f"{section}:torch"]


def run_child(spec: str, sizes: shapes.Sizes, dtype: str, emit) -> None:
  """Runs one measurement in this process; emit(row) records each row as it is done."""
  from benchmarks.accelerator import bptt, decoding, train_step
  part = spec.split(":")
  if part[0] == "device":
    emit(device.probe(sizes.matmul_n, sizes.copy_mib))
    return
  on_torch = part[-1] == "torch"
  if dtype == "auto":
    import torch  # pylint: disable=import-outside-toplevel
    accel = torch.cuda.is_available() if on_torch else device.jax_platform() != "cpu"
    dtype = "bfloat16" if accel else "float32"
  if part[0] == "train":
    emit(train_step.run_case(part[1], part[2], sizes, dtype))
  else:
    mod = {"bptt": bptt, "decoding": decoding}[part[0]]
    (mod.run_torch if on_torch else mod.run_jax)(sizes, dtype, emit)


def _child_main(args, sizes) -> int:
  rows, out = [], {"spec": args.child}

  def write():  # atomically: the parent may kill this process at any moment
    with open(args.json + ".tmp", "w") as f:
      json.dump({**out, "rows": rows}, f, indent=1, default=str)
    os.replace(args.json + ".tmp", args.json)

  def emit(row):
    rows.append(row)
    write()
    print(f"[accelerator] {args.child}: {_brief(row)}", file=sys.stderr, flush=True)
  try:
    run_child(args.child, sizes, args.dtype, emit)
  except Exception:  # pylint: disable=broad-except
    out["error"] = traceback.format_exc()
    write()
    print(out["error"], file=sys.stderr, flush=True)
    return 1
  write()
  return 0


def _brief(row) -> str:
  keys = ("lobe", "remat", "side", "n_tokens", "batch", "min_s", "tokens_per_s",
          "model_flops_per_s", "peak_bytes", "compile_s", "matmul_flops_per_s",
          "copy_bytes_per_s")
  return ", ".join(f"{k}={row[k]:.4g}" if isinstance(row[k], float) else f"{k}={row[k]}"
                   for k in keys if row.get(k) is not None)


def _spawn(spec, args, timeout, log_path) -> dict:
  """Runs one child process; returns {"rows", "error"?, "rc", "wall_s"}."""
  json_path = log_path[:-4] + ".json"
  cmd = [sys.executable, "-m", "benchmarks.accelerator", "--child", spec, "--json", json_path,
         "--dtype", args.dtype] + (["--tiny"] if args.tiny else [])
  env = dict(os.environ)
  env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.90")  # alone on the device
  env.setdefault("HF_HUB_OFFLINE", "1")
  env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
  if os.path.exists(json_path):  # an earlier run's
    os.remove(json_path)
  t0 = time.time()
  error = None
  with open(log_path, "w") as log:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
      rc = proc.wait(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
      rc, error = None, f"killed after {timeout:.0f} s (the section's time budget)"
    except BaseException:  # Ctrl-C: take the child down too
      os.killpg(proc.pid, signal.SIGKILL)
      raise
  res = {"rows": []}
  try:
    with open(json_path) as f:
      res = json.load(f)
  except (OSError, ValueError):  # the child wrote no row
    pass
  if error is None and rc != 0 and "error" not in res:
    with open(log_path) as f:
      res["error"] = f"exit code {rc}: " + f.read()[-2000:]
  if error is not None:
    res["error"] = error
  return {**res, "rc": rc, "wall_s": time.time() - t0}


def _in_process(spec, args, sizes) -> dict:
  rows, t0 = [], time.time()
  res = {"rows": rows}
  try:
    run_child(spec, sizes, args.dtype, rows.append)
  except Exception:  # pylint: disable=broad-except
    res["error"] = traceback.format_exc()
  return {**res, "rc": 0 if "error" not in res else 1, "wall_s": time.time() - t0}


def _parse(argv):
  p = argparse.ArgumentParser(prog="python -m benchmarks.accelerator", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", help="folder for results.json, RESULTS.md and logs/ (required)")
  p.add_argument("--tiny", action="store_true", help="tiny lobes and sizes")
  p.add_argument("--sections", default=",".join(BUDGETS))
  p.add_argument("--budgets", default="", help="e.g. train=300,bptt=120 (seconds)")
  p.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float32"))
  p.add_argument("--peak-tflops", type=float, help="peak bf16 TFLOP/s (a device not an H200)")
  p.add_argument("--hbm-tbps", type=float, help="the device's memory bandwidth, TB/s")
  p.add_argument("--in-process", action="store_true", help="no child processes (CPU tests)")
  p.add_argument("--child", help=argparse.SUPPRESS)
  p.add_argument("--json", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.child:
    return args
  args.section_list = [s for s in args.sections.split(",") if s]
  budgets = dict(TINY_BUDGETS if args.tiny else BUDGETS)
  problems = [f"unknown section(s) {sorted(set(args.section_list) - set(BUDGETS))}; choose from "
              f"{','.join(BUDGETS)}"] if set(args.section_list) - set(BUDGETS) else []
  for item in filter(None, args.budgets.split(",")):
    name, _, secs = item.partition("=")
    try:
      budgets[name] = float(secs)
      if name not in BUDGETS:
        raise ValueError
    except ValueError:
      problems.append(f"--budgets item {item!r} must read SECTION=SECONDS with SECTION in "
                      f"{','.join(BUDGETS)}")
  if not args.out:
    problems.append("--out DIR is required (the folder for results.json and RESULTS.md)")
  if problems:
    print(f"error: {'; '.join(problems)}.", file=sys.stderr)
    sys.exit(2)
  args.budget = budgets
  return args


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  args = _parse(argv)
  sizes = shapes.TINY if args.tiny else shapes.FULL
  if args.child:
    return _child_main(args, sizes)
  try:
    os.makedirs(os.path.join(args.out, "logs"), exist_ok=True)
  except OSError as e:
    print(f"error: cannot create --out {args.out!r} ({e.strerror}); give a writable folder.",
          file=sys.stderr)
    return 2
  started = time.time()
  res = {"command": " ".join(["python -m benchmarks.accelerator"] + argv), "tiny": args.tiny,
         "dtype": args.dtype, "sizes": sizes.__dict__, "budgets": args.budget,
         "machine": device.machine(), "sections": {},
         "given_limits": {"datasheet_flops": (args.peak_tflops or 0) * 1e12,
                          "datasheet_bw": (args.hbm_tbps or 0) * 1e12}}
  for section in args.section_list:
    sec = res["sections"][section] = {"rows": [], "children": [], "budget_s": args.budget[section]}
    t_sec = time.time()
    specs = children(section, sizes)
    for i, spec in enumerate(specs):
      left = args.budget[section] - (time.time() - t_sec)
      share = args.budget[section] / len(specs)  # keep 3/4 of a share for each later one
      timeout = max(left - 0.75 * share * (len(specs) - i - 1), 10)
      print(f"[accelerator] {spec} (timeout {timeout:.0f} s) ...", file=sys.stderr, flush=True)
      log = os.path.join(args.out, "logs", spec.replace(":", "_") + ".log")
      out = _in_process(spec, args, sizes) if args.in_process else _spawn(spec, args, timeout, log)
      sec["rows"] += out["rows"]
      sec["children"].append({"spec": spec, "rc": out["rc"], "wall_s": out["wall_s"],
                              "error": out.get("error")})
      print(f"[accelerator] {spec} done in {out['wall_s']:.0f} s"
            + (f": ERROR {out['error'].strip().splitlines()[-1]}" if out.get("error") else ""),
            file=sys.stderr, flush=True)
      sec["wall_s"] = time.time() - t_sec
      res["wall_s"] = time.time() - started
      _write(res, args.out)
  res["summary"] = report.summary(res)
  _write(res, args.out)
  print(report.markdown(res))
  return 1 if any(c["error"] for s in res["sections"].values() for c in s["children"]) else 0


def _write(res, out):
  res["summary"] = report.summary(res)
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(res, f, indent=1, default=str)
  with open(os.path.join(out, "RESULTS.md"), "w") as f:
    f.write(report.markdown(res))


if __name__ == "__main__":
  sys.exit(main())
