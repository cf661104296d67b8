"""The contract between a training procedure (an objective) and the train loop.

An objective is a pure loss over the trainable parameters of both lobes, plus optional
no-gradient work before it (rollouts) and a bounded number of inner updates (PPO epochs,
self-play). The train loop looks objectives up by name (``get``) — never by `if` chains.

    loss(ctx, params, frozen, batch, rollout, rng) -> (scalar loss, metrics dict)

- ``params``: {"left": ..., "right": ...} (see sln.py); one scalar loss for both lobes —
  where a lobe must not learn from a term, the term stop-gradients that lobe (GAN,
  actor-critic). Each lobe has its own optimizer in the train state.
- ``frozen``: read-only parameter copies the objective asked for in ``frozen_copies``:
  "ref" (taken once at init: KL reference) and "prev" (refreshed every
  ``ctx.cfg.refresh_every`` steps: SPIN's previous iterate).
- ``batch``: a dict of arrays from slnjax.data (prompt_ids [B,P], prompt_len [B],
  target_ids [B,M], target_len [B], ids [B,T], loss_mask [B,T], difficulty [B], valid [B]).
- ``rollout``: what ``rollout_fn`` returned for this batch (None without one). When the
  objective's ``reward == "verifier"``, the train loop adds ``rollout["reward_NB"]``
  (task verifier on the decoded turns, 1.0 / 0.0) on the host before calling ``loss``.
- ``metrics``: scalar arrays; fetched only when logged.
- Memory: a model built with a ``MemoryConfig`` reads each example's bank from the batch
  (``memory_ids`` [B,C,L], ``memory_len``, ``memory_mask``, ``memory_relevant`` [B,C]; see
  slnjax/data/bank.py) through ``read_memory``; only objectives registered with
  ``memory=True`` accept such a model (finalize.validate). ``sample`` records the choice in
  the rollout (``memory_index`` [R,J], ``memory_valid`` [R,J], ``memory_logp`` [R]).

Hyper-parameters: ``hparams(obj, cfg)`` merges ``config.objective`` over ``obj.defaults``
(an unknown key is an error); a string ``inner_steps`` names one of them.

Rollouts (``rollout`` below) are dicts: the ``loop.Dialogue`` fields ([N,R,...], R rollout
rows) plus ``prompt_ids`` [R,P], ``prompt_len`` [R] and ``batch_row`` [R] (the batch row each
rollout row answers: several rows per prompt for RLOO). A verifier reward fills
``reward_NB`` [N,R]: the task verifier on row r's turn n (decoded from ``left_ids_NBM``
where ``left_valid_NBM``), judged against ``batch["index"][batch_row[r]]``; 0 where
``active_NB`` is False.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from slnjax import loop, memory, sln
from slnjax.sln import SLN


@dataclasses.dataclass(frozen=True)
class Context:
  model: SLN
  cfg: Any  # the objective's ml_collections.ConfigDict (config.objective)
  step: jax.Array  # int32 scalar
  tau: jax.Array  # soft-token temperature at this step
  inner: Any = 0  # index of this inner update on the batch (PPO epoch, self-play step)


@dataclasses.dataclass(frozen=True)
class Objective:
  name: str
  loss: Callable
  rollout_fn: Callable | None = None  # (ctx, params, frozen, batch, rng) -> pytree
  reward: str | None = None  # None | "critic" | "verifier"
  inner_steps: int | str = 1  # int, or the name of a ctx.cfg field holding it
  inner_done: Callable | None = None  # (metrics) -> bool: stop inner updates early
  frozen_copies: tuple[str, ...] = ()  # subset of ("ref", "prev")
  defaults: dict = dataclasses.field(default_factory=dict)  # hyper-parameters and values
  memory: bool = False  # reads a memory bank when the model has one (batch["memory_*"])


REGISTRY: dict[str, Objective] = {}


def register(obj: Objective) -> Objective:
  if obj.name in REGISTRY:
    raise ValueError(f"Objective {obj.name!r} registered twice.")
  REGISTRY[obj.name] = obj
  return obj


def get(name: str) -> Objective:
  if name not in REGISTRY:
    raise ValueError(f"Unknown objective {name!r}; expected one of {sorted(REGISTRY)}.")
  return REGISTRY[name]


def hparams(obj: Objective | dict, cfg) -> dict:
  """The objective's hyper-parameters: ``cfg`` (config.objective, a ConfigDict, dict or
  None) over the defaults. Keys other than "name" must be known hyper-parameters."""
  defaults = obj.defaults if isinstance(obj, Objective) else obj
  given = {} if cfg is None else {k: v for k, v in cfg.items() if k != "name"}
  unknown = sorted(set(given) - set(defaults))
  if unknown:
    name = obj.name if isinstance(obj, Objective) else "this objective"
    raise ValueError(f"Unknown hyper-parameters {unknown} for objective {name!r}; valid "
                     f"ones (with defaults): {defaults}.")
  return {**defaults, **given}


def batch_valid(batch) -> jax.Array:
  """[B] float weights of real rows (batch["valid"], or all ones)."""
  if "segment_ids" in batch:
    raise ValueError("Packed batches (segment_ids) are not supported by the objectives: the "
                     "lobes have no segment mask. Build the dataset with pack=False.")
  B = batch["ids"].shape[0] if "ids" in batch else batch["prompt_ids"].shape[0]
  v = batch.get("valid")
  return jnp.ones((B,), jnp.float32) if v is None else jnp.asarray(v).astype(jnp.float32)


def make_rollout(d: loop.Dialogue, prompt_ids_RP, prompt_len_R, batch_row_R) -> dict:
  return {**d._asdict(), "prompt_ids": prompt_ids_RP, "prompt_len": prompt_len_R,
          "batch_row": batch_row_R}


def dialogue(rollout: dict) -> loop.Dialogue:
  return loop.Dialogue(**{k: rollout[k] for k in loop.Dialogue._fields})


MEMORY_STREAM = 0x3E3  # fold_in(rng, MEMORY_STREAM): the key of the memory selection


def batch_bank(batch, rows_R=None) -> memory.Bank:
  """The batch's memory banks (rows ``rows_R`` of them) as a ``memory.Bank``."""
  if "memory_ids" not in batch:
    raise ValueError("This model reads a memory bank, but the batch has no memory_ids: build "
                     "the dataset with make_dataset(..., bank=(capacity, item_len)) from a task "
                     "with facts (config.task.bank).")
  take = (lambda x: jnp.asarray(x)) if rows_R is None else (lambda x: jnp.asarray(x)[rows_R])
  ids_RCL, len_RC, mask_RC = (take(batch[k]) for k in ("memory_ids", "memory_len",
                                                       "memory_mask"))
  keys_RC1 = jnp.zeros(mask_RC.shape + (1,), jnp.float32)  # unused: the reader re-encodes
  return memory.from_arrays(keys_RC1, ids_RCL, len_RC, mask_RC)


def read_memory(ctx: Context, params, batch, rng, rows_R=None, forced=None):
  """The model's memory read for the batch's prompts (rows ``rows_R``), or None when the
  model has no memory. ``forced`` = (index, valid): replay a recorded choice."""
  if ctx.model.memory is None:
    return None
  ids = jnp.asarray(batch["prompt_ids"])
  lens = jnp.asarray(batch["prompt_len"])
  if rows_R is not None:
    ids, lens = ids[rows_R], lens[rows_R]
  return sln.read_memory(ctx.model, params, ids, lens, batch_bank(batch, rows_R),
                         jax.random.fold_in(rng, MEMORY_STREAM), ctx.tau, forced)


def memory_metrics(read, batch, rows_R=None, weight_R=None) -> dict:
  """Selector reports: precision of the chosen slots against the relevant facts."""
  if read is None or "memory_relevant" not in batch:
    return {}
  rel = jnp.asarray(batch["memory_relevant"])
  rel = rel if rows_R is None else rel[rows_R]
  p_R = memory.precision_at_k(read.sel, rel)
  w_R = jnp.ones_like(p_R) if weight_R is None else weight_R
  return {"memory_precision": (w_R * p_R).sum() / jnp.maximum(w_R.sum(), 1.0)}


def sample(ctx: Context, params, batch, rng, repeat: int = 1) -> dict:
  """A no-gradient rollout of the model under ``params`` for every prompt of the batch,
  each prompt ``repeat`` times (consecutive rows)."""
  B = batch["prompt_ids"].shape[0]
  row_R = jnp.repeat(jnp.arange(B, dtype=jnp.int32), repeat)
  ids_RP = jnp.asarray(batch["prompt_ids"])[row_R]
  len_R = jnp.asarray(batch["prompt_len"])[row_R]
  mem = read_memory(ctx, params, batch, rng, row_R)
  d = sln.rollout(ctx.model, params, ids_RP, len_R, rng, ctx.tau, memory=mem)
  out = make_rollout(d, ids_RP, len_R, row_R)
  if mem is not None:
    sg = jax.lax.stop_gradient
    out.update(memory_index=mem.sel.index_BJ, memory_valid=mem.sel.valid_BJ,
               memory_logp=sg(mem.sel.logp_B))
  return out
