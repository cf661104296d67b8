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
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

from slnjax.sln import SLN


@dataclasses.dataclass(frozen=True)
class Context:
  model: SLN
  cfg: Any  # the objective's ml_collections.ConfigDict (config.objective)
  step: jax.Array  # int32 scalar
  tau: jax.Array  # soft-token temperature at this step


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
