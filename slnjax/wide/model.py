"""A wide SLN: a lobotomised LM with a main gate and two expert lobes (ablation rows E, G).

    model = WideSLN("wide", lm_cfg, WideConfig(k_in=1, k_out=1, max_iters=4))
    params = init(model, rng)                          # from scratch
    params = from_lobe(model, lobe_params, rng)        # reuse a pretrained lobe's blocks

Parameters are {"left": ..., "right": ...} like the other assemblies (one optimizer each):

  left:  embedding, encoder (blocks [0, k_in)), decoder (blocks [L - k_out, L)), final_norm,
         lm_head (unless tied), gate (the main gating network), lobe (the left expert lobe),
         slot_emb [2, W, D] (which lobe wrote a context slot)
  right: lobe (the right expert lobe; in row G a score-only lobe)

The context is a fixed-size buffer of residual-stream vectors [B, S, D], S = P + N * W:
the encoder's outputs at the prompt positions, then what the lobes append, each example at
its own write position (``len_B``); slots at or after ``len_B`` are never read. The output
lobe (the last k_out blocks) reads the valid context causally, then the answer.
"""
from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from slnjax import lobes
from slnjax.lobes.config import LobeConfig
from slnjax.lobes.layers import Norm
from slnjax.wide import blocks
from slnjax.wide.config import WideConfig
from slnjax.wide.gate import MainGate
from slnjax.wide.moe import ExpertLobe

KINDS = ("wide", "lateralized_wide")


@dataclasses.dataclass(frozen=True)
class WideSLN:
  kind: str
  lm: LobeConfig
  cfg: WideConfig
  trainable: tuple[str, ...] = ("left", "right")
  # sln.build sets these on every assembly; a wide SLN's encoder and decoder are the LM's
  # own first / last blocks, so separate encoder / decoder lobes must stay None.
  encoder: LobeConfig | None = None
  decoder: LobeConfig | None = None

  def __post_init__(self):
    if self.encoder is not None or self.decoder is not None:
      raise ValueError("A wide SLN encodes with the LM's first k_in blocks and decodes with "
                       "its last k_out blocks (WideConfig): do not pass encoder/decoder lobes.")
    if self.kind not in KINDS:
      raise ValueError(f"WideSLN.kind={self.kind!r}; expected one of {KINDS}.")
    if self.cfg.lateralized != (self.kind == "lateralized_wide"):
      raise ValueError("WideConfig.lateralized must be True exactly for kind "
                       "'lateralized_wide'; build models with slnjax.wide.build().")
    if not self.lm.lm_head:
      raise ValueError("The output lobe decodes the answer: the LM needs lm_head=True.")

  @property
  def lobe_names(self) -> tuple[str, ...]:
    return ("left", "right")

  @property
  def spec(self):  # sln.SLN compatibility: the wide loop has no DialogueSpec
    return None

  def gate_module(self) -> MainGate:
    c = self.cfg
    return MainGate(self.lm, c.gate_hidden or self.lm.d_model, c.max_iters, c.lateralized,
                    step_input=c.gate_step_input, linear=c.gate_linear)

  def lobe_module(self, name: str) -> ExpertLobe:
    c = self.cfg
    return ExpertLobe(self.lm, c.n_experts, c.top_k, c.d_expert or self.lm.d_ff, c.write_len,
                      score_only=(name == "right" and c.lateralized))

  def context_len(self, prompt_len: int) -> int:
    return prompt_len + self.cfg.max_iters * self.cfg.write_len


def build(kind: str, lm: LobeConfig, cfg: WideConfig = WideConfig()) -> WideSLN:
  """A wide (E) or lateralized wide (G) SLN over the LM `lm` (its n_layers: the source LM)."""
  if cfg.k_in + cfg.k_out > lm.n_layers:
    raise ValueError(f"k_in={cfg.k_in} + k_out={cfg.k_out} blocks exceed the LM's n_layers="
                     f"{lm.n_layers}; lower them or use an LM with more layers.")
  return WideSLN(kind, lm, cfg.replace(lateralized=(kind == "lateralized_wide")))


def _boxed_new(model: WideSLN, rng):
  """Boxed (logically annotated) params of the new parts: gate, lobes, slot embeddings."""
  lm, c = model.lm, model.cfg
  B, S = 1, 3
  ctx = jnp.zeros((B, S, lm.d_model), lm.compute_dtype)
  lens = jnp.full((B,), S, jnp.int32)
  k_gate, k_left, k_right, k_slot = jax.random.split(rng, 4)
  score = jnp.zeros((B,), jnp.float32)
  gate = model.gate_module().init(k_gate, ctx, lens, 0, score)["params"]
  left = model.lobe_module("left").init(k_left, ctx, lens)["params"]
  right = model.lobe_module("right").init(k_right, ctx, lens)["params"]
  slot = nn.Partitioned(0.02 * jax.random.normal(k_slot, (2, c.write_len, lm.d_model),
                                                 lm.weight_dtype), (None, None, "embed"))
  return {"gate": gate, "lobe": left, "slot_emb": slot}, {"lobe": right}


@functools.partial(jax.jit, static_argnums=0)
def _new_parts(model: WideSLN, rng):
  return nn.meta.unbox(_boxed_new(model, rng))


def from_lobe(model: WideSLN, lobe_params, rng) -> dict:
  """Lobotomise a lobe (e.g. a converted Hugging Face checkpoint, slnjax.convert):
  its embedding, first k_in and last k_out blocks, final norm and LM head are reused; the
  gate and the expert lobes are new."""
  lm, c = model.lm, model.cfg
  stack = blocks.layer_stack(lobe_params)
  L = blocks.num_layers(stack)
  if L != lm.n_layers:
    raise ValueError(f"The lobe params have {L} blocks but the model's LM config says "
                     f"n_layers={lm.n_layers}; build the model with the lobe's config.")
  left_new, right_new = nn.meta.unbox(_new_parts(model, rng))
  left = {"embedding": lobe_params["embedding"],
          "encoder": blocks.slice_layers(stack, 0, c.k_in),
          "decoder": blocks.slice_layers(stack, L - c.k_out, L),
          "final_norm": lobe_params["final_norm"], **left_new}
  if not lm.tie_embeddings:
    if "lm_head" not in lobe_params:
      raise ValueError("The lobe params have no 'lm_head' (and the config does not tie "
                       "embeddings): load the lobe with lm_head=True.")
    left["lm_head"] = lobe_params["lm_head"]
  return {"left": left, "right": right_new}


def init(model: WideSLN, rng) -> dict:
  """Fresh parameters: a (k_in + k_out)-block LM, lobotomised, plus new gate and lobes."""
  return _init_jit(model, rng)


@functools.partial(jax.jit, static_argnums=0)
def _init_jit(model: WideSLN, rng) -> dict:
  k_lm, k_new = jax.random.split(rng)
  base = model.lm.replace(n_layers=model.cfg.k_in + model.cfg.k_out, scan_layers=True)
  small = dataclasses.replace(model, lm=base)
  return from_lobe(small, lobes.init(base, k_lm), k_new)


def logical_axes(model: WideSLN) -> dict:
  """PartitionSpecs over logical axis names, same structure as the params."""
  lm = model.lm.replace(scan_layers=True)
  lobe = lobes.logical_axes(lm)
  boxed = jax.eval_shape(lambda r: _boxed_new(model, r), jax.random.key(0))
  left_new, right_new = nn.get_partition_spec(boxed)
  left = {"embedding": lobe["embedding"], "encoder": lobe["layers"],
          "decoder": lobe["layers"], "final_norm": lobe["final_norm"], **left_new}
  if not lm.tie_embeddings:
    left["lm_head"] = lobe["lm_head"]
  return {"left": left, "right": right_new}


def embed(model: WideSLN, pl, ids_BT):
  return jnp.take(pl["embedding"], ids_BT, axis=0).astype(model.lm.compute_dtype)


def head(model: WideSLN, pl, h_BTD):
  """Final norm + LM head: logits [B,T,V]."""
  lm = model.lm
  h = Norm(lm).apply({"params": pl["final_norm"]}, h_BTD)
  w_DV = pl["embedding"].T if lm.tie_embeddings else pl["lm_head"]
  return jnp.einsum("btd,dv->btv", h, w_DV.astype(lm.compute_dtype))


def encode_prompt(model: WideSLN, pl, prompt_ids_BP, answer_len: int):
  """The encoder over the prompt: hidden [B,P,D] and its cache (room for the answer)."""
  B, P = prompt_ids_BP.shape
  cache = blocks.init_cache(model.lm, model.cfg.k_in, B, P + answer_len)
  return blocks.run_blocks(model.lm, pl["encoder"], embed(model, pl, prompt_ids_BP),
                           cache=cache)


def decoder_prefill(model: WideSLN, pl, ctx_BSD, answer_len: int):
  """The output lobe over the whole context buffer: hidden [B,S,D] and its cache."""
  B, S, _ = ctx_BSD.shape
  cache = blocks.init_cache(model.lm, model.cfg.k_out, B, S + answer_len)
  return blocks.run_blocks(model.lm, pl["decoder"], ctx_BSD, cache=cache)
