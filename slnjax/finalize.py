"""The one place a config is finalized: the objective's default hyper-parameters filled in,
every field validated (errors that name the field and say what is valid), locked.

``train.train`` (and the entry points that compile or sweep without training: aot, sweep)
call ``finalize`` once and hand the result down; ``from_dict`` rebuilds a saved config.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
import pkgutil

from ml_collections import config_dict

from slnjax import build, data, objectives, parallel, soft_tokens, sln, wide
from slnjax import config as schema

WIDE_OBJECTIVES = ("wide", "wide_ppo")  # slnjax/objectives/wide.py


def load_objectives() -> dict:
  """Imports every module of slnjax.objectives (each registers itself) -> REGISTRY."""
  for info in pkgutil.iter_modules(objectives.__path__):
    if info.name != "base":
      importlib.import_module(f"{objectives.__name__}.{info.name}")
  return objectives.REGISTRY


def objective_defaults(name: str) -> dict:
  """The hyper-parameters of objective ``name`` with their defaults ({} if unknown)."""
  registry = load_objectives()
  return dict(registry[name].defaults) if name in registry else {}


def from_dict(d: dict) -> config_dict.ConfigDict:
  """A whole config as a nested dict (e.g. the JSON a checkpoint saves) -> finalized and
  locked; a key the schema lacks is an error that names it, a missing one takes its
  default."""
  d = dict(d)
  c = schema.base_config()
  c.objective = config_dict.ConfigDict(d.pop("objective", {"name": "sft"}))
  schema.merge(c, d)
  return finalize(c)


def finalize(c: config_dict.ConfigDict) -> config_dict.ConfigDict:
  """Fills in the objective's default hyper-parameters, validates, and locks (a copy)."""
  c = copy.deepcopy(c)  # keeps typed placeholders (so None fields stay overridable)
  c.unlock()
  registry = load_objectives()
  name = c.objective.name
  if name not in registry:
    raise ValueError(f"config.objective.name={name!r} is not a registered objective; "
                     f"choose one of {sorted(registry)}.")
  defaults = dict(registry[name].defaults)
  unknown = sorted(set(c.objective.keys()) - set(defaults) - {"name"})
  if unknown:
    raise ValueError(f"config.objective has keys {unknown} that objective {name!r} does not "
                     f"take; its hyper-parameters are {sorted(defaults)}.")
  for key, value in defaults.items():
    if key not in c.objective:
      c.objective[key] = value
  validate(c)
  c.lock()
  return c


def _check(cond, msg):
  if not cond:
    raise ValueError(msg)


def validate_task(c: config_dict.ConfigDict) -> None:
  """task.name, task.config and task.overrides against the task's builder."""
  _check(c.task.name in data.TASKS,
         f"config.task.name={c.task.name!r}; valid tasks: {sorted(data.TASKS)}.")
  task = data.get_task(c.task.name)
  names = task.config_names
  _check(not c.task.config or c.task.config in names,
         f"config.task.config={c.task.config!r} is not a config of task {c.task.name!r}; "
         f"valid: {names or '(none: leave it empty)'}.")
  overrides = sorted(c.task.overrides.keys())
  if not overrides:
    return
  configs = task.builder_cls.BUILDER_CONFIGS
  fields = sorted({f.name for f in dataclasses.fields(configs[0])} - {"name"}) if configs else []
  unknown = [k for k in overrides if k != "name" and k not in fields]
  _check(not unknown and configs,
         f"config.task.overrides sets {unknown or overrides}, which task {c.task.name!r}'s "
         f"builder config does not take (its fields: {fields or 'none'}); these overrides "
         "were written for another task (a preset's or an experiment's): use an experiment "
         f"file for {c.task.name!r}, or set task.overrides for its fields.")
  _check("name" in overrides and c.task.overrides.name not in names,
         f"config.task.overrides changes fields of task {c.task.name!r} but its name "
         f"{c.task.overrides.get('name')!r} is missing or built in ({names}): set "
         "task.overrides.name to a new name (the dataset's own directory).")


def validate(c: config_dict.ConfigDict) -> None:
  """Errors that name the field and say what would be valid."""
  validate_task(c)
  _check(c.model.kind in sln.KINDS,
         f"config.model.kind={c.model.kind!r}; valid kinds: {sorted(sln.KINDS)}.")
  wide_kind = build.is_wide(c)
  for name in ("left",) if wide_kind else ("left", "right"):
    try:
      build.lobe_config(c, name)
    except (ValueError, TypeError) as e:
      raise ValueError(f"config.model.{name}: {e}") from e
  wide_objective = c.objective.name in WIDE_OBJECTIVES
  _check(wide_kind == wide_objective,
         f"config.objective.name={c.objective.name!r} does not train kind {c.model.kind!r}: "
         + (f"wide kinds train with one of {WIDE_OBJECTIVES}." if wide_kind else
            f"{WIDE_OBJECTIVES} train the wide kinds {sorted(wide.KINDS)} only."))
  if wide_kind:
    try:
      build.build_model(c)  # WideConfig's own checks, then k_in + k_out against the LM's layers
    except (ValueError, TypeError) as e:
      raise ValueError(f"config.model.wide: {e}") from e
    if wide_objective:  # the loss's own checks (WideLossConfig)
      try:
        names = [f.name for f in dataclasses.fields(wide.WideLossConfig)]
        wide.WideLossConfig(**{k: c.objective[k] for k in names})
      except (ValueError, TypeError) as e:
        raise ValueError(f"config.objective: {e}") from e
  else:
    try:
      build.loop_config(c)
    except (ValueError, TypeError) as e:
      raise ValueError(f"config.model.loop: {e}") from e
  _validate_memory(c)
  for name in ("left", "right", "memory"):
    o = c.optim[name]
    _check(o.schedule in schema.SCHEDULES,
           f"config.optim.{name}.schedule={o.schedule!r}; expected one of {schema.SCHEDULES}.")
    _check(o.lr >= 0 and o.warmup_steps >= 0 and o.clip_norm >= 0,
           f"config.optim.{name}: lr, warmup_steps and clip_norm must be >= 0.")
  _check(c.tau.schedule in schema.TAU_SCHEDULES,
         f"config.tau.schedule={c.tau.schedule!r}; expected one of {schema.TAU_SCHEDULES}.")
  _check(c.tau.start > 0 and c.tau.end > 0, "config.tau.start and .end must be > 0.")
  for key in ("batch_size", "prompt_len", "steps", "log_every"):
    _check(c[key] > 0, f"config.{key}={c[key]} must be > 0.")
  for key in ("eval_every", "checkpoint_every", "keep_checkpoints"):
    _check(c[key] >= 0, f"config.{key}={c[key]} must be >= 0 (0 disables it).")
  _check(c.eval.mode == "" or c.eval.mode in soft_tokens.MODES,
         f"config.eval.mode={c.eval.mode!r}; expected '' or one of {soft_tokens.MODES}.")
  _check(not (c.eval.report and wide_kind),
         f"config.eval.report: the full evaluation is for dialogue kinds, not {c.model.kind!r} "
         "(its train-loop evaluation is evaluate_wide.py); set eval.report=False.")
  parallel.rules_from_config(c.mesh.rules or None)


def _validate_memory(c: config_dict.ConfigDict) -> None:
  try:
    mcfg = build.memory_config(c)
  except (ValueError, TypeError) as e:
    raise ValueError(f"config.model.memory: {e}") from e
  if mcfg is None:
    return
  _check(not build.is_wide(c), f"config.model.memory.lobes={mcfg.lobes}: the wide kinds do not "
         "read memories; set model.memory.lobes=() or use a dialogue kind.")
  _check(c.task.name in data.TASKS_WITH_BANK,
         f"config.model.memory.lobes={mcfg.lobes} but task {c.task.name!r} gives no memory bank "
         f"(tasks with one: {data.TASKS_WITH_BANK}); set model.memory.lobes=() or change task.")
  obj = objectives.REGISTRY.get(c.objective.name)
  readers = sorted(n for n, o in objectives.REGISTRY.items() if o.memory)
  _check(obj is None or obj.memory,
         f"config.objective.name={c.objective.name!r} does not read a memory bank; with "
         f"model.memory set use one of {readers}.")
  _check(c.task.bank.capacity >= mcfg.k and c.task.bank.item_len >= 1,
         f"config.task.bank: capacity={c.task.bank.capacity} must be >= model.memory.k="
         f"{mcfg.k}, item_len={c.task.bank.item_len} >= 1.")
  _check("right" not in mcfg.lobes or c.model.kind not in ("single",),
         f"config.model.memory.lobes={mcfg.lobes}: kind {c.model.kind!r} has no right lobe.")
