"""The main gating network of a wide SLN and how its choice is passed on.

At every iteration the gate reads the context (an attention-pooled summary of its valid part,
the last valid slot, the iteration index (unless ``step_input=False``) and, in a lateralized
wide SLN, the right lobe's latest score) and outputs three logits: LEFT, RIGHT, OUTPUT.
``halt_prob`` is the probability of OUTPUT, the PonderNet halting probability lambda.

``route`` turns them into a choice with the Gumbel-max trick, sharing one noise draw between
the 3-way choice and the 2-way lobe choice given "continue", so that the lobe picked when the
example continues is the same under both views (argmax over {left, right} of logits + g).
"""
from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from slnjax.lobes.config import LobeConfig
from slnjax.lobes.layers import Norm, upcast

LEFT, RIGHT, OUTPUT = 0, 1, 2
CHOICE_NAMES = ("left", "right", "output")
_NEG = -1e30


def pparam(mod, name, shape, axes, init, cfg: LobeConfig):
  """A parameter carrying logical axis names (as the lobes' parameters do)."""
  return mod.param(name, nn.with_logical_partitioning(init, axes), shape, cfg.weight_dtype)


def masked_softmax(s_BS, mask_BS):
  s_BS = jnp.where(mask_BS, s_BS, _NEG)
  return jax.nn.softmax(s_BS, axis=-1) * mask_BS


def last_valid(ctx_BSD, len_B):
  return jnp.take_along_axis(ctx_BSD, (len_B - 1)[:, None, None], axis=1)[:, 0]


class MainGate(nn.Module):
  lm: LobeConfig
  hidden: int
  max_iters: int
  lateralized: bool = False
  # False: no embedding of the call index t, so halting is a function of the context alone
  # (PonderNet's lambda_n = f(h_n)); with it the gate can learn a clock (halt at call k for
  # every input) and its calls beyond max_iters share one embedding (docs/results.md, parity).
  step_input: bool = True
  # True: no GELU between the input and output layers, so the logits are a linear (rank
  # `hidden`) readout of the normed context summary, as PonderNet's halting layer. An MLP
  # gate that reads the prompt can compute the answer itself and encode it in WHEN it halts
  # (docs/results.md, parity); a linear one cannot compute more than the context holds.
  linear: bool = False

  @nn.compact
  def __call__(self, ctx_BSD, len_B, t, score_B=None):
    cfg, H, D = self.lm, self.hidden, self.lm.d_model
    init = nn.initializers.normal(0.02)
    f = upcast(cfg.compute_dtype)
    h_BSD = Norm(cfg, name="norm")(ctx_BSD).astype(f)
    mask_BS = jnp.arange(ctx_BSD.shape[1])[None, :] < len_B[:, None]
    w_pool = pparam(self, "pool", (D,), ("embed",), init, cfg).astype(f)
    a_BS = masked_softmax(h_BSD @ w_pool / jnp.sqrt(D).astype(f), mask_BS)
    pooled_BD = jnp.einsum("bs,bsd->bd", a_BS, h_BSD)
    last_BD = last_valid(h_BSD, len_B)
    w_in = pparam(self, "w_in", (2, D, H), (None, "embed", "mlp"), init, cfg).astype(f)
    x_BH = pooled_BD @ w_in[0] + last_BD @ w_in[1]
    if self.step_input:
      step = pparam(self, "step_emb", (self.max_iters + 1, H), (None, "mlp"), init, cfg)
      x_BH = x_BH + step.astype(f)[jnp.minimum(t, self.max_iters)]
    if self.lateralized:
      w_s = pparam(self, "score_w", (H,), ("mlp",), init, cfg).astype(f)
      x_BH = x_BH + (score_B.astype(f) - 0.5)[:, None] * w_s
    x_BH = x_BH + pparam(self, "b_in", (H,), ("mlp",), nn.initializers.zeros, cfg).astype(f)
    if not self.linear:
      x_BH = jax.nn.gelu(x_BH)
    w_out = pparam(self, "w_out", (H, 3), ("mlp", None), init, cfg).astype(f)
    b_out = pparam(self, "b_out", (3,), (None,), nn.initializers.zeros, cfg).astype(f)
    return x_BH @ w_out + b_out


def halt_prob(logits_B3, temperature=1.0):
  """lambda = P(OUTPUT) under softmax(logits / temperature), in float32 at least."""
  f = jnp.promote_types(logits_B3.dtype, jnp.float32)
  return jax.nn.softmax(logits_B3.astype(f) / temperature, axis=-1)[:, OUTPUT]


class Route(NamedTuple):
  choice_B: jax.Array  # int32: LEFT / RIGHT / OUTPUT (the forward decision)
  lobe_B: jax.Array  # int32: LEFT / RIGHT, the lobe picked if the example continues
  halt_w_B: jax.Array  # the halting weight (differentiable in relaxed / ST modes)
  lobe_w_B2: jax.Array  # weights of the two lobes' writes, given "continue"
  logp_B: jax.Array  # log-prob of choice_B under softmax(logits / temperature)
  probs_B3: jax.Array  # softmax(logits / temperature)


def mask_output(logits_B3, may_halt):
  """OUTPUT's logit pushed to -1e30 where `may_halt` (bool, scalar or [B]) is False: its
  probability, halting weight and gradient are then exactly 0 in every route."""
  f = jnp.promote_types(logits_B3.dtype, jnp.float32)
  keep_B3 = (jnp.arange(3) != OUTPUT)[None, :] | jnp.reshape(may_halt, (-1, 1))
  return jnp.where(keep_B3, logits_B3.astype(f), jnp.asarray(_NEG, f))


def route(logits_B3, mode: str, key=None, tau=1.0, temperature=1.0, forced_B=None,
          may_halt=None) -> Route:
  """The gate's decision under `mode` (see slnjax/wide/config.py). `forced_B` (int32 [B])
  replays recorded choices (PPO ratios): the choice and lobe are taken from it. `may_halt`
  (bool, scalar or [B]; None: True) False: OUTPUT is not a choice (the policy is the gate's
  conditional over the two lobes; log-probs are of that policy)."""
  if may_halt is not None:
    logits_B3 = mask_output(logits_B3, may_halt)
  f = jnp.promote_types(logits_B3.dtype, jnp.float32)
  scaled_B3 = logits_B3.astype(f) / temperature
  logprobs_B3 = jax.nn.log_softmax(scaled_B3, axis=-1)
  if mode in ("greedy", "soft") or forced_B is not None:
    g_B3 = jnp.zeros_like(scaled_B3)
  else:
    if key is None:
      raise ValueError(f"Gate route {mode!r} samples: pass an rng key.")
    g_B3 = jax.random.gumbel(key, scaled_B3.shape, f)
  noisy_B3 = jax.lax.stop_gradient(scaled_B3 + g_B3)
  if forced_B is None:
    choice_B = jnp.argmax(noisy_B3, axis=-1).astype(jnp.int32)
    lobe_B = jnp.argmax(noisy_B3[:, :2], axis=-1).astype(jnp.int32)
  else:
    choice_B = forced_B.astype(jnp.int32)
    lobe_B = jnp.where(choice_B == OUTPUT, jnp.argmax(noisy_B3[:, :2], axis=-1),
                       choice_B).astype(jnp.int32)
  onehot_B3 = jax.nn.one_hot(choice_B, 3, dtype=f)
  lobe_hot_B2 = jax.nn.one_hot(lobe_B, 2, dtype=f)
  if mode in ("greedy", "hard"):
    w_B3, u_B2 = onehot_B3, lobe_hot_B2
  else:
    noise_B3 = g_B3 if mode in ("gumbel", "gumbel_st") else jnp.zeros_like(g_B3)
    base_B3 = (logits_B3.astype(f) if mode in ("soft", "straight_through") else scaled_B3)
    soft_B3 = jax.nn.softmax((base_B3 + noise_B3) / tau, axis=-1)
    soft_B2 = jax.nn.softmax((base_B3[:, :2] + noise_B3[:, :2]) / tau, axis=-1)
    if mode in ("soft", "gumbel"):
      w_B3, u_B2 = soft_B3, soft_B2
    else:
      w_B3 = onehot_B3 + (soft_B3 - jax.lax.stop_gradient(soft_B3))
      u_B2 = lobe_hot_B2 + (soft_B2 - jax.lax.stop_gradient(soft_B2))
  logp_B = jnp.take_along_axis(logprobs_B3, choice_B[:, None], axis=-1)[:, 0]
  return Route(choice_B, lobe_B, w_B3[:, OUTPUT], u_B2, logp_B, jnp.exp(logprobs_B3))
