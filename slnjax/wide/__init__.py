"""Wide SLNs (ablation rows E and G): a lobotomised LM with a main gate and two MoE lobes.

    from slnjax import wide
    model = wide.build("wide", lm_cfg, wide.WideConfig(k_in=1, k_out=1, max_iters=4))
    params = wide.init(model, rng)                       # or wide.from_lobe(model, lobe, rng)
    trace = wide.rollout(model, params, prompt_ids, prompt_len, rng)   # while_loop, inference
    out = wide.unroll(model, params, prompt_ids, prompt_len, rng, target_ids, target_len)
    loss, metrics = wide.wide_loss(out, wide.WideLossConfig(), model.cfg.route)

Importing this package registers the kinds "wide" and "lateralized_wide" in
``slnjax.sln.KINDS`` (sln.py imports it at its end), whose builders take
``(lm LobeConfig, right (ignored), loop config)``; the loop config may be a ``WideConfig``,
a dict of its fields, or a ``slnjax.loop.LoopConfig`` (max_turns -> max_iters, mode -> route,
turn_len -> answer_len, temperature, bptt_depth).
"""
from __future__ import annotations

import dataclasses

from slnjax.wide.config import HARD_OF, RELAXED, ROUTES, WideConfig
from slnjax.wide.gate import CHOICE_NAMES, LEFT, OUTPUT, RIGHT, MainGate, route
from slnjax.wide.loop import (WideOut, WideTrace, answer_losses, decode_answer, halting_iters,
                              rollout, unroll)
from slnjax.wide.loss import (WideLossConfig, geometric_prior, halting_distribution,
                              ponder_kl, wide_loss)
from slnjax.wide.model import KINDS, WideSLN, build, from_lobe, init, logical_axes
from slnjax.wide.moe import ExpertLobe, MoE, expert_counts, load_balance_loss
from slnjax.wide.report import usage_report


def as_wide_config(loop_cfg) -> WideConfig:
  """A WideConfig from a WideConfig, a mapping of its fields, or a dialogue LoopConfig."""
  if isinstance(loop_cfg, WideConfig):
    return loop_cfg
  if dataclasses.is_dataclass(loop_cfg):  # slnjax.loop.LoopConfig
    if loop_cfg.bptt_depth == 0:
      raise ValueError("bptt_depth=0 (no gradient) has no wide-SLN meaning; use None or k>=1.")
    return WideConfig(max_iters=loop_cfg.max_turns, route=loop_cfg.mode,
                      temperature=loop_cfg.temperature, bptt_depth=loop_cfg.bptt_depth,
                      answer_len=loop_cfg.turn_len)
  if hasattr(loop_cfg, "to_dict"):  # ml_collections.ConfigDict
    loop_cfg = loop_cfg.to_dict()
  return WideConfig.from_dict(loop_cfg)


def _register():
  from slnjax import sln  # sln.py imports this package at its end: KINDS exists by then

  def builder(kind):
    def make(left, right=None, loop_cfg=WideConfig()):
      del right  # the right lobe is an expert lobe in the LM's width
      return build(kind, left, as_wide_config(loop_cfg))
    return make
  for kind in KINDS:
    sln.KINDS.setdefault(kind, builder(kind))


_register()
