"""The experiment config: schema, defaults, validation (ml_collections, locked).

An experiment file (experiments/NAME.py) defines ``get_config(arg) -> ConfigDict``, usually
``experiment(kind=..., objective=..., **overrides)`` from here. Configs are locked: a
misspelt key — in a file or in a ``--config.key=value`` override — is an error that names
the key. Every field that ``train`` reads exists here, with its default:

  seed                     int: parameters, sampling, data order
  init_from                a previous run's workdir: start from its latest parameters
                           (fresh optimizer; frozen "ref"/"prev" copies are these too)
  pretrained.left / .right Hugging Face checkpoint directories the lobes come from (the
                           lobe shapes follow their config.json: ``pretrained_lobe``);
                           ``python -m slnjax.import_hf`` turns them into an init_from
                           workdir, which a fresh run then needs
  task.name / .config      a slnjax.data task and its builder config name ("" = default)
  task.overrides           builder-config fields (e.g. num_train); needs a new ``name``
  task.data_dir / .tokenizer / .train_split / .eval_split
  task.allow_unsandboxed_code  False (default): a code task (mbpp, humaneval) stops at start
                           when no sandbox for generated programs works here; True: run them
                           unsandboxed then (a loud warning; docs/sandbox.md)
  task.bank.capacity / .item_len  the memory bank of each example (slnjax/data/bank.py;
                           read only when model.memory.lobes is set)
  batch_size               global batch (all processes together)
  prompt_len, target_len   padded lengths (target_len None: model.loop.turn_len; wide
                           kinds: model.wide.answer_len)
  model.kind               slnjax.sln.KINDS: single, self_reflection, homogeneous, tall,
                           lateralized, wide, lateralized_wide
  model.left / .right      slnjax.lobes.LobeConfig fields (right: ignored by single/B/C and
                           by the wide kinds, where it may be None; a wide SLN's left is the
                           LM it lobotomises)
  model.loop               slnjax.loop.LoopConfig fields (bptt_depth -1 or None: full);
                           ignored by the wide kinds
  model.wide               slnjax.wide.WideConfig fields (wide kinds only; ``lateralized``
                           follows from the kind; bptt_depth -1 or None: full)
  model.memory             slnjax.memory.MemoryConfig fields; lobes () (default): no memory,
                           else the lobes that read the selected memories (dialogue kinds;
                           needs a task with a bank and an objective that reads it;
                           evaluation selects deterministically: slnjax/evaluate_memory.py)
  objective.name           slnjax.objectives.REGISTRY; the other fields are that
                           objective's hyper-parameters (defaults filled in by ``finalize``)
  optim.left/.right/.memory lr, warmup_steps, schedule (constant|cosine|linear), end_lr_frac,
                           b1, b2, eps, weight_decay, clip_norm (0: none)
  tau.start/.end/.schedule soft-token temperature over training (constant|linear|cosine|
                           exponential)
  steps, log_every, eval_every, checkpoint_every, keep_checkpoints  (0 disables eval/ckpt)
  eval.split / .num_batches (-1: all) / .batch_size (None: batch_size) / .transcripts /
       .mode ("" = the training loop mode, else a soft_tokens mode for evaluation; wide
       kinds: "" = greedy, else a route whose while_loop version the gate follows) /
       .final_split ("" = none: a split evaluated once, after the last step, e.g. "test"
       while .split is "validation"; logged as split "final")
       .report (dialogue kinds: at the final step, the full evaluation of
       ``python -m slnjax.evaluate`` on the whole eval split: eval.json, eval.md, eval.png)
  mesh.ici / .dcn / .rules parallelism (slnjax.parallel); rules () = DEFAULT_RULES
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
import pkgutil

from ml_collections import config_dict

from slnjax import data, memory, objectives, parallel, sln, soft_tokens, wide
from slnjax.lobes.config import LobeConfig
from slnjax.loop import LoopConfig
from slnjax.wide.config import WideConfig

SCHEDULES = ("constant", "cosine", "linear")
TAU_SCHEDULES = ("constant", "linear", "cosine", "exponential")
_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "tuple": dict}


def load_objectives() -> dict:
  """Imports every module of slnjax.objectives (each registers itself) -> REGISTRY."""
  for info in pkgutil.iter_modules(objectives.__path__):
    if info.name != "base":
      importlib.import_module(f"{objectives.__name__}.{info.name}")
  return objectives.REGISTRY


def _dataclass_dict(cls) -> config_dict.ConfigDict:
  """A ConfigDict of a frozen dataclass's fields; None defaults become typed placeholders."""
  out = config_dict.ConfigDict()
  for f in dataclasses.fields(cls):
    if f.default is None:
      first = str(f.type).split("|")[0].split("[")[0].strip()
      out[f.name] = config_dict.placeholder(_TYPES.get(first, str))
    else:
      out[f.name] = f.default
  return out


def lobe_dict(**kw) -> config_dict.ConfigDict:
  d = _dataclass_dict(LobeConfig)
  d.update(dict(vocab_size=260, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64))
  d.update(kw)
  return d


def optim_dict(**kw) -> config_dict.ConfigDict:
  d = config_dict.ConfigDict(dict(lr=3e-3, warmup_steps=20, schedule="cosine", end_lr_frac=0.1,
                                  b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.0, clip_norm=1.0))
  d.update(kw)
  return d


def base_config() -> config_dict.ConfigDict:
  """Every field with its default (unlocked; ``experiment`` finalizes and locks it)."""
  c = config_dict.ConfigDict()
  c.seed = 0
  c.init_from = ""  # a workdir whose latest parameters start this run (e.g. SFT -> PPO)
  c.pretrained = config_dict.ConfigDict(dict(left="", right=""))  # HF dirs (slnjax.import_hf)
  c.task = config_dict.ConfigDict(dict(
      name="addition", config="", overrides=config_dict.ConfigDict(), data_dir="",
      tokenizer="byte", train_split="train", eval_split="test", allow_unsandboxed_code=False,
      bank=config_dict.ConfigDict(dict(capacity=10, item_len=64))))
  c.batch_size = 16
  c.prompt_len = 16
  c.target_len = config_dict.placeholder(int)
  loop = _dataclass_dict(LoopConfig)
  loop.update(dict(turn_len=8, max_turns=3, mode="hard", threshold=0.5))
  wide_cfg = _dataclass_dict(WideConfig)
  del wide_cfg["lateralized"]  # set by the kind (wide / lateralized_wide)
  mem = _dataclass_dict(memory.MemoryConfig)
  mem.lobes = ()  # no memory
  c.model = config_dict.ConfigDict(dict(kind="lateralized", left=lobe_dict(), right=lobe_dict(),
                                        loop=loop, wide=wide_cfg, memory=mem))
  c.objective = config_dict.ConfigDict(dict(name="sft"))
  c.optim = config_dict.ConfigDict(dict(left=optim_dict(), right=optim_dict(),
                                        memory=optim_dict()))
  c.tau = config_dict.ConfigDict(dict(start=1.0, end=1.0, schedule="constant"))
  c.steps = 1000
  c.log_every = 50
  c.eval_every = 500
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.eval = config_dict.ConfigDict(dict(split="", num_batches=4,
                                       batch_size=config_dict.placeholder(int),
                                       transcripts=3, mode="", final_split="",
                                       report=False))
  c.mesh = config_dict.ConfigDict(dict(ici=(-1, 1, 1), dcn=(1, 1, 1), rules=()))
  return c


def _merge(c: config_dict.ConfigDict, overrides: dict, where: str = "config"):
  for key, value in overrides.items():
    if key not in c:
      raise KeyError(f"Unknown config key {where}.{key}; valid keys: {sorted(c.keys())}.")
    if isinstance(value, dict) and isinstance(c[key], config_dict.ConfigDict) and key != "overrides":
      _merge(c[key], value, f"{where}.{key}")
    else:
      c[key] = value


def experiment(model_kind: str = "lateralized", procedure: str = "sft", smoke: bool = False,
               **overrides) -> config_dict.ConfigDict:
  """base_config() with model.kind, objective.name and nested ``overrides`` applied; with
  ``smoke`` a tiny, few-step version for tests. Returns a finalized, locked config."""
  c = base_config()
  c.model.kind = model_kind
  c.objective.name = overrides.get("objective", {}).get("name", procedure)
  registry = load_objectives()
  if c.objective.name in registry:  # its hyper-parameters, so that overrides can set them
    c.objective.update(registry[c.objective.name].defaults)
  if smoke:
    _merge(c, dict(
        task=dict(config="digits5", overrides=dict(name="train_smoke", num_train=256, num_test=32,
                                                   num_validation=16, num_test_longer=8,
                                                   train_digits=(1, 2), longer_digits=(3, 3))),
        batch_size=4, prompt_len=8, steps=4, log_every=2, eval_every=0, checkpoint_every=0,
        model=dict(left=dict(d_model=16, d_ff=32), right=dict(d_model=16, d_ff=32),
                   loop=dict(turn_len=4, max_turns=2)),
        eval=dict(num_batches=1, transcripts=1)))
  _merge(c, overrides)
  return finalize(c)


# The CPU-sized experiments (experiments/*.py): addition with 1-3 digit operands, 2-layer
# d_model 64 lobes, batch 64.
CPU = dict(
    task=dict(config="digits5", overrides=dict(name="cpu_digits3", train_digits=(1, 3),
                                               longer_digits=(4, 5), num_train=20_000,
                                               num_test=512, num_test_longer=512)),
    batch_size=64, prompt_len=12, steps=1500, log_every=100, eval_every=500,
    checkpoint_every=500,
    model=dict(left=dict(d_model=64, d_ff=256), right=dict(d_model=64, d_ff=256),
               loop=dict(turn_len=6)),
    eval=dict(num_batches=8, transcripts=3))


def pretrained_lobe(ckpt_dir: str, **runtime) -> dict:
  """model.left/.right fields of a lobe shaped like the Hugging Face checkpoint in
  ``ckpt_dir`` (its config.json); ``runtime``: convert.RUNTIME_FIELDS (dtype, scan_layers...)."""
  from slnjax.lobes import convert  # pylint: disable=import-outside-toplevel
  lobe = convert.config_from_hf(convert.read_hf_config(ckpt_dir), **runtime)
  d = dataclasses.asdict(lobe)
  if d.get("rope_scaling") is not None:
    d["rope_scaling"] = dict(d["rope_scaling"])
  return d


def deep_update(base: dict, new: dict) -> dict:
  out = dict(base)
  for k, v in new.items():
    out[k] = deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
  return out


def cpu_experiment(model_kind: str, procedure: str, arg: str | None = None, *,
                   size: dict | None = None, **overrides) -> config_dict.ConfigDict:
  """An experiments/*.py config: ``CPU`` sizes updated by ``size``, then ``overrides`` (what
  makes the experiment what it is: loop mode, objective hyper-parameters, ...). arg
  "smoke": the same experiment at the tiny test sizes (few steps)."""
  if arg not in (None, "", "smoke"):
    raise ValueError(f"Unknown experiment argument {arg!r}; use ':smoke' or nothing.")
  if arg == "smoke":
    return experiment(model_kind, procedure, smoke=True, **overrides)
  return experiment(model_kind, procedure, **deep_update(deep_update(CPU, size or {}), overrides))


def from_dict(d: dict) -> config_dict.ConfigDict:
  """A whole config as a nested dict (e.g. the JSON a checkpoint saves) -> finalized and
  locked; a key the schema lacks is an error that names it, a missing one takes its
  default."""
  d = dict(d)
  c = base_config()
  c.objective = config_dict.ConfigDict(d.pop("objective", {"name": "sft"}))
  _merge(c, d)
  return finalize(c)


def finalize(c: config_dict.ConfigDict) -> config_dict.ConfigDict:
  """Fills in the objective's default hyper-parameters, validates, and locks."""
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


def validate(c: config_dict.ConfigDict) -> None:
  """Errors that name the field and say what would be valid."""
  _check(c.task.name in data.TASKS,
         f"config.task.name={c.task.name!r}; valid tasks: {sorted(data.TASKS)}.")
  _check(c.model.kind in sln.KINDS,
         f"config.model.kind={c.model.kind!r}; valid kinds: {sorted(sln.KINDS)}.")
  wide_kind = is_wide(c)
  for name in ("left",) if wide_kind else ("left", "right"):
    try:
      lobe_config(c, name)
    except (ValueError, TypeError) as e:
      raise ValueError(f"config.model.{name}: {e}") from e
  if wide_kind:
    try:
      build_model(c)  # WideConfig's own checks, then k_in + k_out against the LM's layers
    except (ValueError, TypeError) as e:
      raise ValueError(f"config.model.wide: {e}") from e
    if c.objective.name in ("wide", "wide_ppo"):  # the loss's own checks (WideLossConfig)
      try:
        names = [f.name for f in dataclasses.fields(wide.WideLossConfig)]
        wide.WideLossConfig(**{k: c.objective[k] for k in names})
      except (ValueError, TypeError) as e:
        raise ValueError(f"config.objective: {e}") from e
  else:
    try:
      loop_config(c)
    except (ValueError, TypeError) as e:
      raise ValueError(f"config.model.loop: {e}") from e
  _validate_memory(c)
  for name in ("left", "right", "memory"):
    o = c.optim[name]
    _check(o.schedule in SCHEDULES,
           f"config.optim.{name}.schedule={o.schedule!r}; expected one of {SCHEDULES}.")
    _check(o.lr >= 0 and o.warmup_steps >= 0 and o.clip_norm >= 0,
           f"config.optim.{name}: lr, warmup_steps and clip_norm must be >= 0.")
  _check(c.tau.schedule in TAU_SCHEDULES,
         f"config.tau.schedule={c.tau.schedule!r}; expected one of {TAU_SCHEDULES}.")
  _check(c.tau.start > 0 and c.tau.end > 0, "config.tau.start and .end must be > 0.")
  for key in ("batch_size", "prompt_len", "steps", "log_every"):
    _check(c[key] > 0, f"config.{key}={c[key]} must be > 0.")
  for key in ("eval_every", "checkpoint_every", "keep_checkpoints"):
    _check(c[key] >= 0, f"config.{key}={c[key]} must be >= 0 (0 disables it).")
  _check(c.eval.mode == "" or c.eval.mode in soft_tokens.MODES,
         f"config.eval.mode={c.eval.mode!r}; expected '' or one of {soft_tokens.MODES}.")
  _check(not (c.eval.report and is_wide(c)),
         f"config.eval.report: the full evaluation is for dialogue kinds, not {c.model.kind!r} "
         "(its train-loop evaluation is evaluate_wide.py); set eval.report=False.")
  parallel.rules_from_config(c.mesh.rules or None)


def is_wide(c: config_dict.ConfigDict) -> bool:
  """A wide SLN (rows E, G: slnjax.wide) rather than a dialogue of two lobes."""
  return c.model.kind in wide.KINDS


def _validate_memory(c: config_dict.ConfigDict) -> None:
  try:
    mcfg = memory_config(c)
  except (ValueError, TypeError) as e:
    raise ValueError(f"config.model.memory: {e}") from e
  if mcfg is None:
    return
  _check(not is_wide(c), f"config.model.memory.lobes={mcfg.lobes}: the wide kinds do not read "
         "memories; set model.memory.lobes=() or use a dialogue kind.")
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


def memory_config(c: config_dict.ConfigDict) -> memory.MemoryConfig | None:
  """The memory selector's config, or None when model.memory.lobes is empty."""
  d = c.model.memory.to_dict()
  if not d.get("lobes"):
    return None
  return memory.MemoryConfig(**{**d, "lobes": tuple(d["lobes"])})


def bank_shape(c: config_dict.ConfigDict) -> tuple[int, int] | None:
  """(capacity, item_len) of the batches' memory banks, or None without memory."""
  if memory_config(c) is None:
    return None
  return int(c.task.bank.capacity), int(c.task.bank.item_len)


def lobe_config(c: config_dict.ConfigDict, name: str) -> LobeConfig:
  d = c.model[name].to_dict()
  return LobeConfig.from_dict({k: v for k, v in d.items() if v is not None})


def loop_config(c: config_dict.ConfigDict) -> LoopConfig:
  d = c.model.loop.to_dict()
  if d.get("bptt_depth") is not None and d["bptt_depth"] < 0:
    d["bptt_depth"] = None  # -1: full BPTT (a command line cannot write None)
  return LoopConfig(**d)


def wide_config(c: config_dict.ConfigDict) -> WideConfig:
  """config.model.wide as a WideConfig (an unknown key is an error that names it)."""
  if "wide" not in c.model or c.model.wide is None:
    raise ValueError("a wide kind needs config.model.wide (slnjax.wide.WideConfig fields).")
  d = c.model.wide.to_dict()
  if d.get("bptt_depth") is not None and d["bptt_depth"] < 0:
    d["bptt_depth"] = None  # -1: full BPTT, as in model.loop
  return WideConfig.from_dict(d)


def target_len(c: config_dict.ConfigDict) -> int:
  if c.target_len is not None:
    return c.target_len
  return c.model.wide.answer_len if is_wide(c) else c.model.loop.turn_len


def build_model(c: config_dict.ConfigDict) -> sln.SLN | wide.WideSLN:
  if is_wide(c):
    return sln.build(c.model.kind, lobe_config(c, "left"), None, wide_config(c))
  return sln.build(c.model.kind, lobe_config(c, "left"), lobe_config(c, "right"), loop_config(c),
                   memory=memory_config(c))


def eval_config(c: config_dict.ConfigDict):
  """(split, per-eval batch size) with the defaults resolved."""
  return c.eval.split or c.task.eval_split, c.eval.batch_size or c.batch_size
