"""The wide SLN's training objectives in the contract of slnjax/objectives/base.py.

  "wide"      unroll (differentiable driver) + wide_loss: PonderNet-style expected answer
              loss over the gate's halting distribution (soft / Gumbel / straight-through
              routes), or REINFORCE on the gate's choices (route "hard").
  "wide_ppo"  a no-gradient rollout samples the gate's choices; ``ppo_epochs`` PPO-clip
              updates replay them (route "hard").

Hyper-parameters: the fields of slnjax.wide.loss.WideLossConfig (+ ppo_epochs for wide_ppo).
``halt_warmup`` reads ``ctx.step`` (traced): the rollout and the loss of a step use the same
minimum number of lobe calls (min_calls_at).
Importing this module registers both names (slnjax.objectives imports it, so the train loop
and finalize.finalize find them like any other objective).
"""
from __future__ import annotations

import dataclasses

from slnjax.objectives.base import Objective, batch_valid, hparams, register
from slnjax.wide.loop import rollout as wide_rollout
from slnjax.wide.loop import unroll
from slnjax.wide.loss import WideLossConfig, min_calls_at, wide_loss
from slnjax.wide.model import WideSLN

DEFAULTS = {f.name: f.default for f in dataclasses.fields(WideLossConfig)}


def loss_config(obj: Objective, cfg) -> WideLossConfig:
  hp = hparams(obj, cfg)
  return WideLossConfig(**{k: hp[k] for k in DEFAULTS})


def _min_calls(ctx, lcfg: WideLossConfig):
  c = ctx.model.cfg
  return min_calls_at(lcfg, c.min_iters, c.max_iters, ctx.step)


def _check(model):
  if not isinstance(model, WideSLN):
    raise ValueError(f"The wide objectives train wide SLNs (kinds 'wide', 'lateralized_wide'); "
                     f"got kind {getattr(model, 'kind', model)!r}.")


def _loss(obj, ctx, params, batch, rng, rollout=None):
  model = ctx.model
  _check(model)
  lcfg = loss_config(obj, ctx.cfg)
  forced = old = None
  if rollout is not None:
    forced, old = rollout["choice_NB"], rollout["logp_NB"]
  m = _min_calls(ctx, lcfg)
  out = unroll(model, params, batch["prompt_ids"], batch["prompt_len"], rng,
               batch["target_ids"], batch["target_len"], tau=ctx.tau, forced_choice_NB=forced,
               min_calls=m)
  return wide_loss(out, lcfg, model.cfg.route, model.cfg.lateralized, old_logp_NB=old,
                   valid_B=batch_valid(batch), min_calls=m)


def wide_objective(ctx, params, frozen, batch, rollout, rng):
  del frozen, rollout
  return _loss(WIDE, ctx, params, batch, rng)


def wide_ppo_objective(ctx, params, frozen, batch, rollout, rng):
  del frozen
  if ctx.model.cfg.route != "hard":
    raise ValueError("wide_ppo samples the gate's choices: set the wide route to 'hard'.")
  return _loss(WIDE_PPO, ctx, params, batch, rng, rollout)


def wide_ppo_rollout(ctx, params, frozen, batch, rng):
  del frozen
  _check(ctx.model)
  tr = wide_rollout(ctx.model, params, batch["prompt_ids"], batch["prompt_len"], rng, ctx.tau,
                    mode="hard", answer_len=1, min_calls=_min_calls(ctx, loss_config(WIDE_PPO,
                                                                                     ctx.cfg)))
  return {"choice_NB": tr.choice_NB, "logp_NB": tr.logp_NB, "active_NB": tr.active_NB}


WIDE = register(Objective("wide", wide_objective, defaults=dict(DEFAULTS)))
WIDE_PPO = register(Objective("wide_ppo", wide_ppo_objective, rollout_fn=wide_ppo_rollout,
                              inner_steps="ppo_epochs",
                              defaults={**DEFAULTS, "pg": "ppo", "ppo_epochs": 2}))
