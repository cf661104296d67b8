r"""Ablation runner: train each setting of a sweep (with several seeds), tabulate and plot.

    python -m slnjax.sweep --config experiments/bptt.py --workdir DIR \
        --sweep model.loop.bptt_depth=1,2,4,-1 [--sweep KEY=V1,V2 ...] [--seeds 3] [--config.k=v]
    python -m slnjax.sweep --config experiments/tbptt_depth.py[:arg] --workdir DIR

``--sweep KEY=V1,V2,...`` sweeps any config field (values are Python literals; a value that
is not one is a string); several ``--sweep`` flags sweep every combination. Without it, the
config file's ``get_sweep(arg) -> {"key": ..., "values": [...], "labels": [...]}`` names the
sweep. ``--seeds N`` trains each setting with seeds config.seed, +1, ..., +N-1.

Each run trains in DIR/<setting>/seed=<s>/ and always checkpoints (checkpoint_every=0 becomes
about a tenth of the run, on logging steps). A rerun reads finished runs back from their
workdirs (slnjax/sweep_report.py), resumes an interrupted one from its checkpoint and trains
the rest; a run dir whose config.json differs from the run's config now is an error, not a
silent mix. A run that stops on a NaN/inf is a result (DIR/<setting>/seed=<s>/diverged.json),
left out of the means and counted in the table.
SIGTERM (preemption) saves the run in progress and stops the sweep with exit code 75
(checkpoint.PREEMPTED_EXIT_CODE: "requeue me"); no table is written until a rerun finishes.
SIGINT (Ctrl-C) stops it the same way (a second Ctrl-C at once, exit code 130).
When every run has finished: DIR/sweep.md (table), DIR/sweep.png (plot), DIR/sweep.json
(every number, per seed too): accuracy (mean ± standard error over seeds), the compiled
memory of the train step (memory_analysis: temp + argument + output bytes, kept in
DIR/<setting>/step_memory.json) and the step time (median and interquartile range over the
logging intervals after compilation). Multi-process: every process reads the run dirs (a
shared filesystem, as orbax's checkpoints need); process 0 writes the reports.
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import itertools
import json
import math
import os
import signal
import sys
import tempfile

from absl import app, flags, logging
from ml_collections import config_dict, config_flags

from slnjax import main as main_lib  # the same --config / --workdir flags
from slnjax import sweep_report as report

_SWEEP = flags.DEFINE_multi_string(
    "sweep", None, "KEY=V1,V2,...: train every value of config field KEY (Python literals); "
    "several --sweep flags: every combination. Default: the config file's get_sweep(arg).")
_SEEDS = flags.DEFINE_integer("seeds", 1, "Seeds per setting (config.seed + 0..N-1); the "
                              "table gives mean ± standard error over them.", lower_bound=1)
# Fields a rerun may change without changing a run's results.
_FREE_FIELDS = ("log_every", "checkpoint_every", "keep_checkpoints", "eval.transcripts",
                "task.data_dir", "mesh")


class SweepError(ValueError):
  """A mistake in the sweep's command line or config: one error line."""


@dataclasses.dataclass
class Setting:
  values: dict  # config key -> value
  labels: dict  # config key -> label
  config: config_dict.ConfigDict = None  # finalized, seed not yet set

  @property
  def name(self) -> str:
    return ",".join(f"{k.split('.')[-1]}={lab}" for k, lab in self.labels.items())


def parse_values(text: str) -> list:
  """'1,2,4,-1' -> [1, 2, 4, -1]; '(1,2),(3,4)' -> tuples; 'soft,hard' -> strings."""
  try:
    values = ast.literal_eval(f"[{text}]")
  except (ValueError, SyntaxError):
    values = []
    for part in text.split(","):
      try:
        values.append(ast.literal_eval(part.strip()))
      except (ValueError, SyntaxError):
        values.append(part.strip())
  return values


def _label(value) -> str:
  text = value if isinstance(value, str) else repr(value)
  return text.replace(" ", "").replace(os.sep, "_") or "''"


def field_names(node, prefix: str = "") -> list[str]:
  out = []
  for k in node.keys():
    v = node[k]
    if isinstance(v, config_dict.ConfigDict) and len(v):
      out += field_names(v, f"{prefix}{k}.")
    else:
      out.append(f"{prefix}{k}")
  return out


def with_value(config, key: str, value):
  config = config.copy_and_resolve_references()
  *parents, leaf = key.split(".")
  node = config
  for p in parents:
    node = node[p] if p in node and isinstance(node[p], config_dict.ConfigDict) else None
    if node is None:
      break
  if node is None or leaf not in node:
    names = field_names(config)
    near = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    raise SweepError(f"{key!r} is not a config field" + (f"; did you mean {near[0]!r}?" if near
                     else f"; fields look like {names[:4]} (see slnjax/config.py)."))
  old = node[leaf]
  try:
    with config.unlocked():
      node[leaf] = value
  except (TypeError, ValueError) as e:
    why = (f"the field is {type(old).__name__}, the value {type(value).__name__}"
           if old is not None else str(e))
    raise SweepError(f"{key}={value!r}: {why} (values are Python literals, e.g. 2, 0.5, "
                     f"'soft', (1, 2)).") from None
  return config


def _parse_flag(text: str) -> tuple[str, list]:
  key, eq, values = text.partition("=")
  if not eq or not key.strip() or not values.strip():
    raise SweepError(f"--sweep {text!r}: write --sweep KEY=V1,V2,... "
                     f"(e.g. --sweep model.loop.bptt_depth=1,2,4,-1).")
  vals = parse_values(values)
  if len({repr(v) for v in vals}) != len(vals):
    raise SweepError(f"--sweep {text!r}: a value is repeated.")
  return key.strip(), vals


def _from_file(path_arg: str) -> tuple[str, list, list]:
  path, _, arg = path_arg.partition(":")
  spec = importlib.util.spec_from_file_location("sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_sweep"):
    raise SweepError(f"{path} has no get_sweep(arg), and no --sweep KEY=V1,V2,... was given: "
                     f"name what to sweep (e.g. --sweep model.loop.bptt_depth=1,2,4,-1).")
  sweep = dict(module.get_sweep(arg or None))
  labels = sweep.get("labels") or [_label(v) for v in sweep["values"]]
  if len(labels) != len(sweep["values"]):
    raise SweepError(f"{path}: get_sweep() gives {len(sweep['values'])} values but "
                     f"{len(labels)} labels.")
  return sweep["key"], list(sweep["values"]), [str(x) for x in labels]


def default_checkpoint_every(steps: int, log_every: int) -> int:
  """About ten saves a run, on logging steps, every other log at most (the step time is
  measured on the logging intervals without a save)."""
  return max(2 * log_every, math.ceil(steps / 10 / log_every) * log_every)


def plan(config, sweep_flags: list[str] | None, config_file: str) -> list[Setting]:
  """The settings (every combination of the swept values), each validated by finalize."""
  from slnjax import finalize  # pylint: disable=g-import-not-at-top
  if sweep_flags:
    axes = [_parse_flag(s) for s in sweep_flags]
    axes = [(k, vals, [_label(v) for v in vals]) for k, vals in axes]
  else:
    axes = [_from_file(config_file)]
  if len({k for k, _, _ in axes}) != len(axes):
    raise SweepError("the same key is swept twice; give each key one --sweep flag.")
  settings = []
  for combo in itertools.product(*[list(zip(vals, labs)) for _, vals, labs in axes]):
    s = Setting({k: v for (k, _, _), (v, _) in zip(axes, combo)},
                {k: lab for (k, _, _), (_, lab) in zip(axes, combo)})
    c = config
    for k, v in s.values.items():
      c = with_value(c, k, v)
    if not c.checkpoint_every:  # a sweep always checkpoints, so that a rerun resumes
      with c.unlocked():
        c.checkpoint_every = default_checkpoint_every(c.steps, c.log_every)
    try:
      s.config = finalize.finalize(c)  # errors before any run starts
    except (ValueError, TypeError) as e:
      raise SweepError(f"setting {s.name}: {e}") from None
    settings.append(s)
  return settings


def seeded(setting: Setting, seed: int):
  return with_value(setting.config, "seed", seed)


def _flat(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def check_rundir(rundir: str, config) -> None:
  """A run dir trained with another config (beyond _FREE_FIELDS) is an error."""
  path = os.path.join(rundir, "config.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    old = _flat(json.load(f))
  new = _flat(json.loads(config.to_json_best_effort()))
  free = lambda k: any(k == f or k.startswith(f + ".") for f in _FREE_FIELDS)
  diff = [k for k in sorted(set(old) | set(new)) if not free(k) and old.get(k) != new.get(k)]
  if diff:
    shown = ", ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in diff[:4])
    raise SweepError(f"{rundir} was trained with another config ({shown}"
                     f"{', ...' if len(diff) > 4 else ''}); use a new --workdir, or the "
                     f"config that run was made with.")


def _device() -> str:
  import jax  # pylint: disable=g-import-not-at-top
  return f"{jax.devices()[0].device_kind} x{jax.device_count()}"


def _memory(setting_dir: str, make_ts) -> dict:
  """The compiled step's memory, kept in <setting>/step_memory.json for reruns."""
  from slnjax import train  # pylint: disable=g-import-not-at-top
  path = os.path.join(setting_dir, "step_memory.json")
  if os.path.exists(path):
    with open(path) as f:
      kept = json.load(f)
    if kept.get("device") == _device():
      return kept["memory"]
  mem = train.compiled_memory(make_ts())
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:
    os.makedirs(setting_dir, exist_ok=True)
    with open(path, "w") as f:
      json.dump({"device": _device(), "memory": mem}, f)
  return mem


def read(rundir: str, c) -> dict | None:
  return report.read_run(rundir, c.steps, bool(c.eval_every), c.checkpoint_every)


class _Stop:
  """SIGTERM or SIGINT outside a run's training (whose own handler saves and returns
  "preempted"): the sweep stops before the next run. A second SIGINT interrupts at once."""

  def __init__(self):
    self.name, self._prev = None, {}
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._prev[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread
        pass

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.name is not None:
      raise KeyboardInterrupt
    self.name = signal.Signals(signum).name

  def restore(self):
    for sig, prev in self._prev.items():
      signal.signal(sig, prev)


class Preempted(Exception):
  """The sweep stopped on SIGTERM/SIGINT; a rerun resumes it."""


def run(settings: list[Setting], seeds: list[int], workdir: str, mesh=None) -> list[dict]:
  """Trains (or reads back) every run; the table rows. Raises Preempted on a signal."""
  import jax  # pylint: disable=g-import-not-at-top
  from slnjax import parallel, train  # pylint: disable=g-import-not-at-top
  lead = jax.process_index() == 0
  # a sweep over config.seed itself: one run per setting, with the swept seed
  seeds_of = {s.name: [s.config.seed] if "seed" in s.values else seeds for s in settings}
  total, i, rows = sum(len(v) for v in seeds_of.values()), 0, []
  dirs = {s.name: os.path.join(workdir, s.name) for s in settings}
  for s in settings:  # before anything trains
    for seed in seeds_of[s.name]:
      check_rundir(os.path.join(dirs[s.name], f"seed={seed}"), seeded(s, seed))
  stop = _Stop()
  try:
    for s in settings:
      runs, ts, mesh_s = [], None, mesh
      for seed in seeds_of[s.name]:
        i += 1
        c = seeded(s, seed)
        rundir = os.path.join(dirs[s.name], f"seed={seed}")
        got = read(rundir, c)
        if got is not None:
          print(f"[{i}/{total}] {s.name} seed={seed}: finished, read back from {rundir}",
                flush=True)
          runs.append(got)
          continue
        if stop.name:
          raise Preempted(f"{stop.name} before [{i}/{total}] {s.name} seed={seed} started")
        print(f"[{i}/{total}] {s.name} seed={seed}", flush=True)
        mesh_s = mesh_s or parallel.make_mesh(tuple(c.mesh.ici), tuple(c.mesh.dcn))
        ts = ts or train.make_train_step(c, mesh_s)  # shared by the seeds (same program)
        _memory(dirs[s.name], lambda: ts)
        if stop.name:  # came during the compilation
          raise Preempted(f"{stop.name} before [{i}/{total}] {s.name} seed={seed} started")
        try:
          out = train.train(c, rundir, train_step=ts)
        except train.NonFiniteError as e:  # a result of this setting, kept: not retrained
          print(f"[{i}/{total}] {s.name} seed={seed} stopped on NaN/inf: {e}", flush=True)
          if lead:
            os.makedirs(rundir, exist_ok=True)
            with open(os.path.join(rundir, report.DIVERGED), "w") as f:
              json.dump({"message": str(e)}, f)
          runs.append(report.diverged(str(e)))
          continue
        if out.get("preempted") or stop.name:
          raise Preempted(f"{stop.name or 'a signal'} during [{i}/{total}] {s.name} "
                          f"seed={seed}: saved at step {out['step']}/{c.steps} in {rundir}")
        got = read(rundir, c) if lead else {}
        if got is None:
          raise RuntimeError(f"{rundir}: training returned at step {out['step']} but its "
                             f"metrics.jsonl has no line at step {c.steps}.")
        runs.append(got)
      if lead:  # (every seed read back: the memory from its file, else compiled now)
        make = lambda c=seeded(s, seeds_of[s.name][0]): ts or train.make_train_step(
            c, parallel.make_mesh(tuple(c.mesh.ici), tuple(c.mesh.dcn)))
        rows.append(report.aggregate(s.values, s.labels, seeds_of[s.name], runs,
                                     _memory(dirs[s.name], make)))
      jax.clear_caches()
  finally:
    stop.restore()
  return rows


def _check_writable(workdir: str) -> None:
  if "://" in workdir:  # remote (gs://...): left to the writes themselves
    return
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir, prefix=".slnjax_write_check_"):
      pass
  except OSError as e:
    raise SweepError(f"--workdir={workdir} cannot be written to ({e.strerror or e}); choose a "
                     f"directory you can write to.") from None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from slnjax import distributed  # pylint: disable=g-import-not-at-top
  distributed.initialize()
  import jax  # pylint: disable=g-import-not-at-top
  from slnjax import checkpoint  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  config = main_lib._CONFIG.value  # pylint: disable=protected-access
  workdir = main_lib._WORKDIR.value  # pylint: disable=protected-access
  try:
    settings = plan(config, _SWEEP.value,
                    config_flags.get_config_filename(flags.FLAGS["config"]))
    if _SEEDS.value > 1 and any("seed" in s.values for s in settings):
      raise SweepError("--seeds and a sweep over seed: use one of them.")
    seeds = [config.seed + k for k in range(_SEEDS.value)]
    if not config.checkpoint_every:
      print(f"note: config.checkpoint_every=0; a sweep checkpoints every run (a rerun resumes "
            f"it): checkpoint_every={settings[0].config.checkpoint_every}", flush=True)
    _check_writable(workdir)
    rows = run(settings, seeds, workdir)
  except SweepError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except Preempted as e:
    print(f"preempted: {e}. Rerun the same command to resume the sweep (exit code "
          f"{checkpoint.PREEMPTED_EXIT_CODE}: requeue).", file=sys.stderr, flush=True)
    sys.exit(checkpoint.PREEMPTED_EXIT_CODE)
  except ValueError as e:  # e.g. a run dir's checkpoints do not fit its setting's model
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  except KeyboardInterrupt:  # a second Ctrl-C
    print("interrupted: the sweep stopped (finished runs are kept; rerun to resume).",
          file=sys.stderr)
    sys.exit(130)
  if jax.process_index() == 0:
    keys = list(settings[0].values)
    table = report.write_table(rows, keys, os.path.join(workdir, "sweep.md"))
    report.write_plot(rows, keys, os.path.join(workdir, "sweep.png"))
    report.write_json(rows, os.path.join(workdir, "sweep.json"))
    print(table, flush=True)
    print(f"wrote {workdir}/sweep.md, sweep.png and sweep.json", flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=main_lib.parse_flags)
