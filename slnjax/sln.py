"""Assemblies: which lobes take part in the dialogue, and how they are wired.

The ablation rows the paper plans (its §1 list) map onto kinds:

  A single          one lobe, no critic: plain LM decoding (max_turns turns, usually 1).
  B self_reflection one lobe in both roles (same weights): it writes and scores itself.
  C homogeneous     two copies of the same lobe in a tall loop; only the left is trained
                    (the right is a frozen copy: "not trained together").
  D tall            two distinct lobes that both write turns, trained together.
  F lateralized     the left lobe writes, the right lobe only scores (a critic).
  E/G wide, lateralized_wide: slnjax/wide (a WideSLN; its builders registered in KINDS below).
      ``init`` and ``logical_axes`` below serve both families; the loop drivers, ``roles``
      and ``score`` are for the dialogue kinds (wide SLNs: slnjax.wide.rollout / unroll).

A model is a frozen description (hashable: usable as a jit static argument); its
parameters are a plain dict {"left": ..., "right": ...} ("right" absent for A and B).

Memory (``build(..., memory=MemoryConfig(...))``): parameters gain "memory" (the selector
and its n-gram encoder, trained with their own optimizer); ``read_memory`` selects from a
bank once per dialogue (query: the prompt) and ``rollout`` / ``unroll`` take the result as
``memory=``: the lobes named in ``MemoryConfig.lobes`` read the selected memories as a
prefix of their context (slnjax/memory/dialogue.py).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from slnjax import lobes, loop, memory as memory_lib, wide as wide_lib
from slnjax.lobes.config import LobeConfig
from slnjax.loop import LoopConfig
from slnjax.memory import dialogue as memory_dialogue

KINDS: dict[str, Callable] = {}


@dataclasses.dataclass(frozen=True)
class SLN:
  kind: str
  spec: loop.DialogueSpec
  shared: bool = False  # the right role uses the left lobe's parameters
  trainable: tuple[str, ...] = ("left", "right")
  encoder: LobeConfig | None = None  # optional: encodes the prompt for both lobes (Fig. 2)
  decoder: LobeConfig | None = None  # optional: writes the answer after the loop (Fig. 2)
  memory: memory_lib.MemoryConfig | None = None  # optional: a memory selector (see above)

  @property
  def lobe_names(self) -> tuple[str, ...]:
    """The parameter groups (each with its own optimizer when trainable)."""
    names = ("left",) if (self.spec.right is None or self.shared) else ("left", "right")
    return names + tuple(n for n in ("encoder", "decoder", "memory")
                         if getattr(self, n) is not None)

  def memory_dim(self) -> int | None:
    """The key width a "lobe" memory encoder has (its first reading lobe's d_model)."""
    m = self.memory
    if m is None or m.encoder != "lobe":
      return None
    return (self.spec.left if m.lobes[0] == "left" else self.spec.right).d_model

  def lobe_config(self, name: str) -> LobeConfig:
    return {"left": self.spec.left, "right": self.spec.right, "encoder": self.encoder,
            "decoder": self.decoder}[name]


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
          loop_cfg: LoopConfig = LoopConfig(), encoder: LobeConfig | None = None,
          decoder: LobeConfig | None = None,
          memory: memory_lib.MemoryConfig | None = None) -> SLN:
  if kind not in KINDS:
    raise ValueError(f"Unknown SLN kind {kind!r}; expected one of {sorted(KINDS)}.")
  model = KINDS[kind](left, right, loop_cfg)
  if encoder is not None:
    widths = {c.d_model for c in (model.spec.left, model.spec.right) if c is not None}
    if widths != {encoder.d_model}:
      raise ValueError(f"encoder d_model={encoder.d_model} must equal the lobes' d_model "
                       f"{sorted(widths)}.")
    encoder = encoder.replace(lm_head=False, score_head=False, score_input=False)
  if decoder is not None:
    decoder = decoder.replace(lm_head=True, score_head=False, score_input=False)
    if encoder is not None and decoder.d_model != encoder.d_model:
      raise ValueError(f"decoder d_model={decoder.d_model} must equal the encoder's "
                       f"{encoder.d_model}.")
  if memory is not None:
    if not isinstance(model, SLN):
      raise ValueError(f"SLN kind {kind!r} does not read a memory bank (dialogue kinds do: "
                       f"{sorted(k for k in KINDS if 'wide' not in k)}).")
    if "right" in memory.lobes and model.spec.right is None:
      raise ValueError(f"MemoryConfig.lobes={memory.lobes} names the right lobe, but kind "
                       f"{kind!r} has none: use lobes=('left',).")
    return dataclasses.replace(model, encoder=encoder, decoder=decoder, memory=memory,
                               trainable=model.trainable + ("memory",))
  return dataclasses.replace(model, encoder=encoder, decoder=decoder)


def init(model: SLN, rng) -> dict:
  """Parameters {"left": ..., "right": ...}; a homogeneous right lobe is a copy of the left.
  A wide SLN: slnjax.wide.init (a fresh lobotomised LM, gate and expert lobes)."""
  if isinstance(model, wide_lib.WideSLN):
    return wide_lib.init(model, rng)
  k_left, k_right, k_enc, k_dec = jax.random.split(rng, 4)
  params = {"left": lobes.init(model.spec.left, k_left)}
  if model.encoder is not None:
    params["encoder"] = lobes.init(model.encoder, k_enc)
  if model.decoder is not None:
    params["decoder"] = lobes.init(model.decoder, k_dec)
  if model.memory is not None:  # its own key: the lobes' initialisation is unchanged
    params["memory"] = memory_lib.init(model.memory, jax.random.fold_in(rng, 5),
                                       model.memory_dim())
  if "right" in model.lobe_names:
    if model.kind == "homogeneous":
      params["right"] = jax.tree.map(lambda x: x.copy(), params["left"])
    else:
      params["right"] = lobes.init(model.spec.right, k_right)
  return params


def logical_axes(model: SLN) -> dict:
  """PartitionSpecs over logical axis names, the structure of ``init``'s parameters."""
  if isinstance(model, wide_lib.WideSLN):
    return wide_lib.logical_axes(model)
  out = {name: lobes.logical_axes(model.lobe_config(name)) for name in model.lobe_names
         if name != "memory"}
  if model.memory is not None:
    out["memory"] = memory_lib.logical_axes(model.memory, model.memory_dim())
  return out


def roles(model: SLN, params: dict):
  """(left params, right params or None) as the loop takes them."""
  if model.spec.right is None:
    return params["left"], None
  return params["left"], params["left"] if model.shared else params["right"]


def encode(model: SLN, params, prompt_ids_BP):
  """The encoder's prompt embeddings [B,P,D], or None without an encoder."""
  if model.encoder is None:
    return None
  return lobes.apply(model.encoder, params["encoder"], ids=prompt_ids_BP)["hidden_BTD"]


def read_memory(model: SLN, params, prompt_ids_BP, prompt_len_B, bank: memory_lib.Bank, rng,
                tau=1.0, forced=None) -> memory_dialogue.Read:
  """Selects memories for each example from its bank (query: the prompt), embedded for
  every lobe in ``model.memory.lobes``. ``forced`` = (index_BJ, valid_BJ): replay a
  recorded choice (one-hot, its log-prob under the current selector)."""
  if model.memory is None:
    raise ValueError(f"This SLN (kind {model.kind!r}) has no memory: build it with "
                     "memory=MemoryConfig(...).")
  pl, pr = roles(model, params)
  named = {"left": (model.spec.left, pl),
           "right": None if pr is None else (model.spec.right, pr)}
  return memory_dialogue.read(model.memory, params["memory"], bank, named, prompt_ids_BP,
                              prompt_len_B, rng, tau, forced)


def _inputs(model: SLN, params, prompt_ids_BP, memory) -> dict:
  """The loop's prompt inputs: encoder embeddings and the memory prefixes (keywords)."""
  enc = encode(model, params, prompt_ids_BP)
  if model.memory is None:
    if memory is not None:
      raise ValueError("memory= was given but this SLN has no memory (build(memory=...)).")
    return {"prompt_embeds_BPD": enc}
  if memory is None:
    raise ValueError("This SLN reads a memory bank: pass memory=sln.read_memory(model, "
                     "params, prompt_ids, prompt_len, bank, rng, tau).")
  return {"prompt_embeds_BPD": enc, "memory_prefix": memory.prefix}


def rollout(model: SLN, params, prompt_ids_BP, prompt_len_B, rng, tau=1.0, target_BM=None,
            memory: memory_dialogue.Read | None = None):
  pl, pr = roles(model, params)
  return loop.rollout(model.spec, pl, pr, prompt_ids_BP, prompt_len_B, rng, tau, target_BM,
                      **_inputs(model, params, prompt_ids_BP, memory))


def unroll(model: SLN, params, prompt_ids_BP, prompt_len_B, rng, tau=1.0, target_BM=None,
           memory: memory_dialogue.Read | None = None):
  pl, pr = roles(model, params)
  return loop.unroll(model.spec, pl, pr, prompt_ids_BP, prompt_len_B, rng, tau, target_BM,
                     **_inputs(model, params, prompt_ids_BP, memory))


def decode_answer(model: SLN, params, prompt_ids_BP, prompt_len_B, d: loop.Dialogue,
                  target_ids_BM):
  """The decoder after the loop, teacher-forced: reads [prompt, the left lobe's last turn,
  target] and returns log p(target token i) [B,M]. The last turn enters as ids (the decoder
  learns to read the dialogue's outcome; gradients do not flow back into the loop)."""
  if model.decoder is None:
    raise ValueError("This SLN has no decoder; build it with decoder=LobeConfig(...).")
  dc = model.decoder
  B, P = prompt_ids_BP.shape
  M = target_ids_BM.shape[1]
  last_B = jnp.maximum(d.turns_B - 1, 0)
  turn_BM = jnp.take_along_axis(d.left_ids_NBM, last_B[None, :, None], axis=0)[0]
  enc = encode(model, params, prompt_ids_BP)
  emb = lambda ids: lobes.embed_ids(dc, params["decoder"], ids)
  x_BSD = jnp.zeros((B, P + turn_BM.shape[1] + M, dc.d_model), dc.compute_dtype)
  x_BSD = x_BSD.at[:, :P].set(emb(prompt_ids_BP) if enc is None else enc.astype(x_BSD.dtype))
  put = jax.vmap(lambda x, u, s: jax.lax.dynamic_update_slice_in_dim(x, u, s, axis=0))
  x_BSD = put(x_BSD, emb(turn_BM), prompt_len_B)
  start_B = prompt_len_B + turn_BM.shape[1]
  x_BSD = put(x_BSD, emb(target_ids_BM), start_B)
  logits_BSV = lobes.apply(dc, params["decoder"], embeds=x_BSD)["logits_BTV"]
  pos_BM = start_B[:, None] - 1 + jnp.arange(M)[None, :]
  lp_BMV = jax.nn.log_softmax(jnp.take_along_axis(logits_BSV, pos_BM[..., None], axis=1), -1)
  return jnp.take_along_axis(lp_BMV, target_ids_BM[..., None], axis=-1)[..., 0]


def score(model: SLN, params, ids_BT, lengths_B):
  """The critic's score logit of whole sequences (prompt + answer ids) [B]."""
  _, pr = roles(model, params)
  if pr is None or not model.spec.right.score_head:
    raise ValueError(f"SLN kind {model.kind!r} has no critic.")
  return lobes.apply(model.spec.right, pr, ids=ids_BT, lengths=lengths_B)["score_logit_B"]


# Wide SLNs (rows E, G): slnjax/wide, registered here under its kinds.
def as_wide_config(loop_cfg) -> wide_lib.WideConfig:
  """A WideConfig from a WideConfig, a mapping of its fields, or a dialogue LoopConfig
  (max_turns -> max_iters, mode -> route, turn_len -> answer_len, temperature, bptt_depth)."""
  if isinstance(loop_cfg, wide_lib.WideConfig):
    return loop_cfg
  if dataclasses.is_dataclass(loop_cfg):  # slnjax.loop.LoopConfig
    if loop_cfg.bptt_depth == 0:
      raise ValueError("bptt_depth=0 (no gradient) has no wide-SLN meaning; use None or k>=1.")
    return wide_lib.WideConfig(max_iters=loop_cfg.max_turns, route=loop_cfg.mode,
                               temperature=loop_cfg.temperature, bptt_depth=loop_cfg.bptt_depth,
                               answer_len=loop_cfg.turn_len)
  if hasattr(loop_cfg, "to_dict"):  # ml_collections.ConfigDict
    loop_cfg = loop_cfg.to_dict()
  return wide_lib.WideConfig.from_dict(loop_cfg)


def _wide_builder(kind: str) -> Callable:
  def make(left, right=None, loop_cfg=wide_lib.WideConfig()):
    del right  # the right lobe is an expert lobe in the LM's width
    return wide_lib.build(kind, left, as_wide_config(loop_cfg))
  return make


for _kind in wide_lib.KINDS:
  KINDS.setdefault(_kind, _wide_builder(_kind))
