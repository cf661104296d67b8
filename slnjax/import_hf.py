r"""Turn Hugging Face checkpoints into a workdir that ``--config.init_from`` starts from.

    python -m slnjax.import_hf --config experiments/tall_pretrained.py:left=/ckpt/pythia-70m \
        --out /tmp/pythia_init [--config.key=value ...]
    python -m slnjax.main --config experiments/tall_pretrained.py:left=/ckpt/pythia-70m \
        --config.init_from=/tmp/pythia_init --workdir /tmp/sln

The config names the checkpoints (``config.pretrained.left`` / ``.right``: local directories
with config.json and safetensors, Llama or GPT-NeoX/Pythia; slnjax/convert/hf.py) and the
SLN they go into. Each lobe of the config's model is read from its checkpoint with the
model's own runtime fields (a critic's LM head dropped, fresh score head / score-input
embedding drawn from config.seed); every other parameter (an encoder, a memory selector) is
the model's fresh initialisation. The lobe shapes must match the checkpoints' config.json
(an experiment builds them with ``experiments.common.pretrained_lobe``). Written: OUT/checkpoints/0
(state: the parameters only) and OUT/config.json. Nothing is written if a check fails.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys

from absl import app, flags, logging

from slnjax import cli

_CONFIG = cli.config_flag(
    "Experiment config file whose config.pretrained names the checkpoints.")
_OUT = flags.DEFINE_string("out", None, "The workdir to write (then --config.init_from=OUT).")
flags.mark_flags_as_required(["config", "out"])


# LobeConfig fields whose None means a family default, and the property that resolves it.
_RESOLVED = {"n_kv_heads": "kv_heads", "head_dim": "hd", "rotary_pct": "rotary_dim",
             "parallel_residual": "is_parallel", "attn_bias": "has_attn_bias",
             "activation": "act"}


def _resolved(lobe) -> dict:
  """The lobe's fields with family defaults filled in (None and its default compare equal)."""
  return {f.name: getattr(lobe, _RESOLVED.get(f.name, f.name))
          for f in dataclasses.fields(lobe)}


def import_params(config) -> dict:
  """The model's parameters with each lobe named in config.pretrained read from its
  Hugging Face checkpoint."""
  import jax  # pylint: disable=import-outside-toplevel
  from slnjax import build, sln  # pylint: disable=import-outside-toplevel
  from slnjax import convert  # pylint: disable=import-outside-toplevel
  model = build.build_model(config)
  if not isinstance(model, sln.SLN):
    raise ValueError(f"config.model.kind={config.model.kind!r}: import_hf fills the lobes of a "
                     "dialogue SLN; a wide SLN starts from an LM with wide.from_lobe.")
  named = {n: config.pretrained[n] for n in ("left", "right")
           if config.pretrained[n] and n in model.lobe_names}
  if not named:
    raise ValueError("config.pretrained.left/.right name no checkpoint for this model's lobes "
                     f"{model.lobe_names}: set e.g. --config.pretrained.left=/ckpt/DIR.")
  rng = jax.random.key(config.seed)
  fresh = [n for n in model.lobe_names if n not in named]  # initialised only when needed
  params = {n: p for n, p in sln.init(model, rng).items() if n in fresh} if fresh else {}
  for i, (name, ckpt_dir) in enumerate(sorted(named.items())):
    want = model.lobe_config(name)
    runtime = {f: getattr(want, f) for f in convert.RUNTIME_FIELDS}
    lobe, p = convert.load_hf(ckpt_dir, rng=jax.random.fold_in(rng, i), **runtime)
    have, need = _resolved(lobe), _resolved(want)
    if have != need:
      diff = {k: (have[k], need[k]) for k in need if have[k] != need[k]}
      raise ValueError(f"config.model.{name} does not match the checkpoint {ckpt_dir} "
                       f"(checkpoint, config): {diff}. Build the lobe with "
                       f"experiments.common.pretrained_lobe({ckpt_dir!r}).")
    params[name] = p
  return params


def write(out: str, config, params) -> str:
  """OUT/checkpoints/0 with state {"params": params}, the form checkpoint.load_params reads."""
  from slnjax import checkpoint  # pylint: disable=import-outside-toplevel
  if os.path.exists(os.path.join(out, "checkpoints")) and os.listdir(
      os.path.join(out, "checkpoints")):
    raise ValueError(f"{out}/checkpoints already holds checkpoints: choose a new --out.")
  ckpt = checkpoint.Checkpointer(out, keep=0, async_save=False)
  ckpt.save(0, {"params": params}, None, config)
  ckpt.close()
  with open(os.path.join(out, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  return ckpt.directory


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  logging.set_verbosity(logging.WARNING)
  try:
    params = import_params(config)
    where = write(_OUT.value, config, params)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  import jax  # pylint: disable=import-outside-toplevel
  sizes = {n: int(sum(x.size for x in jax.tree.leaves(p))) for n, p in params.items()}
  print(f"wrote {where}/0 ({json.dumps(sizes)} parameters); train with "
        f"--config.init_from={_OUT.value}", flush=True)


def parse_flags(argv: list[str]) -> list[str]:
  """absl parsing; every mistake in the config or the flags is one error line (slnjax.cli)."""
  return cli.parse_flags(argv, _CONFIG)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
