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

from slnjax import loop, sln
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


def sample(ctx: Context, params, batch, rng, repeat: int = 1) -> dict:
  """A no-gradient rollout of the model under ``params`` for every prompt of the batch,
  each prompt ``repeat`` times (consecutive rows)."""
  B = batch["prompt_ids"].shape[0]
  row_R = jnp.repeat(jnp.arange(B, dtype=jnp.int32), repeat)
  ids_RP = jnp.asarray(batch["prompt_ids"])[row_R]
  len_R = jnp.asarray(batch["prompt_len"])[row_R]
  d = sln.rollout(ctx.model, params, ids_RP, len_R, rng, ctx.tau)
  return make_rollout(d, ids_RP, len_R, row_R)
