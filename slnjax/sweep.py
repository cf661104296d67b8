r"""Ablation runner: train each setting of a sweep, tabulate and plot the results.

    python -m slnjax.sweep --config experiments/tbptt_depth.py[:arg] --workdir DIR [--config.k=v]

The config file defines ``get_config(arg)`` (the base experiment; overrides apply to it) and
``get_sweep(arg) -> {"key": "model.loop.bptt_depth", "values": [...], "labels": [...]}``.
Each setting trains in DIR/<label>/ (resuming if interrupted). Then DIR/sweep.md (a
markdown table) and DIR/sweep.png (matplotlib) report, against the swept value: accuracy
after the loop (and after turn 1), the compiled memory of the train step
(memory_analysis: temp + argument + output bytes) and the step time (the last logging
interval, so without compilation).
"""
from __future__ import annotations

import importlib.util
import json
import os

from absl import app, flags
from ml_collections import config_flags

from slnjax import main as main_lib  # the same --config / --workdir flags


def load_sweep(path_arg: str) -> dict:
  path, _, arg = path_arg.partition(":")
  spec = importlib.util.spec_from_file_location("sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_sweep"):
    raise ValueError(f"{path} has no get_sweep(arg): it is not a sweep config.")
  sweep = dict(module.get_sweep(arg or None))
  sweep.setdefault("labels", [str(v) for v in sweep["values"]])
  if len(sweep["labels"]) != len(sweep["values"]):
    raise ValueError(f"{path}: get_sweep() gives {len(sweep['values'])} values but "
                     f"{len(sweep['labels'])} labels.")
  return sweep


def with_value(config, key: str, value):
  config = config.copy_and_resolve_references()
  *parents, leaf = key.split(".")
  node = config
  for p in parents:
    node = node[p]
  if leaf not in node:
    raise KeyError(f"The sweep key {key!r} is not a config field.")
  with config.unlocked():
    node[leaf] = value
  return config


def run(config, sweep: dict, workdir: str) -> list[dict]:
  import jax  # pylint: disable=g-import-not-at-top
  from slnjax import config as cfg, parallel, train  # pylint: disable=g-import-not-at-top
  rows = []
  for value, label in zip(sweep["values"], sweep["labels"]):
    c = cfg.finalize(with_value(config, sweep["key"], value))
    mesh = parallel.make_mesh(tuple(c.mesh.ici), tuple(c.mesh.dcn))
    mem = train.compiled_memory(train.make_train_step(c, mesh))
    out = train.train(c, os.path.join(workdir, f"{sweep['key'].split('.')[-1]}={label}"), mesh)
    rows.append({"label": label, "acc_final": out.get("eval/acc_final", float("nan")),
                 "acc_turn1": out.get("eval/acc_turn1", float("nan")),
                 "turns": out.get("eval/turns", float("nan")), "loss": out.get("loss"),
                 "memory_bytes": mem["total"], "memory": mem,
                 "step_ms": 1e3 / out["steps_per_sec"] if out.get("steps_per_sec") else None})
    jax.clear_caches()
  return rows


def write_table(rows: list[dict], key: str, path: str) -> str:
  lines = [f"| {key} | accuracy (after loop) | accuracy (turn 1) | mean turns | step memory MiB "
           f"(temp / args / out) | step time ms | final loss |",
           "|---|---|---|---|---|---|---|"]
  for r in rows:
    m = r["memory"]
    mib = lambda b: f"{b / 2**20:.2f}"
    step = f"{r['step_ms']:.1f}" if r["step_ms"] else "-"
    loss = f"{r['loss']:.4f}" if r["loss"] is not None else "-"
    lines.append(f"| {r['label']} | {r['acc_final']:.3f} | {r['acc_turn1']:.3f} | "
                 f"{r['turns']:.2f} | {mib(m['total'])} ({mib(m['temp'])} / {mib(m['argument'])}"
                 f" / {mib(m['output'])}) | {step} | {loss} |")
  text = "\n".join(lines) + "\n"
  with open(path, "w") as f:
    f.write(text)
  return text


def write_plot(rows: list[dict], key: str, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  x = list(range(len(rows)))
  labels = [r["label"] for r in rows]
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
  panels = [("accuracy", [("acc_final", "after loop"), ("acc_turn1", "turn 1")]),
            ("step memory (MiB)", [("memory_bytes", None)]),
            ("step time (ms)", [("step_ms", None)])]
  for ax, (title, series) in zip(axes, panels):
    for name, legend in series:
      ys = [r[name] if r[name] is not None else float("nan") for r in rows]
      if name == "memory_bytes":
        ys = [y / 2**20 for y in ys]
      ax.plot(x, ys, marker="o", label=legend)
    if len(series) > 1:
      ax.legend()
    ax.set_xticks(x, labels)
    ax.set_ylim(bottom=0)  # from zero, no offset: equal values must look equal
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    ax.set_xlabel(key)
    ax.set_title(title)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  sweep = load_sweep(config_flags.get_config_filename(flags.FLAGS["config"]))
  workdir = main_lib._WORKDIR.value  # pylint: disable=protected-access
  os.makedirs(workdir, exist_ok=True)
  rows = run(main_lib._CONFIG.value, sweep, workdir)  # pylint: disable=protected-access
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:
    table = write_table(rows, sweep["key"], os.path.join(workdir, "sweep.md"))
    write_plot(rows, sweep["key"], os.path.join(workdir, "sweep.png"))
    with open(os.path.join(workdir, "sweep.json"), "w") as f:
      json.dump(rows, f, indent=1)
    print(table, flush=True)
    print(f"wrote {workdir}/sweep.md and {workdir}/sweep.png", flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=main_lib.parse_flags)
