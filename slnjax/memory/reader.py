"""A lobe's memory input: encode, score, select, and prepend the selected memories.

    mcfg = MemoryConfig(selector="mha", k=2, mode="gumbel_st")
    mparams = init(mcfg, rng)
    sel, scores = read(mcfg, mparams, bank, query_ids_BQ, query_len_B, key, tau=tau)
    prefix_BTD = prefix_embeds(sel, bank, lobes.embedding_matrix(lobe_cfg, lobe_params))
    out, pos_B = ingest_prefix(lobe_cfg, lobe_params, cache, prefix_BTD, pos_B, active_B)

The selected items' *token embeddings* are prepended (k items x L tokens, in the receiving
lobe's own input embedding), weighted by the selection: one-hot rows copy an item exactly;
soft rows are attention read-outs (a convex mix of items, position by position), and the
straight-through rows carry the relaxed gradient to the selector. Padding tokens of an item
and unfilled slots enter as zero vectors.

In the dialogue loop (memory/dialogue.py, loop.prefill), one read per dialogue, with the prompt
as the query, gives each lobe named in ``MemoryConfig.lobes`` the selected memories as a
prefix of its context, so every turn of that lobe attends to them. The facts experiment
(experiments/facts_memory.py) uses this reader outside the loop, with its own small lobe.
"""
from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from slnjax import lobes
from slnjax.loop import decode
from slnjax.memory.bank import Bank
from slnjax.memory.encode import NgramEncoder, lobe_encode
from slnjax.memory.selection import MODES, Selection, select
from slnjax.memory.selectors import KINDS, Selector

ENCODERS = ("ngram", "lobe")
LOBES = ("left", "right")


@dataclasses.dataclass(frozen=True)
class MemoryConfig:
  selector: str = "mha"  # selectors.KINDS
  residual: bool = False
  hidden: int = 64
  heads: int = 4
  k: int = 2  # memories selected per read
  mode: str = "gumbel_st"  # selection.MODES
  temperature: float = 1.0  # sampling temperature of the scores
  encoder: str = "ngram"  # "ngram" (learned hashed n-grams) | "lobe" (a lobe's hidden states)
  key_dim: int = 64  # ngram encoder width (a "lobe" encoder has the lobe's d_model)
  buckets: int = 4096
  lobes: tuple[str, ...] = ("left",)  # which lobes read the memories (prefix of their context)
  tau: float | None = None  # relaxation temperature (soft, gumbel_st); None: the loop's tau

  def __post_init__(self):
    if self.selector not in KINDS:
      raise ValueError(f"MemoryConfig.selector={self.selector!r}; expected one of {KINDS}.")
    if self.mode not in MODES:
      raise ValueError(f"MemoryConfig.mode={self.mode!r}; expected one of {MODES}.")
    if self.encoder not in ENCODERS:
      raise ValueError(f"MemoryConfig.encoder={self.encoder!r}; expected one of {ENCODERS}.")
    lobes_ = tuple(self.lobes)
    if not lobes_ or any(n not in LOBES for n in lobes_) or len(set(lobes_)) != len(lobes_):
      raise ValueError(f"MemoryConfig.lobes={self.lobes!r}: name one or both of {LOBES}, "
                       "each once.")
    object.__setattr__(self, "lobes", lobes_)  # a list from a config file: hashable again
    if self.k < 1:
      raise ValueError(f"MemoryConfig.k={self.k} must be >= 1.")
    if self.tau is not None and self.tau <= 0:
      raise ValueError(f"MemoryConfig.tau={self.tau} must be > 0 (or None: the loop's tau).")

  def selector_module(self) -> Selector:
    return Selector(self.selector, self.hidden, self.heads, residual=self.residual)


def init(cfg: MemoryConfig, rng, dim: int | None = None) -> dict:
  """{"encoder": ngram table (ngram encoder only), "selector": ...}. `dim`: the key width
  (required for a "lobe" encoder: the lobe's d_model)."""
  return nn.meta.unbox(_init_boxed(cfg, rng, dim))


@functools.partial(jax.jit, static_argnums=(0, 2))  # compiled once per config (see lobes.init)
def _init_boxed(cfg: MemoryConfig, rng, dim: int | None):
  k_enc, k_sel = jax.random.split(rng)
  params = {}
  if cfg.encoder == "ngram":
    dim = cfg.key_dim
    params["encoder"] = NgramEncoder(dim, cfg.buckets).init(
        k_enc, jnp.zeros((1, 4), jnp.int32), jnp.ones((1,), jnp.int32))["params"]
  elif dim is None:
    raise ValueError("A 'lobe' memory encoder has the lobe's width: pass dim=d_model.")
  q = jnp.zeros((1, dim))
  params["selector"] = cfg.selector_module().init(k_sel, q, jnp.zeros((1, 2, dim)),
                                                  jnp.ones((1, 2), bool))["params"]
  return params


def logical_axes(cfg: MemoryConfig, dim: int | None = None) -> dict:
  """PartitionSpecs over logical axis names, the structure of ``init``'s parameters
  (unannotated leaves, e.g. LayerNorm scales, are replicated)."""
  boxed = jax.eval_shape(lambda r: _init_boxed(cfg, r, dim), jax.random.key(0))
  return nn.get_partition_spec(boxed)


def encode(cfg: MemoryConfig, params, ids_NL, len_N, lobe=None):
  """Key vectors [..., D] of token sequences. `lobe`: (LobeConfig, params) for "lobe"."""
  if cfg.encoder == "ngram":
    return NgramEncoder(cfg.key_dim, cfg.buckets).apply({"params": params["encoder"]}, ids_NL,
                                                        len_N)
  if lobe is None:
    raise ValueError("MemoryConfig.encoder='lobe' needs lobe=(LobeConfig, lobe params).")
  return lobe_encode(lobe[0], lobe[1], ids_NL, len_N)


def scores(cfg: MemoryConfig, params, bank: Bank, query_ids_BQ, query_len_B, lobe=None,
           keys_BCD=None):
  """Selector scores [B,C] of the bank's items (keys re-encoded unless given)."""
  q_BD = encode(cfg, params, query_ids_BQ, query_len_B, lobe)
  if keys_BCD is None:
    keys_BCD = encode(cfg, params, bank.ids_BCL, bank.len_BC, lobe)
  return cfg.selector_module().apply({"params": params["selector"]}, q_BD, keys_BCD,
                                     bank.mask_BC)


def read(cfg: MemoryConfig, params, bank: Bank, query_ids_BQ, query_len_B, key=None, tau=1.0,
         mode=None, lobe=None) -> tuple[Selection, jax.Array]:
  s_BC = scores(cfg, params, bank, query_ids_BQ, query_len_B, lobe)
  return select(s_BC, bank.mask_BC, cfg.k, mode or cfg.mode, key, tau, cfg.temperature), s_BC


def prefix_embeds(sel: Selection, bank: Bank, emb_VD, align: str = "left"):
  """The selected items' token embeddings, slot after slot: [B, k * L, D]. Within its slot
  of L positions an item starts at the first position (align="left", padding after it) or
  ends at the last (align="right", padding before it: the item's last tokens then sit at
  fixed places, whatever its length)."""
  if align not in ("left", "right"):
    raise ValueError(f"prefix_embeds: align={align!r}; expected 'left' or 'right'.")
  L = bank.ids_BCL.shape[2]
  pos_L = jnp.arange(L)
  if align == "left":
    ids_BCL, tok_mask_BCL = bank.ids_BCL, pos_L[None, None, :] < bank.len_BC[..., None]
  else:
    src_BCL = pos_L[None, None, :] - (L - bank.len_BC[..., None])  # slot place -> item token
    tok_mask_BCL = src_BCL >= 0
    ids_BCL = jnp.take_along_axis(bank.ids_BCL, jnp.maximum(src_BCL, 0), axis=2)
  e_BCLD = jnp.take(emb_VD, ids_BCL, axis=0) * tok_mask_BCL[..., None].astype(emb_VD.dtype)
  p_BJLD = jnp.einsum("bjc,bcld->bjld", sel.weights_BJC.astype(emb_VD.dtype), e_BCLD)
  B, J, _, D = p_BJLD.shape
  return p_BJLD.reshape(B, J * L, D)


def prefix_ids(sel: Selection, bank: Bank, pad_id: int = 0):
  """The hard selection as token ids [B, k * L] (transcripts; unfilled slots are pad)."""
  ids_BJL = jnp.take_along_axis(bank.ids_BCL, sel.index_BJ[..., None], axis=1)
  len_BJ = jnp.take_along_axis(bank.len_BC, sel.index_BJ, axis=1)
  keep = (jnp.arange(ids_BJL.shape[2])[None, None] < len_BJ[..., None]) & sel.valid_BJ[..., None]
  ids_BJL = jnp.where(keep, ids_BJL, pad_id)
  return ids_BJL.reshape(ids_BJL.shape[0], -1)


def ingest_prefix(lobe_cfg: lobes.LobeConfig, lobe_params, cache, prefix_BTD, pos_B, active_B):
  """Appends the memory prefix to a lobe's KV cache before a turn (slnjax.loop.decode.ingest)."""
  return decode.ingest(lobe_cfg, lobe_params, cache, prefix_BTD, pos_B, active_B)
