"""Runs the benchmarks and writes benchmarks/RESULTS.md and benchmarks/results.json.

    python -m benchmarks.run [--quick] [--only bptt,memory,decoding,adaptive]

Each comparison runs in its own subprocess (so RSS peaks do not mix), with both sides
(slnjax and PyTorch + transformers) in that one process, 2 CPU threads each. --quick runs
the 32-token rows and fewer repetitions (< 10 minutes); the full run takes longer.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks import harness, report

COMPARISONS = ("bptt", "memory", "decoding", "adaptive")
HERE = os.path.dirname(os.path.abspath(__file__))


def _child(name: str, quick: bool, out_path: str):
  harness.configure()
  if name == "bptt":
    from benchmarks import bptt
    res = bptt.main(quick)
  elif name == "memory":
    from benchmarks import bptt
    res = bptt.memory_growth(quick)
  elif name == "decoding":
    from benchmarks import decoding
    res = decoding.main(quick)
  else:
    from benchmarks import adaptive
    res = adaptive.main(quick)
  with open(out_path, "w") as f:
    json.dump(res, f)


def _parse(argv):
  p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--quick", action="store_true", help="32-token rows, fewer repetitions")
  p.add_argument("--only", default=",".join(COMPARISONS),
                 help=f"comma-separated subset of {','.join(COMPARISONS)}")
  p.add_argument("--out", default=HERE, help="folder for RESULTS.md and results.json")
  p.add_argument("--child", help=argparse.SUPPRESS)
  p.add_argument("--json", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  names = [n for n in args.only.split(",") if n]
  bad = sorted(set(names) - set(COMPARISONS))
  if bad:
    p.error(f"unknown comparison(s) {bad}; choose from {', '.join(COMPARISONS)}.")
  args.names = names
  return args


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  args = _parse(argv)
  if args.child:
    return _child(args.child, args.quick, args.json)
  started = time.time()
  results = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
             "command": " ".join(["python -m benchmarks.run"] + argv), "quick": args.quick,
             "machine": harness.machine(), "load_at_start": harness.load(), "comparisons": {}}
  root = os.path.dirname(HERE)
  for name in args.names:
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
      out = os.path.join(tmp, "out.json")
      cmd = [sys.executable, "-m", "benchmarks.run", "--child", name, "--json", out]
      print(f"[benchmarks] {name} ...", file=sys.stderr, flush=True)
      proc = subprocess.run(cmd + (["--quick"] if args.quick else []), cwd=root)
      res = {"error": f"exit code {proc.returncode}"}
      if proc.returncode == 0:
        with open(out) as f:
          res = json.load(f)
    res["wall_s"] = time.time() - t0
    results["comparisons"][name] = res
    print(f"[benchmarks] {name} done in {res['wall_s']:.0f} s", file=sys.stderr, flush=True)
  results["wall_s"] = time.time() - started
  results["load_at_end"] = harness.load()
  results["goals"] = report.goals(results)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  with open(os.path.join(args.out, "RESULTS.md"), "w") as f:
    f.write(report.markdown(results))
  print(report.markdown(results))
  failed = [n for n, r in results["comparisons"].items() if "error" in r]
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
