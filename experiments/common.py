"""The presets experiment files are made of (imports only the schema, slnjax.config).

    from experiments import common
    def get_config(arg=None):
      return common.cpu_experiment("lateralized", "ppo", arg, objective=dict(kl_coef=0.05))

``experiment`` is the schema's defaults with the kind, the objective (its hyper-parameters
filled in, so that ``--config.objective.KEY=...`` can set them) and nested overrides;
``smoke=True`` shrinks it to a seconds-long test run. ``cpu_experiment`` is the CPU-sized
experiments' preset (``CPU``). Sizes are task-agnostic; a task's own sizes (dataset sizes,
digits) come from ``TASK_SIZES`` for the experiment's task, and are left alone for a task
without an entry. The config returned is locked, not finalized: ``slnjax.finalize`` does
that once, where the run starts.
"""
from __future__ import annotations

import dataclasses

from ml_collections import config_dict

from slnjax import config as schema

# The task part of each preset, per task: "smoke" (tests) and "cpu" (experiments/*.py).
TASK_SIZES = {
    "addition": dict(
        smoke=dict(config="digits5", overrides=dict(
            name="train_smoke", num_train=256, num_test=32, num_validation=16,
            num_test_longer=8, train_digits=(1, 2), longer_digits=(3, 3))),
        cpu=dict(config="digits5", overrides=dict(
            name="cpu_digits3", train_digits=(1, 3), longer_digits=(4, 5), num_train=20_000,
            num_test=512, num_test_longer=512))),
}

# A tiny, few-step version of any experiment (tests).
SMOKE = dict(
    batch_size=4, prompt_len=8, steps=4, log_every=2, eval_every=0, checkpoint_every=0,
    model=dict(left=dict(d_model=16, d_ff=32), right=dict(d_model=16, d_ff=32),
               loop=dict(turn_len=4, max_turns=2)),
    eval=dict(num_batches=1, transcripts=1))

# The CPU-sized experiments (experiments/*.py): 2-layer d_model 64 lobes, batch 64 (with
# addition: 1-3 digit operands).
CPU = dict(
    batch_size=64, prompt_len=12, steps=1500, log_every=100, eval_every=500,
    checkpoint_every=500,
    model=dict(left=dict(d_model=64, d_ff=256), right=dict(d_model=64, d_ff=256),
               loop=dict(turn_len=6)),
    eval=dict(num_batches=8, transcripts=3))


def _task_sizes(overrides: dict, size: str) -> dict:
  """The preset's task fields for the task ``overrides`` names (default addition), if any."""
  name = overrides.get("task", {}).get("name", "addition")
  sizes = TASK_SIZES.get(name, {}).get(size)
  return dict(task=sizes) if sizes else {}


def experiment(model_kind: str = "lateralized", procedure: str = "sft", smoke: bool = False,
               **overrides) -> config_dict.ConfigDict:
  """base_config() with model.kind, objective.name (and its default hyper-parameters) and
  nested ``overrides`` applied; with ``smoke`` a tiny, few-step version for tests. Locked."""
  c = schema.base_config()
  c.model.kind = model_kind
  c.objective.name = overrides.get("objective", {}).get("name", procedure)
  # The objective's hyper-parameters, so that the file and the command line can set them.
  from slnjax import finalize  # pylint: disable=import-outside-toplevel
  c.objective.update(finalize.objective_defaults(c.objective.name))
  if smoke:
    schema.merge(c, schema.deep_update(_task_sizes(overrides, "smoke"), SMOKE))
  schema.merge(c, overrides)
  c.lock()
  return c


def cpu_experiment(model_kind: str, procedure: str, arg: str | None = None, *,
                   size: dict | None = None, **overrides) -> config_dict.ConfigDict:
  """An experiments/*.py config: ``CPU`` sizes updated by ``size``, then ``overrides`` (what
  makes the experiment what it is: loop mode, objective hyper-parameters, ...). arg
  "smoke": the same experiment at the tiny test sizes (few steps)."""
  if arg not in (None, "", "smoke"):
    raise ValueError(f"Unknown experiment argument {arg!r}; use ':smoke' or nothing.")
  if arg == "smoke":
    return experiment(model_kind, procedure, smoke=True, **overrides)
  cpu = schema.deep_update(_task_sizes(overrides, "cpu"), CPU)
  return experiment(model_kind, procedure,
                    **schema.deep_update(schema.deep_update(cpu, size or {}), overrides))


def pretrained_lobe(ckpt_dir: str, **runtime) -> dict:
  """model.left/.right fields of a lobe shaped like the Hugging Face checkpoint in
  ``ckpt_dir`` (its config.json); ``runtime``: convert.RUNTIME_FIELDS (dtype, scan_layers...)."""
  from slnjax import convert  # pylint: disable=import-outside-toplevel
  lobe = convert.config_from_hf(convert.read_hf_config(ckpt_dir), **runtime)
  d = dataclasses.asdict(lobe)
  if d.get("rope_scaling") is not None:
    d["rope_scaling"] = dict(d["rope_scaling"])
  return d
