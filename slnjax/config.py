"""The experiment config's schema: every field with its default (ml_collections only).

This module imports no model code. An experiment file (experiments/NAME.py) defines
``get_config(arg) -> ConfigDict``, usually ``experiments.common.experiment(kind, objective,
**overrides)`` (the presets). Configs are locked: a misspelt key — in a file or in a
``--config.key=value`` override — is an error that names the key. ``slnjax.finalize``
fills in the objective's defaults and validates, once, where a run starts (train.train,
the AOT and sweep tools); ``slnjax.build`` turns a config into the model. Every field that
``train`` reads exists here, with its default:

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

from ml_collections import config_dict

SCHEDULES = ("constant", "cosine", "linear")
TAU_SCHEDULES = ("constant", "linear", "cosine", "exponential")


def _ph(t):
  """A typed None: overridable later with a value of type ``t``."""
  return config_dict.placeholder(t)


# The model's sub-configs: the fields of the dataclasses they become (slnjax.build), written
# out so that this module stays a leaf; tests/test_config.py checks them against
# LobeConfig, LoopConfig, WideConfig and MemoryConfig (SCHEMA_DEFAULTS: where they differ).
def lobe_dict(**kw) -> config_dict.ConfigDict:
  """model.left / .right: slnjax.lobes.LobeConfig fields (tiny CPU sizes by default)."""
  d = config_dict.ConfigDict(dict(
      vocab_size=260, d_model=32, n_layers=2, n_heads=4, n_kv_heads=_ph(int), head_dim=_ph(int),
      d_ff=64, family="llama", rotary_pct=_ph(float), rope_theta=10000.0,
      rope_scaling=_ph(dict), norm_eps=1e-5, tie_embeddings=False, parallel_residual=_ph(bool),
      attn_bias=_ph(bool), activation=_ph(str), lm_head=True, score_head=False,
      score_input=False, dtype="float32", param_dtype="float32", scan_layers=True,
      remat="none", decode_kernel="xla", decode_layers="auto"))
  d.n_kv_heads = 2
  d.update(kw)
  return d


def loop_dict(**kw) -> config_dict.ConfigDict:
  """model.loop: slnjax.loop.LoopConfig fields."""
  d = config_dict.ConfigDict(dict(
      turn_len=8, max_turns=3, mode="hard", temperature=1.0, threshold=_ph(float),
      stop_on_agreement=False, stop_token=_ph(int), feed_score=True, bptt_depth=_ph(int),
      bptt_impl="appendonly"))
  d.threshold = 0.5
  d.update(kw)
  return d


def wide_dict(**kw) -> config_dict.ConfigDict:
  """model.wide: slnjax.wide.WideConfig fields but ``lateralized`` (the kind sets it)."""
  d = config_dict.ConfigDict(dict(
      k_in=1, k_out=1, max_iters=4, min_iters=0, write_len=1, n_experts=4, top_k=1,
      d_expert=_ph(int), gate_hidden=_ph(int), gate_step_input=True, gate_linear=False,
      route="gumbel_st", temperature=1.0,
      bptt_depth=_ph(int), answer_len=8))
  d.update(kw)
  return d


def memory_dict(**kw) -> config_dict.ConfigDict:
  """model.memory: slnjax.memory.MemoryConfig fields; lobes () means no memory."""
  d = config_dict.ConfigDict(dict(
      selector="mha", residual=False, hidden=64, heads=4, k=2, mode="gumbel_st",
      temperature=1.0, encoder="ngram", key_dim=64, buckets=4096, lobes=(), tau=_ph(float)))
  d.update(kw)
  return d


# Where the schema's default differs from the dataclass's (checked by tests/test_config.py).
SCHEMA_DEFAULTS = {
    "left": dict(d_model=32, d_ff=64, n_kv_heads=2), "loop": dict(max_turns=3, mode="hard"),
    "wide": {}, "memory": dict(lobes=())}


def optim_dict(**kw) -> config_dict.ConfigDict:
  d = config_dict.ConfigDict(dict(lr=3e-3, warmup_steps=20, schedule="cosine", end_lr_frac=0.1,
                                  b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.0, clip_norm=1.0))
  d.update(kw)
  return d


def base_config() -> config_dict.ConfigDict:
  """Every field with its default (unlocked; slnjax.finalize validates and locks it)."""
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
  c.model = config_dict.ConfigDict(dict(kind="lateralized", left=lobe_dict(), right=lobe_dict(),
                                        loop=loop_dict(), wide=wide_dict(),
                                        memory=memory_dict()))
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


def merge(c: config_dict.ConfigDict, overrides: dict, where: str = "config") -> None:
  """Sets nested ``overrides`` in ``c`` in place; a key ``c`` lacks is a KeyError naming it
  (``objective`` and ``task.overrides`` take any keys: finalize checks them)."""
  for key, value in overrides.items():
    if key not in c and where not in ("config.objective", "config.task.overrides"):
      raise KeyError(f"Unknown config key {where}.{key}; valid keys: {sorted(c.keys())}.")
    if (isinstance(value, dict) and key in c and isinstance(c[key], config_dict.ConfigDict)
        and key != "overrides"):
      merge(c[key], value, f"{where}.{key}")
    else:
      c[key] = value


def deep_update(base: dict, new: dict) -> dict:
  """``base`` with ``new`` merged in, nested dicts key by key (neither is changed)."""
  out = dict(base)
  for k, v in new.items():
    out[k] = deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
  return out


def eval_config(c: config_dict.ConfigDict):
  """(split, per-eval batch size) with the defaults resolved."""
  return c.eval.split or c.task.eval_split, c.eval.batch_size or c.batch_size
