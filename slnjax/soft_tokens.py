"""Passing a generated token to the next forward pass, with or without a gradient.

A lobe's logits over the vocabulary become token *weights* w [B,V]; the receiving lobe
multiplies them with its own input embedding E [V,D] (``embed``). The modes:

- ``greedy``           argmax id, one-hot weights, no gradient.
- ``hard``             sampled id, one-hot weights, no gradient (score-function / PPO training).
- ``soft``             w = softmax(logits / tau) (paper eq. 3-4); id = argmax for the transcript.
- ``straight_through`` exact one-hot of the sampled id forward, softmax(logits / tau) gradient.
- ``gumbel``           w = softmax((logits + g) / tau), g ~ Gumbel(0, 1).
- ``gumbel_st``        exact one-hot of argmax(logits + g) forward, gumbel-softmax gradient.

All sampling modes draw the id as argmax(logits / temperature + g) with the same Gumbel noise,
so ``hard``, ``straight_through``, ``gumbel`` and ``gumbel_st`` pick the same ids for the same
rng. ``logp`` is the log-probability of the id under softmax(logits / temperature): the
behaviour policy for PPO. ``tau`` is a traced argument so that it can follow a schedule.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

MODES = ("greedy", "hard", "soft", "straight_through", "gumbel", "gumbel_st")
HARD_MODES = ("greedy", "hard")


class TokenSample(NamedTuple):
  ids_B: jax.Array  # int32 id for the transcript
  weights_BV: jax.Array  # what the receiving lobe multiplies with its embedding
  logp_B: jax.Array  # log-prob of ids_B under the sampling policy


def check_mode(mode: str) -> str:
  if mode not in MODES:
    raise ValueError(f"Unknown soft-token mode {mode!r}; expected one of {MODES}.")
  return mode


def sample(logits_BV, mode: str, rng=None, tau=1.0, temperature=1.0) -> TokenSample:
  """Turns logits into a token for the next forward pass (see the module docstring)."""
  check_mode(mode)
  logits_BV = logits_BV.astype(jnp.promote_types(logits_BV.dtype, jnp.float32))
  scaled_BV = logits_BV / temperature
  logprobs_BV = jax.nn.log_softmax(scaled_BV, axis=-1)
  V = logits_BV.shape[-1]
  if mode in ("greedy", "soft"):
    g_BV = jnp.zeros_like(scaled_BV)
  else:
    if rng is None:
      raise ValueError(f"Soft-token mode {mode!r} samples: pass an rng key.")
    g_BV = jax.random.gumbel(rng, scaled_BV.shape, scaled_BV.dtype)
  ids_B = jnp.argmax(jax.lax.stop_gradient(scaled_BV + g_BV), axis=-1).astype(jnp.int32)
  onehot_BV = jax.nn.one_hot(ids_B, V, dtype=logits_BV.dtype)
  if mode in HARD_MODES:
    weights_BV = onehot_BV
  elif mode == "soft":
    weights_BV = jax.nn.softmax(logits_BV / tau, axis=-1)
  elif mode == "straight_through":
    p_BV = jax.nn.softmax(logits_BV / tau, axis=-1)
    weights_BV = onehot_BV + (p_BV - jax.lax.stop_gradient(p_BV))
  else:
    y_BV = jax.nn.softmax((scaled_BV + g_BV) / tau, axis=-1)
    if mode == "gumbel":
      weights_BV = y_BV
    else:
      weights_BV = onehot_BV + (y_BV - jax.lax.stop_gradient(y_BV))
  logp_B = jnp.take_along_axis(logprobs_BV, ids_B[:, None], axis=-1)[:, 0]
  return TokenSample(ids_B, weights_BV, logp_B)


def embed(tok: TokenSample, emb_VD, mode: str):
  """The receiving lobe's input embedding of a token: w @ E (a row lookup for hard modes)."""
  if mode in HARD_MODES:
    return jnp.take(emb_VD, tok.ids_B, axis=0)
  return jnp.einsum("bv,vd->bd", tok.weights_BV.astype(emb_VD.dtype), emb_VD)
