"""Selectors: score every memory of a bank against a query.

    scores_BC = Selector(kind="mha", hidden=64).apply({"params": p}, q_BD, keys_BCD, mask_BC)

Kinds (the architectures of seeds/004, "Architectural Choices"):
  simple  one feed-forward layer: s = v . tanh(W_q q + W_k k + b)
  conv    a 1-D convolution over the memory list of [k, q * k] features, then a linear score
  se      squeeze-and-excitation: the bank is squeezed (masked mean of keys, with the query)
          into channel gates g = sigmoid(W2 relu(W1 [z; q])); s = (W_q q) . (g * k) / sqrt(D)
  mha     multi-head attention logits, one per head, mixed by learned head weights
``residual=True`` adds residual layers: query and keys are refined by x + MLP(LN(x)) before
scoring, and the score gets a parameter-free skip term q . k / sqrt(D) (so that at
initialisation the selector is a dot-product nearest-neighbour retriever).
Padded slots get -inf scores; selection.py never picks them.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

KINDS = ("simple", "conv", "se", "mha")
NEG_INF = -1e30


def _p(mod, name, shape, axes, init=nn.initializers.normal(0.02)):
  return mod.param(name, nn.with_logical_partitioning(init, axes), shape)


class ResidualMlp(nn.Module):
  hidden: int

  @nn.compact
  def __call__(self, x):
    D = x.shape[-1]
    h = nn.LayerNorm(name="ln")(x)
    h = jax.nn.gelu(h @ _p(self, "up", (D, self.hidden), ("embed", "mlp")))
    return x + h @ _p(self, "down", (self.hidden, D), ("mlp", "embed"), nn.initializers.zeros)


class Selector(nn.Module):
  kind: str = "mha"
  hidden: int = 64
  heads: int = 4
  kernel: int = 3
  residual: bool = False

  @nn.compact
  def __call__(self, q_BD, keys_BCD, mask_BC):
    if self.kind not in KINDS:
      raise ValueError(f"Selector kind {self.kind!r}; expected one of {KINDS}.")
    if q_BD.shape[-1] != keys_BCD.shape[-1]:
      raise ValueError(f"Query dim {q_BD.shape[-1]} != key dim {keys_BCD.shape[-1]}: encode "
                       "queries and memories with the same encoder.")
    D, H = q_BD.shape[-1], self.hidden
    q, k = q_BD, keys_BCD
    if self.residual:
      q = ResidualMlp(2 * D, name="q_res")(q)
      k = ResidualMlp(2 * D, name="k_res")(k)
    if self.kind == "simple":
      a = q @ _p(self, "w_q", (D, H), ("embed", "mlp"))
      b = jnp.einsum("bcd,dh->bch", k, _p(self, "w_k", (D, H), ("embed", "mlp")))
      h = jnp.tanh(a[:, None] + b + _p(self, "b", (H,), ("mlp",), nn.initializers.zeros))
      s = h @ _p(self, "v", (H,), ("mlp",))
    elif self.kind == "conv":
      x = jnp.concatenate([k, q[:, None] * k], axis=-1) * mask_BC[..., None]
      x = nn.Conv(H, (self.kernel,), padding="SAME", name="conv")(x)
      s = jax.nn.gelu(x) @ _p(self, "v", (H,), ("mlp",))
    elif self.kind == "se":
      m = mask_BC[..., None].astype(k.dtype)
      z = jnp.sum(k * m, 1) / jnp.maximum(jnp.sum(m, 1), 1.0)
      e = jax.nn.relu(jnp.concatenate([z, q], -1) @ _p(self, "w1", (2 * D, H), (None, "mlp")))
      g = jax.nn.sigmoid(e @ _p(self, "w2", (H, D), ("mlp", "embed")) + 1.0)
      qp = q @ _p(self, "w_q", (D, D), ("embed", None), nn.initializers.normal(1 / math.sqrt(D)))
      s = jnp.einsum("bd,bcd->bc", qp, g[:, None] * k) / math.sqrt(D)
    else:
      E = max(D // self.heads, 1)
      init = nn.initializers.normal(1 / math.sqrt(D))
      qh = jnp.einsum("bd,dhe->bhe", q, _p(self, "w_q", (D, self.heads, E), ("embed", "heads", "kv"),
                                            init))
      kh = jnp.einsum("bcd,dhe->bche", k, _p(self, "w_k", (D, self.heads, E),
                                              ("embed", "heads", "kv"), init))
      logits = jnp.einsum("bhe,bche->bch", qh, kh) / math.sqrt(E)
      mix = _p(self, "mix", (self.heads,), ("heads",),
               nn.initializers.constant(1.0 / self.heads))
      s = logits @ mix
    if self.residual:
      s = s + jnp.einsum("bd,bcd->bc", q, k) / math.sqrt(D)
    return jnp.where(mask_BC, s, NEG_INF)
