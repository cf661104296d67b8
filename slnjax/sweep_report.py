"""A sweep's results: each run read back from its workdir, seeds aggregated, a table and a plot.

A run's numbers always come from what its training wrote (<run>/metrics.jsonl): the train
line and the eval line at the final step. A run just trained and a run finished by an
earlier invocation are read the same way, so a rerun reports what the first run reported.
A run whose metrics.jsonl has no line at the final step has not finished (None).

Step time: each train log line holds steps_per_sec over the steps since the previous log,
timed from the end of the first step (no compilation). A setting's step time is the median
of those intervals over its seeds, with their interquartile range; intervals that contain
an evaluation or a checkpoint save are left out whenever others remain.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np

DIVERGED = "diverged.json"  # written by the sweep when a run stops on a NaN/inf
# (name, split, column title): the per-run numbers aggregated over seeds.
METRICS = (("acc_final", "eval", "accuracy (after loop)"),
           ("acc_turn1", "eval", "accuracy (turn 1)"),
           ("turns", "eval", "mean turns"), ("loss", "train", "final loss"))


def diverged(message: str) -> dict:
  """The result of a run that stopped on a NaN/inf (kept in <run>/diverged.json)."""
  return {"diverged": message, "train": {}, "eval": {}, "step_ms": [],
          **{name: None for name, _, _ in METRICS}}


def read_run(workdir: str, steps: int, needs_eval: bool, save_every: int = 0) -> dict | None:
  """{"train": final train metrics, "eval": final eval metrics, "step_ms": [per interval],
  ...METRICS} or None when the run has not reached ``steps`` (or its final evaluation).
  ``save_every``: the run's checkpoint_every (intervals with a save are left out too)."""
  if os.path.exists(os.path.join(workdir, DIVERGED)):
    with open(os.path.join(workdir, DIVERGED)) as f:
      return diverged(json.load(f)["message"])
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    lines = [json.loads(line) for line in f if line.strip()]
  train = [r for r in lines if r.get("split") == "train"]
  evals = {r["step"]: r for r in lines if r.get("split") == "eval"}
  last = [r for r in train if r["step"] == steps]
  if not last or (needs_eval and steps not in evals):
    return None
  strip = lambda r: {k: v for k, v in r.items() if k not in ("step", "split")}
  out = {"train": strip(last[-1]), "eval": strip(evals.get(steps, {})),
         "step_ms": _interval_ms(train, sorted(evals), save_every)}
  for name, split, _ in METRICS:
    out[name] = out[split].get(name)
  return out


def _interval_ms(train: list[dict], eval_steps: list[int], save_every: int) -> list[float]:
  """ms per step of each logging interval; those with an evaluation or a checkpoint save in
  them (both come after the log of their step) left out, unless no other is left."""
  clean, all_ms, prev = [], [], None
  for r in train:
    if r.get("steps_per_sec"):
      ms = 1e3 / r["steps_per_sec"]
      all_ms.append(ms)
      busy = prev is not None and (any(prev <= e < r["step"] for e in eval_steps) or (
          save_every and any(t % save_every == 0 for t in range(prev, r["step"]))))
      if not busy:
        clean.append(ms)
    prev = r["step"]
  return clean or all_ms


def _mean_se(xs: list[float]) -> tuple[float, float]:
  xs = [x for x in xs if x is not None and math.isfinite(x)]
  if not xs:
    return float("nan"), float("nan")
  se = float(np.std(xs, ddof=1) / math.sqrt(len(xs))) if len(xs) > 1 else float("nan")
  return float(np.mean(xs)), se


def aggregate(values: dict, labels: dict, seeds: list[int], runs: list[dict],
              memory: dict) -> dict:
  """One table row: the setting, mean and standard error of METRICS over the seeds' runs,
  the step memory, the step time (median and quartiles over all intervals) and the runs."""
  row = {"label": ",".join(labels.values()), "values": values, "labels": labels,
         "seeds": seeds, "memory": memory, "memory_bytes": memory["total"]}
  for name, _, _ in METRICS:
    row[name], row[f"{name}_se"] = _mean_se([r[name] for r in runs])
  ms = [m for r in runs for m in r["step_ms"]]
  q25, med, q75 = (np.percentile(ms, [25, 50, 75]).tolist() if ms else [None] * 3)
  row.update(step_ms=med, step_ms_q25=q25, step_ms_q75=q75, step_ms_intervals=len(ms),
             diverged=sum(bool(r.get("diverged")) for r in runs))
  row["runs"] = [{"seed": s, **r} for s, r in zip(seeds, runs)]
  return row


def _finite(x) -> bool:
  return x is not None and math.isfinite(x)


def _cell(mean, se, digits: int) -> str:
  if not _finite(mean):
    return "-"
  return f"{mean:.{digits}f}" + (f" ± {se:.{digits}f}" if _finite(se) else "")


def write_table(rows: list[dict], keys: list[str], path: str) -> str:
  counts = sorted({len(r["seeds"]) for r in rows})
  note = ("one seed" if counts == [1] else
          f"mean ± standard error over {'/'.join(map(str, counts))} seeds")
  shown = [(n, title) for n, _, title in METRICS  # (no evaluation: no accuracy columns)
           if any(_finite(r[n]) for r in rows)]
  head = [*keys, *(title for _, title in shown), "step memory MiB (temp / args / out)",
          "step time ms, median (IQR)"]
  nan_runs = any(r.get("diverged") for r in rows)  # their seeds are left out of the means
  head += ["runs stopped on NaN/inf (not in the means)"] if nan_runs else []
  lines = [f"Each row: {note}. Step time: median over the logging intervals after "
           f"compilation (n intervals), with the interquartile range.", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  mib = lambda b: f"{b / 2**20:.2f}"
  for r in rows:
    m = r["memory"]
    cells = [r["labels"][k] for k in keys]
    cells += [_cell(r[n], r[f"{n}_se"], 4 if n == "loss" else 2 if n == "turns" else 3)
              for n, _ in shown]
    cells.append(f"{mib(m['total'])} ({mib(m['temp'])} / {mib(m['argument'])} / "
                 f"{mib(m['output'])})")
    cells.append("-" if r["step_ms"] is None else
                 f"{r['step_ms']:.1f} ({r['step_ms_q25']:.1f}-{r['step_ms_q75']:.1f}, "
                 f"n={r['step_ms_intervals']})")
    cells += [f"{r['diverged']} of {len(r['seeds'])}"] if nan_runs else []
    lines.append("| " + " | ".join(cells) + " |")
  text = "\n".join(lines) + "\n"
  with open(path, "w") as f:
    f.write(text)
  return text


def _no_nan(x):
  if isinstance(x, dict):
    return {k: _no_nan(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_no_nan(v) for v in x]
  return None if isinstance(x, float) and not math.isfinite(x) else x


def write_json(rows: list[dict], path: str) -> None:
  """Standard JSON: a missing number (no evaluation, no finite run) is null, not NaN."""
  with open(path, "w") as f:
    json.dump(_no_nan(rows), f, indent=1, default=str)


def write_plot(rows: list[dict], keys: list[str], path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  nan = lambda v: float("nan") if v is None else v
  x = np.arange(len(rows))
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
  n = max(len(r["seeds"]) for r in rows)
  ax = axes[0]
  evaluated = any(math.isfinite(r["acc_final"]) for r in rows)  # else: the final loss
  series = ((("acc_final", "after loop"), ("acc_turn1", "turn 1")) if evaluated
            else (("loss", "train"),))
  for name, legend in series:
    ys = [r[name] for r in rows]
    err = [0.0 if not math.isfinite(r[f"{name}_se"]) else r[f"{name}_se"] for r in rows]
    ax.errorbar(x, ys, yerr=err, marker="o", capsize=3, label=legend)
  ax.legend()
  ax.set_title(("accuracy" if evaluated else "final loss")
               + (f" (mean ± s.e., {n} seeds)" if n > 1 else ""))
  axes[1].plot(x, [r["memory_bytes"] / 2**20 for r in rows], marker="o")
  axes[1].set_title("step memory (MiB)")
  med = np.array([nan(r["step_ms"]) for r in rows])
  lo = med - np.array([nan(r["step_ms_q25"]) for r in rows])
  hi = np.array([nan(r["step_ms_q75"]) for r in rows]) - med
  axes[2].errorbar(x, med, yerr=[lo, hi], marker="o", capsize=3)
  axes[2].set_title("step time (ms, median and IQR)")
  for ax in axes:
    ax.set_xticks(x, [r["label"] for r in rows])
    ax.set_ylim(bottom=0)  # from zero, no offset: equal values must look equal
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    ax.set_xlabel(", ".join(keys))
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
