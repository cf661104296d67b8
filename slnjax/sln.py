"""Assemblies: which lobes take part in the dialogue, and how they are wired.

The ablation rows the paper plans (its §1 list) map onto kinds:

  A single          one lobe, no critic: plain LM decoding (max_turns turns, usually 1).
  B self_reflection one lobe in both roles (same weights): it writes and scores itself.
  C homogeneous     two copies of the same lobe in a tall loop; only the left is trained
                    (the right is a frozen copy: "not trained together").
  D tall            two distinct lobes that both write turns, trained together.
  F lateralized     the left lobe writes, the right lobe only scores (a critic).
  E/G wide, lateralized_wide: a later module (register a builder in KINDS).

A model is a frozen description (hashable: usable as a jit static argument); its
parameters are a plain dict {"left": ..., "right": ...} ("right" absent for A and B).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax

from slnjax import lobes, loop
from slnjax.lobes.config import LobeConfig
from slnjax.loop import LoopConfig

KINDS: dict[str, Callable] = {}


@dataclasses.dataclass(frozen=True)
class SLN:
  kind: str
  spec: loop.DialogueSpec
  shared: bool = False  # the right role uses the left lobe's parameters
  trainable: tuple[str, ...] = ("left", "right")

  @property
  def lobe_names(self) -> tuple[str, ...]:
    return ("left",) if (self.spec.right is None or self.shared) else ("left", "right")

  def lobe_config(self, name: str) -> LobeConfig:
    return self.spec.left if name == "left" else self.spec.right


def _register(name):
  def deco(fn):
    KINDS[name] = fn
    return fn
  return deco


@_register("single")
def _single(left: LobeConfig, right, loop_cfg: LoopConfig) -> SLN:
  del right
  left = left.replace(score_input=False)
  return SLN("single", loop.DialogueSpec(left, None, False, loop_cfg), trainable=("left",))


@_register("self_reflection")
def _self_reflection(left: LobeConfig, right, loop_cfg: LoopConfig) -> SLN:
  del right
  both = left.replace(lm_head=True, score_head=True, score_input=True)
  return SLN("self_reflection", loop.DialogueSpec(both, both, False, loop_cfg), shared=True,
             trainable=("left",))


@_register("homogeneous")
def _homogeneous(left: LobeConfig, right, loop_cfg: LoopConfig) -> SLN:
  del right
  return SLN("homogeneous", loop.DialogueSpec(left, left, True, loop_cfg), trainable=("left",))


@_register("tall")
def _tall(left: LobeConfig, right: LobeConfig, loop_cfg: LoopConfig) -> SLN:
  right = right or left
  return SLN("tall", loop.DialogueSpec(left, right.replace(lm_head=True), True, loop_cfg))


@_register("lateralized")
def _lateralized(left: LobeConfig, right: LobeConfig, loop_cfg: LoopConfig) -> SLN:
  left = left.replace(score_input=True)
  right = (right or left).replace(score_head=True, lm_head=False, score_input=False)
  return SLN("lateralized", loop.DialogueSpec(left, right, False, loop_cfg))


def build(kind: str, left: LobeConfig, right: LobeConfig | None = None,
          loop_cfg: LoopConfig = LoopConfig()) -> SLN:
  if kind not in KINDS:
    raise ValueError(f"Unknown SLN kind {kind!r}; expected one of {sorted(KINDS)}.")
  return KINDS[kind](left, right, loop_cfg)


def init(model: SLN, rng) -> dict:
  """Parameters {"left": ..., "right": ...}; a homogeneous right lobe is a copy of the left."""
  k_left, k_right = jax.random.split(rng)
  params = {"left": lobes.init(model.spec.left, k_left)}
  if "right" in model.lobe_names:
    if model.kind == "homogeneous":
      params["right"] = jax.tree.map(lambda x: x.copy(), params["left"])
    else:
      params["right"] = lobes.init(model.spec.right, k_right)
  return params


def logical_axes(model: SLN) -> dict:
  return {name: lobes.logical_axes(model.lobe_config(name)) for name in model.lobe_names}


def roles(model: SLN, params: dict):
  """(left params, right params or None) as the loop takes them."""
  if model.spec.right is None:
    return params["left"], None
  return params["left"], params["left"] if model.shared else params["right"]


def rollout(model: SLN, params, prompt_ids_BP, prompt_len_B, rng, tau=1.0, target_BM=None):
  pl, pr = roles(model, params)
  return loop.rollout(model.spec, pl, pr, prompt_ids_BP, prompt_len_B, rng, tau, target_BM)


def unroll(model: SLN, params, prompt_ids_BP, prompt_len_B, rng, tau=1.0, target_BM=None):
  pl, pr = roles(model, params)
  return loop.unroll(model.spec, pl, pr, prompt_ids_BP, prompt_len_B, rng, tau, target_BM)


def score(model: SLN, params, ids_BT, lengths_B):
  """The critic's score logit of whole sequences (prompt + answer ids) [B]."""
  _, pr = roles(model, params)
  if pr is None or not model.spec.right.score_head:
    raise ValueError(f"SLN kind {model.kind!r} has no critic.")
  return lobes.apply(model.spec.right, pr, ids=ids_BT, lengths=lengths_B)["score_logit_B"]
