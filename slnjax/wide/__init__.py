"""Wide SLNs (ablation rows E and G): a lobotomised LM with a main gate and two MoE lobes.

    from slnjax import wide
    model = wide.build("wide", lm_cfg, wide.WideConfig(k_in=1, k_out=1, max_iters=4))
    params = wide.init(model, rng)                       # or wide.from_lobe(model, lobe, rng)
    trace = wide.rollout(model, params, prompt_ids, prompt_len, rng)   # while_loop, inference
    out = wide.unroll(model, params, prompt_ids, prompt_len, rng, target_ids, target_len)
    loss, metrics = wide.wide_loss(out, wide.WideLossConfig(), model.cfg.route)

``slnjax.sln`` (which imports this package; this package imports nothing of it) registers
the kinds "wide" and "lateralized_wide" in ``sln.KINDS``, whose builders take ``(lm
LobeConfig, right (ignored), loop config)``; the loop config may be a ``WideConfig``, a dict
of its fields, or a ``slnjax.loop.LoopConfig`` (``sln.as_wide_config``).
"""
from __future__ import annotations

from slnjax.wide.config import HARD_OF, RELAXED, ROUTES, WideConfig
from slnjax.wide.gate import CHOICE_NAMES, LEFT, OUTPUT, RIGHT, MainGate, route
from slnjax.wide.loop import (WideOut, WideTrace, answer_losses, decode_answer, halting_iters,
                              rollout, unroll)
from slnjax.wide.loss import (WideLossConfig, geometric_prior, halting_distribution,
                              ponder_kl, wide_loss)
from slnjax.wide.model import KINDS, WideSLN, build, from_lobe, init, logical_axes
from slnjax.wide.moe import ExpertLobe, MoE, expert_counts, load_balance_loss
from slnjax.wide.report import usage_report
