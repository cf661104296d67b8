"""A lobe's transformer blocks as a standalone stack: slice, run, cache.

A wide SLN is a *lobotomised* LM: its first ``k_in`` blocks encode, its last ``k_out`` blocks
decode. Both reuse ``slnjax.lobes`` parameters (blocks stacked on a leading ``layers`` axis,
``params['layers']``; a lobe built with ``scan_layers=False`` has ``layer_0, layer_1, ...``,
which ``layer_stack`` stacks). ``run_blocks`` runs such a stack with ``lax.scan`` over the
layers axis (compile time flat in depth), with or without a KV cache laid out as the lobes'
``{"k": [L,B,K,S,E], "v": ...}`` (scanned layers).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from slnjax.lobes.config import LobeConfig
from slnjax.lobes.layers import Block
from slnjax.lobes.transformer import with_layer_layout

_POLICIES = {"full": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


def layer_stack(lobe_params) -> dict:
  """The blocks of a lobe's params, stacked on axis 0 (as ``params['layers']``)."""
  return with_layer_layout(lobe_params, scan_layers=True)["layers"]


def num_layers(stack) -> int:
  return int(jax.tree.leaves(stack)[0].shape[0])


def slice_layers(stack, start: int, stop: int) -> dict:
  n = num_layers(stack)
  if not 0 <= start < stop <= n:
    raise ValueError(f"Cannot take blocks [{start}, {stop}) of a stack of {n} blocks.")
  return jax.tree.map(lambda x: x[start:stop], stack)


def init_cache(cfg: LobeConfig, n_layers: int, batch: int, length: int):
  shape = (n_layers, batch, cfg.kv_heads, length, cfg.hd)
  return {"k": jnp.zeros(shape, cfg.compute_dtype), "v": jnp.zeros(shape, cfg.compute_dtype)}


def run_blocks(cfg: LobeConfig, stack, x_BTD, *, cache=None, start_B=None, write_mask_B=None):
  """Applies the stacked blocks in order. Returns (x_BTD, cache or None).

  Without a cache, the chunk attends causally to itself at positions 0..T-1. With one, it is
  written at positions start[b]..start[b]+T-1 and attends to everything before (slnjax/loop/decode.py);
  start None: at 0 (a prefill: no cached position is read).
  """
  B, T, _ = x_BTD.shape
  pos_BT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32)[None, :], (B, T))
  if start_B is not None:
    pos_BT = start_B[:, None] + pos_BT
  block = Block(cfg)

  def body(x, layer):
    p, k, v = layer
    x, (k, v) = block.apply({"params": p}, x, k, v, pos_BT, start_B, write_mask_B)
    return x, (k, v)

  if cfg.remat != "none":
    body = jax.checkpoint(body, policy=_POLICIES[cfg.remat])
  x_BTD = x_BTD.astype(cfg.compute_dtype)
  if cache is None:
    x_BTD, _ = jax.lax.scan(lambda x, p: (body(x, (p, None, None))[0], None), x_BTD, stack)
    return x_BTD, None
  x_BTD, (k, v) = jax.lax.scan(body, x_BTD, (stack, cache["k"], cache["v"]))
  return x_BTD, {"k": k, "v": v}
